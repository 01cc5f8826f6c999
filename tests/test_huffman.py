"""tlalloc.huffman: round trips, identical encodings, exact lock counts, bad input,
and a decoder that rejects damaged streams cleanly (hypothesis fuzzing)."""

from __future__ import annotations

import random
import struct
import threading
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import counts_during
from tlalloc import huffman
from tlalloc.huffman import ALLOCATORS, CorruptStreamError


def text(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    words = "the a lock thread pool arena of and memory Huffman block never takes".split()
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(words[: rng.randint(1, len(words))])
        out.append(w)
        size += len(w) + 1
    return (" ".join(out) + "\n").encode()[:n]


EDGE_INPUTS = {
    "one byte": b"x",
    "one symbol, one block": b"a" * 1024,
    "one symbol, many blocks": b"a" * 5000,
    "all 256 symbols": bytes(range(256)) * 3,
    "all 256 symbols, once": bytes(range(256)),
    "not a multiple of the block": text(3000),
    "one more than a block": text(1025),
    "one less than a block": text(1023),
    "random bytes": random.Random(5).randbytes(4099),
}


@pytest.mark.parametrize("allocator", ALLOCATORS)
@pytest.mark.parametrize("name", list(EDGE_INPUTS))
def test_round_trip_edge_inputs(allocator: str, name: str) -> None:
    data = EDGE_INPUTS[name]
    for block_size in (1024, 100, 1):
        if block_size == 1 and len(data) > 1100:
            continue
        res = huffman.encode(data, block_size=block_size, allocator=allocator)
        assert huffman.decode(res.data, allocator=allocator) == data
        s = res.stats
        assert s.num_blocks == -(-len(data) // block_size)
        assert s.input_bytes == len(data) and s.output_bytes == len(res.data)
        assert s.num_allocations == s.num_frees > 0
        assert s.allocator == allocator and s.block_size == block_size


def test_identical_encodings_across_allocators_and_threads() -> None:
    data = text(50_000, seed=3)
    streams = {
        (a, t): huffman.encode(data, allocator=a, threads=t).data for a in ALLOCATORS for t in (1, 2, 7, 20)
    }
    assert len(set(streams.values())) == 1
    assert len(next(iter(streams.values()))) < len(data)  # text does shrink


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=1, max_size=3000),
    block_size=st.integers(1, 2048),
    threads=st.integers(1, 8),
    allocator=st.sampled_from(ALLOCATORS),
)
def test_round_trip_random(data: bytes, block_size: int, threads: int, allocator: str) -> None:
    res = huffman.encode(data, block_size=block_size, threads=threads, allocator=allocator)
    assert huffman.decode(res.data, threads=threads, allocator=allocator) == data
    assert res.data == huffman.encode(data, block_size=block_size).data


# ---- lock counts ---------------------------------------------------------------


def test_lock_counts_exact_small_input() -> None:
    # "aaaabbc" in blocks of 4: "aaaa" has k=1 distinct symbol, "bbc" k=2. A block of
    # k symbols makes 2k+4 allocations (frequency table, queue, k leaves, k-1 inner
    # nodes, code table, stack, output buffer): 6 + 8 = 14, and 14 frees.
    data = b"aaaabbc"
    g = huffman.encode(data, block_size=4, threads=2, allocator="global-lock").stats
    assert (g.num_allocations, g.num_frees, g.heap_allocations) == (14, 14, 14)
    assert g.lock_acquisitions == 28  # one per allocation, one per free
    assert (g.num_blocks, g.num_threads, g.num_batches) == (2, 2, 1)

    p = huffman.encode(data, block_size=4, threads=2, allocator="pooled").stats
    assert (p.pool_allocations, p.heap_allocations) == (14, 0)
    assert p.lock_acquisitions == 4  # carve and return one pool per worker

    p1 = huffman.encode(data, block_size=4, threads=1, allocator="pooled").stats
    assert (p1.num_batches, p1.lock_acquisitions) == (2, 2)  # one pool, recycled

    # A 16-byte pool holds only the queue (8 or 16 bytes); the other 12 requests
    # fall back to the heap and take the lock to allocate and to free.
    tiny = huffman.encode(data, block_size=4, threads=2, allocator="pooled", pool_bytes=16)
    assert (tiny.stats.pool_allocations, tiny.stats.heap_allocations) == (2, 12)
    assert tiny.stats.lock_acquisitions == 12 + 12 + 4

    t = huffman.encode(data, block_size=4, threads=2, allocator="tlalloc").stats
    assert (t.lock_acquisitions, t.num_allocations, t.arena_resets) == (0, 14, 2)
    assert t.heap_bytes == 0


