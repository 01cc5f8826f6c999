"""Dask workers on tlalloc: a worker plugin, and cluster-wide statistics and advice.

Needs the optional extra: ``pip install "tlalloc[dask]"`` (Dask's ``distributed``
and ``prometheus_client``), on the client and on every worker. Everything goes
through Dask's own extension points: the settings travel as a ``WorkerPlugin``
(the scheduler keeps it and hands it to every worker that joins or restarts), and
the statistics come back through ``Client.run``.

Running on Dask takes three lines::

    import tlalloc.dask
    client.register_plugin(tlalloc.dask.TlallocPlugin(arena_size="4MiB", numpy_allocator=True))
    print(tlalloc.dask.summary(client))   # after some work: every worker's arenas and advice

What the plugin does on each worker (:class:`TlallocPlugin`):

- applies the arena settings, as ``tlalloc.configure(...)`` would (so arenas that task
  threads create from then on get them; register the plugin before running work, or
  restart the workers, since thread arenas already made keep their size);
- with ``numpy_allocator=True``, makes NumPy allocate array data from the tlalloc pool
  in every task (see :mod:`tlalloc.numpy_alloc`);
- with ``metrics=True`` (the default), adds the ``tlalloc_*`` series of
  :mod:`tlalloc.metrics` to the ``/metrics`` endpoint that each worker's HTTP server
  (the one that serves its dashboard) already has.

Example (statistics gathered by hand, as :func:`stats` gathers them from workers):
    >>> rows = {"tcp://10.0.0.1:4000": {"name": "w0", "overall": {
    ...     "capacity_bytes": 4 << 20, "peak_bytes": 3 << 20, "used_bytes": 0,
    ...     "num_allocations": 500, "num_overflows": 0, "num_resets": 500,
    ...     "num_arenas": 2, "num_threads": 2}}}
    >>> cs = ClusterStats.from_reports(rows, {"tcp://10.0.0.2:4000": "no answer within 10s"})
    >>> cs.totals.num_allocations, sorted(cs.missing)
    (500, ['tcp://10.0.0.2:4000'])
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import tlalloc
from tlalloc import _config, numpy_alloc
from tlalloc._report import ARENA_HEAD, RULE, THIN, WIDTH, arena_row, format_table, indent, thread_table
from tlalloc._stats import GlobalStats, ThreadStats
from tlalloc.advise import TRACKER, Advice, fit_size, format_size, live_figures
from tlalloc.advise import advise as _advise

EXTRA_HINT = 'tlalloc.dask needs Dask: pip install "tlalloc[dask]"'

try:
    from distributed import WorkerPlugin
    from distributed.core import Status
except ImportError as exc:  # pragma: no cover - the tests skip without Dask
    raise ImportError(EXTRA_HINT) from exc

# A worker that is shutting down removes its plugins; nothing is restored then.
_CLOSING = frozenset(getattr(Status, n) for n in ("closing", "closing_gracefully", "closed", "failed")
                     if hasattr(Status, n))

PLUGIN_NAME = "tlalloc"

# Dask's statistical profiler (``distributed.worker.profile``) samples other threads'
# stacks every 10 ms: ``sys._current_frames()``, then ``f_back`` up each stack. On a
# free-threaded CPython that walk races with the sampled thread popping its frames, and
# the process crashes (CPython 3.13t: a worker's core showed a segfault in
# ``PyFrame_GetBack``; the process that runs the scheduler crashed too, its C stack not
# kept). ``distributed`` already skips the profiler on
# 3.11. Pass this to ``dask.config.set`` (or set the environment variable below, which
# ``dask worker`` processes read) before starting a cluster on a free-threaded build.
PROFILER_OFF: dict[str, Any] = {"distributed.worker.profile.enabled": False}
PROFILER_OFF_ENV = {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
DEFAULT_TIMEOUT = 10.0  # seconds a worker has to answer stats()/advise()/summary()

# Worker address -> what the plugin applied there (read by stats()). Several workers may
# share one process (LocalCluster(processes=False)); the arena settings are per process.
_APPLIED: dict[str, dict[str, Any]] = {}
_RESTORE_NAME = "tlalloc-default-numpy-allocator"


def profiler_is_unsafe() -> bool:
    """Whether Dask's statistical profiler can crash this interpreter (see PROFILER_OFF).

    True on a free-threaded CPython build, where the profiler's walk of another
    thread's frames races with that thread.

    Example:
        >>> import dask, tlalloc.dask
        >>> cfg = tlalloc.dask.PROFILER_OFF if tlalloc.dask.profiler_is_unsafe() else {}
        >>> with dask.config.set(cfg):
        ...     pass  # start the LocalCluster here
    """
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


class TlallocPlugin(WorkerPlugin):  # type: ignore[misc]
    """A Dask worker plugin that puts every worker's tasks on tlalloc.

    ``TlallocPlugin(arena_size=None, arena_overflow=None, numpy_allocator=False,
    metrics=True, *, zero_on_reset=None, huge_pages=None, numa=None, prefault=None)``

    The arena settings take the values ``tlalloc.configure()`` takes; ``None`` leaves a
    setting as the worker has it (its ``TLALLOC_*`` environment, or the default). They
    are checked here, with the errors ``tlalloc.configure()`` raises, so a bad value
    fails at ``TlallocPlugin(...)``, before anything reaches the cluster; each worker
    checks them again when it applies them.

    Register it with ``client.register_plugin(TlallocPlugin(...))``. Dask keeps it on
    the scheduler and runs it on every worker, present and future: workers that join
    later and workers restarted after a crash get it too. Registering it again (it is
    named ``"tlalloc"``) replaces the previous one. An error on any worker is raised by
    ``register_plugin``: a worker without tlalloc installed (the worker's ``ImportError``,
    which says what to install; Dask may hand it on wrapped in an ``Exception``),
    a setting its tlalloc rejects, or ``metrics=True`` without ``prometheus_client``.

    ``numpy_allocator=True``: NumPy's data-memory handler (NEP 49) is a context variable,
    and Dask runs every task in a copy of the context that launches it, on whichever
    executor thread is free. So the plugin installs the tlalloc pool in that launching
    context each time a task starts executing (its ``transition`` hook): every task,
    on every executor thread (started before the plugin or after, including threads
    that replace a task that called ``secede()``), sees ``tlalloc_pool``. Installing it
    in the threads themselves, as a ``ThreadPoolExecutor`` initializer would, has no
    effect on Dask tasks. Arrays the worker makes on its event loop in those contexts
    (received data, for example) come from the pool too; they can be freed anywhere.

    ``metrics=True`` registers :class:`tlalloc.metrics.Collector` with
    ``prometheus_client.REGISTRY``, the registry that the worker's ``/metrics``
    endpoint serves, for the life of the worker process.

    Unregistering (``client.unregister_worker_plugin("tlalloc")``) puts back the
    settings the worker had and NumPy's default handler for tasks started afterwards;
    thread arenas already made keep their size, and the metrics stay registered.

    Example:
        >>> p = TlallocPlugin(arena_size="4MiB", numpy_allocator=True)
        >>> p.settings, p.numpy_allocator, p.metrics
        ({'arena_size': 4194304}, True, True)
        >>> TlallocPlugin(arena_overflow="ignore")
        Traceback (most recent call last):
        ...
        ValueError: arena_overflow='ignore' is not accepted; use one of: error, fallback, panic
        >>> # client.register_plugin(TlallocPlugin(arena_size="4MiB"))  # on a cluster
    """

    name = PLUGIN_NAME
    idempotent = False

    def __init__(
        self,
        arena_size: int | str | None = None,
        arena_overflow: str | None = None,
        numpy_allocator: bool = False,
        metrics: bool = True,
        *,
        zero_on_reset: bool | None = None,
        huge_pages: str | None = None,
        numa: str | None = None,
        prefault: bool | None = None,
    ) -> None:
        given = {"arena_size": arena_size, "arena_overflow": arena_overflow,
                 "zero_on_reset": zero_on_reset, "huge_pages": huge_pages, "numa": numa,
                 "prefault": prefault}
        self.settings: dict[str, Any] = {
            k: _config.validate_setting(k, v, k) for k, v in given.items() if v is not None
        }
        self.numpy_allocator = _check_bool(numpy_allocator, "numpy_allocator")
        self.metrics = _check_bool(metrics, "metrics")
        self._previous: dict[str, Any] | None = None

    def __repr__(self) -> str:
        args = [f"{k}={v!r}" for k, v in self.settings.items()]
        args += [f"numpy_allocator={self.numpy_allocator}", f"metrics={self.metrics}"]
        return f"TlallocPlugin({', '.join(args)})"

    def _state(self) -> dict[str, Any]:
        return {"settings": dict(self.settings), "numpy_allocator": self.numpy_allocator,
                "metrics": self.metrics, "version": tlalloc.__version__}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A worker unpickles the plugin before it can run any of it. Pickled by
        # reference, a worker without tlalloc would fail with a bare "No module named
        # 'tlalloc'"; the loader below is pickled by value (Dask falls back to
        # cloudpickle for local functions), so that worker raises an error that says
        # what to install instead.
        return _make_loader(), (self._state(),)

    @classmethod
    def _from_state(cls, state: Mapping[str, Any]) -> TlallocPlugin:
        return cls(**state["settings"], numpy_allocator=state["numpy_allocator"],
                   metrics=state["metrics"])

    async def setup(self, worker: Any) -> None:
        """Apply the settings on ``worker`` (Dask calls this; see the class docstring)."""
        from tlalloc import metrics as _metrics

        if self.metrics:
            _metrics.require_prometheus_client()  # before anything changes: ImportError names the extra
        if _RESTORE_NAME in worker.plugins:
            await worker.plugin_remove(name=_RESTORE_NAME)
        before = tlalloc.get_config()
        tlalloc.configure(**self.settings)  # checked again by this worker's tlalloc
        self._previous = before.as_dict()
        if self.metrics:
            _metrics.register()
        if self.numpy_allocator:
            numpy_alloc.install()  # the context running setup; tasks: see transition()
        _APPLIED[worker.address] = self._state()

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        """On ``-> executing``: install the pool in the context the task is launched from.

        Dask calls this on the worker's event loop, in the context that then starts
        the task's coroutine, which copies it into the executor thread. Cost: one
        string comparison per transition, one context-variable set per task.
        """
        if finish == "executing" and self.numpy_allocator:
            numpy_alloc.install()

    async def teardown(self, worker: Any) -> None:
        """Undo :meth:`setup` for what comes next (Dask calls this on unregistering)."""
        _APPLIED.pop(worker.address, None)
        if self._previous is not None:
            tlalloc.configure(**self._previous)
        if self.numpy_allocator and worker.status not in _CLOSING:
            numpy_alloc.uninstall()
            # The contexts this plugin installed the pool in live on: a worker-local
            # plugin puts NumPy's default back in them as tasks start, until a new
            # TlallocPlugin replaces it.
            await worker.plugin_add(plugin=_DefaultNumpyAllocator(), name=_RESTORE_NAME)


class _DefaultNumpyAllocator(WorkerPlugin):  # type: ignore[misc]
    """Worker-local: NumPy's default handler for tasks, after a TlallocPlugin left."""

    name = _RESTORE_NAME

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing":
            numpy_alloc.uninstall()


