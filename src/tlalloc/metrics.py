"""Prometheus metrics for tlalloc (needs the optional extra: ``pip install "tlalloc[prometheus]"``).

``Collector`` reads the statistics at every scrape; nothing is counted twice and
nothing runs between scrapes. Importing this module does not import
``prometheus_client``; creating a collector or a server does, and raises
``ImportError`` naming the extra when it is missing.

Metrics (``_bytes`` are gauges, ``_total`` counters, ``_ratio`` gauges in [0, 1]):

| metric | type | labels | from |
|---|---|---|---|
| ``tlalloc_arena_capacity_bytes`` | gauge | | live thread arenas: ``capacity_bytes`` |
| ``tlalloc_arena_used_bytes`` | gauge | | ``used_bytes`` |
| ``tlalloc_arena_peak_bytes`` | gauge | | ``peak_bytes`` |
| ``tlalloc_arena_fallback_live_bytes`` | gauge | | ``fallback_live_bytes`` |
| ``tlalloc_arena_allocations_total`` | counter | | ``num_allocations`` (live and released arenas) |
| ``tlalloc_arena_overflows_total`` | counter | | ``num_overflows`` |
| ``tlalloc_arena_fallback_bytes_total`` | counter | | ``fallback_bytes`` |
| ``tlalloc_arena_resets_total`` | counter | | ``num_resets`` |
| ``tlalloc_arena_utilization_ratio`` | gauge | | ``utilization`` |
| ``tlalloc_arena_max_peak_bytes`` | gauge | | ``max_peak_bytes``, when the statistics carry it |
| ``tlalloc_arenas`` | gauge | | ``num_arenas`` (live thread arenas) |
| ``tlalloc_threads_total`` | counter | | ``num_threads`` (thread arenas ever created) |
| ``tlalloc_thread_arena_*`` | as above | ``thread``, ``thread_id`` | one series per live thread arena |
| ``tlalloc_thread_arena_info`` | gauge (1) | + placement labels (below) | where the memory is |
| ``tlalloc_pool_*`` | gauges / counters | | ``tlalloc.pool.pool_stats()``, when the pool is built |

The placement labels are ``page_kind``, ``page_kind_requested``, ``numa_policy`` and
``numa_node``, as in ``tlalloc.stats(per_thread=True)``.

The process-wide family and the per-thread family are separate on purpose: the
process-wide counters include arenas already released, so summing the per-thread
series would not give them. The overflow rate is
``rate(tlalloc_arena_overflows_total[5m]) / rate(tlalloc_arena_allocations_total[5m])``.

Example:
    >>> from tlalloc.metrics import Collector
    >>> names = [m.name for m in Collector().collect()]
    >>> "tlalloc_arena_used_bytes" in names, "tlalloc_arena_allocations" in names
    (True, True)
"""

from __future__ import annotations

import importlib
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

EXTRA_HINT = 'tlalloc metrics need prometheus_client: pip install "tlalloc[prometheus]"'

# statistics field -> (metric suffix, type, help). Counter suffixes omit "_total":
# prometheus_client's CounterMetricFamily adds it.
ARENA_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("capacity_bytes", "capacity_bytes", "gauge", "Size of the arena regions"),
    ("used_bytes", "used_bytes", "gauge", "Bytes currently handed out"),
    ("peak_bytes", "peak_bytes", "gauge", "High-water mark of used bytes"),
    ("fallback_live_bytes", "fallback_live_bytes", "gauge",
     "Bytes served from the heap under the fallback policy and not yet released"),
    ("num_allocations", "allocations", "counter", "Allocations served"),
    ("num_overflows", "overflows", "counter", "Requests that did not fit in the arena"),
    ("fallback_bytes", "fallback_bytes", "counter", "Bytes served from the heap under the fallback policy"),
    ("num_resets", "resets", "counter", "Resets and scope releases"),
    ("utilization", "utilization_ratio", "gauge", "peak_bytes / capacity_bytes"),
)
# Pool figures that are levels rather than event counts.
_POOL_GAUGES = {"num_segments", "num_heaps"}
THREAD_LABELS = ("thread", "thread_id")
INFO_LABELS = ("page_kind", "page_kind_requested", "numa_policy", "numa_node")


