"""NumPy's array data on the tlalloc pool against NumPy's default allocator.

Two measurements, the alternatives run side by side and interleaved:

1. **Temporaries**: ``a * b + c`` on float64 arrays of 8 KiB, 256 KiB, 4 MiB,
   64 MiB and 256 MiB, from 1 and 2 threads, with the tlalloc data-memory handler
   (``tlalloc.numpy_alloc.pool_allocator()`` in each thread) and with NumPy's
   default. Each cell is the CPU time per expression (``time.thread_time`` of the
   threads that compute it, which counts the kernel's page-fault handling) and
   the minor page faults per expression (``getrusage(RUSAGE_THREAD)``); rounds
   alternate the two allocators and the median is shown, with the ratio
   default / pool (above 1: the pool is faster).
2. **Churn**: 4 threads allocate arrays of 1 byte to 2 MB (log-uniform sizes,
   every page written), each replacing one of 64 live arrays per thread, for a
   duration (3 minutes by default). Each allocator runs in its own Python
   process (RSS is the process's), the processes alternate, and each reports the
   allocation rate and its RSS sampled every 10 ms from ``/proc/self/statm``
   (peak and mean).

Example:
    $ tlalloc bench numpy-alloc --json numpy-alloc.json     # about 8 minutes
    $ tlalloc bench numpy-alloc --quick                     # a smoke run, seconds
    $ tlalloc bench numpy-alloc --skip-churn --sizes 64MiB --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from tlalloc._report import format_table
from tlalloc.bench._common import describe_machine, machine_info, size_list, write_json

DEFAULT_SIZES = "8KiB,256KiB,4MiB,64MiB,256MiB"
ALLOCATORS = ("numpy", "tlalloc")  # NumPy's default handler, the tlalloc pool's

CHURN_MAX_BYTES = 2_000_000
CHURN_SLOTS = 64  # live arrays per thread


def format_size(n: int) -> str:
    """Bytes as the shortest exact KiB/MiB string.

    Example:
        >>> format_size(262144), format_size(64 << 20), format_size(1000)
        ('256 KiB', '64 MiB', '1000 B')
    """
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench numpy-alloc``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> a = p.parse_args([])
        >>> a.sizes, a.threads, a.churn_seconds
        ('8KiB,256KiB,4MiB,64MiB,256MiB', '1,2', 180.0)
    """
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"bytes of each float64 array (default {DEFAULT_SIZES})")
    parser.add_argument("--threads", default="1,2", help="thread counts for a * b + c (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the temporaries (default 3; median shown)")
    parser.add_argument("--target-seconds", type=float, default=0.3,
                        help="CPU seconds each temporaries cell aims at (default 0.3)")
    parser.add_argument("--churn-seconds", type=float, default=180.0,
                        help="duration of each churn run (default 180)")
    parser.add_argument("--churn-threads", type=int, default=4, help="churn threads (default 4)")
    parser.add_argument("--churn-rounds", type=int, default=1,
                        help="churn runs per allocator, alternating (default 1)")
    parser.add_argument("--skip-ops", action="store_true", help="skip the a * b + c table")
    parser.add_argument("--skip-churn", action="store_true", help="skip the churn")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round, 0.02 s cells, 3 s churn")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def _thread_faults() -> int:
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return resource.getrusage(who).ru_minflt


def _handler(allocator: str) -> contextlib.AbstractContextManager[None]:
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator {allocator!r}: choose one of {', '.join(ALLOCATORS)}")
    if allocator == "tlalloc":
        from tlalloc import numpy_alloc

        return numpy_alloc.pool_allocator()
    return contextlib.nullcontext()


def time_expression(arrays: tuple[Any, Any, Any], threads: int, iters: int,
                    allocator: str) -> dict[str, float]:
    """``threads`` threads each evaluate ``a * b + c`` ``iters`` times (after one
    untimed evaluation) under ``allocator`` ("numpy" or "tlalloc").

    Returns CPU seconds and minor page faults per expression (summed over the
    threads, divided by all expressions) and the wall seconds of the timed part.

    Example:
        >>> import numpy as np
        >>> x = np.ones(1000)
        >>> r = time_expression((x, x, x), 2, 10, "tlalloc")
        >>> sorted(r), r["cpu_per_op"] > 0
        (['cpu_per_op', 'faults_per_op', 'wall_per_op'], True)
    """
    a, b, c = arrays
    barrier = threading.Barrier(threads + 1)
    cpu = [0.0] * threads
    faults = [0] * threads
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with _handler(allocator):
                r = a * b + c  # warm-up, untimed
                del r
                barrier.wait()
                f0, t0 = _thread_faults(), time.thread_time()
                for _ in range(iters):
                    a * b + c
                cpu[i] = time.thread_time() - t0
                faults[i] = _thread_faults() - f0
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            barrier.abort()
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    try:
        barrier.wait()
        w0 = time.perf_counter()
        barrier.wait()
        wall = time.perf_counter() - w0
    except threading.BrokenBarrierError:
        wall = float("nan")
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError(f"a * b + c under {allocator} failed: {errors[0]!r}") from errors[0]
    ops = threads * iters
    return {"cpu_per_op": sum(cpu) / ops, "faults_per_op": sum(faults) / ops,
            "wall_per_op": wall / iters}


