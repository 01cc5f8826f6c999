"""Allocation benchmark: thread-local arena against a shared locked arena and malloc.

C level: ns per 64-byte allocation (reset when full) and aggregate throughput at
1, 2, 4, 16 and 32 threads for the three strategies, measured by the same C loop
as ``bench/c/alloc.c``. Python level, same run: ``arena.empty((16,), float32)``
inside an open scope against ``np.empty((16,), float32)``, and a whole
``with tlalloc.scratch() as a: a.empty(...)`` round trip.
"""

from __future__ import annotations

import argparse
import os
import timeit
from typing import Any

import numpy as np

import tlalloc
from tlalloc import _tlalloc
from tlalloc._report import format_table
from tlalloc.bench._common import (
    describe_machine,
    machine_info,
    parse_threads,
    thread_counts,
    write_json,
)

STRATEGIES = ("thread", "shared", "malloc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench alloc``."""
    parser.add_argument("--threads", type=thread_counts, default="1,2,4,16,32",
                        help="comma-separated thread counts")
    parser.add_argument("--allocs", type=int, default=4_000_000,
                        help="allocations per thread at the C level (default 4,000,000)")
    parser.add_argument("--size", type=int, default=64, help="request size in bytes (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best is kept")
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")


def c_level(threads: list[int], allocs: int, size: int, repeat: int) -> list[dict[str, Any]]:
    """Best-of-``repeat`` C-level figures for every thread count and strategy.

    Example:
        >>> rows = c_level([1], 1000, 64, 1)
        >>> sorted(r["strategy"] for r in rows)
        ['malloc', 'shared', 'thread']
    """
    rows = []
    for n in threads:
        for strategy in STRATEGIES:
            runs = [_tlalloc._bench_alloc(strategy, n, allocs, size) for _ in range(repeat)]
            best = min(runs, key=lambda r: r["ns_per_alloc"])
            rows.append({"threads": n, "strategy": strategy, **best})
    return rows


def python_level(number: int, repeat: int) -> dict[str, float]:
    """ns per call of arena.empty, np.empty and a scratch round trip.

    Example:
        >>> r = python_level(100, 1)
        >>> r["arena_empty_ns"] > 0 and r["np_empty_ns"] > 0
        True
    """
    f32 = np.float32
    arena = tlalloc.thread_arena()
    batch = 1000

    def arena_batch() -> None:
        with arena.scope():
            empty = arena.empty
            for _ in range(batch):
                empty((16,), f32)

    def numpy_batch() -> None:
        empty = np.empty
        for _ in range(batch):
            empty((16,), f32)

    scratch = tlalloc.scratch

    def round_trip() -> None:
        for _ in range(batch):
            with scratch() as a:
                a.empty((16,), f32)

    loops = max(1, number // batch)

    def best(fn) -> float:
        return min(timeit.repeat(fn, number=loops, repeat=repeat)) / (loops * batch) * 1e9

    out = {}
    # interleave the measurements so that machine noise hits all of them alike
    samples: dict[str, list[float]] = {"arena": [], "numpy": [], "round": []}
    for _ in range(repeat):
        samples["numpy"].append(best(numpy_batch))
        samples["arena"].append(best(arena_batch))
        samples["round"].append(best(round_trip))
    out["np_empty_ns"] = min(samples["numpy"])
    out["arena_empty_ns"] = min(samples["arena"])
    out["scratch_round_trip_ns"] = min(samples["round"])
    out["arena_vs_np_ratio"] = out["arena_empty_ns"] / out["np_empty_ns"]
    out["round_trip_vs_np_ratio"] = out["scratch_round_trip_ns"] / out["np_empty_ns"]
    return out


def run(args: argparse.Namespace) -> int:
    """Run the allocation benchmark and print its tables."""
    threads = parse_threads(args.threads)
    allocs = 200_000 if args.quick else args.allocs
    repeat = 1 if args.quick else args.repeat
    if allocs < 1 or args.size < 1:
        raise SystemExit("--allocs and --size must be positive")
    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    print(f"C level: {allocs:,} allocations of {args.size} bytes per thread, best of {repeat}\n")
    rows = c_level(threads, allocs, args.size, repeat)
    by = {(r["threads"], r["strategy"]): r for r in rows}
    single = by[(threads[0], "thread")]["allocs_per_second"]
    table = []
    for r in rows:
        base = by[(r["threads"], "thread")]
        table.append([
            r["threads"], r["strategy"], round(r["ns_per_alloc"], 2),
            f"{r['allocs_per_second'] / 1e6:,.1f}",
            f"{r['ns_per_alloc'] / base['ns_per_alloc']:.2f}x",
            f"{r['allocs_per_second'] / single:.2f}x" if r["strategy"] == "thread" else "",
        ])
    print(format_table(
        ["threads", "strategy", "ns/alloc", "M allocs/s (all threads)", "time vs thread",
         "thread scaling"], table))
    py = python_level(20_000 if args.quick else 400_000, repeat=max(repeat, 3))
    print("\nPython level (ns per call, best of runs):")
    print(format_table(["operation", "ns", "ratio to np.empty"], [
        ["np.empty((16,), float32)", round(py["np_empty_ns"], 1), "1.00"],
        ["arena.empty((16,), float32) in an open scope", round(py["arena_empty_ns"], 1),
         f"{py['arena_vs_np_ratio']:.2f}"],
        ["with scratch() as a: a.empty((16,), float32)", round(py["scratch_round_trip_ns"], 1),
         f"{py['round_trip_vs_np_ratio']:.2f}"],
    ]))
    goals = []
    if 1 in threads:
        goals.append(("thread-local ns/alloc at 1 thread <= 3",
                      by[(1, "thread")]["ns_per_alloc"] <= 3.0))
    if 1 in threads and 2 in threads:
        ratio = by[(2, "thread")]["allocs_per_second"] / by[(1, "thread")]["allocs_per_second"]
        goals.append((f"2-thread aggregate >= 1.8x 1-thread (measured {ratio:.2f}x)", ratio >= 1.8))
    if 2 in threads:
        r = by[(2, "shared")]["ns_per_alloc"] / by[(2, "thread")]["ns_per_alloc"]
        goals.append((f"shared at 2 threads >= 10x slower than thread (measured {r:.1f}x)", r >= 10))
    goals.append((f"arena.empty / np.empty <= 1.0 (measured {py['arena_vs_np_ratio']:.2f})",
                  py["arena_vs_np_ratio"] <= 1.0))
    goals.append((f"round trip / np.empty <= 2.0 (measured {py['round_trip_vs_np_ratio']:.2f})",
                  py["round_trip_vs_np_ratio"] <= 2.0))
    print("\nGoals (on a machine with at least 2 idle cores):")
    for text, ok in goals:
        print(f"  [{'met' if ok else 'NOT met'}] {text}")
    if os.cpu_count() and os.cpu_count() < max(threads):
        print(f"  note: {os.cpu_count()} CPUs; runs with more threads than CPUs time-share them")
    if args.json:
        write_json(args.json, {"suite": "alloc", "allocs_per_thread": allocs, "size": args.size,
                               "c_level": rows, "python_level": py,
                               "goals": [{"goal": g, "met": ok} for g, ok in goals],
                               "machine": info})
        print(f"\nwrote {args.json}")
    return 0