def test_pooled_takes_at_most_two_locks_per_block() -> None:
    data = text(200 * 1024, seed=1)
    g = huffman.encode(data, allocator="global-lock").stats
    p = huffman.encode(data, allocator="pooled").stats
    t = huffman.encode(data, allocator="tlalloc").stats
    assert g.num_blocks == p.num_blocks == 200
    assert g.lock_acquisitions == g.num_allocations + g.num_frees
    assert p.num_allocations == g.num_allocations
    assert p.locks_per_block <= 2
    assert p.lock_acquisitions <= 0.01 * g.lock_acquisitions
    assert t.lock_acquisitions == 0 and t.arena_resets == 200
    assert 0 < g.heap_peak_bytes <= g.heap_bytes == 2 << 20
    assert 0 < p.heap_peak_bytes <= p.heap_bytes
    assert 0 < g.ratio < 1 and g.seconds > 0


def test_concurrent_calls_from_python_threads() -> None:
    inputs = [text(30_000, seed=s) for s in range(6)]
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        enc = huffman.encode(inputs[i], allocator=ALLOCATORS[i % 3], threads=4).data
        results[i] = huffman.decode(enc, allocator=ALLOCATORS[(i + 1) % 3])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [results[i] for i in range(6)] == inputs


def test_encode_and_decode_release_the_gil() -> None:
    # With a long switch interval, the main thread can only run while the worker
    # thread is inside encode()/decode() if those calls release the GIL.
    import sys

    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        # Free-threaded CPython with the GIL off: there is no GIL to release, and
        # nothing makes the main thread run while the worker codes (it may not be
        # scheduled at all for those few milliseconds on a busy machine).
        pytest.skip("the GIL is disabled")
    data = text(1 << 20, seed=9)
    enc = huffman.encode(data, allocator="global-lock").data
    seen = counts_during([lambda: huffman.encode(data, allocator="global-lock"),
                          lambda: huffman.decode(enc)])
    assert len(seen) == 2 and seen[0] > 0 and seen[1] > 0