def ops_table(sizes: list[int], threads: list[int], rounds: int, target: float,
              log: Any = print) -> list[dict[str, Any]]:
    """The temporaries measurement: every (size, threads) cell under both
    allocators, ``rounds`` interleaved rounds (the order alternates per round).

    Example:
        >>> rows = ops_table([8192], [1], 1, 0.001, log=lambda *a: None)
        >>> rows[0]["size_bytes"], rows[0]["threads"], sorted(rows[0]["cpu_per_op"])
        (8192, 1, ['numpy', 'tlalloc'])
    """
    import numpy as np

    rows = []
    for size in sizes:
        n = max(1, size // 8)
        arrays = (np.full(n, 1.5), np.full(n, 2.0), np.full(n, 0.25))
        for t in threads:
            # Calibrate on NumPy's default: the same count for both allocators.
            one = time_expression(arrays, t, 1, "numpy")["cpu_per_op"]
            iters = int(min(1_000_000, max(3, target / max(one * t, 1e-9))))
            runs: dict[str, list[dict[str, float]]] = {a: [] for a in ALLOCATORS}
            for r in range(rounds):
                order = ALLOCATORS if r % 2 == 0 else ALLOCATORS[::-1]
                for alloc in order:
                    runs[alloc].append(time_expression(arrays, t, iters, alloc))
            row: dict[str, Any] = {"size_bytes": size, "threads": t, "iters": iters, "runs": runs}
            for key in ("cpu_per_op", "faults_per_op", "wall_per_op"):
                row[key] = {a: float(statistics.median(x[key] for x in runs[a])) for a in ALLOCATORS}
            row["speed"] = row["cpu_per_op"]["numpy"] / row["cpu_per_op"]["tlalloc"]
            row["wall_speed"] = row["wall_per_op"]["numpy"] / row["wall_per_op"]["tlalloc"]
            row["speed_rounds"] = [n_["cpu_per_op"] / p["cpu_per_op"]
                                   for n_, p in zip(runs["numpy"], runs["tlalloc"], strict=True)]
            rows.append(row)
            log(f"  {format_size(size):>8s} x{t}: speed {row['speed']:.2f}, faults/op "
                f"{row['faults_per_op']['numpy']:.1f} vs {row['faults_per_op']['tlalloc']:.1f}")
        del arrays
    return rows


def format_ops(rows: list[dict[str, Any]]) -> str:
    """The temporaries table as text.

    Example:
        >>> print(format_ops([]).splitlines()[0])  # doctest: +ELLIPSIS
        size  threads  numpy us/op  tlalloc us/op  speed (CPU)...
    """
    out = []
    for r in rows:
        rng = r.get("speed_rounds") or [r["speed"]]
        out.append([format_size(r["size_bytes"]), r["threads"],
                    f"{r['cpu_per_op']['numpy'] * 1e6:,.1f}", f"{r['cpu_per_op']['tlalloc'] * 1e6:,.1f}",
                    f"{r['speed']:.2f}", f"{min(rng):.2f}-{max(rng):.2f}", f"{r['wall_speed']:.2f}",
                    f"{r['faults_per_op']['numpy']:,.1f}", f"{r['faults_per_op']['tlalloc']:,.1f}"])
    return format_table(["size", "threads", "numpy us/op", "tlalloc us/op", "speed (CPU)",
                         "rounds", "speed (wall)", "numpy faults/op", "tlalloc faults/op"], out)


def markdown(rows: list[dict[str, Any]], churn_result: dict[str, Any] | None) -> str:
    """Both tables as Markdown (for BENCHMARKS.md); a speed below 1 is in bold.

    Example:
        >>> r = {"size_bytes": 8192, "threads": 1, "cpu_per_op": {"numpy": 1e-6, "tlalloc": 2e-6},
        ...      "speed": 0.5, "wall_speed": 0.5, "faults_per_op": {"numpy": 0.0, "tlalloc": 1.0}}
        >>> print(markdown([r], None).splitlines()[2])
        | 8 KiB | 1 | 1.0 | 2.0 | **0.50** | - | 0.50 | 0.0 | 1.0 |
    """
    lines = ["| size | threads | numpy us/op | tlalloc us/op | speed (CPU) | rounds | speed (wall) "
             "| numpy faults/op | tlalloc faults/op |", "|" + "---|" * 9]
    for r in rows:
        rng = r.get("speed_rounds")
        sp = f"{r['speed']:.2f}"
        lines.append(
            f"| {format_size(r['size_bytes'])} | {r['threads']} | {r['cpu_per_op']['numpy'] * 1e6:,.1f} "
            f"| {r['cpu_per_op']['tlalloc'] * 1e6:,.1f} | {'**' + sp + '**' if r['speed'] < 1 else sp} "
            f"| {f'{min(rng):.2f}-{max(rng):.2f}' if rng else '-'} | {r['wall_speed']:.2f} "
            f"| {r['faults_per_op']['numpy']:,.1f} | {r['faults_per_op']['tlalloc']:,.1f} |")
    if churn_result:
        c = churn_result
        lines += ["", "| allocator | allocations/s | RSS peak MiB | RSS mean MiB | RSS at start MiB |",
                  "|---|---|---|---|---|"]
        for a, m in c["median"].items():
            lines.append(f"| {a} | {m['alloc_per_s']:,.0f} | {m['rss_peak_bytes'] / 2**20:.0f} "
                         f"| {m['rss_mean_bytes'] / 2**20:.0f} | {m['rss_baseline_bytes'] / 2**20:.0f} |")
        lines.append(f"| tlalloc / numpy | {c['rate_ratio']:.2f} | {c['rss_peak_ratio']:.2f} "
                     f"| {c['rss_mean_ratio']:.2f} | |")
    return "\n".join(lines)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def churn(allocator: str, seconds: float, threads: int, seed: int = 12) -> dict[str, Any]:
    """In this process: ``threads`` threads allocate arrays of 1 B to 2 MB
    (log-uniform, every page written), each replacing one of its 64 live arrays,
    for ``seconds``; returns allocations per second and RSS (baseline, peak,
    mean) sampled every 10 ms.

    Example:
        >>> r = churn("tlalloc", 0.05, 2)
        >>> r["allocations"] > 0 and r["rss_peak_bytes"] >= r["rss_baseline_bytes"] > 0
        True
    """
    import numpy as np

    _handler(allocator)  # checks the name before any thread starts
    stop = threading.Event()
    counts = [0] * threads
    errors: list[BaseException] = []
    samples: list[int] = []
    log_max = math.log(CHURN_MAX_BYTES)

    def work(i: int) -> None:
        rng = random.Random(seed + i)
        try:
            with _handler(allocator):
                live: list[Any] = [None] * CHURN_SLOTS
                n = 0
                while not stop.is_set():
                    for _ in range(64):
                        size = int(math.exp(rng.random() * log_max))
                        arr = np.empty(size, np.uint8)
                        arr[::4096] = 1  # write every page, as filling it would
                        live[rng.randrange(CHURN_SLOTS)] = arr
                    n += 64
                counts[i] = n
                live.clear()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    baseline = _rss_bytes()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    end = t0 + seconds
    while time.perf_counter() < end and not stop.is_set():
        samples.append(_rss_bytes())
        time.sleep(0.01)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"churn under {allocator} failed: {errors[0]!r}") from errors[0]
    samples = samples or [_rss_bytes()]
    total = sum(counts)
    return {"allocator": allocator, "seconds": elapsed, "threads": threads, "allocations": total,
            "alloc_per_s": total / elapsed, "rss_baseline_bytes": baseline,
            "rss_peak_bytes": max(samples), "rss_mean_bytes": int(statistics.fmean(samples)),
            "rss_samples": len(samples)}


