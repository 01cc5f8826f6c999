"""tlalloc: thread-local memory arenas for concurrent NumPy kernels.

Every thread gets its own arena: allocation is a pointer bump that never takes
a lock, and a scope releases everything allocated inside it at once.

Example:
    >>> import numpy as np, tlalloc
    >>> with tlalloc.scratch() as arena:
    ...     buf = arena.empty((4, 3), np.float32)
    ...     buf[:] = 1.0
    ...     total = float(buf.sum())
    ...     del buf
    >>> total
    12.0
"""

from __future__ import annotations

import os

from tlalloc import _config, _tlalloc, huffman, kernels, metrics, numpy_alloc, pool
from tlalloc._config import Config, configure, get_config, parse_size
from tlalloc._stats import ArenaStats, GlobalStats, ThreadStats, stats
from tlalloc.advise import Advice, Recommendation, advise
from tlalloc.pool import pool_stats, preload_path
from tlalloc.summary import summary

__version__ = "0.1.0"

ArenaOverflowError = _tlalloc.ArenaOverflowError
ArenaFallbackWarning = _tlalloc.ArenaFallbackWarning


class Arena(_tlalloc.Arena):
    """A bump arena owned by the thread that creates it.

    ``Arena(capacity=None, *, overflow=None, zero_on_reset=None)``: ``capacity`` in
    bytes (int) or a string with a unit (``"4MiB"``); ``overflow`` is ``"error"``
    (raise :class:`ArenaOverflowError`), ``"fallback"`` (serve from the heap, warn
    once, free at the releasing reset) or ``"panic"`` (print a diagnostic and abort);
    ``None`` takes the configured default (see :func:`configure`).

    Methods: ``empty(shape, dtype=float, order="C")``, ``zeros``, ``empty_like``,
    ``alloc(nbytes, align=64)`` (writable memoryview), ``scope()`` (context manager
    that releases on exit), ``reset(*, force=False)``, ``stats()``.

    Memory is never released while an array from it is referenced: a scope exit or
    ``reset()`` that meets one raises ``BufferError`` naming the arrays, and the
    memory goes with them (the arena continues in a fresh chunk; the chunk comes
    back when the last of them dies, in whichever thread). ``reset(force=True)``
    hands live arrays their memory the same way instead of raising. Using an arena
    from a thread other than its owner raises ``RuntimeError``.

    Example:
        >>> import numpy as np
        >>> arena = Arena("1MiB")
        >>> with arena.scope():
        ...     x = arena.zeros((2, 2), np.int32)
        ...     int(x.sum()), x.ctypes.data % 64
        ...     del x
        (0, 0)
        >>> arena.used
        0
    """

    __slots__ = ()

    def stats(self) -> ArenaStats:
        """This arena's statistics (any thread may read them).

        Example:
            >>> a = Arena("64KiB")
            >>> _ = a.alloc(100)
            >>> a.stats().num_allocations
            1
        """
        return ArenaStats(self._stats_dict())

    def __repr__(self) -> str:
        kind = "thread arena" if self.is_thread_arena else "arena"
        return (
            f"<tlalloc.Arena ({kind}) capacity={self.capacity} used={self.used} "
            f"overflow={self.overflow!r} scopes={self.depth}>"
        )


_tlalloc._set_hooks(Arena)
_config.load()
if hasattr(os, "register_at_fork"):
    # In a forked child only the forking thread exists: drop the arena objects
    # of the parent's other threads, as their exits would have (docs/threads.md).
    os.register_at_fork(after_in_child=_tlalloc._after_fork_child)


# Both are C functions (no Python frame on the hot path); see their docstrings.
thread_arena = _tlalloc.thread_arena
scratch = _tlalloc.scratch


__all__ = [
    "Advice",
    "Arena",
    "ArenaFallbackWarning",
    "ArenaOverflowError",
    "ArenaStats",
    "Config",
    "GlobalStats",
    "Recommendation",
    "ThreadStats",
    "advise",
    "configure",
    "get_config",
    "huffman",
    "kernels",
    "metrics",
    "numpy_alloc",
    "pool",
    "pool_stats",
    "parse_size",
    "preload_path",
    "scratch",
    "stats",
    "summary",
    "thread_arena",
]