def require_prometheus_client() -> Any:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc


def _pool_stats() -> Callable[[], Mapping[str, Any]] | None:
    """``tlalloc.pool.pool_stats`` when the pool is part of this build, else None."""
    try:
        from tlalloc.pool import pool_stats  # type: ignore[attr-defined]
    except ImportError:
        return None
    return pool_stats  # type: ignore[no-any-return]


class Collector:
    """A ``prometheus_client`` collector for the arena (and pool) statistics.

    ``per_thread=False`` leaves out the ``tlalloc_thread_arena_*`` series (for
    services that create many short-lived threads). Each scrape is also a sample
    for :func:`tlalloc.advise.advise`'s reset-rate windows.

    Example:
        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> reg = CollectorRegistry()
        >>> _ = register(reg)
        >>> b"tlalloc_arena_resets_total" in generate_latest(reg)
        True
    """

    def __init__(self, per_thread: bool = True) -> None:
        if not isinstance(per_thread, bool):
            raise TypeError(f"per_thread must be a bool, got {per_thread!r}")
        pc = require_prometheus_client()
        self._core = importlib.import_module("prometheus_client.core")
        self._pc = pc
        self.per_thread = per_thread

    def describe(self) -> list[Any]:
        """The metric families without samples (for duplicate checks at registration)."""
        return list(self._families(None, [] if self.per_thread else None, None))

    def collect(self) -> Iterator[Any]:
        """Read the statistics now and yield the metric families."""
        from tlalloc._stats import stats
        from tlalloc.advise import TRACKER

        overall = stats().to_dict()
        threads = [t.to_dict() for t in stats(per_thread=True)] if self.per_thread else None
        TRACKER.observe(overall, threads)
        pool_fn = _pool_stats()
        pool = dict(pool_fn()) if pool_fn is not None else None
        yield from self._families(overall, threads, pool)

    def _families(
        self,
        overall: Mapping[str, Any] | None,
        threads: list[dict[str, Any]] | None,
        pool: Mapping[str, Any] | None,
    ) -> Iterator[Any]:
        core = self._core

        def family(kind: str, name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
            cls = core.CounterMetricFamily if kind == "counter" else core.GaugeMetricFamily
            return cls(name, doc, labels=list(labels))

        for key, suffix, kind, doc in ARENA_FIELDS:
            f = family(kind, f"tlalloc_arena_{suffix}", f"{doc} (all thread arenas)")
            if overall is not None:
                f.add_metric([], float(overall[key]))
            yield f
        if overall is not None and "max_peak_bytes" in overall:  # when the core reports it
            f = family("gauge", "tlalloc_arena_max_peak_bytes",
                       "Largest peak of any thread arena, live or released")
            f.add_metric([], float(overall["max_peak_bytes"]))
            yield f
        f = family("gauge", "tlalloc_arenas", "Live thread arenas")
        if overall is not None:
            f.add_metric([], float(overall["num_arenas"]))
        yield f
        f = family("counter", "tlalloc_threads", "Thread arenas ever created")
        if overall is not None:
            f.add_metric([], float(overall["num_threads"]))
        yield f

        if threads is not None:
            for key, suffix, kind, doc in ARENA_FIELDS:
                f = family(kind, f"tlalloc_thread_arena_{suffix}", f"{doc} (per thread arena)",
                           THREAD_LABELS)
                for t in threads:
                    f.add_metric(_thread_labels(t), float(t[key]))
                yield f
            info = family("gauge", "tlalloc_thread_arena_info",
                          "Placement of each thread arena's memory (value 1)", THREAD_LABELS + INFO_LABELS)
            for t in threads:
                info.add_metric(_thread_labels(t) + [str(t.get(k, "")) for k in INFO_LABELS], 1.0)
            yield info

        if pool is not None:
            yield from _pool_families(pool, family)


def _thread_labels(t: Mapping[str, Any]) -> list[str]:
    return [str(t.get("thread_name", "")), str(t.get("thread_id", ""))]


def pool_metric(key: str) -> tuple[str, str] | None:
    """The metric name and type for one ``pool_stats()`` field, or None to skip it.

    Example:
        >>> pool_metric("in_use_bytes"), pool_metric("num_frees"), pool_metric("num_heaps")
        (('tlalloc_pool_in_use_bytes', 'gauge'), ('tlalloc_pool_frees_total', 'counter'), \
('tlalloc_pool_heaps', 'gauge'))
    """
    if key.endswith("_bytes") or key.endswith("_ratio") or key in ("utilization", "hit_rate"):
        return f"tlalloc_pool_{key}", "gauge"
    if key in _POOL_GAUGES:
        return f"tlalloc_pool_{key[4:]}", "gauge"
    if key.startswith("num_"):
        return f"tlalloc_pool_{key[4:]}_total", "counter"
    return None


def _pool_families(pool: Mapping[str, Any], family: Callable[..., Any]) -> Iterator[Any]:
    for key, value in pool.items():
        m = pool_metric(key)
        if m is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name, kind = m
        if kind == "counter":
            name = name[: -len("_total")]
        f = family(kind, name, f"Pool statistic {key}")
        f.add_metric([], float(value))
        yield f


_registered: weakref.WeakKeyDictionary[Any, Collector] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def register(registry: Any = None, *, per_thread: bool = True) -> Collector:
    """Register a :class:`Collector` (once per registry) and return it.

    ``registry`` defaults to ``prometheus_client.REGISTRY``, the one that
    ``prometheus_client``'s own servers and ``generate_latest()`` use.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> reg = CollectorRegistry()
        >>> register(reg) is register(reg)
        True
    """
    if not isinstance(per_thread, bool):
        raise TypeError(f"per_thread must be a bool, got {per_thread!r}")
    pc = require_prometheus_client()
    reg = pc.REGISTRY if registry is None else registry
    if not hasattr(reg, "register"):
        raise TypeError(f"registry must be a prometheus_client CollectorRegistry, got {registry!r}")
    with _registered_lock:  # two threads registering at once register one collector
        c = _registered.get(reg)
        if c is None:
            c = Collector(per_thread=per_thread)
            reg.register(c)
            _registered[reg] = c
        elif c.per_thread != per_thread:
            raise ValueError(f"a tlalloc collector with per_thread={c.per_thread!r} is already "
                             f"registered in {reg!r}; got per_thread={per_thread!r}")
    return c


def start_http_server(port: int, addr: str = "127.0.0.1", *, registry: Any = None) -> tuple[Any, Any]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; return ``(server, thread)``.

    The tlalloc collector is registered in ``registry`` (default
    ``prometheus_client.REGISTRY``, so the application's own metrics are served too).
    ``port=0`` picks a free port: read it from ``server.server_port``. The default
    address is loopback; pass ``addr="0.0.0.0"`` to expose it. Stop it with
    ``server.shutdown()``.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> import urllib.request
        >>> server, thread = start_http_server(0, registry=CollectorRegistry())
        >>> url = f"http://127.0.0.1:{server.server_port}/metrics"
        >>> b"tlalloc_arenas " in urllib.request.urlopen(url, timeout=10).read()
        True
        >>> server.shutdown(); server.server_close()
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port!r}")
    if not isinstance(addr, str) or not addr:
        raise TypeError(f"addr must be a host name or address string, got {addr!r}")
    pc = require_prometheus_client()
    reg = pc.REGISTRY if registry is None else registry
    register(reg)
    result = pc.start_http_server(port, addr=addr, registry=reg)
    return tuple(result)  # type: ignore[return-value]


__all__ = ["Collector", "pool_metric", "register", "start_http_server"]
