"""Hostile callers: input that changes during a call (GIL released), calls that
must stop on Ctrl-C, and numbers at the edges of float32's range (issue 10)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from tlalloc import huffman
from tlalloc.huffman import CorruptStreamError

# ---- input written by another thread while the C core reads it ---------------------


def _flipper(buf: np.ndarray, lo: int, hi: int, stop: threading.Event) -> None:
    """Alternate buf[lo:hi] between its bytes and their complement, at C speed
    (one NumPy copy into a zero-stride view writes the range 100,000 times,
    flipped every other time), until stopped."""
    width = hi - lo
    dst = as_strided(buf[lo:], shape=(100_000, width), strides=(0, 1))
    src = np.empty((100_000, width), dtype=np.uint8)
    src[0::2] = ~buf[lo:hi]
    src[1::2] = buf[lo:hi]
    while not stop.is_set():
        np.copyto(dst, src)


def test_decode_survives_a_concurrent_writer() -> None:
    # A block of two symbols with one-bit codes ('a' = 0, 'b' = 1): its bitmap
    # has 2 bits set, its payload is mostly 0xFF bytes. Flipping the bitmap
    # makes it claim 254 symbols; a decoder that counts the bitmap once and
    # reads it again to fill its table takes payload bytes (255) as code
    # lengths and indexes a 42-entry stack array with them (before the fix:
    # a stack overflow, found by AddressSanitizer, or a crash).
    data = b"a" + b"b" * 999
    stream = huffman.encode(data, block_size=1024).data
    buf = np.frombuffer(bytearray(stream), dtype=np.uint8)
    bitmap = 28 + 8  # header, one index entry, then the block's bitmap
    stop = threading.Event()
    writer = threading.Thread(target=_flipper, args=(buf, bitmap, bitmap + 32, stop))
    writer.start()
    outcomes = {"ok": 0, "corrupt": 0}
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                out = huffman.decode(buf, threads=1)
            except CorruptStreamError:
                outcomes["corrupt"] += 1
            else:
                outcomes["ok"] += 1
                assert len(out) == len(data)
    finally:
        stop.set()
        writer.join()
    assert outcomes["ok"] + outcomes["corrupt"] > 0


def test_decode_survives_a_writer_of_the_header_and_index() -> None:
    data = bytes(range(256)) * 40
    stream = huffman.encode(data, block_size=1000).data
    buf = np.frombuffer(bytearray(stream), dtype=np.uint8)
    stop = threading.Event()
    # the block size, original size and block count, and the first index entries
    writer = threading.Thread(target=_flipper, args=(buf, 8, 60, stop))
    writer.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                assert huffman.decode(buf, threads=2) == data
            except CorruptStreamError:
                pass
    finally:
        stop.set()
        writer.join()


def test_encode_survives_a_concurrent_writer() -> None:
    # Frequencies are counted, then the block is read again to emit codes: a
    # byte that changed in between has no code, or a rare code (up to 40 bits)
    # repeated many times outgrows the block's output bound.
    base = np.zeros(4096, dtype=np.uint8)
    base[::512] = np.arange(8, dtype=np.uint8) + 1  # 8 rare symbols, long codes
    buf = base.copy()
    stop = threading.Event()

    def writer() -> None:
        rare = np.full(4096, 5, dtype=np.uint8)
        while not stop.is_set():
            buf[:] = rare
            buf[:] = base

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                huffman.encode(buf, block_size=4096, threads=1)
            except ValueError as e:
                assert "changed while it was being encoded" in str(e)
    finally:
        stop.set()
        t.join()


def test_decay_shape_error_does_not_leak() -> None:
    # The message names out.shape; the tuple fetched for it used to leak on
    # every call (issue 9).
    import tracemalloc

    from tlalloc.kernels import decay

    s = np.ones((3, 4), dtype=np.float32)
    a = np.ones((3, 4), dtype=np.float32)
    out = np.empty((5, 4), dtype=np.float32)

    def calls(n: int) -> None:
        for _ in range(n):
            try:
                decay(s, a, out=out)
            except ValueError:
                pass

    with pytest.raises(ValueError, match="do not have matching shapes"):
        decay(s, a, out=out)
    calls(200)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        calls(2000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2000 * 8, grown  # a leaked shape tuple is 56+ bytes per call
