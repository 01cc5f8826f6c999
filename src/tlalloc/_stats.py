"""Statistics objects: readable ``repr``, attribute access, conversion to dict."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tlalloc import _tlalloc

# Field names follow docs/naming.md (bytes end in _bytes, counts start with num_, peaks with
# peak_); tests/test_naming.py checks every key of every statistics dict against it.
COUNTER_FIELDS = (
    "capacity_bytes",
    "used_bytes",
    "peak_bytes",
    "num_allocations",
    "num_overflows",
    "fallback_bytes",
    "fallback_live_bytes",
    "num_resets",
)


class Stats(Mapping[str, Any]):
    """Arena statistics, read-only; behaves as a mapping (``dict(stats)`` works).

    Derived fields: ``utilization`` (``peak_bytes / capacity_bytes``) and
    ``overflow_rate`` (``num_overflows / num_allocations``).

    Example:
        >>> import tlalloc
        >>> s = tlalloc.Arena("64KiB").stats()
        >>> s.capacity_bytes, s.used_bytes, s["utilization"]
        (65536, 0, 0.0)
    """

    __slots__ = ("_d",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        d = dict(values)
        cap = d.get("capacity_bytes", 0)
        n = d.get("num_allocations", 0)
        d["utilization"] = d.get("peak_bytes", 0) / cap if cap else 0.0
        d["overflow_rate"] = d.get("num_overflows", 0) / n if n else 0.0
        object.__setattr__(self, "_d", d)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("statistics are read-only")

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._d))

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy.

        Example:
            >>> import tlalloc
            >>> "peak_bytes" in tlalloc.Arena("64KiB").stats().to_dict()
            True
        """
        return dict(self._d)

    def __repr__(self) -> str:
        parts = []
        for k, v in self._d.items():
            parts.append(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


class ArenaStats(Stats):
    """Statistics of one arena (``Arena.stats()``)."""

    __slots__ = ()


class GlobalStats(Stats):
    """Sums over every thread arena, live or released (``tlalloc.stats()``), plus
    ``num_arenas`` (live) and ``num_threads`` (ever created)."""

    __slots__ = ()


class ThreadStats(Stats):
    """One thread arena's statistics with ``thread_name``, ``thread_id`` (the OS
    thread id, as ``threading.get_native_id()``) and ``thread_alive``."""

    __slots__ = ()


def stats(per_thread: bool = False) -> GlobalStats | list[ThreadStats]:
    """Statistics summed over every thread arena, or one entry per live thread arena.

    ``per_thread=True`` returns a list of :class:`ThreadStats`, one per thread arena
    that is still alive (an arena outlives its thread while arrays from it exist).
    Reading never blocks a thread that is allocating.

    Example:
        >>> import tlalloc
        >>> with tlalloc.scratch() as a:
        ...     n = a.empty(10).size  # the array itself is gone when the scope ends
        >>> tlalloc.stats().num_allocations >= 1
        True
        >>> any(t.thread_name == "MainThread" for t in tlalloc.stats(per_thread=True))
        True
    """
    if not isinstance(per_thread, bool):
        raise TypeError(f"per_thread must be a bool, got {per_thread!r}")
    if per_thread:
        return [ThreadStats(d) for d in _tlalloc._registry_list()]
    return GlobalStats(_tlalloc._registry_stats())