def _make_loader() -> Any:
    def load_tlalloc_plugin(state: Mapping[str, Any]) -> Any:
        try:
            from tlalloc.dask import TlallocPlugin
        except ImportError as exc:
            import socket
            import sys

            raise ImportError(
                f"TlallocPlugin cannot run on this Dask worker (host {socket.gethostname()}, "
                f"Python {sys.executable}): tlalloc is not importable there ({exc}); install it "
                f'on every worker: pip install "tlalloc[dask]"'
            ) from None
        return TlallocPlugin._from_state(state)

    return load_tlalloc_plugin


# ----------------------------------------------------------------- gathering


def process_memory() -> tuple[int | None, int | None]:
    """(resident bytes now, peak resident bytes) of this process."""
    rss = peak = None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    if peak is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = maxrss if sys.platform == "darwin" else maxrss * 1024
    return rss, peak


def _worker_report(dask_worker: Any) -> dict[str, Any]:
    """What one worker says about its arenas (run on the worker by :func:`stats`)."""
    overall, threads = live_figures()
    rss, peak = process_memory()
    try:
        from tlalloc.pool import pool_stats  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - builds without the pool
        pool = None
    else:
        pool = dict(pool_stats())
    return {
        "name": str(dask_worker.name),
        "pid": os.getpid(),
        "nthreads": int(dask_worker.state.nthreads),
        "tlalloc_version": tlalloc.__version__,
        "config": tlalloc.get_config().as_dict(),
        "plugin": _APPLIED.get(dask_worker.address),
        "overall": overall,
        "threads": threads,
        "released_threads": [dict(t) for t in TRACKER.released],
        "pool": pool,
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
    }


