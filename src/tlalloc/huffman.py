"""Block-parallel Huffman coding: per-thread memory against a global-lock heap.

The input is cut into blocks (1024 bytes by default); worker threads (20 by
default) code them in batches, one block at a time each, with a canonical
Huffman code per block. Every tree node is one small allocation, and the
allocator they come from is chosen per call:

``"global-lock"``
    one fixed heap (2 MiB by default) with a first-fit free list behind one
    mutex; every allocation and every free takes the lock.
``"pooled"``
    each worker carves a pool (32 KiB by default) from that heap once, bumps in
    it without a lock and falls back to the locked heap when it is full; pools
    are recycled between batches.
``"tlalloc"``
    the worker's tlalloc thread arena, reset after each block; no lock on the
    allocation path.

All three produce byte-for-byte the same stream. The work runs in C with the
GIL released.

Example:
    >>> from tlalloc import huffman
    >>> data = b"the lock you never take is the fastest lock. " * 100
    >>> result = huffman.encode(data, allocator="pooled")
    >>> huffman.decode(result.data) == data
    True
    >>> result.stats.num_blocks, result.stats.lock_acquisitions
    (5, 10)
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import NamedTuple

from tlalloc import _tlalloc

__all__ = [
    "ALLOCATORS",
    "CorruptStreamError",
    "EncodeResult",
    "HuffmanStats",
    "MAX_BLOCK_SIZE",
    "MAX_THREADS",
    "decode",
    "encode",
]

#: The allocators, in the order the benchmark runs them (the first is the baseline).
ALLOCATORS: tuple[str, ...] = ("global-lock", "pooled", "tlalloc")
#: Largest block size (16 MiB); larger blocks are rejected.
MAX_BLOCK_SIZE = 1 << 24
#: Largest number of worker threads.
MAX_THREADS = 1024
_MAX_HEAP_BYTES = 1 << 36

#: Raised by :func:`decode` for a malformed, truncated or damaged stream
#: (a subclass of ``ValueError``).
CorruptStreamError: type[ValueError] = _tlalloc.HuffmanCorruptStreamError


@dataclass(frozen=True)
class HuffmanStats:
    """What one :func:`encode` call did.

    Lock counts are exact: the heap's mutex counts its acquisitions while it
    holds itself. ``lock_contended`` counts the acquisitions that found the
    mutex held by another thread. For ``"tlalloc"`` the allocator takes no
    lock and has no heap (``heap_bytes == 0``); creating a worker's thread
    arena, once per worker, is not part of the allocation path.

    Example:
        >>> from tlalloc import huffman
        >>> s = huffman.encode(b"abracadabra" * 200, allocator="global-lock").stats
        >>> s.lock_acquisitions == s.num_allocations + s.num_frees
        True
    """

    allocator: str
    block_size: int
    input_bytes: int
    output_bytes: int
    num_blocks: int
    num_batches: int
    num_threads: int  #: worker threads started (at most one per block)
    lock_acquisitions: int
    lock_contended: int
    num_allocations: int
    num_frees: int
    heap_allocations: int  #: allocations served by the locked heap (pool carving excluded)
    pool_allocations: int  #: allocations served by a worker's pool (pooled)
    arena_resets: int  #: thread-arena resets (tlalloc: one per block)
    heap_bytes: int  #: capacity of the locked heap (0 for tlalloc)
    heap_peak_bytes: int  #: high-water mark of the heap, pools included
    elapsed_ns: int  #: wall time of the C call

    @property
    def seconds(self) -> float:
        """Wall time of the call in seconds.

        Example:
            >>> from tlalloc import huffman
            >>> huffman.encode(b"xyz" * 10).stats.seconds > 0
            True
        """
        return self.elapsed_ns / 1e9

    @property
    def locks_per_block(self) -> float:
        """Lock acquisitions per block.

        Example:
            >>> from tlalloc import huffman
            >>> huffman.encode(b"xyz" * 10, allocator="tlalloc").stats.locks_per_block
            0.0
        """
        return self.lock_acquisitions / self.num_blocks if self.num_blocks else 0.0

    @property
    def ratio(self) -> float:
        """Encoded size over input size (below 1 means the data shrank).

        Example:
            >>> from tlalloc import huffman
            >>> huffman.encode(b"a" * 4096).stats.ratio < 0.2
            True
        """
        return self.output_bytes / self.input_bytes if self.input_bytes else 0.0


class EncodeResult(NamedTuple):
    """The encoded stream and the statistics of the call; unpacks as ``data, stats``.

    Example:
        >>> from tlalloc import huffman
        >>> data, stats = huffman.encode(b"hello, world")
        >>> data[:4], stats.num_blocks
        (b'TLHF', 1)
    """

    data: bytes
    stats: HuffmanStats


def _int_arg(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name}={v!r} is out of range ({lo} .. {hi})")
    return v


def _common_args(
    threads: object, allocator: object, heap_bytes: object, pool_bytes: object
) -> tuple[int, str, int, int]:
    t = _int_arg("threads", threads, 1, MAX_THREADS)
    if not isinstance(allocator, str):
        raise TypeError(f"allocator must be a str, not {type(allocator).__name__}")
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator={allocator!r} is not one of {', '.join(ALLOCATORS)}")
    h = 0 if heap_bytes is None else _int_arg("heap_bytes", heap_bytes, 4096, _MAX_HEAP_BYTES)
    p = 0 if pool_bytes is None else _int_arg("pool_bytes", pool_bytes, 1, _MAX_HEAP_BYTES)
    return t, allocator, h, p


def _as_buffer(name: str, data: object) -> memoryview:
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, not {type(data).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def encode(
    data: bytes | bytearray | memoryview,
    *,
    block_size: int = 1024,
    threads: int = 20,
    allocator: str = "tlalloc",
    heap_bytes: int | None = None,
    pool_bytes: int | None = None,
) -> EncodeResult:
    """Huffman-code ``data`` block by block on ``threads`` worker threads.

    ``data``: any bytes-like object (its raw bytes are coded; do not modify it
    during the call). ``block_size``: bytes per block, 1 .. 16 MiB.
    ``threads``: worker threads, which is also the batch size, 1 .. 1024.
    ``allocator``: ``"global-lock"``, ``"pooled"`` or ``"tlalloc"``.
    ``heap_bytes``: size of the locked heap (global-lock and pooled; default
    2 MiB, more when the block size and threads need it). ``pool_bytes``: each
    worker's pool (pooled; default 32 KiB).

    Returns an :class:`EncodeResult` ``(data, stats)``; the encoded bytes do
    not depend on ``threads`` or ``allocator``. Raises ``ValueError`` for empty
    input or an argument out of range, ``TypeError`` for a wrong type, and
    ``MemoryError`` when the heap or a thread arena is too small for a block.

    Example:
        >>> from tlalloc import huffman
        >>> a = huffman.encode(b"mississippi" * 300, block_size=512, allocator="global-lock")
        >>> b = huffman.encode(b"mississippi" * 300, block_size=512, threads=3)
        >>> a.data == b.data, a.stats.num_blocks, b.stats.lock_acquisitions
        (True, 7, 0)
    """
    view = _as_buffer("data", data)
    if view.nbytes == 0:
        raise ValueError("data must not be empty (got 0 bytes)")
    bs = _int_arg("block_size", block_size, 1, MAX_BLOCK_SIZE)
    t, alloc, h, p = _common_args(threads, allocator, heap_bytes, pool_bytes)
    encoded, raw = _tlalloc.huffman_encode(view, bs, t, alloc, h, p)
    return EncodeResult(encoded, HuffmanStats(allocator=alloc, block_size=bs, **raw))


def decode(
    encoded: bytes | bytearray | memoryview,
    *,
    threads: int = 20,
    allocator: str = "tlalloc",
    heap_bytes: int | None = None,
    pool_bytes: int | None = None,
) -> bytes:
    """Decode a stream made by :func:`encode` (blocks decoded in parallel).

    Every length and offset is checked before it is read and each block's
    CRC-32 is verified, so a damaged or truncated stream raises
    :class:`CorruptStreamError` (a ``ValueError``) and never reads outside the
    buffer. ``threads``, ``allocator``, ``heap_bytes`` and ``pool_bytes`` mean
    what they mean for :func:`encode`.

    Example:
        >>> from tlalloc import huffman
        >>> stream = huffman.encode(b"abc" * 1000).data
        >>> huffman.decode(stream, threads=2) == b"abc" * 1000
        True
        >>> huffman.decode(stream[:-1])
        Traceback (most recent call last):
        ...
        tlalloc.huffman.CorruptStreamError: truncated stream: block 2 ends past the end of the stream
    """
    view = _as_buffer("encoded", encoded)
    t, alloc, h, p = _common_args(threads, allocator, heap_bytes, pool_bytes)
    return _tlalloc.huffman_decode(view, t, alloc, h, p)
