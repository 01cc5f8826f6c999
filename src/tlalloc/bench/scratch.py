"""Python-level scratch from 1, 2, 4, ... threads: thread arenas against np.empty and one shared locked arena.

One operation is what a thread-pool task does for its temporaries: take a
scope, allocate two small arrays, touch them, release the scope. Three
strategies run the same loop:

- ``thread``: ``with tlalloc.scratch() as a: a.empty(...)`` (the product);
- ``numpy``: ``np.empty(...)`` (NumPy's allocator, the user's default);
- ``shared``: one arena for all threads behind a ``threading.Lock``, as a
  hand-rolled shared scratch buffer would be (bump allocation under the lock,
  rewound when its last concurrent user leaves).

Scaling needs threads that run Python at the same time, i.e. a free-threaded
CPython with the GIL disabled (``PYTHON_GIL=0``); on a build with the GIL the
suite still runs, and says that its threads take turns. ``tlalloc bench`` (the
mix) runs this suite at its end on a free-threaded build.

Example:
    $ PYTHON_GIL=0 python3.13t -m tlalloc bench scratch --threads 1,2,4
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

import tlalloc
from tlalloc.bench._common import (
    compare_phrase,
    describe_machine,
    format_table,
    machine_info,
    parse_threads,
    write_json,
)
from tlalloc.bench.mix import measure

STRATEGIES = ("thread", "numpy", "shared")
SIZES = (256, 64)  # float32 elements of the two temporaries of one operation


def gil_enabled() -> bool:
    """Whether this interpreter runs with the GIL (always true before 3.13).

    Example:
        >>> isinstance(gil_enabled(), bool)
        True
    """
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


class SharedArena:
    """One bump arena for every thread, a lock around each allocation, rewound
    when the last concurrent user leaves (the baseline a user would hand-roll).

    Example:
        >>> s = SharedArena(1 << 16)
        >>> s.enter(); x = s.empty(10, np.float32); s.leave()
        >>> x.shape, x.dtype == np.float32
        ((10,), True)
    """

    def __init__(self, capacity: int) -> None:
        raw = np.empty(capacity + 64, np.uint8)
        skip = -raw.ctypes.data % 64
        self.buf = raw[skip : skip + capacity]  # 64-byte aligned, as arena memory is
        self.capacity = capacity
        self.offset = 0
        self.users = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.users += 1

    def leave(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                self.offset = 0

    def empty(self, n: int, dtype: Any) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = n * dt.itemsize
        with self.lock:
            start = (self.offset + 63) & ~63
            if start + nbytes <= self.capacity:
                self.offset = start + nbytes
                return self.buf[start : start + nbytes].view(dt)
        return np.empty(n, dt)  # full: the heap, as the kernels' shared strategy does


def operation(strategy: str, shared: SharedArena) -> Callable[[int], Any]:
    """One operation of ``strategy`` as a function of the operation index.

    Example:
        >>> op = operation("thread", SharedArena(1 << 16))
        >>> op(0)
        1.0
    """
    n1, n2 = SIZES
    f32 = np.float32
    if strategy == "thread":
        scratch = tlalloc.scratch

        def op(i: int) -> float:
            with scratch() as a:
                x = a.empty(n1, f32)
                y = a.empty(n2, f32)
                x[0] = 1.0
                y[0] = x[0]
                r = float(y[0])
                del x, y
            return r

    elif strategy == "numpy":
        empty = np.empty

        def op(i: int) -> float:
            x = empty(n1, f32)
            y = empty(n2, f32)
            x[0] = 1.0
            y[0] = x[0]
            return float(y[0])

    elif strategy == "shared":

        def op(i: int) -> float:
            shared.enter()
            try:
                x = shared.empty(n1, f32)
                y = shared.empty(n2, f32)
                x[0] = 1.0
                y[0] = x[0]
                return float(y[0])
            finally:
                shared.leave()

    else:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return op


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", default="1,2,4", help="thread counts (default 1,2,4)")
    parser.add_argument("--duration", type=float, default=0.5, help="seconds per cell (default 0.5)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds over every cell (default 5)")
    parser.add_argument("--quick", action="store_true", help="1 and 2 threads, short cells")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def scaling(threads: list[int], duration: float, repeat: int) -> dict[str, Any]:
    """Measure every strategy at every thread count in interleaved rounds.

    Returns ``{"rows": [...], "ratios": [...]}`` with the best ops/s of each
    cell, its speed-up over one thread and the spread of its repeats.

    Example:
        >>> r = scaling([1], 0.01, 1)
        >>> sorted({row["strategy"] for row in r["rows"]})
        ['numpy', 'shared', 'thread']
    """
    shared = SharedArena(4 << 20)
    fns = {s: operation(s, shared) for s in STRATEGIES}
    for s in STRATEGIES:
        measure(fns[s], 1, min(duration, 0.05))  # warm-up, untimed
    samples: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    for rep in range(repeat):
        for t in threads:
            order = STRATEGIES[rep % 3 :] + STRATEGIES[: rep % 3]
            for s in order:
                m = measure(fns[s], t, duration)
                samples.setdefault((s, t), []).append(m["ops_per_s"])
                cpu.setdefault((s, t), []).append(m["cpu_ns_per_op"])
    rows = []
    for s in STRATEGIES:
        for t in threads:
            v = samples[(s, t)]
            rows.append(
                {
                    "strategy": s,
                    "threads": t,
                    "ops_per_s": max(v),
                    "speedup": max(v) / max(samples[(s, threads[0])]) if threads[0] == 1 else float("nan"),
                    "spread": max(v) / min(v) - 1 if min(v) > 0 else float("inf"),
                    "cpu_ns_per_op": min(cpu[(s, t)]),
                    "samples_ops_per_s": v,
                }
            )
    best = {(r["strategy"], r["threads"]): r["ops_per_s"] for r in rows}
    ratios = [
        {
            "threads": t,
            "thread_vs_numpy": best[("thread", t)] / best[("numpy", t)],
            "thread_vs_shared": best[("thread", t)] / best[("shared", t)],
        }
        for t in threads
    ]
    return {"rows": rows, "ratios": ratios}


def report(result: dict[str, Any], cores: int) -> None:
    """Print the tables of :func:`scaling` and what they mean for the user."""
    print(
        format_table(
            ["strategy", "threads", "ops/s", "speed-up vs 1 thread", "spread of repeats",
             "CPU ns/op per thread"],
            [
                [r["strategy"], r["threads"], f"{r['ops_per_s']:,.0f}", f"{r['speedup']:.2f}x",
                 f"{r['spread']:.0%}", f"{r['cpu_ns_per_op']:,.0f}"]
                for r in result["rows"]
            ],
        )
    )
    print("\nthread arenas' throughput relative to the others (>1: tlalloc is faster):")
    print(
        format_table(
            ["threads", "vs np.empty", "vs shared locked arena"],
            [[r["threads"], f"{r['thread_vs_numpy']:.2f}x", f"{r['thread_vs_shared']:.2f}x"]
             for r in result["ratios"]],
        )
    )
    spreads = {(r["strategy"], r["threads"]): r["spread"] for r in result["rows"]}
    for r in result["ratios"]:
        words = []
        for other, key, name in (
            ("np.empty", "thread_vs_numpy", "numpy"),
            ("the shared locked arena", "thread_vs_shared", "shared"),
        ):
            v = r[key]
            spread = max(spreads[("thread", r["threads"])], spreads[(name, r["threads"])])
            words.append(compare_phrase(v, spread, other))
        print(f"  {r['threads']} thread(s): thread arenas are " + "; ".join(words))
    th = {r["threads"]: r for r in result["rows"] if r["strategy"] == "thread"}
    one = th.get(1)
    for t, r in th.items():
        if t > 1:
            ratio = r["cpu_ns_per_op"] / one["cpu_ns_per_op"] if one else float("nan")
            cpu = f"; CPU time per op {ratio:.2f}x one thread's" if one else ""
            print(f"  thread arenas from {t} threads: {r['speedup']:.2f}x one thread's throughput "
                  f"({min(t, cores)} core(s) to run on{cpu})")


def run(args: argparse.Namespace) -> int:
    """Run the suite and print its tables."""
    threads = [1, 2] if args.quick else parse_threads(args.threads)
    duration = min(args.duration, 0.1) if args.quick else args.duration
    repeat = 2 if args.quick else max(1, args.repeat)
    if duration <= 0:
        raise SystemExit("--duration must be > 0")
    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    gil = gil_enabled()
    print(
        f"Python {sys.version.split()[0]}, GIL "
        + ("enabled: threads take turns running Python, so no strategy can scale here "
           "(run a free-threaded CPython with PYTHON_GIL=0 to measure scaling)" if gil else "disabled")
    )
    print(f"one op: a scope with two float32 temporaries of {SIZES[0]} and {SIZES[1]} elements, touched")
    result = scaling(threads, duration, repeat)
    cores = max(1, int(info.get("usable_cpus") or 1))
    print(f"\nPython-level scratch, best of {repeat} x {duration:g} s per cell:")
    report(result, cores)
    if args.json:
        write_json(args.json, {"suite": "scratch", "machine": info, "gil_enabled": gil, **result})
    return 0
