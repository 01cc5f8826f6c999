"""Sizing advice: recommendations computed from the arena statistics.

``advise()`` reads ``tlalloc.stats()`` and ``tlalloc.stats(per_thread=True)`` and
applies the sizing guidance of the design (the thresholds are the constants below):

- overflow rate above 1%: the arena is too small; grow it to the next power of two
  that covers the peak (at least double it, since requests that overflowed are not
  part of ``peak_bytes``);
- utilization (``peak_bytes / capacity_bytes``) below 30%: too large; shrink it to the
  smallest power of two that keeps the peak at or under 80%;
- 50-80%: healthy; 30-50%: fine, no change; above 80%: tight (less than 20% headroom);
- fewer than one reset a second while the arena is allocating: memory lives long
  between releases, and a bump arena may not be the right tool.

Time base for the reset rate. The counters say how many resets happened, not when,
so the rate needs an observation window. This module takes a baseline of the
process-wide counters when it is imported (``import tlalloc`` imports it), and records
each thread arena the first time a sample sees it (every ``advise()``, ``summary()``
and metrics scrape takes a sample; ``tlalloc stats SCRIPT`` samples every 0.1 s).
A figure's window runs from that point to now, and its reset rate is the number of
resets *counted inside the window* divided by the window's length: an exact average,
never an estimate from an assumed start time. No verdict is given on a window shorter
than ``MIN_WINDOW_SECONDS`` or one in which the arena allocated nothing (an idle
thread is not a misuse). Statistics fed in by hand (``advise(stats=...)``) carry
their own window as ``window_seconds`` (with optional ``window_resets`` and
``window_allocations``, which default to the lifetime ``num_resets`` and
``num_allocations``), or ``age_seconds`` (the window is the arena's whole life).

Kernel scratch. A kernel call (``tlalloc.kernels``) whose scratch does not fit the
thread's arena takes the rest from the pool and records, per kernel, the arena size
that would have held the whole call (``tlalloc.kernels.scratch_stats()``:
``fit_capacity_bytes``, the bytes already in use when the call began plus the
largest need of any spilled call). Each kernel that spilled gets a verdict naming
it, and the size recommended for every thread arena is at least that size rounded
up to a whole MiB (``kernel_fit_size``): computed from the recorded need, once,
instead of doubling the arena until the spills stop. An arena that overflowed while
a kernel's recorded fit is larger than it grows to that fit, not to the next power
of two.

Released arenas. ``tlalloc.stats()`` keeps the counters of thread arenas that were
released (their threads ended) but not their sizes or peaks. Samples keep the last
figures of the most recent ``RELEASED_KEPT`` arenas that disappeared after a sample saw
them; ``advise()`` judges those too (marked ``released``). Arenas released before any
sample saw them are counted (``num_threads - num_arenas``), and a recommendation to
shrink says how many it could not include. An overall ``max_peak_bytes`` (the largest
peak of any thread arena), when the statistics carry it, sets a floor for the size.

Example:
    >>> from tlalloc.advise import advise
    >>> a = advise({"capacity_bytes": 2 << 20, "peak_bytes": 1 << 20, "num_allocations": 1000,
    ...             "num_overflows": 0, "num_resets": 500, "window_seconds": 10.0})
    >>> a.overall[0].kind
    <Kind.HEALTHY: 'healthy'>
    >>> a.env
    {}
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from tlalloc import _tlalloc
from tlalloc._report import format_size

OVERFLOW_RATE_LIMIT = 0.01  # above this the arena is too small
SHRINK_BELOW = 0.30  # utilization under this: too large
HEALTHY_LOW = 0.50
HEALTHY_HIGH = 0.80  # also the target ceiling when a size is recommended
MIN_RESETS_PER_SECOND = 1.0
MIN_WINDOW_SECONDS = 2.0  # shortest window on which a reset-rate verdict is given
MIN_ARENA_SIZE = 4096  # as tlalloc._config (kept literal: this module has no import-order needs)
MAX_ARENA_SIZE = 1 << 40
ENV_ARENA_SIZE = "TLALLOC_ARENA_SIZE"
RELEASED_KEPT = 256  # last figures kept of thread arenas released since a sample saw them

_COUNTERS = ("capacity_bytes", "peak_bytes", "num_allocations", "num_overflows", "num_resets")
_OPTIONAL_COUNTERS = ("used_bytes", "fallback_live_bytes", "fallback_bytes", "num_arenas",
                      "num_threads", "max_peak_bytes", "window_resets", "window_allocations")


class Kind(str, Enum):
    """What a recommendation says. ``GROW``, ``SHRINK`` and ``RARE_RESETS`` ask for action."""

    GROW = "grow"
    SHRINK = "shrink"
    HEALTHY = "healthy"
    OK = "ok"
    TIGHT = "tight"
    RARE_RESETS = "rare-resets"
    IDLE = "idle"


_ACTIONS = (Kind.GROW, Kind.SHRINK, Kind.RARE_RESETS)


def _pow2_at_least(n: float) -> int:
    """Smallest power of two >= n, clamped to the arena size limits."""
    target = 1 << max(0, math.ceil(math.log2(n))) if n > 1 else 1
    return min(MAX_ARENA_SIZE, max(MIN_ARENA_SIZE, target))


def kernel_fit_size(nbytes: int) -> int:
    """The arena size recommended for a kernel call that needs ``nbytes``: rounded
    up to a whole MiB from 1 MiB up, to a power of two below (at least 4 KiB).

    Example:
        >>> format_size(kernel_fit_size(4_684_832)), format_size(kernel_fit_size(300_000))
        ('5MiB', '512KiB')
    """
    if nbytes <= 1 << 20:
        return _pow2_at_least(nbytes)
    mib = 1 << 20
    return min(MAX_ARENA_SIZE, -(-nbytes // mib) * mib)


def _pct(x: float) -> str:
    return "every request" if math.isinf(x) else f"{100 * x:.1f}%"


@dataclass(frozen=True)
class Recommendation:
    """One verdict on one arena (``scope == "thread"``) or on all of them (``"overall"``).

    ``figures`` holds the numbers that led to it; ``env`` the environment setting to
    apply (``"TLALLOC_ARENA_SIZE=4MiB"``) or ``None``; ``suggested_bytes`` the size
    in bytes behind it.

    Example:
        >>> r = Recommendation(Kind.IDLE, "thread", "no allocations yet", {"num_allocations": 0},
        ...                    thread_name="w0", thread_id=7)
        >>> print(r)
        [idle] thread 'w0' (tid 7): no allocations yet  (num_allocations=0)
        >>> r.needs_action
        False
    """

    kind: Kind
    scope: str
    message: str
    figures: Mapping[str, Any] = field(default_factory=dict)
    env: str | None = None
    suggested_bytes: int | None = None
    thread_name: str | None = None
    thread_id: int | None = None
    released: bool = False
    kernel: str | None = None

    @property
    def needs_action(self) -> bool:
        """True for grow, shrink and rare-resets verdicts."""
        return self.kind in _ACTIONS

    @property
    def where(self) -> str:
        """``"overall"``, ``"kernel 'NAME'"`` or ``"thread 'NAME' (tid N)"``."""
        if self.scope == "overall":
            return "overall"
        if self.scope == "kernel":
            return f"kernel {self.kernel!r}"
        notes = ([f"tid {self.thread_id}"] if self.thread_id is not None else []) + (
            ["released"] if self.released else [])
        return f"thread {self.thread_name!r}" + (f" ({', '.join(notes)})" if notes else "")

    def __str__(self) -> str:
        figs = ", ".join(f"{k}={_fmt_figure(k, v)}" for k, v in self.figures.items())
        env = f"  -> set {self.env}" if self.env else ""
        return f"[{self.kind.value}] {self.where}: {self.message}{env}  ({figs})"


def _fmt_figure(key: str, v: Any) -> str:
    if isinstance(v, float):
        if key.endswith("_rate") or key == "utilization":
            return _pct(v)
        return f"{v:.3g}"
    if isinstance(v, int) and key.endswith("_bytes") and v >= 1024:
        return f"{v} ({format_size(v)})"
    return repr(v)


@dataclass(frozen=True)
class Advice:
    """The result of :func:`advise`: every recommendation, and the environment to set.

    ``env`` maps variables to values (empty when no change is recommended);
    ``kernels`` holds one verdict per kernel whose scratch spilled out of its arena;
    ``str(advice)`` is a readable report, one line per recommendation.

    Example:
        >>> from tlalloc.advise import advise
        >>> a = advise(per_thread=[{"thread_name": "w", "capacity_bytes": 1 << 20,
        ...     "peak_bytes": 1 << 20, "num_allocations": 100, "num_overflows": 5, "num_resets": 9}])
        >>> a.env
        {'TLALLOC_ARENA_SIZE': '2MiB'}
        >>> [r.kind.value for r in a]
        ['grow', 'grow']
    """

    overall: tuple[Recommendation, ...]
    threads: tuple[Recommendation, ...]
    env: dict[str, str]
    kernels: tuple[Recommendation, ...] = ()

    def __iter__(self) -> Iterator[Recommendation]:
        return iter(self.overall + self.kernels + self.threads)

    def __len__(self) -> int:
        return len(self.overall) + len(self.kernels) + len(self.threads)

    @property
    def actions(self) -> tuple[Recommendation, ...]:
        """The recommendations that ask for a change."""
        return tuple(r for r in self if r.needs_action)

    def __str__(self) -> str:
        lines = ["tlalloc sizing advice"]
        if self.env:
            lines.append("  set: " + " ".join(f"{k}={v}" for k, v in self.env.items()))
        else:
            lines.append("  no change to TLALLOC_ARENA_SIZE recommended")
        lines += [f"  {r}" for r in self]
        return "\n".join(lines)


# --------------------------------------------------------------------- input


@dataclass(frozen=True)
class _Fig:
    """Validated figures of one arena (or per-arena averages for the overall part)."""

    capacity: float
    peak: float
    demand: float  # peak, or bytes in use plus heap fallback if larger
    allocations: int
    overflows: int
    resets: int
    window: float | None
    window_resets: int
    window_allocations: int


def _check_count(d: Mapping[str, Any], key: str, arg: str) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{arg}[{key!r}] must be an int, got {v!r}")
    if v < 0:
        raise ValueError(f"{arg}[{key!r}] must be >= 0, got {v!r}")
    return v


def _check_seconds(d: Mapping[str, Any], key: str, arg: str) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{arg}[{key!r}] must be a number of seconds, got {v!r}")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{arg}[{key!r}] must be a finite number of seconds >= 0, got {v!r}")
    return float(v)


def _read(d: object, arg: str) -> tuple[dict[str, Any], _Fig]:
    if not isinstance(d, Mapping):
        raise TypeError(f"{arg} must be a mapping of statistics (as tlalloc.stats() returns), got {d!r}")
    missing = [k for k in _COUNTERS if k not in d]
    if missing:
        raise ValueError(f"{arg} is missing {', '.join(map(repr, missing))} (have {sorted(d)!r})")
    c = {k: _check_count(d, k, arg) for k in _COUNTERS}
    for k in _OPTIONAL_COUNTERS:
        if k in d:
            c[k] = _check_count(d, k, arg)
    window: float | None = None
    w_resets, w_allocs = c["num_resets"], c["num_allocations"]
    if "window_seconds" in d:
        window = _check_seconds(d, "window_seconds", arg)
        w_resets = c.get("window_resets", w_resets)
        w_allocs = c.get("window_allocations", w_allocs)
        if w_resets > c["num_resets"] or w_allocs > c["num_allocations"]:
            raise ValueError(f"{arg}: window counts exceed the lifetime counts ({dict(d)!r})")
    elif "age_seconds" in d:
        window = _check_seconds(d, "age_seconds", arg)
    n = c.get("num_arenas", 1) or 1  # overall figures: sizes are per-arena averages
    demand = max(c["peak_bytes"], c.get("used_bytes", 0) + c.get("fallback_live_bytes", 0)) / n
    if c.get("fallback_bytes", 0) and c["num_overflows"]:
        # Overflowed requests are not in peak_bytes; under 'fallback' their average
        # size is known, and an arena that fits them must hold at least that much.
        demand = max(demand, c["fallback_bytes"] / c["num_overflows"])
    fig = _Fig(
        capacity=c["capacity_bytes"] / n,
        peak=c["peak_bytes"] / n,
        demand=demand,
        allocations=c["num_allocations"],
        overflows=c["num_overflows"],
        resets=c["num_resets"],
        window=window,
        window_resets=w_resets,
        window_allocations=w_allocs,
    )
    return c, fig


# ----------------------------------------------------------------- verdicts


def _overflow_rate(f: _Fig) -> float:
    if f.allocations:
        return f.overflows / f.allocations
    return math.inf if f.overflows else 0.0


def _configured_size() -> int:
    """TLALLOC_ARENA_SIZE as now configured: the size new thread arenas get."""
    from tlalloc._config import get_config

    return get_config().arena_size


def _fit_size(f: _Fig, kernel_fit: int = 0) -> int | None:
    """The size this arena should have, or None if it gives no evidence (idle).

    ``kernel_fit``: the largest size a kernel's spilled call recorded (0: none).
    """
    cap = int(f.capacity)
    if cap == 0 and _overflow_rate(f) > OVERFLOW_RATE_LIMIT:
        # No live arena to measure (its thread ended before a sample saw it), but
        # its requests overflowed: the size the kernels recorded, else twice the
        # configured size, or more if the overflowed requests were known to be larger.
        if kernel_fit > _configured_size():
            return max(kernel_fit, _pow2_at_least(f.demand))
        return _pow2_at_least(max(f.demand, 2 * _configured_size()))
    if (f.allocations == 0 and f.overflows == 0) or cap == 0:
        return None
    if _overflow_rate(f) > OVERFLOW_RATE_LIMIT:
        # Overflowed requests are not in peak_bytes: the peak demand was above the
        # capacity. A kernel that spilled recorded the size that holds its calls:
        # that size, computed from the need; else the next power of two above.
        if kernel_fit > cap:
            return max(kernel_fit, _pow2_at_least(f.demand))
        return _pow2_at_least(max(f.demand, cap + 1))
    if cap and f.peak / cap < SHRINK_BELOW:
        return min(cap, _pow2_at_least(f.peak / HEALTHY_HIGH)) if cap >= MIN_ARENA_SIZE else cap
    return cap


def fit_size(figures: Mapping[str, Any], arg: str = "stats") -> int | None:
    """The arena size that holds a statistics dict's peak (as :func:`advise`
    recommends it), or None when its figures give no evidence; ``arg`` names the
    dict in the error a malformed one raises.

    Example:
        >>> fit_size({"capacity_bytes": 1 << 20, "peak_bytes": 1 << 20, "num_allocations": 100,
        ...           "num_overflows": 10, "num_resets": 100}) is not None
        True
    """
    return _fit_size(_read(figures, arg)[1])


def _size_verdict(f: _Fig, scope: str, who: dict[str, Any], note: str, kernel_fit: int = 0) -> Recommendation:
    rate = _overflow_rate(f)
    util = f.peak / f.capacity if f.capacity else 0.0
    figs: dict[str, Any] = {
        "capacity_bytes": int(f.capacity),
        "peak_bytes": int(f.peak),
        "utilization": util,
        "num_allocations": f.allocations,
        "num_overflows": f.overflows,
        "overflow_rate": rate,
    }
    if f.allocations == 0 and f.overflows == 0:
        return Recommendation(Kind.IDLE, scope, f"no allocations yet{note}; nothing to size", figs, **who)
    fit = _fit_size(f, kernel_fit)
    if fit is None:  # overall figures with no live arena, and no overflow: nothing to size
        return Recommendation(Kind.OK, scope, f"no live arena to measure utilization from{note}", figs, **who)
    env = f"{ENV_ARENA_SIZE}={format_size(fit, exact=True)}"
    if f.capacity == 0:  # overflows, but no live arena to measure (see _fit_size)
        msg = (f"overflow rate {_pct(rate)} is above {_pct(OVERFLOW_RATE_LIMIT)}{note}: too small; "
               f"no live arena to size from, so grow {ENV_ARENA_SIZE} from "
               f"{format_size(_configured_size())} to {format_size(fit)}")
        return Recommendation(Kind.GROW, scope, msg, figs, env, fit, **who)
    if rate > OVERFLOW_RATE_LIMIT:
        how = ("the size the spilled kernel calls recorded" if kernel_fit > f.capacity and fit == kernel_fit
               else "next power of two covering the peak")
        msg = (f"overflow rate {_pct(rate)} is above {_pct(OVERFLOW_RATE_LIMIT)}{note}: too small; "
               f"grow to {format_size(fit)} ({how})")
        return Recommendation(Kind.GROW, scope, msg, figs, env, fit, **who)
    if util < SHRINK_BELOW:
        if fit < f.capacity:
            msg = (f"utilization {_pct(util)} is below {_pct(SHRINK_BELOW)}{note}: too large; "
                   f"shrink to {format_size(fit)} (peak at or under {_pct(HEALTHY_HIGH)})")
            return Recommendation(Kind.SHRINK, scope, msg, figs, env, fit, **who)
        msg = f"utilization {_pct(util)}{note}, but the arena is already at the smallest useful size"
        return Recommendation(Kind.OK, scope, msg, figs, **who)
    if util < HEALTHY_LOW:
        msg = (f"utilization {_pct(util)}{note}: under the healthy {_pct(HEALTHY_LOW)}-"
               f"{_pct(HEALTHY_HIGH)} band but above the {_pct(SHRINK_BELOW)} shrink threshold; no change")
        return Recommendation(Kind.OK, scope, msg, figs, **who)
    if util <= HEALTHY_HIGH:
        band = f"{_pct(HEALTHY_LOW)}-{_pct(HEALTHY_HIGH)}"
        msg = f"utilization {_pct(util)}{note} is in the healthy {band} band"
        return Recommendation(Kind.HEALTHY, scope, msg, figs, **who)
    roomy = _pow2_at_least(f.peak / HEALTHY_HIGH)
    over = f" and {f.overflows} overflow(s) ({_pct(rate)}, within the 1% limit)" if f.overflows else ""
    msg = (f"utilization {_pct(util)}{note}{over}: less than {_pct(1 - HEALTHY_HIGH)} headroom; "
           f"if the peak grows, {format_size(roomy)} would keep it under {_pct(HEALTHY_HIGH)}")
    return Recommendation(Kind.TIGHT, scope, msg, figs, **who)


_KERNEL_COUNTERS = ("num_spilled_calls", "num_spills", "spilled_bytes", "peak_need_bytes",
                    "fit_capacity_bytes", "spill_capacity_bytes")


def _read_kernels(kernels: object) -> dict[str, dict[str, int]]:
    if not isinstance(kernels, Mapping):
        raise TypeError(f"kernels must be a mapping of kernel name to scratch statistics "
                        f"(as tlalloc.kernels.scratch_stats() returns), got {kernels!r}")
    out: dict[str, dict[str, int]] = {}
    for name, d in kernels.items():
        arg = f"kernels[{name!r}]"
        if not isinstance(d, Mapping):
            raise TypeError(f"{arg} must be a mapping of scratch statistics, got {d!r}")
        missing = [k for k in _KERNEL_COUNTERS if k not in d]
        if missing:
            raise ValueError(f"{arg} is missing {', '.join(map(repr, missing))} (have {sorted(d)!r})")
        out[str(name)] = {k: _check_count(d, k, arg) for k in _KERNEL_COUNTERS}
    return out


def _kernel_verdict(name: str, k: Mapping[str, int], current: int) -> tuple[Recommendation, int] | None:
    """The verdict on a kernel whose scratch spilled, and the arena size that holds
    its calls (0 when only shared-strategy calls spilled: no thread-arena size to give)."""
    if k["num_spilled_calls"] == 0:
        return None
    figs: dict[str, Any] = dict(k)
    need, fit_cap = k["peak_need_bytes"], k["fit_capacity_bytes"]
    spilled = (f"{k['num_spilled_calls']} call(s) needed more scratch than the arena held; "
               f"{k['num_spills']} request(s), {format_size(k['spilled_bytes'])} in all, came from the pool")
    if fit_cap == 0:
        msg = f"{spilled} (calls on the shared scratch arena: no thread-arena size to recommend)"
        return Recommendation(Kind.OK, "kernel", msg, figs, kernel=name), 0
    fit = kernel_fit_size(fit_cap)
    figs["recommended_arena_size_bytes"] = fit
    held = k["spill_capacity_bytes"]
    at = f" (arena of {format_size(held)})" if held else ""
    need_txt = (f"its largest call needed {format_size(need)} of scratch, and an arena of "
                f"{format_size(fit_cap)} would have held every spilled call")
    if fit <= current:
        msg = (f"{spilled}{at}; {need_txt}: the current {ENV_ARENA_SIZE}={format_size(current)} "
               "already holds it")
        return Recommendation(Kind.OK, "kernel", msg, figs, kernel=name), fit
    env = f"{ENV_ARENA_SIZE}={format_size(fit, exact=True)}"
    msg = f"{spilled}{at}; {need_txt}: grow thread arenas to {format_size(fit)}"
    return Recommendation(Kind.GROW, "kernel", msg, figs, env, fit, kernel=name), fit


def live_kernels() -> dict[str, dict[str, int]]:
    """Each kernel's scratch statistics now (``tlalloc.kernels.scratch_stats()``)."""
    return dict(_tlalloc._kernel_scratch_stats())