def _reason(exc: BaseException) -> str:
    text = str(exc)
    # The worker's ModuleNotFoundError may arrive wrapped in another exception by then.
    if "No module named 'tlalloc" in text:
        return f"tlalloc is not installed on this worker ({type(exc).__name__}: {text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _gather(client: Any, workers: Sequence[str] | None, timeout: float) -> tuple[dict, dict]:
    if workers is None:
        workers = list((await client.scheduler.identity())["workers"])

    async def one(addr: str) -> tuple[str, Any, str | None]:
        try:
            got = await asyncio.wait_for(
                client.run(_worker_report, workers=[addr], on_error="return", asynchronous=True),
                timeout,
            )
        except asyncio.TimeoutError:
            return addr, None, f"no answer within {timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - a worker's failure is reported, not raised
            return addr, None, _reason(exc)
        if addr not in got:
            return addr, None, "not connected to the scheduler"
        if isinstance(got[addr], BaseException):
            return addr, None, _reason(got[addr])
        return addr, got[addr], None

    answers = await asyncio.gather(*(one(a) for a in workers))
    reports = {a: r for a, r, why in answers if why is None}
    missing = {a: why for a, r, why in answers if why is not None}
    return reports, missing


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _check_workers(workers: object) -> list[str] | None:
    if workers is None:
        return None
    if isinstance(workers, (str, bytes)) or not isinstance(workers, Sequence) or not all(
            isinstance(w, str) for w in workers):
        raise TypeError(f"workers must be a list of worker addresses, got {workers!r}")
    return list(workers)


