"""Python-level scratch: a size ladder against np.empty, then 1, 2, 4, ... threads.

**Sizes** (one thread): per size from 64 B to 64 MiB, one round trip is
``with tlalloc.scratch() as a: x = a.empty(n)`` (float64) touching each of the
array's pages once (``x[::512] = 0``), against ``x = np.empty(n)`` doing the
same. CPU time of the thread (``time.thread_time``), best of ``--repeat``
samples, the two alternatives interleaved (their order swaps every round); the
arena is a fresh thread arena of ``--arena-size`` (160 MiB by default, so that
every size fits it), on a thread made for the ladder. Each row also gives the
minor page faults per round trip (``getrusage(RUSAGE_THREAD)``): a size where
one side faults is a size where it maps or returns memory on every trip.

**Threads**: one operation is what a thread-pool task does for its temporaries: take a
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

Each thread of a cell counts its own operations and checks its own deadline
every ``CHECK_EVERY`` operations: the loop shares nothing between threads (no
stop flag or event read per operation, which on a free-threaded build would be
a contended cache line in the measurement).

Example:
    $ python -m tlalloc bench scratch --part sizes
    $ PYTHON_GIL=0 python3.13t -m tlalloc bench scratch --threads 1,2,4
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import tlalloc
from tlalloc._report import format_size, format_table
from tlalloc.bench._common import (
    compare_phrase,
    describe_machine,
    machine_info,
    parse_threads,
    write_json,
)

STRATEGIES = ("thread", "numpy", "shared")
SIZES = (256, 64)  # float32 elements of the two temporaries of one operation
#: The size ladder (bytes): 64 B to 64 MiB.
LADDER = (64, 512, 4 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20,
          64 << 20)
QUICK_LADDER = (64, 4 << 10, 1 << 20, 8 << 20, 32 << 20)
LADDER_ALTERNATIVES = ("arena", "numpy")
CHECK_EVERY = 64  # operations between two reads of a thread's own deadline
PAGE_FLOATS = 512  # float64 elements per 4 KiB page: x[::PAGE_FLOATS] touches each page once


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


def round_trip(alternative: str, nbytes: int) -> Callable[[int], float]:
    """``f(reps)``: ``reps`` round trips of ``nbytes`` (a float64 array touched once a
    page), returning the calling thread's CPU seconds for all of them.

    The loop is the whole measurement: local names only, nothing shared.

    Example:
        >>> f = round_trip("arena", 4096)
        >>> f(10) >= 0.0
        True
    """
    n = max(1, nbytes // 8)
    step = PAGE_FLOATS
    clock = time.thread_time
    if alternative == "arena":
        scratch = tlalloc.scratch

        def run(reps: int) -> float:
            t0 = clock()
            for _ in range(reps):
                with scratch() as a:
                    x = a.empty(n)
                    x[::step] = 0.0
                    del x
            return clock() - t0

    elif alternative == "numpy":
        empty = np.empty

        def run(reps: int) -> float:
            t0 = clock()
            for _ in range(reps):
                x = empty(n)
                x[::step] = 0.0
                del x
            return clock() - t0

    else:
        raise ValueError(f"alternative must be one of {', '.join(LADDER_ALTERNATIVES)}, got {alternative!r}")
    return run


def _thread_faults() -> int:
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return resource.getrusage(who).ru_minflt


def _ladder_on_this_thread(sizes: list[int], repeat: int, sample_s: float) -> list[dict[str, Any]]:
    rows = []
    for nbytes in sizes:
        fns = {alt: round_trip(alt, nbytes) for alt in LADDER_ALTERNATIVES}
        for f in fns.values():  # warm-up: the arena's pages and the heap's chunk become resident
            f(3)
        # Round trips per sample: about sample_s of the slower alternative, the same for both.
        one = max(max(f(3) / 3 for f in fns.values()), 1e-7)
        reps = max(3, min(1_000_000, int(sample_s / one)))
        best = dict.fromkeys(LADDER_ALTERNATIVES, float("inf"))
        faults = dict.fromkeys(LADDER_ALTERNATIVES, 0)
        samples: dict[str, list[float]] = {alt: [] for alt in LADDER_ALTERNATIVES}
        for r in range(repeat):
            order = LADDER_ALTERNATIVES if r % 2 == 0 else LADDER_ALTERNATIVES[::-1]
            for alt in order:
                f0 = _thread_faults()
                t = fns[alt](reps) / reps
                faults[alt] += _thread_faults() - f0
                samples[alt].append(t)
                best[alt] = min(best[alt], t)
        rows.append({
            "size_bytes": nbytes,
            "reps": reps,
            "arena_s": best["arena"],
            "numpy_s": best["numpy"],
            "ratio": best["arena"] / best["numpy"] if best["numpy"] > 0 else float("nan"),
            "arena_faults_per_op": faults["arena"] / (reps * repeat),
            "numpy_faults_per_op": faults["numpy"] / (reps * repeat),
            "samples_s": samples,
        })
    return rows


def size_ladder(sizes: list[int], repeat: int, sample_s: float, arena_size: int) -> list[dict[str, Any]]:
    """The ladder of round trips, arena against np.empty, on a new thread whose arena
    has ``arena_size`` bytes. Returns one row per size: best CPU seconds per round
    trip of each, their ratio (arena / numpy) and the page faults per round trip.

    Example:
        >>> rows = size_ladder([64, 1 << 20], 1, 0.001, 8 << 20)
        >>> [r["size_bytes"] for r in rows], all(r["ratio"] > 0 for r in rows)
        ([64, 1048576], True)
    """
    if max(sizes) > arena_size:
        raise ValueError(f"--arena-size {arena_size} is smaller than the largest size {max(sizes)}: "
                         "those round trips would not fit the arena")
    old = tlalloc.get_config()
    tlalloc.configure(arena_size=arena_size)  # for the thread arena made below
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["rows"] = _ladder_on_this_thread(sizes, repeat, sample_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            out["error"] = exc

    try:
        t = threading.Thread(target=run, name="scratch-ladder")
        t.start()
        t.join()
    finally:
        tlalloc.configure(**old.as_dict())
    if "error" in out:
        raise out["error"]
    return out["rows"]  # type: ignore[no-any-return]


def report_ladder(rows: list[dict[str, Any]]) -> None:
    """Print the ladder and the two goals: never slower than np.empty, and at most
    0.1x its time from 32 MiB up."""
    print(format_table(
        ["size", "arena us/op", "np.empty us/op", "arena/numpy", "arena faults/op", "numpy faults/op"],
        [[format_size(r["size_bytes"]), f"{r['arena_s'] * 1e6:,.3f}", f"{r['numpy_s'] * 1e6:,.3f}",
          f"{r['ratio']:.2f}x", f"{r['arena_faults_per_op']:.1f}", f"{r['numpy_faults_per_op']:.1f}"]
         for r in rows]))
    slower = [r for r in rows if r["ratio"] > 1.0]
    big = [r for r in rows if r["size_bytes"] >= 32 << 20]
    if slower:
        worst = max(slower, key=lambda r: r["ratio"])
        print(f"  goal 'no slower than np.empty at any size': missed at "
              f"{', '.join(format_size(r['size_bytes']) for r in slower)} "
              f"(worst {worst['ratio']:.2f}x at {format_size(worst['size_bytes'])})")
    else:
        print("  goal 'no slower than np.empty at any size': met")
    if big:
        over = [r for r in big if r["ratio"] > 0.1]
        print("  goal 'at most 0.1x np.empty's time from 32 MiB up': "
              + ("met" if not over else "missed at " + ", ".join(
                  f"{format_size(r['size_bytes'])} ({r['ratio']:.2f}x)" for r in over)))


def measure(fn: Callable[[int], Any], threads: int, duration: float) -> dict[str, float]:
    """Run ``fn(i)`` from ``threads`` threads for about ``duration`` seconds each.

    All threads start together at a barrier; each then runs until its own deadline
    (a local, read every ``CHECK_EVERY`` operations), so the timed loop reads no
    shared object. Returns total operations per second and each thread's own CPU
    time per operation averaged over the threads (``time.thread_time``).

    Example:
        >>> r = measure(lambda i: None, 2, 0.01)
        >>> r["ops"] > 0 and r["ops_per_s"] > 0 and r["cpu_ns_per_op"] > 0
        True
    """
    counts = [0] * threads
    cpu = [0.0] * threads
    wall = [0.0] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(k: int) -> None:
        try:
            fn(k)
            barrier.wait()
            perf, clock = time.perf_counter, time.thread_time
            t0, c0 = perf(), clock()
            deadline = t0 + duration
            i, n = k, 0
            while True:
                for _ in range(CHECK_EVERY):
                    fn(i)
                    i += threads
                n += CHECK_EVERY
                if perf() >= deadline:
                    break
            cpu[k] = clock() - c0
            wall[k] = perf() - t0
            counts[k] = n
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            errors.append(exc)
            barrier.abort()

    ts = [threading.Thread(target=worker, args=(k,), name=f"scratch-{k}") for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:  # the first real error, not the barrier it broke for the others
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    ops = sum(counts)
    elapsed = max(wall)
    per_thread = [c / n * 1e9 for c, n in zip(cpu, counts, strict=True) if n]
    return {
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed if elapsed > 0 else float("nan"),
        "cpu_ns_per_op": sum(per_thread) / len(per_thread) if per_thread else float("nan"),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--part", choices=("all", "sizes", "threads"), default="all",
                        help="the size ladder, the thread scaling, or both (default)")
    parser.add_argument("--sizes", metavar="LIST",
                        help="ladder sizes, comma-separated, units allowed (default 64B, 512B, 4KiB, "
                             "64KiB, 256KiB, then 1MiB to 64MiB by powers of 2)")
    parser.add_argument("--arena-size", default="160MiB",
                        help="capacity of the ladder's thread arena (default 160MiB)")
    parser.add_argument("--sample", type=float, default=0.1,
                        help="seconds of CPU per ladder sample (default 0.1)")
    parser.add_argument("--threads", default="1,2,4", help="thread counts (default 1,2,4)")
    parser.add_argument("--duration", type=float, default=0.5, help="seconds per cell (default 0.5)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="samples per ladder size and rounds over every thread cell (default 5)")
    parser.add_argument("--quick", action="store_true", help="a short ladder, 1 and 2 threads, short cells")
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


def _parse_sizes(text: str | None, quick: bool) -> list[int]:
    if text is None:
        return list(QUICK_LADDER if quick else LADDER)
    from tlalloc._config import parse_size

    sizes = []
    for part in text.split(","):
        try:
            v = parse_size(part.strip(), "--sizes")
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"--sizes: {exc}") from None
        sizes.append(v)
    if not sizes:
        raise SystemExit("--sizes must name at least one size")
    return sizes


def section(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Python-level scratch as a section of the mix (``tlalloc bench``, with
    ``--mix``): without the GIL, the thread scaling at the mix's thread counts up
    to 8 (figures under ``payload["scratch_scaling"]``); with the GIL, a note."""
    if not args.mix:
        return
    threads = payload["threads"]
    cores = max(1, int(payload["machine"].get("usable_cpus") or 1))
    if payload["smoke"] and not gil_enabled():
        print("\nsmoke run: Python-level scratch without the GIL is left to 'tlalloc bench scratch'")
    elif not gil_enabled():
        # Free-threaded CPython without the GIL: Python code itself runs in
        # parallel, so show what thread arenas do for Python-level scratch.
        print("\nPython-level scratch without the GIL (tlalloc bench scratch):")
        payload["scratch_scaling"] = scaling(
            threads if max(threads) <= 8 else [t for t in threads if t <= 8] or [1], 0.5, 5)
        report(payload["scratch_scaling"], cores)
    else:
        print(
            "\nnote: Python-level scratch scaling runs only without the GIL (a free-threaded "
            "CPython with PYTHON_GIL=0): see 'tlalloc bench scratch'"
        )


