"""Hostile callers: input that changes during a call (GIL released), calls that
must stop on Ctrl-C, and numbers at the edges of float32's range."""

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
    # reads it again to fill its table would take payload bytes (255) as code
    # lengths and index a 42-entry stack array with them (a stack overflow
    # under AddressSanitizer, or a crash): the decoder must refuse the block.
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
    # The message names out.shape; the tuple fetched for it must be released
    # on every call, not leaked.
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
    # A leaked shape tuple is 56+ bytes per call; what else tracemalloc sees
    # (free lists, a free-threaded build's per-thread caches) stays under ~10.
    assert grown < 2000 * 28, grown


# ---- long kernel calls stop on Ctrl-C ------------------------------------------------

# Each case would run for hours; the child process sends itself SIGINT from a
# timer thread 0.3 s into the call and reports what the call did. A kernel that
# ignored the signal would hit the subprocess timeout (a test failure, not a hang).
_SIGINT_CHILD = r"""
import os, signal, sys, threading, time
import numpy as np
from numpy.lib.stride_tricks import as_strided
from tlalloc import kernels

def zs(dtype, n):  # n elements, all the same memory
    return as_strided(np.ones(1, dtype), shape=(n,), strides=(0,))

n = 200_000  # a ring: every node spreads to the next, forever with decay_rate=0
ring = (np.arange(n + 1), (np.arange(n) + 1) % n, np.ones(n))
big = 2**40
calls = {
    "cosine_topk": lambda: kernels.cosine_similarity(
        np.ones(256, np.float32), as_strided(np.ones(256, np.float32), (big, 256), (0, 4)), top_k=3),
    "cosine_f64": lambda: kernels.cosine_similarity(
        np.ones(256), as_strided(np.ones(256), (big, 256), (0, 8)), top_k=3),
    "spread_sparse": lambda: kernels.spread_activation(
        ring, np.arange(n), decay_rate=0.0, threshold=0.0, max_depth=kernels.MAX_DEPTH),
    "spread_dense": lambda: kernels.spread_activation(
        ring, np.arange(n), decay_rate=0.0, threshold=0.0, max_depth=kernels.MAX_DEPTH,
        _engine="dense"),
    "decay_f32": lambda: kernels.decay(zs(np.float32, big), zs(np.float32, big),
                                       out=zs(np.float32, big)),
    "decay_f64": lambda: kernels.decay(zs(np.float64, big), zs(np.float32, big),
                                       out=zs(np.float64, big)),
    "decay_int_ages": lambda: kernels.decay(zs(np.float32, big), zs(np.int64, big),
                                            out=zs(np.float32, big)),
    "decay_broadcast": lambda: kernels.decay(
        as_strided(np.ones(1, np.float32), (2**20, 2**20), (0, 0)), np.float32(1.0),
        out=as_strided(np.ones(1, np.float32), (2**20, 2**20), (0, 0))),
}
name = sys.argv[1]
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    calls[name]()
except KeyboardInterrupt:
    print("interrupted")
else:
    print("finished")
"""


@pytest.mark.parametrize(
    "name",
    ["cosine_topk", "cosine_f64", "spread_sparse", "spread_dense", "decay_f32", "decay_f64",
     "decay_int_ages", "decay_broadcast"],
)
def test_long_kernel_raises_keyboardinterrupt_on_sigint(name: str) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _SIGINT_CHILD, name], capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.strip() == "interrupted", (r.stdout, r.stderr[-2000:])


def test_sigint_handler_that_returns_lets_the_call_finish() -> None:
    import signal

    from tlalloc import kernels

    n = 2000
    ring = (np.arange(n + 1), (np.arange(n) + 1) % n, np.ones(n))
    want = kernels.spread_activation(ring, np.arange(n), decay_rate=0.0, threshold=0.0,
                                     max_depth=20000)
    seen: list[int] = []
    old = signal.signal(signal.SIGINT, lambda sig, frame: seen.append(sig))
    try:
        import os

        t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
        t.start()
        got = kernels.spread_activation(ring, np.arange(n), decay_rate=0.0, threshold=0.0,
                                        max_depth=20000)
        t.join()
    finally:
        signal.signal(signal.SIGINT, old)
    assert seen == [signal.SIGINT]
    np.testing.assert_array_equal(got, want)


def test_max_depth_is_bounded() -> None:
    from tlalloc import kernels

    g = (np.array([0, 1]), np.array([0]), np.ones(1))
    kernels.spread_activation(g, [0], max_depth=kernels.MAX_DEPTH, decay_rate=1.0)
    with pytest.raises(ValueError, match=r"max_depth must be <= 1000000 .* got 1000001"):
        kernels.spread_activation(g, [0], max_depth=kernels.MAX_DEPTH + 1)