def _reports(client: Any, workers: object, timeout: object) -> tuple[dict, dict]:
    if not hasattr(client, "run") or not hasattr(client, "sync"):
        raise TypeError(f"client must be a distributed.Client, got {client!r}")
    if getattr(client, "asynchronous", False):
        raise TypeError("tlalloc.dask needs a synchronous Client (asynchronous=False)")
    t = _check_timeout(timeout)
    return client.sync(_gather, client, _check_workers(workers), t)  # type: ignore[no-any-return]


# ------------------------------------------------------------------- results

_SUMMED = ("capacity_bytes", "used_bytes", "peak_bytes", "num_allocations", "num_overflows",
           "fallback_bytes", "fallback_live_bytes", "num_resets", "num_arenas", "num_threads")


@dataclass(frozen=True)
class WorkerStats:
    """One worker's statistics, as :func:`stats` gathered them.

    ``overall`` is the worker's ``tlalloc.stats()``, ``threads`` its live thread arenas
    (``tlalloc.stats(per_thread=True)``), ``released_threads`` the last figures of thread
    arenas released since a sample saw them, ``pool`` its ``pool_stats()``, ``config``
    its ``tlalloc.get_config()``, ``plugin`` what :class:`TlallocPlugin` applied there
    (``None`` without the plugin), and ``rss_bytes`` / ``peak_rss_bytes`` the worker
    process's resident memory now and at its peak.

    Example:
        >>> w = WorkerStats.from_report("tcp://h:1", {"name": "w0"})
        >>> w.name, w.overall.num_allocations
        ('w0', 0)
    """

    address: str
    name: str
    overall: GlobalStats
    threads: tuple[ThreadStats, ...] = ()
    released_threads: tuple[dict[str, Any], ...] = ()
    pool: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    plugin: dict[str, Any] | None = None
    pid: int | None = None
    nthreads: int | None = None
    tlalloc_version: str | None = None
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None

    @classmethod
    def from_report(cls, address: str, report: Mapping[str, Any]) -> WorkerStats:
        """Build from the dict a worker sends (missing parts are empty).

        Example:
            >>> WorkerStats.from_report("tcp://h:1", {}).name
            'tcp://h:1'
        """
        overall = {k: 0 for k in _SUMMED}
        overall.update(report.get("overall") or {})
        return cls(
            address=address,
            name=str(report.get("name", address)),
            overall=GlobalStats(overall),
            threads=tuple(ThreadStats(t) for t in report.get("threads") or ()),
            released_threads=tuple(dict(t) for t in report.get("released_threads") or ()),
            pool=dict(report["pool"]) if report.get("pool") is not None else None,
            config=dict(report.get("config") or {}),
            plugin=dict(report["plugin"]) if report.get("plugin") is not None else None,
            pid=report.get("pid"),
            nthreads=report.get("nthreads"),
            tlalloc_version=report.get("tlalloc_version"),
            rss_bytes=report.get("rss_bytes"),
            peak_rss_bytes=report.get("peak_rss_bytes"),
        )

    @property
    def label(self) -> str:
        """``name (address)``, or the address when the worker has no other name."""
        return self.address if self.name in ("", self.address) else f"{self.name} ({self.address})"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data.

        Example:
            >>> sorted(WorkerStats.from_report("tcp://h:1", {}).to_dict())[:3]
            ['address', 'config', 'name']
        """
        return {
            "address": self.address, "name": self.name, "pid": self.pid, "nthreads": self.nthreads,
            "tlalloc_version": self.tlalloc_version, "config": dict(self.config),
            "plugin": self.plugin, "overall": self.overall.to_dict(),
            "threads": [t.to_dict() for t in self.threads],
            "released_threads": [dict(t) for t in self.released_threads],
            "pool": self.pool, "rss_bytes": self.rss_bytes, "peak_rss_bytes": self.peak_rss_bytes,
        }


@dataclass(frozen=True)
class ClusterStats:
    """Every worker's statistics (:func:`stats`): ``workers`` (address -> :class:`WorkerStats`,
    the workers that answered), ``missing`` (address -> why it did not), ``totals``
    (the counters summed over the workers that answered, plus ``num_workers`` and,
    as the largest of theirs, ``max_peak_bytes``) and ``pool_totals``.

    ``str(cluster_stats)`` is the report that :func:`summary` prints.

    Example:
        >>> cs = ClusterStats.from_reports({"tcp://h:1": {"overall": {"num_allocations": 3}},
        ...                                 "tcp://h:2": {"overall": {"num_allocations": 4}}})
        >>> cs.totals.num_allocations, cs.totals.num_workers, cs.complete
        (7, 2, True)
    """

    workers: dict[str, WorkerStats]
    missing: dict[str, str]
    totals: GlobalStats
    pool_totals: dict[str, int] | None

    @classmethod
    def from_reports(cls, reports: Mapping[str, Mapping[str, Any]],
                     missing: Mapping[str, str] | None = None) -> ClusterStats:
        """Combine the workers' reports (address -> report) and the missing ones.

        Example:
            >>> ClusterStats.from_reports({}, {"tcp://h:1": "gone"}).missing
            {'tcp://h:1': 'gone'}
        """
        ordered = sorted(reports.items(), key=lambda ar: (str(ar[1].get("name", ar[0])), ar[0]))
        workers = {a: WorkerStats.from_report(a, r) for a, r in ordered}
        totals: dict[str, Any] = {k: sum(int(w.overall[k]) for w in workers.values()) for k in _SUMMED}
        peaks = [int(w.overall["max_peak_bytes"]) for w in workers.values()
                 if "max_peak_bytes" in w.overall]
        if peaks:
            totals["max_peak_bytes"] = max(peaks)
        totals["num_workers"] = len(workers)
        pools = [w.pool for w in workers.values() if w.pool is not None]
        pool_totals = None
        if pools:
            keys = [k for k, v in pools[0].items() if isinstance(v, int) and not isinstance(v, bool)]
            pool_totals = {k: sum(int(p.get(k, 0)) for p in pools) for k in keys}
        return cls(workers, dict(sorted((missing or {}).items())), GlobalStats(totals), pool_totals)

    @property
    def complete(self) -> bool:
        """True when every worker asked has answered."""
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data.

        Example:
            >>> sorted(ClusterStats.from_reports({}).to_dict())
            ['missing', 'pool_totals', 'totals', 'workers']
        """
        return {"workers": {a: w.to_dict() for a, w in self.workers.items()},
                "missing": dict(self.missing), "totals": self.totals.to_dict(),
                "pool_totals": self.pool_totals}

    def format(self, *, per_thread: bool = False) -> str:
        """The report as text; ``per_thread=True`` adds one row per thread arena.

        Example:
            >>> print(ClusterStats.from_reports({}, {"tcp://h:1": "gone"}).format())  # doctest: +ELLIPSIS
            =====...
            ...0 worker(s) answered, 1 missing...
        """
        lines = [RULE, "tlalloc on Dask".center(WIDTH).rstrip(), RULE]
        lines.append(f"{len(self.workers)} worker(s) answered, {len(self.missing)} missing")
        configs = {tuple(sorted(w.config.items())) for w in self.workers.values()}
        if len(configs) == 1:
            cfg = dict(next(iter(configs)))
            lines.append("config (every worker): " + " ".join(
                f"{k}={format_size(v) if k == 'arena_size' else v}" for k, v in cfg.items()))
        elif configs:
            lines.append("config differs between workers (see the per-worker arena_size column)")
        rows = []
        for w in self.workers.values():
            pool_in_use = (w.pool or {}).get("in_use_bytes")
            numpy = "pool" if (w.plugin or {}).get("numpy_allocator") else "default"
            rows.append([w.label, format_size(w.config.get("arena_size", 0)),
                         str(w.overall.get("num_arenas", 0)), *arena_row(w.overall),
                         "-" if pool_in_use is None else format_size(pool_in_use),
                         _size_or_dash(w.rss_bytes), _size_or_dash(w.peak_rss_bytes), numpy])
        rows.append(["cluster", "", str(self.totals.get("num_arenas", 0)), *arena_row(self.totals),
                     _size_or_dash((self.pool_totals or {}).get("in_use_bytes")),
                     _size_or_dash(_sum_known(w.rss_bytes for w in self.workers.values())),
                     _size_or_dash(_sum_known(w.peak_rss_bytes for w in self.workers.values())), ""])
        lines += [THIN, "per worker (sizes over live thread arenas; counts include released ones)"]
        lines += indent(format_table(["worker", "arena_size", "arenas", *ARENA_HEAD, "pool in use",
                                       "rss", "peak rss", "numpy"], rows))
        if self.missing:
            lines += [THIN, "missing workers (asked, did not answer)"]
            lines += [f"  {a}: {why}" for a, why in self.missing.items()]
        if per_thread:
            threads = [dict(t, thread_name=f"{w.name}/{t.get('thread_name', '?')}")
                       for w in self.workers.values() for t in w.threads]
            if threads:
                lines += [THIN, "per thread arena"]
                lines += indent(thread_table(threads))
        lines.append(RULE)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _size_or_dash(n: int | None) -> str:
    return "-" if n is None else format_size(n)


