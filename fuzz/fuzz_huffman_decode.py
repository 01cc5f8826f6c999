"""Fuzz target: tlalloc.huffman.decode on arbitrary bytes.

A stream is either decoded (and then re-encoding the output and decoding that
gives the output back) or rejected with CorruptStreamError; anything else (a
crash, a sanitizer report, another exception) is a finding. Half of the inputs
are first patched into plausible streams (valid magic, version and header
CRC), so that the fuzzer gets past the header checks into the block decoder.

Run through fuzz/run.py (which sets up the sanitized build), or alone:
    python fuzz/fuzz_huffman_decode.py CORPUS_DIR -max_total_time=60
"""

from __future__ import annotations

import struct
import sys
import zlib

import atheris

with atheris.instrument_imports():
    from tlalloc import huffman
    from tlalloc.huffman import CorruptStreamError


def plausible(data: bytes) -> bytes:
    """Give data a valid magic, version and header/index CRC (the rest as is)."""
    if len(data) < 28:
        return data
    b = bytearray(data)
    b[0:8] = b"TLHF\x01\x00\x00\x00"
    nb = struct.unpack_from("<I", b, 20)[0]
    index = bytes(b[28: 28 + 8 * nb]) if nb <= (len(b) - 28) // 8 else b""
    struct.pack_into("<I", b, 24, zlib.crc32(bytes(b[:24]) + index) & 0xFFFFFFFF)
    return bytes(b)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    mode, data = data[0], data[1:]
    if mode & 1:
        data = plausible(data)
    threads = 1 + (mode >> 1) % 4
    allocator = huffman.ALLOCATORS[(mode >> 3) % 3]
    try:
        out = huffman.decode(data, threads=threads, allocator=allocator)
    except CorruptStreamError:
        return
    again = huffman.encode(out, block_size=1 + len(out) % 2048, threads=threads).data
    if huffman.decode(again, threads=threads) != out:
        raise AssertionError("re-encoding a decoded stream did not round-trip")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