# ---- float32 range edges: the documented value, against float64 references ------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e-38, 1e-44, 1e19, 1e30, 3e38, 1.0])
def test_cosine_at_the_ends_of_the_float_range(dtype, scale: float) -> None:
    from tlalloc import kernels

    rng = np.random.default_rng(3)
    base = rng.standard_normal((5, 48))
    q = (base[0] * scale / np.abs(base[0]).max()).astype(dtype)
    c = (base * scale / np.abs(base).max(axis=1, keepdims=True)).astype(dtype)
    c[1] = q  # identical: exactly 1
    c[2] = -q  # opposite: exactly -1
    got = kernels.cosine_similarity(q, c)
    assert got[1] == 1.0 and got[2] == -1.0, got
    # float64 reference on the same values, scaled by hand (no under/overflow)
    qs, cs = q.astype(np.float64) / scale, c.astype(np.float64) / scale
    want = (cs @ qs) / np.linalg.norm(qs) / np.linalg.norm(cs, axis=1)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=2e-6, atol=1e-7)
    idx, top = kernels.cosine_similarity(q, c, top_k=2)
    assert top[0] == 1.0 and idx[0] in (0, 1)  # row 0 is q itself too


def test_cosine_mixed_magnitudes_take_the_slow_path_per_row() -> None:
    from tlalloc import kernels

    q = np.full(16, 1e-25, np.float32)
    c = np.stack([np.full(16, 1.0, np.float32), np.full(16, 1e-30, np.float32),
                  np.full(16, 2e19, np.float32), np.zeros(16, np.float32)])
    assert kernels.cosine_similarity(q, c).tolist() == [1.0, 1.0, 1.0, 0.0]
    with np.errstate(all="ignore"):
        c[0, 0] = np.nan
        c[1, 1] = np.inf
    assert kernels.cosine_similarity(np.ones(16, np.float32), c).tolist()[:2] == [0.0, 0.0]


@pytest.mark.parametrize(
    "kw,ages",
    [
        ({"tau": 5e-324}, [0.0, 1e-45, 1.0]),
        ({"tau": 1e-40}, [0.0, 1e-45, 1e-38]),
        ({"tau": 1e35}, [0.0, 1e30, 3e38]),
        ({"half_life": 5e-324}, [0.0, 1e-45]),
        ({"half_life": 1e300}, [0.0, 3e38]),
        ({"model": "power", "alpha": 1e39}, [0.0, 1e-3, 1.0]),
        ({"model": "power", "alpha": -1e39}, [0.0]),
        ({"model": "power", "alpha": 50.0}, [0.0, 1.0, 86400.0, 1e7]),
        ({"model": "power", "alpha": 0.5, "tau": 1e-3}, [0.0, 1.0, 3e38]),
        ({"model": "power", "alpha": 0.5, "tau": 1e-300}, [0.0, 1e-45, 3e38]),
        ({"model": "power", "alpha": 0.5, "tau": 1e300}, [0.0, 3e38]),
    ],
)
def test_decay_at_the_ends_of_the_parameter_range(kw: dict, ages: list[float]) -> None:
    from tlalloc import kernels

    a = np.array(ages, np.float32)
    s = np.ones(len(ages), np.float32)
    got = kernels.decay(s, a, **kw)
    a64 = a.astype(np.float64)
    with np.errstate(all="ignore"):
        if kw.get("model") == "power":
            want = (1.0 + a64 / kw.get("tau", 86400.0)) ** (-kw["alpha"])
        elif "half_life" in kw:
            want = 2.0 ** (-a64 / kw["half_life"])
        else:
            want = np.exp(-a64 / kw["tau"])
    want = want.astype(np.float32)
    assert got[0] == 1.0  # age 0: the strength itself, whatever the parameters
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)


def test_decay_of_large_strengths_keeps_small_normal_results() -> None:
    from tlalloc import kernels

    s = np.array([1e30, 3e38, 1e20], np.float32)
    a = np.array([140.0, 150.0, 100.0], np.float32) * np.float32(86400.0)
    want = (s.astype(np.float64) * np.exp(-a.astype(np.float64) / 86400.0)).astype(np.float32)
    got = kernels.decay(s, a)
    assert (got > 0).all()  # the factor alone is subnormal or 0 in float32
    np.testing.assert_allclose(got, want, rtol=5e-5)