def _reset_verdict(f: _Fig, scope: str, who: dict[str, Any], note: str) -> Recommendation | None:
    if f.window is None or f.window < MIN_WINDOW_SECONDS or f.window_allocations == 0:
        return None
    rate = f.window_resets / f.window
    if rate >= MIN_RESETS_PER_SECOND:
        return None
    figs = {
        "window_seconds": round(f.window, 3),
        "window_resets": f.window_resets,
        "window_allocations": f.window_allocations,
        "resets_per_second": rate,
    }
    msg = (f"{f.window_resets} reset(s) in {f.window:.1f}s ({rate:.2f}/s, under "
           f"{MIN_RESETS_PER_SECOND:g}/s){note} while it allocated {f.window_allocations} time(s): "
           "memory lives long between releases, so an arena may not be the right tool; release it "
           "sooner (a scratch() scope per unit of work) or use a general-purpose allocator for "
           "long-lived buffers")
    return Recommendation(Kind.RARE_RESETS, scope, msg, figs, **who)


# ------------------------------------------------------------- time base


class _Tracker:
    """Observation windows for the reset rate (see the module docstring).

    The process-wide baseline is taken at construction (module import); a thread
    arena's baseline when a sample first sees it, keyed by (thread id, name) and
    dropped when the arena is no longer listed. A key whose counters went down
    belongs to a new arena on a reused thread id, and starts over.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        g = _tlalloc._registry_stats()
        self._t0 = time.monotonic()
        self._base = (g["num_resets"], g["num_allocations"])
        self._seen: dict[tuple[int, str], tuple[float, int, int]] = {}
        # The last sampled figures of the thread arenas that have disappeared since (their
        # threads ended): the most recent RELEASED_KEPT of them, and how many there were.
        self.released: collections.deque[dict[str, Any]] = collections.deque(maxlen=RELEASED_KEPT)
        self.num_released = 0
        self._last: dict[tuple[int, str], dict[str, Any]] = {}

    def observe(
        self, overall: Mapping[str, Any] | None, threads: Sequence[Mapping[str, Any]] | None
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
        """Record a sample; return copies of the figures with their windows added."""
        o, t, _ = self.observe_all(overall, threads)
        return o, t

    def observe_all(
        self, overall: Mapping[str, Any] | None, threads: Sequence[Mapping[str, Any]] | None
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None, list[dict[str, Any]]]:
        """:meth:`observe`, plus copies of the released arenas' figures as of the same sample.

        Safe from any number of threads at once: the clock is read under the lock
        (a time read before another thread's baseline would give a negative window),
        and every dict handed out is a copy that the tracker never touches again.
        """
        with self._lock:
            now = time.monotonic()
            out_overall = None
            if overall is not None:
                out_overall = dict(overall)
                out_overall["window_seconds"] = now - self._t0
                out_overall["window_resets"] = max(0, overall["num_resets"] - self._base[0])
                out_overall["window_allocations"] = max(0, overall["num_allocations"] - self._base[1])
            out_threads = None
            if threads is not None:
                out_threads = []
                seen: dict[tuple[int, str], tuple[float, int, int]] = {}
                for t in threads:
                    key = (t["thread_id"], t["thread_name"])
                    r, a = t["num_resets"], t["num_allocations"]
                    base = self._seen.get(key)
                    if base is None or r < base[1] or a < base[2]:
                        if base is not None:
                            self._release(key)
                        base = (now, r, a)
                    seen[key] = base
                    d = dict(t)
                    d["window_seconds"] = now - base[0]
                    d["window_resets"] = r - base[1]
                    d["window_allocations"] = a - base[2]
                    out_threads.append(d)
                    self._last[key] = dict(d)
                for key in self._seen.keys() - seen.keys():
                    self._release(key)
                self._seen = seen
            released = [dict(d) for d in self.released]
        return out_overall, out_threads, released

    def released_figures(self) -> list[dict[str, Any]]:
        """Copies of the kept figures of released thread arenas (thread-safe)."""
        with self._lock:
            return [dict(d) for d in self.released]

    def _release(self, key: tuple[int, str]) -> None:  # with self._lock held
        d = self._last.pop(key, None)
        if d is not None:
            d["thread_alive"] = False
            d["released"] = True
            self.released.append(d)
            self.num_released += 1

    def sample(self) -> None:
        """Record the thread arenas alive now (used by periodic samplers)."""
        self.observe(None, _tlalloc._registry_list())


# The process's observation windows: every sample of the thread arenas (advise,
# summary, tlalloc stats' sampler, the metrics collector, the Dask plugin) goes through it.
TRACKER = _Tracker()


def live_figures() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Current statistics, overall and per thread, with their observation windows.

    Example:
        >>> overall, threads = live_figures()
        >>> overall["window_seconds"] >= 0 and all("window_seconds" in t for t in threads)
        True
    """
    overall, threads, _ = live_figures_all()
    return overall, threads


def live_figures_all() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`live_figures` and the released arenas' figures, from one sample."""
    from tlalloc._stats import stats

    overall, threads, released = TRACKER.observe_all(
        stats().to_dict(), [t.to_dict() for t in stats(per_thread=True)])
    assert overall is not None and threads is not None
    return overall, threads, released


# --------------------------------------------------------------------- advise


def advise(
    stats: Mapping[str, Any] | None = None,
    per_thread: Sequence[Mapping[str, Any]] | None = None,
    kernels: Mapping[str, Mapping[str, Any]] | None = None,
) -> Advice:
    """Sizing recommendations from the statistics, overall, per kernel and per thread arena.

    With no arguments it reads the live statistics (``tlalloc.stats()``,
    ``tlalloc.stats(per_thread=True)`` and ``tlalloc.kernels.scratch_stats()``).
    ``kernels`` is the per-kernel scratch statistics (as
    ``tlalloc.kernels.scratch_stats()`` returns them); left out, they are read live
    when ``stats`` and ``per_thread`` are too, and not used otherwise. Each kernel
    whose scratch spilled out of its arena gets a verdict that names it and the
    arena size that would have held its calls. Otherwise ``stats`` is the overall figures
    (a mapping with ``capacity_bytes``, ``peak_bytes``, ``num_allocations``,
    ``num_overflows``, ``num_resets`` and optionally ``num_arenas``, ``used_bytes``,
    ``fallback_live_bytes`` and a window, see the module docstring) and ``per_thread``
    a sequence of such mappings, each optionally with ``thread_name`` and
    ``thread_id``; either may be ``None`` to leave that part out.

    Every thread arena gets one sizing verdict (grow, shrink, healthy, ok, tight or
    idle) and, when its window shows fewer than one reset a second while it
    allocated, a rare-resets verdict. Thread arenas all take their size from
    ``TLALLOC_ARENA_SIZE``, so the overall verdict recommends the one size that fits
    every thread: the largest size any thread needs (the per-arena averages when no
    per-thread figures are given). ``Advice.env`` holds that setting when it differs
    from the current size.

    Example:
        >>> from tlalloc.advise import advise
        >>> a = advise({"capacity_bytes": 8 << 20, "peak_bytes": 1 << 20, "num_allocations": 50,
        ...             "num_overflows": 0, "num_resets": 50})
        >>> a.env
        {'TLALLOC_ARENA_SIZE': '2MiB'}
        >>> print(a.overall[0])  # doctest: +ELLIPSIS
        [shrink] overall: utilization 12.5% is below 30.0%...: too large; shrink to 2MiB ...
        >>> k = {"num_spilled_calls": 3, "num_spills": 6, "spilled_bytes": 9 << 20,
        ...      "peak_need_bytes": 9_845_856, "fit_capacity_bytes": 9_845_856,
        ...      "spill_capacity_bytes": 8 << 20}
        >>> a = advise(per_thread=[], kernels={"spread": k})
        >>> a.env, a.kernels[0].where
        ({'TLALLOC_ARENA_SIZE': '10MiB'}, "kernel 'spread'")
    """
    if stats is None and per_thread is None:
        overall_d, threads_d, released = live_figures_all()
        overall: Mapping[str, Any] | None = overall_d
        threads: Sequence[Mapping[str, Any]] = [*threads_d, *released]
        if kernels is None:
            kernels = live_kernels()
    else:
        overall = stats
        if per_thread is None:
            threads = ()
        elif isinstance(per_thread, (str, bytes, Mapping)) or not isinstance(per_thread, Sequence):
            raise TypeError(f"per_thread must be a sequence of statistics mappings, got {per_thread!r}")
        else:
            threads = per_thread

    kernel_recs: list[Recommendation] = []
    fits: list[tuple[int, str]] = []  # (size an arena needs, who)
    kernel_fits: list[tuple[int, str]] = []  # a floor under the size: never a reason to shrink
    kernel_fit = 0  # the largest size a spilled kernel call recorded
    if kernels is not None:
        configured = _configured_size()
        for name, k in sorted(_read_kernels(kernels).items()):
            kv = _kernel_verdict(name, k, configured)
            if kv is None:
                continue
            rec, fit = kv
            kernel_recs.append(rec)
            if fit:
                kernel_fit = max(kernel_fit, fit)
                kernel_fits.append((fit, rec.where))

    thread_recs: list[Recommendation] = []
    caps: list[int] = []
    for i, t in enumerate(threads):
        _, fig = _read(t, f"per_thread[{i}]")
        tid = t.get("thread_id")
        who = {"thread_name": str(t.get("thread_name", f"#{i}")),
               "thread_id": tid if isinstance(tid, int) and not isinstance(tid, bool) else None,
               "released": bool(t.get("released", False))}
        sized = _size_verdict(fig, "thread", who, "", kernel_fit)
        thread_recs.append(sized)
        reset = _reset_verdict(fig, "thread", who, "")
        if reset:
            thread_recs.append(reset)
        caps.append(int(fig.capacity) or _configured_size())
        fit = _fit_size(fig, kernel_fit)
        if fit is not None:
            fits.append((fit, sized.where))

    verdict = reset = None
    oc: dict[str, Any] = {}
    if overall is not None:
        oc, ofig = _read(overall, "stats")
        n = oc.get("num_arenas", 0)
        note = f" (averaged over {n} live arenas)" if n > 1 else ""
        verdict = _size_verdict(ofig, "overall", {}, note, kernel_fit)
        reset = _reset_verdict(ofig, "overall", {}, " process-wide")
        if not threads:
            fit = _fit_size(ofig, kernel_fit)
            if fit is not None:
                caps.append(int(ofig.capacity) or _configured_size())
                fits.append((fit, "overall"))

    # One size for every thread arena: the largest any of them needs.
    env: dict[str, str] = {}
    max_peak = oc.get("max_peak_bytes")
    if fits and max_peak is not None:
        # The largest peak of any thread arena, released ones included (when the core reports it).
        current = max(caps)
        floor = current if max_peak >= SHRINK_BELOW * current else _pow2_at_least(max_peak / HEALTHY_HIGH)
        fits.append((floor, f"the largest peak of any thread arena ({format_size(max_peak)})"))
    if kernel_fits and (fits or max(kernel_fits)[0] > max(caps, default=_configured_size())):
        fits += kernel_fits
    if fits:
        current, (need, driver) = max(caps, default=_configured_size()), max(fits)
        if need != current:
            env[ENV_ARENA_SIZE] = format_size(need, exact=True)
        combined = bool(threads) or max_peak is not None
        if combined and (need != current or (verdict is not None and verdict.needs_action)):
            figs = dict(verdict.figures) if verdict else {}
            figs.update({"current_arena_size_bytes": current, "recommended_arena_size_bytes": need})
            if need == current and verdict is not None:
                msg = (f"{verdict.message}; but {driver} needs the current "
                       f"{format_size(current)}, and every thread arena takes its size from "
                       f"{ENV_ARENA_SIZE}: no change")
                verdict = Recommendation(Kind.OK, "overall", msg, figs)
            else:
                kind = Kind.GROW if need > current else Kind.SHRINK
                why = (f"{driver} needs {format_size(need)}" if kind is Kind.GROW
                       else f"the largest size any thread arena needs is {format_size(need)}")
                msg = (f"every thread arena takes its size from {ENV_ARENA_SIZE}; {why}: "
                       f"{kind.value} from {format_size(current)} to {format_size(need)}")
                verdict = Recommendation(kind, "overall", msg, figs,
                                         f"{ENV_ARENA_SIZE}={env[ENV_ARENA_SIZE]}", need)
    # Arenas released before any sample saw them took their peaks with them.
    unseen = oc.get("num_threads", 0) - oc.get("num_arenas", 0) - sum(1 for t in threads if t.get("released"))
    if verdict is not None and verdict.kind is Kind.SHRINK and unseen > 0 and max_peak is None:
        verdict = replace(
            verdict,
            message=verdict.message + f"; {unseen} thread arena(s) released before a sample saw them "
            "are not included (the statistics keep no size or peak of released arenas)",
            figures={**verdict.figures, "released_arenas_not_included": unseen},
        )
    overall_recs = [r for r in (verdict, reset) if r is not None]
    return Advice(tuple(overall_recs), tuple(thread_recs), env, tuple(kernel_recs))


__all__ = ["Advice", "Kind", "Recommendation", "advise", "format_size", "kernel_fit_size", "live_figures"]