def _sum_known(values: Any) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


@dataclass(frozen=True)
class ClusterAdvice:
    """One sizing recommendation for the cluster (:func:`advise`).

    Every worker gets its settings from the same plugin, so the cluster needs the
    largest size any of its thread arenas needs. ``advice`` holds the verdicts over
    every thread arena of every worker (threads named ``worker/thread``); ``env`` the
    setting to apply (empty when no change is recommended); ``arena_size`` the size
    in bytes the cluster needs (``None`` without evidence); ``driver`` the address of
    the worker whose thread arena needs it; ``per_worker`` each worker's own advice;
    ``missing`` the workers that did not answer. ``plugin`` is the line to register.

    Example:
        >>> from tlalloc.advise import advise
        >>> t = {"capacity_bytes": 8 << 20, "peak_bytes": 1 << 20, "num_allocations": 50,
        ...      "num_overflows": 0, "num_resets": 50}
        >>> a = ClusterAdvice(advise(per_thread=[t]), {}, {}, 2 << 20, "tcp://h:1")
        >>> a.env, a.plugin
        ({'TLALLOC_ARENA_SIZE': '2MiB'}, "TlallocPlugin(arena_size='2MiB')")
    """

    advice: Advice
    per_worker: dict[str, Advice]
    missing: dict[str, str]
    arena_size: int | None
    driver: str | None

    @property
    def env(self) -> dict[str, str]:
        """The environment setting recommended for every worker (may be empty)."""
        return dict(self.advice.env)

    @property
    def plugin(self) -> str | None:
        """``TlallocPlugin(arena_size=...)`` applying the recommendation, or ``None``."""
        size = self.env.get("TLALLOC_ARENA_SIZE")
        return None if size is None else f"TlallocPlugin(arena_size={size!r})"

    def __str__(self) -> str:
        lines = ["tlalloc sizing advice for the cluster"]
        if self.env:
            lines.append(f"  register: {self.plugin}   (or set TLALLOC_ARENA_SIZE="
                         f"{self.env['TLALLOC_ARENA_SIZE']} on every worker)")
        else:
            lines.append("  no change to the arena size recommended")
        if self.driver is not None and self.arena_size is not None:
            lines.append(f"  driven by worker {self.driver}, which needs {format_size(self.arena_size)}")
        lines += [f"  {r}" for r in self.advice.overall]
        for addr, adv in self.per_worker.items():
            lines += [f"  worker {addr}: {r}" for r in adv.overall]
        kinds: dict[str, int] = {}
        for r in self.advice.threads:
            kinds[r.kind.value] = kinds.get(r.kind.value, 0) + 1
        if kinds:
            lines.append(f"  {len(self.advice.threads)} thread verdict(s): "
                         + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                         + " (each in ClusterAdvice.advice.threads)")
        if self.missing:
            lines.append(f"  not included: {len(self.missing)} missing worker(s): "
                         + ", ".join(f"{a} ({why})" for a, why in self.missing.items()))
        return "\n".join(lines)