def churn_in_subprocess(allocator: str, seconds: float, threads: int) -> dict[str, Any]:
    """Run :func:`churn` in a fresh Python process and return its result.

    Example:
        >>> churn_in_subprocess("numpy", 0.05, 1)["allocator"]
        'numpy'
    """
    code = ("import json, sys; from tlalloc.bench.numpy_alloc import churn; "
            "print(json.dumps(churn(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))))")
    r = subprocess.run([sys.executable, "-c", code, allocator, repr(seconds), str(threads)],
                       capture_output=True, text=True, check=False, timeout=seconds * 3 + 120)
    if r.returncode != 0:
        raise RuntimeError(f"churn child ({allocator}) exited {r.returncode}: {r.stderr.strip()[-800:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def churn_table(seconds: float, threads: int, rounds: int, log: Any = print) -> dict[str, Any]:
    """Alternate churn processes of the two allocators; medians and ratios."""
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in ALLOCATORS}
    for r in range(rounds):
        for alloc in (ALLOCATORS if r % 2 == 0 else ALLOCATORS[::-1]):
            res = churn_in_subprocess(alloc, seconds, threads)
            runs[alloc].append(res)
            log(f"  churn {alloc:8s}: {res['alloc_per_s']:,.0f} allocations/s, RSS peak "
                f"{res['rss_peak_bytes'] / 2**20:.0f} MiB, mean {res['rss_mean_bytes'] / 2**20:.0f} MiB")
    med = {a: {k: float(statistics.median(x[k] for x in runs[a]))
               for k in ("alloc_per_s", "rss_peak_bytes", "rss_mean_bytes", "rss_baseline_bytes")}
           for a in ALLOCATORS}
    return {"seconds": seconds, "threads": threads, "rounds": rounds, "runs": runs, "median": med,
            "rate_ratio": med["tlalloc"]["alloc_per_s"] / med["numpy"]["alloc_per_s"],
            "rss_peak_ratio": med["tlalloc"]["rss_peak_bytes"] / med["numpy"]["rss_peak_bytes"],
            "rss_mean_ratio": med["tlalloc"]["rss_mean_bytes"] / med["numpy"]["rss_mean_bytes"]}