def run(args: argparse.Namespace) -> int:
    """Run the suite and print its tables."""
    threads = [1, 2] if args.quick else parse_threads(args.threads)
    duration = min(args.duration, 0.1) if args.quick else args.duration
    repeat = 2 if args.quick else max(1, args.repeat)
    if duration <= 0:
        raise SystemExit("--duration must be > 0")
    if not args.sample > 0:
        raise SystemExit("--sample must be > 0")
    from tlalloc._config import parse_size

    try:
        arena_size = parse_size(args.arena_size, "--arena-size")
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--arena-size: {exc}") from None
    sizes = _parse_sizes(args.sizes, args.quick)
    if args.part != "threads" and max(sizes) > arena_size:
        raise SystemExit(f"--arena-size {format_size(arena_size)} is smaller than the largest size "
                         f"{format_size(max(sizes))}: those round trips would not fit the arena")
    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    out: dict[str, Any] = {"suite": "scratch", "machine": info}
    if args.part in ("all", "sizes"):
        sample = min(args.sample, 0.01) if args.quick else args.sample
        print(f"\nsize ladder, one thread: `with scratch() as a: x = a.empty(n)` against `x = np.empty(n)` "
              f"(float64), each page touched once; CPU time per round trip, best of {repeat} interleaved "
              f"samples of ~{sample:g} s; thread arena of {format_size(arena_size)}")
        rows = size_ladder(sizes, repeat, sample, arena_size)
        report_ladder(rows)
        out["ladder"] = {"arena_size_bytes": arena_size, "repeat": repeat, "rows": rows}
    if args.part in ("all", "threads"):
        _run_threads(args, threads, duration, repeat, info, out)
    if args.json:
        write_json(args.json, out)
    return 0


def _run_threads(args: argparse.Namespace, threads: list[int], duration: float, repeat: int,
                 info: dict[str, Any], out: dict[str, Any]) -> None:
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
    out.update({"gil_enabled": gil, **result})
