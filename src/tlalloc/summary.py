"""A human-readable report of tlalloc's memory (as ``torch.cuda.memory_summary()``).

``summary()`` renders the configuration, the totals over every thread arena, one
row per thread arena, each kernel's scratch (``tlalloc.kernels.scratch_stats()``:
what spilled out of the arenas, the largest need of a call, the arena size that
holds it), the pool's figures (when the pool is built) and the sizing advice of
:func:`tlalloc.advise.advise`. ``summary_data()`` returns the same as
plain, JSON-ready data (``tlalloc stats --json`` prints it).

Example:
    >>> from tlalloc.summary import summary
    >>> text = summary({"capacity_bytes": 2 << 20, "peak_bytes": 1 << 20, "used_bytes": 0,
    ...                 "num_allocations": 10, "num_overflows": 0, "num_resets": 10}, [])
    >>> print(text.splitlines()[1].strip())
    tlalloc memory summary
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from tlalloc._report import ARENA_HEAD, RULE, THIN, WIDTH, arena_row, format_table, indent, thread_table
from tlalloc.advise import Advice, advise, format_size, kernel_fit_size, live_figures_all, live_kernels


def _pool() -> dict[str, Any] | None:
    try:
        from tlalloc.pool import pool_stats  # type: ignore[attr-defined]
    except ImportError:
        return None
    return dict(pool_stats())


def _config() -> dict[str, Any]:
    from tlalloc._config import get_config

    return get_config().as_dict()


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _advice_data(a: Advice) -> dict[str, Any]:
    return {
        "env": dict(a.env),
        "recommendations": [dict(asdict(r), kind=r.kind.value, text=str(r)) for r in a],
    }


def summary_data(
    stats: Mapping[str, Any] | None = None,
    per_thread: Sequence[Mapping[str, Any]] | None = None,
    kernels: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report as plain data: ``config``, ``overall``, ``threads``,
    ``released_threads``, ``kernels`` (each kernel's scratch statistics), ``pool``
    (``None`` without the pool) and ``advice``.

    With no arguments it reads the live statistics; otherwise it reports the given
    ones (as :func:`tlalloc.advise.advise` takes them). Non-finite numbers become
    ``None``, so ``json.dumps`` gives standard JSON.

    Example:
        >>> from tlalloc.summary import summary_data
        >>> d = summary_data()
        >>> sorted(d)
        ['advice', 'config', 'kernels', 'overall', 'pool', 'released_threads', 'threads']
    """
    released: list[dict[str, Any]] = []
    if stats is None and per_thread is None:
        overall, threads, released = live_figures_all()
        pool = _pool()
        if kernels is None:
            kernels = live_kernels()
        # Threads released after a sample saw them still say what size they needed.
        a = advise(overall, [*threads, *released], kernels)
    else:
        a = advise(stats, per_thread, kernels)  # validates the input
        overall = dict(stats) if stats is not None else None
        threads = [dict(t) for t in per_thread] if per_thread is not None else []
        pool = None
    return _json_safe({
        "config": _config(),
        "overall": overall,
        "threads": threads,
        "released_threads": released,
        "kernels": {str(k): dict(v) for k, v in kernels.items()} if kernels is not None else {},
        "pool": pool,
        "advice": _advice_data(a),
    })


_KERNEL_HEAD = ["kernel", "spilled calls", "spills", "spilled", "largest need", "arena that holds it",
                "spilled at"]


def _kernel_table(kernels: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, k in kernels.items():
        fit = k.get("fit_capacity_bytes", 0)
        rows.append([name, str(k.get("num_spilled_calls", 0)), str(k.get("num_spills", 0)),
                     format_size(k.get("spilled_bytes", 0)), format_size(k.get("peak_need_bytes", 0)),
                     format_size(kernel_fit_size(fit)) if fit else "-",
                     format_size(k["spill_capacity_bytes"]) if k.get("spill_capacity_bytes") else "-"])
    return format_table(_KERNEL_HEAD, rows)


def summary(
    stats: Mapping[str, Any] | None = None,
    per_thread: Sequence[Mapping[str, Any]] | None = None,
    *,
    advice: bool = True,
    kernels: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """A human-readable report of tlalloc's memory, as one string.

    With no arguments it reports the live statistics (arguments as for
    :func:`summary_data`, ``kernels`` included); ``advice=False`` leaves out the
    sizing advice.

    Example:
        >>> import tlalloc
        >>> from tlalloc.summary import summary
        >>> with tlalloc.scratch() as arena:
        ...     n = arena.empty(1000).size
        >>> text = summary()
        >>> "per thread arena" in text and "MainThread" in text
        True
    """
    if not isinstance(advice, bool):
        raise TypeError(f"advice must be a bool, got {advice!r}")
    d = summary_data(stats, per_thread, kernels)
    cfg = d["config"]
    lines = [RULE, "tlalloc memory summary".center(WIDTH).rstrip(), RULE]
    lines.append(
        "config: "
        + " ".join(f"{k}={format_size(v) if k == 'arena_size' else v}" for k, v in cfg.items())
    )
    o = d["overall"]
    if o is not None:
        live, made = o.get("num_arenas"), o.get("num_threads")
        if live is not None:
            lines.append(f"thread arenas: {live} live, {made} created")
        lines += [THIN, "all thread arenas (sizes over live arenas; counts include released ones)"]
        lines += indent(format_table(ARENA_HEAD, [arena_row(o)]))
    if d["threads"]:
        lines += [THIN, "per thread arena"]
        lines += indent(thread_table(d["threads"]))
    if d["released_threads"]:
        lines += [THIN, "thread arenas released during the run (figures as last sampled)"]
        lines += indent(thread_table(d["released_threads"]))
    if d["kernels"]:
        lines += [THIN, "kernel scratch (calls on thread arenas; 'spilled': served from the pool)"]
        lines += indent(_kernel_table(d["kernels"]))
    if d["pool"] is not None:
        lines += [THIN, "pool"]
        rows = [[k, format_size(v) if k.endswith("_bytes") and isinstance(v, (int, float)) else str(v)]
                for k, v in d["pool"].items()]
        lines += indent(format_table(["field", "value"], rows))
    if advice:
        lines += [THIN, "advice"]
        env = d["advice"]["env"]
        lines.append("  set: " + " ".join(f"{k}={v}" for k, v in env.items()) if env
                     else "  no change to TLALLOC_ARENA_SIZE recommended")
        lines += [f"  {r['text']}" for r in d["advice"]["recommendations"]]
    lines.append(RULE)
    return "\n".join(lines)


__all__ = ["summary", "summary_data"]