def test_accepts_bytes_like_objects() -> None:
    data = text(5000)
    ref = huffman.encode(data).data
    assert huffman.encode(bytearray(data)).data == ref
    assert huffman.encode(memoryview(data)).data == ref
    arr = np.frombuffer(data, dtype=np.uint8)
    assert huffman.encode(arr).data == ref
    assert (
        huffman.encode(arr.view(np.int32)[: len(data) // 4]).data
        == huffman.encode(data[: len(data) // 4 * 4]).data
    )
    assert huffman.decode(bytearray(ref)) == data
    assert huffman.encode(np.arange(10.0)[::2]).stats.input_bytes == 40  # non-contiguous


# ---- bad arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"block_size": 0}, ValueError, "block_size=0"),
        ({"block_size": -5}, ValueError, "block_size=-5"),
        ({"block_size": (1 << 24) + 1}, ValueError, "block_size=16777217"),
        ({"block_size": 1 << 40}, ValueError, "block_size="),
        ({"block_size": 10.0}, TypeError, "block_size must be an int"),
        ({"block_size": True}, TypeError, "block_size must be an int, not bool"),
        ({"threads": 0}, ValueError, "threads=0"),
        ({"threads": 1025}, ValueError, "threads=1025"),
        ({"threads": "4"}, TypeError, "threads must be an int"),
        ({"allocator": "malloc"}, ValueError, "allocator='malloc'"),
        ({"allocator": 1}, TypeError, "allocator must be a str"),
        ({"heap_bytes": 100}, ValueError, "heap_bytes=100"),
        ({"pool_bytes": 0}, ValueError, "pool_bytes=0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words.replace("(", r"\(")):
        huffman.encode(b"data", **kwargs)  # type: ignore[arg-type]


def test_empty_and_wrong_type_input() -> None:
    with pytest.raises(ValueError, match="data must not be empty"):
        huffman.encode(b"")
    with pytest.raises(TypeError, match="data must be a bytes-like object, not str"):
        huffman.encode("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="encoded must be a bytes-like object, not int"):
        huffman.decode(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="allocator='x'"):
        huffman.decode(b"TLHF", allocator="x")


def test_heap_too_small_is_a_memory_error() -> None:
    with pytest.raises(MemoryError, match="heap_bytes"):
        huffman.encode(text(8192), allocator="global-lock", heap_bytes=4096)
    with pytest.raises(MemoryError, match="pool"):
        huffman.encode(text(8192), allocator="pooled", heap_bytes=8192, pool_bytes=6000)


def test_thread_arena_too_small_is_a_memory_error(python_subprocess) -> None:
    code = (
        "from tlalloc import huffman\n"
        "try:\n"
        "    huffman.encode(b'abcdefgh' * 2048, allocator='tlalloc')\n"
        "except MemoryError as e:\n"
        "    print('MemoryError', e)\n"
    )
    r = python_subprocess(code, {"TLALLOC_ARENA_SIZE": "4KiB"})
    assert r.returncode == 0, r.stderr
    assert "MemoryError" in r.stdout and "TLALLOC_ARENA_SIZE" in r.stdout


def test_worker_arenas_are_released() -> None:
    from conftest import settled_live_arenas

    before = settled_live_arenas()
    huffman.encode(text(100_000), allocator="tlalloc", threads=8)
    assert settled_live_arenas() == before


# ---- damaged streams -------------------------------------------------------------


def _fix_header_crc(buf: bytearray) -> None:
    """Recompute the header CRC so that damage behind it gets checked too."""
    if len(buf) < 28:
        return
    (nb,) = struct.unpack_from("<I", buf, 20)
    if nb > (len(buf) - 28) // 8:
        return
    crc = zlib.crc32(bytes(buf[28 : 28 + 8 * nb]), zlib.crc32(bytes(buf[:24])))
    struct.pack_into("<I", buf, 24, crc)


def _decode_or_reject(stream: bytes, original: bytes | None, **kw: object) -> bool:
    """Decoding either returns exactly the original or raises CorruptStreamError."""
    try:
        out = huffman.decode(stream, **kw)  # type: ignore[arg-type]
    except CorruptStreamError as e:
        assert str(e)
        return False
    assert out == original
    return True


def test_header_crc_is_zlib_crc32() -> None:
    enc = bytearray(huffman.encode(text(3000), block_size=512).data)
    before = bytes(enc)
    _fix_header_crc(enc)
    assert bytes(enc) == before


def test_every_truncation_is_rejected() -> None:
    data = text(700)
    enc = huffman.encode(data, block_size=128).data
    for cut in range(len(enc)):
        assert not _decode_or_reject(enc[:cut], data, allocator=ALLOCATORS[cut % 3])
    assert _decode_or_reject(enc, data)


def test_trailing_bytes_and_specific_damage_are_rejected() -> None:
    data = text(2000)
    enc = huffman.encode(data, block_size=512).data
    with pytest.raises(CorruptStreamError, match="follow the last block"):
        bad = bytearray(enc + b"\0")
        _fix_header_crc(bad)
        huffman.decode(bytes(bad))
    with pytest.raises(CorruptStreamError, match="magic"):
        huffman.decode(b"XXXX" + enc[4:])
    with pytest.raises(CorruptStreamError, match="version"):
        huffman.decode(enc[:4] + b"\x02" + enc[5:])
    with pytest.raises(CorruptStreamError, match="CRC-32"):
        huffman.decode(enc[:12] + bytes([enc[12] ^ 1]) + enc[13:])
    payload = bytearray(enc)
    payload[-3] ^= 0x10  # inside the last block's codes
    with pytest.raises(CorruptStreamError):
        huffman.decode(bytes(payload))
    with pytest.raises(CorruptStreamError, match="truncated"):
        huffman.decode(b"")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=1, max_size=1500),
    block_size=st.sampled_from([16, 100, 256, 1024]),
    edits=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=4),
    fix_crc=st.booleans(),
    extra=st.binary(max_size=8),
    allocator=st.sampled_from(ALLOCATORS),
)
def test_fuzz_damaged_streams(
    data: bytes,
    block_size: int,
    edits: list[tuple[int, int]],
    fix_crc: bool,
    extra: bytes,
    allocator: str,
) -> None:
    enc = bytearray(huffman.encode(data, block_size=block_size).data)
    for pos, value in edits:
        enc[pos % len(enc)] = value
    enc += extra
    if fix_crc:
        _fix_header_crc(enc)
    _decode_or_reject(bytes(enc), data, allocator=allocator, threads=3)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_fuzz_random_streams(junk: bytes, plausible: bool) -> None:
    buf = bytearray(junk)
    if plausible and len(buf) >= 8:
        buf[:8] = b"TLHF\x01\x00\x00\x00"
        _fix_header_crc(buf)
    try:
        out = huffman.decode(bytes(buf))
    except CorruptStreamError:
        return
    # Only a genuine stream decodes; then re-encoding must reproduce it exactly.
    (bs,) = struct.unpack_from("<I", buf, 8)
    assert huffman.encode(out, block_size=bs).data == bytes(buf)