def _thread_figures(w: WorkerStats) -> list[dict[str, Any]]:
    out = []
    for t in [*(t.to_dict() for t in w.threads), *w.released_threads]:
        d = dict(t)
        d["thread_name"] = f"{w.address}/{d.get('thread_name', '?')}"
        out.append(d)
    return out


def cluster_advice(cs: ClusterStats) -> ClusterAdvice:
    """:class:`ClusterAdvice` from statistics already gathered (see :func:`advise`).

    Example:
        >>> t = {"thread_name": "T", "thread_id": 1, "capacity_bytes": 1 << 20,
        ...      "peak_bytes": 1 << 20, "num_allocations": 100, "num_overflows": 9, "num_resets": 100}
        >>> cs = ClusterStats.from_reports({"tcp://h:1": {"threads": [t]}, "tcp://h:2": {}})
        >>> a = cluster_advice(cs)
        >>> a.env, a.driver
        ({'TLALLOC_ARENA_SIZE': '2MiB'}, 'tcp://h:1')
    """
    threads: list[dict[str, Any]] = []
    fits: list[tuple[int, str]] = []  # (size a thread arena needs, its worker)
    per_worker = {}
    for addr, w in cs.workers.items():
        figs = _thread_figures(w)
        per_worker[addr] = _advise(w.overall.to_dict(), figs)
        threads += figs
        for i, t in enumerate(figs):
            fit = fit_size(t, f"per_thread[{i}]")
            if fit is not None:
                fits.append((fit, addr))
    overall = cs.totals.to_dict()
    overall.pop("num_workers", None)
    combined = _advise(overall if cs.workers else None, threads)
    size = driver = None
    if fits:
        size, driver = max(fits, key=lambda f: f[0])  # the first worker (by address) on a tie
        need = combined.env.get("TLALLOC_ARENA_SIZE")
        if need is not None:
            size = tlalloc.parse_size(need)
    return ClusterAdvice(combined, per_worker, dict(cs.missing), size, driver)


