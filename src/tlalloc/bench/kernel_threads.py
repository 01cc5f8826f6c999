"""Short kernel calls from many threads: CPU time per call at 1 and 2 threads.

Each kernel runs at three sizes, from calls of a microsecond to calls of
hundreds: cosine similarity with ``top_k=10`` (d = 768) over a float32 corpus
and over an int8 one (:func:`tlalloc.kernels.quantize`), spreading activation
from one seed with ``top_k=10`` on a graph of 10 edges per node, and decay of
float32 strengths. The inputs are shared by the threads, as a service shares
its corpus and graph; each thread has its own queries and seeds and its own copy
of the operation (:func:`tlalloc.bench._common.measure`). One and two threads
alternate within each round, so that both see the machine's state of the moment.

The figure is each thread's CPU time per call (``time.thread_time``), the median
over the rounds, and the ratio of two threads' to one thread's with its 95%
interval over the paired rounds (:func:`tlalloc.bench._common.ratio_interval`).
On a loaded machine the throughput falls with the load; the CPU time per call
only grows when the threads slow each other down: a GIL hand-off, a reference
count or counter every thread writes. The goal: at most 1.10x at every size.

Run it with ``tlalloc bench kernels`` (a section after the cosine peers) or
alone::

    $ python -m tlalloc.bench.kernel_threads --rounds 9 --duration 0.3
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from tlalloc import _tlalloc, kernels
from tlalloc._report import format_table
from tlalloc.bench._common import (
    INTERVAL_MIN_SAMPLES,
    ArgumentParser,
    describe_machine,
    load_average,
    machine_info,
    measure,
    positive_float,
    positive_int,
    random_graph,
    ratio_interval,
    write_json,
)

DIM = 768
TOP_K = 10
DEGREE = 10
#: kernel -> (what the size counts, sizes small / medium / large). The small
#: sizes are calls of a microsecond or two, where a GIL hand-off or a shared
#: write per call would show; the large ones run hundreds of microseconds.
SIZES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "cosine f32": ("rows", (16, 300, 10_000)),
    "cosine int8": ("rows", (64, 1_000, 20_000)),
    "spread_activation": ("nodes", (50, 1_000, 20_000)),
    "decay": ("values", (1_000, 10_000, 200_000)),
}
QUICK_SIZES: dict[str, tuple[int, ...]] = {k: (v[1][0],) for k, v in SIZES.items()}
GOAL = 1.10  # two threads' CPU time per call at most this times one thread's


def operation_maker(kernel: str, size: int, seed: int = 0) -> Callable[[], Callable[[int], Any]]:
    """The inputs of one cell, and a function that builds a thread's operation.

    The corpus, graph or arrays are made once and shared by every thread; each
    call of the returned function makes one thread's own queries or seeds and
    its own operation ``op(i)``.

    Example:
        >>> op = operation_maker("decay", 100)()
        >>> op(0).shape
        (100,)
    """
    rng = np.random.default_rng(seed)
    if kernel in ("cosine f32", "cosine int8"):
        corpus: Any = rng.standard_normal((size, DIM), dtype=np.float32)
        if kernel == "cosine int8":
            corpus = kernels.quantize(corpus)
        queries = rng.standard_normal((64, DIM), dtype=np.float32)

        def make_cos() -> Callable[[int], Any]:
            cos, c = kernels.cosine_similarity, corpus
            mine = [row.copy() for row in queries]  # this thread's queries

            def op(i: int) -> Any:
                return cos(mine[i & 63], c, top_k=TOP_K)

            return op

        return make_cos
    if kernel == "spread_activation":
        graph = random_graph(size, DEGREE, seed=seed + 1)
        seeds = rng.integers(0, size, 64)

        def make_spread() -> Callable[[int], Any]:
            spread, g = kernels.spread_activation, graph
            mine = [int(s) for s in seeds]

            def op(i: int) -> Any:
                return spread(g, mine[i & 63], top_k=TOP_K)

            return op

        return make_spread
    if kernel == "decay":
        strengths = rng.random(size, dtype=np.float32)
        ages = (rng.random(size, dtype=np.float32) * 30 * 86400).astype(np.float32)

        def make_decay() -> Callable[[int], Any]:
            dec, s, a = kernels.decay, strengths, ages

            def op(i: int) -> Any:
                return dec(s, a, tau=86400.0)

            return op

        return make_decay
    raise ValueError(f"unknown kernel {kernel!r}; choose from {list(SIZES)}")


def compare(rounds: int = 7, duration: float = 0.2, quick: bool = False) -> dict[str, Any]:
    """Measure every cell; per cell the CPU time per call of each round at 1 and
    2 threads (ns), their medians, the ratio and its interval.

    Example:
        >>> r = compare(rounds=1, duration=0.005, quick=True)
        >>> sorted({c["kernel"] for c in r["cells"]}) == sorted(SIZES)
        True
    """
    sizes = QUICK_SIZES if quick else {k: v[1] for k, v in SIZES.items()}
    cells: list[dict[str, Any]] = []
    makers: list[Callable[[], Callable[[int], Any]]] = []
    for kernel, ns in sizes.items():
        for size in ns:
            cells.append({"kernel": kernel, "size": size, "unit": SIZES[kernel][0],
                          "cpu_ns_1": {}, "cpu_ns_2": {}})
            makers.append(operation_maker(kernel, size))
    for r in range(rounds):
        for cell, make in zip(cells, makers, strict=True):
            for threads in ((1, 2) if r % 2 == 0 else (2, 1)):  # alternate which goes first
                m = measure(None, threads, duration, make=make)
                cell[f"cpu_ns_{threads}"][r] = m["cpu_ns_per_op"]
    for cell in cells:
        one, two = cell["cpu_ns_1"], cell["cpu_ns_2"]
        cell["median_ns_1"] = statistics.median(one.values())
        cell["median_ns_2"] = statistics.median(two.values())
        cell["ratio"] = cell["median_ns_2"] / cell["median_ns_1"]
        cell["interval"] = ratio_interval(two, one)
        # JSON keys are strings: the rounds as lists
        cell["cpu_ns_1"] = [one[r] for r in sorted(one)]
        cell["cpu_ns_2"] = [two[r] for r in sorted(two)]
    keep = getattr(_tlalloc, "_kernels_keep_gil_bytes", None)  # absent in builds that always release it
    return {
        "rounds": rounds,
        "duration_s": duration,
        "quick": quick,
        "keep_gil_bytes": keep() if keep else None,
        "cells": cells,
    }


def goals(r: dict[str, Any]) -> list[tuple[str, bool | None]]:
    """The goal per cell: two threads' CPU time per call at most ``GOAL``
    times one thread's. Met (True) when the ratio's whole 95% interval lies
    at or below ``GOAL``, not met (False) when it lies above, no verdict (None)
    when the interval holds ``GOAL`` or there is none (a loaded machine
    widens it: more rounds narrow it).

    Example:
        >>> cell = {"kernel": "decay", "size": 10, "unit": "values", "ratio": 1.0}
        >>> [ok for _, ok in goals({"cells": [dict(cell, interval=iv) for iv in
        ...                                     ((0.9, 1.05), (1.2, 1.3), (0.9, 1.2))]})]
        [True, False, None]
    """
    out: list[tuple[str, bool | None]] = []
    for c in r["cells"]:
        iv = c["interval"]
        what = (f"{c['kernel']}, {c['size']:,} {c['unit']}: 2 threads' CPU time per call <= "
                f"{GOAL:.2f}x 1 thread's (measured {c['ratio']:.2f}x, ")
        if iv is None:
            out.append((what + "no interval)", None))
            continue
        lo, hi = iv
        verdict = True if hi <= GOAL else False if lo > GOAL else None
        out.append((what + f"95% interval {lo:.2f}-{hi:.2f})", verdict))
    return out


def report(r: dict[str, Any]) -> str:
    """The table: CPU time per call at 1 and 2 threads and their ratio."""
    rows = []
    for c in r["cells"]:
        iv = c["interval"]
        rows.append([
            c["kernel"], f"{c['size']:,} {c['unit']}", f"{c['median_ns_1'] / 1e3:.2f}",
            f"{c['median_ns_2'] / 1e3:.2f}", f"{c['ratio']:.2f}x",
            f"{iv[0]:.2f}-{iv[1]:.2f}" if iv else f"none (< {INTERVAL_MIN_SAMPLES} rounds)",
        ])
    keep = r["keep_gil_bytes"]
    lines = [
        f"Short calls from many threads: CPU time per call (median of {r['rounds']} rounds of "
        f"{r['duration_s']:g} s; inputs shared by the threads"
        + (f"; calls under {keep:,} bytes of work keep the GIL)" if keep is not None else ")"),
        format_table(["kernel", "size", "1 thread (us)", "2 threads (us)", "2 / 1", "95% interval"], rows),
    ]
    if r["quick"]:
        lines.append("smoke run: one size per kernel, no verdicts")
    else:
        for goal, ok in goals(r):
            lines.append(f"  {'met' if ok else 'no verdict' if ok is None else 'NOT met'}: {goal}")
    return "\n".join(lines)


def section(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """The section of ``tlalloc bench kernels``: skipped by ``--cosine-only``;
    ``--quick`` measures the small size of each kernel once, without verdicts.
    Its figures go under ``payload["kernel_threads"]``."""
    if getattr(args, "cosine_only", False):
        return
    quick = bool(getattr(args, "quick", False))
    r = compare(rounds=1 if quick else 7, duration=0.01 if quick else 0.2, quick=quick)
    print()
    print(report(r))
    payload["kernel_threads"] = r
    if not quick:
        payload.setdefault("targets", []).extend(
            {"target": g, "reached": ok} for g, ok in goals(r) if ok is not None)


def main(argv: list[str] | None = None) -> int:
    """Run the section alone: ``python -m tlalloc.bench.kernel_threads``."""
    p = ArgumentParser(prog="python -m tlalloc.bench.kernel_threads",
                       description=(__doc__ or "").strip().splitlines()[0])
    p.add_argument("--rounds", type=positive_int, default=7, help="rounds (1 and 2 threads each); default 7")
    p.add_argument("--duration", type=positive_float, default=0.2,
                   help="seconds per measurement; default 0.2")
    p.add_argument("--quick", action="store_true", help="smoke run: the small size of each kernel")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    p.add_argument("--keep-gil-bytes", type=positive_int, default=None, metavar="N",
                   help="run with calls below N bytes of estimated work keeping the GIL instead of "
                        "the build's default (to compare thresholds)")
    args = p.parse_args(argv)
    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    print(f"{load_average()} (before the run)")
    prev = None if args.keep_gil_bytes is None else _tlalloc._kernels_keep_gil_bytes(args.keep_gil_bytes)
    try:
        r = compare(rounds=args.rounds, duration=args.duration, quick=args.quick)
    finally:
        if prev is not None:
            _tlalloc._kernels_keep_gil_bytes(prev)
    print(report(r))
    print(f"{load_average()} (after the run)")
    if args.json:
        write_json(args.json, {"suite": "kernel_threads", "machine": info, "kernel_threads": r})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