def format_churn(c: dict[str, Any]) -> str:
    """The churn result as a table.

    Example:
        >>> m = {"alloc_per_s": 1e5, "rss_peak_bytes": 2**27, "rss_mean_bytes": 2**26,
        ...      "rss_baseline_bytes": 2**25}
        >>> c = {"median": {"numpy": m, "tlalloc": m}, "rate_ratio": 1.0,
        ...      "rss_peak_ratio": 1.0, "rss_mean_ratio": 1.0}
        >>> print(format_churn(c).splitlines()[2])  # doctest: +NORMALIZE_WHITESPACE
        numpy 100,000 128 64 32
    """
    rows = [[a, f"{m['alloc_per_s']:,.0f}", f"{m['rss_peak_bytes'] / 2**20:.0f}",
             f"{m['rss_mean_bytes'] / 2**20:.0f}", f"{m['rss_baseline_bytes'] / 2**20:.0f}"]
            for a, m in c["median"].items()]
    rows.append(["tlalloc / numpy", f"{c['rate_ratio']:.2f}", f"{c['rss_peak_ratio']:.2f}",
                 f"{c['rss_mean_ratio']:.2f}", ""])
    return format_table(["allocator", "allocations/s", "RSS peak MiB", "RSS mean MiB",
                         "RSS at start MiB"], rows)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tlalloc bench numpy-alloc``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> run(p.parse_args(["--rounds", "0"]))
        Traceback (most recent call last):
        ValueError: --rounds=0 must be at least 1
    """
    from tlalloc.bench._common import parse_threads

    for opt in ("rounds", "churn_threads", "churn_rounds"):
        if getattr(args, opt) < 1:
            raise ValueError(f"--{opt.replace('_', '-')}={getattr(args, opt)!r} must be at least 1")
    for opt in ("target_seconds", "churn_seconds"):
        v = getattr(args, opt)
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"--{opt.replace('_', '-')}={v!r} must be a positive number of seconds")
    sizes = size_list(args.sizes)
    threads = parse_threads(args.threads)
    rounds, target, churn_s = args.rounds, args.target_seconds, args.churn_seconds
    if args.quick:
        rounds, target, churn_s = 1, 0.02, min(churn_s, 3.0)
    payload: dict[str, Any] = {"machine": machine_info()}
    print(f"machine: {describe_machine()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.skip_ops:
        print(f"a * b + c on float64 arrays, {rounds} interleaved round(s), ~{target:g} CPU s per cell:")
        rows = ops_table(sizes, threads, rounds, target)
        print(format_ops(rows))
        print("speed = numpy's CPU time per expression / tlalloc's (>1: the pool is faster); "
              "faults = minor page faults per expression (RUSAGE_THREAD)")
        payload["ops"] = rows
    if not args.skip_churn:
        print(f"churn: {args.churn_threads} threads, arrays of 1 B to 2 MB, {CHURN_SLOTS} live per "
              f"thread, {churn_s:g} s per run, {args.churn_rounds} run(s) per allocator, alternating:")
        c = churn_table(churn_s, args.churn_threads, args.churn_rounds)
        print(format_churn(c))
        payload["churn"] = c
    if args.markdown:
        print()
        print(markdown(payload.get("ops", []), payload.get("churn")))
    payload["load_end"] = list(os.getloadavg())
    if args.json:
        write_json(args.json, payload)
    return 0