# -------------------------------------------------------------------- public


def stats(client: Any, *, workers: Sequence[str] | None = None,
          timeout: float = DEFAULT_TIMEOUT) -> ClusterStats:
    """Every worker's tlalloc statistics, per worker and summed over the cluster.

    Asks every worker the scheduler knows (or the addresses in ``workers``) at once,
    through ``Client.run``. A worker that does not answer within ``timeout`` seconds,
    has died, or lacks tlalloc is listed in ``ClusterStats.missing`` with the reason;
    it never raises.

    Example:
        >>> from distributed import Client  # doctest: +SKIP
        >>> client = Client("tcp://scheduler:8786")  # doctest: +SKIP
        >>> cs = tlalloc.dask.stats(client)  # doctest: +SKIP
        >>> cs.totals.num_allocations, list(cs.missing)  # doctest: +SKIP
        (120453, [])
    """
    reports, missing = _reports(client, workers, timeout)
    return ClusterStats.from_reports(reports, missing)


def advise(client: Any, *, workers: Sequence[str] | None = None,
           timeout: float = DEFAULT_TIMEOUT) -> ClusterAdvice:
    """One sizing recommendation for the whole cluster, from every worker's arenas.

    All workers take their arena size from one setting (the plugin's, or
    ``TLALLOC_ARENA_SIZE``), so the largest need wins; ``ClusterAdvice.driver``
    names the worker that drives it. Missing workers are listed, not raised.

    Example:
        >>> a = tlalloc.dask.advise(client)  # doctest: +SKIP
        >>> a.env, a.driver  # doctest: +SKIP
        ({'TLALLOC_ARENA_SIZE': '4MiB'}, 'tcp://10.0.0.7:40331')
        >>> client.register_plugin(tlalloc.dask.TlallocPlugin(arena_size=a.arena_size))  # doctest: +SKIP
    """
    return cluster_advice(stats(client, workers=workers, timeout=timeout))


def summary(client: Any, *, workers: Sequence[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
            per_thread: bool = False, advice: bool = True, file: IO[str] | None = None) -> str:
    """The cluster report as one string, as :func:`tlalloc.summary` gives the
    process's: configuration, one row per worker and the totals, missing workers,
    (with ``per_thread=True``) every thread arena, and the advice.

    With ``file`` (an open text file) the report is also written there.

    Example:
        >>> print(tlalloc.dask.summary(client))  # doctest: +SKIP
        ====================================================================================
                                          tlalloc on Dask
        ====================================================================================
        2 worker(s) answered, 0 missing
        ...
    """
    for name, value in (("per_thread", per_thread), ("advice", advice)):
        _check_bool(value, name)
    cs = stats(client, workers=workers, timeout=timeout)
    text = cs.format(per_thread=per_thread)
    if advice:
        body = text.rsplit("\n", 1)[0]
        text = "\n".join([body, THIN, str(cluster_advice(cs)), RULE])
    if file is not None:
        print(text, file=file)
    return text


__all__ = ["ClusterAdvice", "ClusterStats", "PLUGIN_NAME", "TlallocPlugin", "WorkerStats",
           "advise", "cluster_advice", "stats", "summary"]
