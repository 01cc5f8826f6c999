"""The Engram-style kernel mix from 1 to 32 threads: thread arenas against a shared arena, malloc and NumPy.

One operation of the mix is one call of each kernel, as a memory service would
make them: cosine similarity of a 768-d float32 query against 1000 candidates
(top 10), spreading activation from one seed over a 1000-node graph with 10
edges per node (top 10), and decay of 10,000 float32 strengths. Every thread
count runs every scratch strategy of the same C kernels (``thread``: the calling
thread's arena, the product; ``shared``: one arena behind a mutex; ``malloc``)
and the pure-NumPy implementation of the same meaning (``numpy``). Each kernel
can also run alone (``--kernel``).

Before timing, every strategy's results are compared: the three C strategies
must agree bit for bit, NumPy within float32 rounding. After the run the thread
arenas' statistics are printed (no overflows expected at the default size),
followed by the single-thread comparison of each kernel with NumPy/SciPy
(``tlalloc bench kernels``; skip it with ``--no-compare``).

Example:
    $ tlalloc bench --quick
    $ tlalloc bench --kernel spread --threads 1,2,4 --json spread.json --plot spread.png
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import tlalloc
from tlalloc import _tlalloc, kernels
from tlalloc.bench import kernel_compare, numpy_kernels
from tlalloc.bench._common import (
    Progress,
    compare_phrase,
    describe_machine,
    format_table,
    machine_info,
    parse_threads,
    write_json,
)

STRATEGIES = ("thread", "shared", "malloc", "numpy")
KERNELS = ("mix", "cosine", "spread", "decay")
DEFAULT_THREADS = "1,2,4,8,16,32"
TOP_K = 10


@dataclass
class Workload:
    """Inputs of the mix, shared read-only by every thread."""

    candidates: np.ndarray
    queries: np.ndarray  # one query per operation index (cycled)
    graph: tuple[np.ndarray, np.ndarray, np.ndarray]
    seeds: np.ndarray
    strengths: np.ndarray
    ages: np.ndarray
    tau: float = 86400.0


def make_workload(
    seed: int = 0,
    dim: int = 768,
    n_candidates: int = 1000,
    n_nodes: int = 1000,
    degree: int = 10,
    n_strengths: int = 10_000,
) -> Workload:
    """The mix's inputs (deterministic for a seed).

    Example:
        >>> w = make_workload(dim=8, n_candidates=5, n_nodes=20, degree=3, n_strengths=7)
        >>> w.candidates.shape, w.graph[0].shape, w.strengths.dtype.name
        ((5, 8), (21,), 'float32')
    """
    rng = np.random.default_rng(seed)
    return Workload(
        candidates=rng.standard_normal((n_candidates, dim), dtype=np.float32),
        queries=rng.standard_normal((64, dim), dtype=np.float32),
        graph=kernel_compare.random_graph(n_nodes, degree, seed=seed + 1),
        seeds=rng.integers(0, n_nodes, 64),
        strengths=rng.random(n_strengths, dtype=np.float32),
        ages=(rng.random(n_strengths, dtype=np.float32) * 30 * 86400).astype(np.float32),
    )


def operation(w: Workload, strategy: str, kernel: str) -> Callable[[int], list[Any]]:
    """The function one thread calls for operation ``i`` (a list of kernel results).

    Example:
        >>> w = make_workload(dim=8, n_candidates=5, n_nodes=20, degree=3, n_strengths=7)
        >>> len(operation(w, "thread", "mix")(0))
        3
    """
    c, g, s, a, tau = w.candidates, w.graph, w.strengths, w.ages, w.tau
    queries, seeds = w.queries, w.seeds
    nq, ns = len(queries), len(seeds)
    if strategy == "numpy":
        cos = numpy_kernels.cosine_similarity
        spread = numpy_kernels.spread_activation
        dec = numpy_kernels.decay

        def one_cos(i: int) -> Any:
            return cos(queries[i % nq], c, top_k=TOP_K)

        def one_spread(i: int) -> Any:
            return spread(g, int(seeds[i % ns]), top_k=TOP_K)

        def one_decay(i: int) -> Any:
            return dec(s, a, tau=tau)

    elif strategy in ("thread", "shared", "malloc"):
        kcos, kspread, kdec = kernels.cosine_similarity, kernels.spread_activation, kernels.decay
        sc = strategy

        def one_cos(i: int) -> Any:
            return kcos(queries[i % nq], c, top_k=TOP_K, _scratch=sc)  # type: ignore[arg-type]

        def one_spread(i: int) -> Any:
            return kspread(g, int(seeds[i % ns]), top_k=TOP_K, _scratch=sc)  # type: ignore[arg-type]

        def one_decay(i: int) -> Any:
            return kdec(s, a, tau=tau, _scratch=sc)  # type: ignore[arg-type]

    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    if kernel == "mix":
        return lambda i: [one_cos(i), one_spread(i), one_decay(i)]
    if kernel == "cosine":
        return lambda i: [one_cos(i)]
    if kernel == "spread":
        return lambda i: [one_spread(i)]
    if kernel == "decay":
        return lambda i: [one_decay(i)]
    raise ValueError(f"unknown kernel {kernel!r}; choose from {KERNELS}")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(a, b))


def _close(kernel_results: list[Any], numpy_results: list[Any], kernel: str) -> list[str]:
    """Compare C results with NumPy's: scores within float32 rounding, same top-k
    (up to near-ties), decay within 2e-6 relative."""
    problems = []
    names = ["cosine", "spread", "decay"] if kernel == "mix" else [kernel]
    for name, got, want in zip(names, kernel_results, numpy_results, strict=True):
        if name == "decay":
            if not np.allclose(got, want, rtol=2e-6, atol=1e-30):
                problems.append("decay differs from NumPy beyond 2e-6")
            continue
        (gi, gv), (wi, wv) = got, want
        if not np.allclose(gv, wv, rtol=0, atol=2e-5):
            problems.append(f"{name} top-{TOP_K} scores differ from NumPy beyond 2e-5")
        elif not np.array_equal(gi, wi):
            # the same scores may order near-ties differently: only tolerated if tied
            if not np.allclose(np.sort(gv), np.sort(wv), atol=2e-5):
                problems.append(f"{name} top-{TOP_K} ids differ from NumPy")
    return problems


def verify(w: Workload, kernel: str, ops: int = 8) -> list[str]:
    """Run every strategy single-threaded on the same operations and compare.

    Example:
        >>> verify(make_workload(dim=16, n_candidates=50, n_nodes=100, n_strengths=100), "mix")
        []
    """
    problems: list[str] = []
    for i in range(ops):
        ref = operation(w, "thread", kernel)(i)
        for strategy in ("shared", "malloc"):
            if not _equal(operation(w, strategy, kernel)(i), ref):
                problems.append(f"op {i}: {strategy} differs from thread")
        problems += [f"op {i}: {p}" for p in _close(ref, operation(w, "numpy", kernel)(i), kernel)]
    return problems


def measure(fn: Callable[[int], Any], threads: int, duration: float) -> dict[str, float]:
    """Run ``fn(i)`` from ``threads`` threads for about ``duration`` seconds.

    Each thread warms up with one call (creating its thread arena), all start
    together at a barrier, and count operations until the main thread raises
    the stop flag. Returns total operations per second, the elapsed time, and
    each thread's own CPU time per operation averaged over the threads
    (``cpu_ns_per_op``, from ``time.thread_time``): on a loaded machine the
    throughput falls with the load, the CPU time only grows if the threads slow
    each other down (a lock, a contended cache line).

    Example:
        >>> r = measure(lambda i: None, 2, 0.01)
        >>> r["ops"] > 0 and r["ops_per_s"] > 0 and r["cpu_ns_per_op"] > 0
        True
    """
    counts = [0] * threads
    cpu = [0.0] * threads
    errors: list[BaseException] = []
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        try:
            fn(k)
            barrier.wait()
            t0 = time.thread_time()
            i, n = k, 0
            while not stop.is_set():
                fn(i)
                i += threads
                n += 1
            cpu[k] = time.thread_time() - t0
            counts[k] = n
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            errors.append(exc)
            barrier.abort()

    ts = [threading.Thread(target=worker, args=(k,), name=f"mix-{k}") for k in range(threads)]
    for t in ts:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    ops = sum(counts)
    per_thread = [c / n * 1e9 for c, n in zip(cpu, counts, strict=True) if n]
    return {
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed,
        "cpu_ns_per_op": sum(per_thread) / len(per_thread) if per_thread else float("nan"),
    }


def parse_list(text: str, allowed: tuple[str, ...], name: str) -> list[str]:
    """Parse a comma-separated choice list.

    Example:
        >>> parse_list("thread, numpy", STRATEGIES, "--strategies")
        ['thread', 'numpy']
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if not items or bad:
        raise SystemExit(f"{name} must be a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench`` (the mix)."""
    parser.add_argument(
        "--kernel", choices=KERNELS, default="mix", help="run the mix (default) or one kernel alone"
    )
    parser.add_argument(
        "--threads",
        default=DEFAULT_THREADS,
        help=f"comma-separated thread counts (default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="comma-separated subset of thread,shared,malloc,numpy",
    )
    parser.add_argument("--duration", type=float, default=0.2, help="seconds per measurement (default 0.2)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="measurements per cell, interleaved across strategies; the best is kept",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: threads 1,2,4, short measurements, quick comparison"
    )
    parser.add_argument(
        "--numpy-blas-threads",
        type=int,
        default=1,
        metavar="N",
        help="BLAS threads while the numpy strategy runs (default 1, as in a "
        "threaded server; 0 leaves the library default)",
    )
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the single-thread comparison with NumPy/SciPy",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of throughput against threads")


def _plot(
    path: str, threads: list[int], strategies: list[str], by: dict, kernel: str, info: dict[str, Any]
) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped the plot: matplotlib is not installed (pip install 'tlalloc[plot]')"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in strategies:
        ax.plot(threads, [by[(s, t)]["ops_per_s"] for t in threads], marker="o", label=s)
    ax.set_xscale("log", base=2)
    ax.set_xticks(threads, [str(t) for t in threads])
    ax.set_xlabel("threads")
    ax.set_ylabel(f"{kernel} operations per second")
    ax.set_title(
        f"tlalloc bench --kernel {kernel}\n{info['cpu_model']}, {info['usable_cpus']} cores", fontsize=9
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _stats_summary() -> dict[str, Any]:
    g = tlalloc.stats()
    return {
        k: g[k]
        for k in (
            "num_threads",
            "num_allocations",
            "num_overflows",
            "fallback_bytes",
            "num_resets",
            "peak_bytes",
            "capacity_bytes",
        )
        if k in g
    }


def _findings(
    threads: list[int],
    strategies: list[str],
    best: dict[tuple[str, int], dict[str, float]],
    margins: list[dict[str, Any]],
    spread: Callable[[tuple[str, int]], float],
    delta: dict[str, int],
    cores: int,
) -> list[str]:
    """What the run says to a user, in sentences: scaling, the margin over
    each alternative (called equal within the run-to-run spread), overflows.

    Example:
        >>> best = {("thread", 1): {"ops_per_s": 100.0}, ("thread", 2): {"ops_per_s": 190.0},
        ...         ("shared", 1): {"ops_per_s": 99.0}, ("shared", 2): {"ops_per_s": 120.0}}
        >>> margins = [{"threads": 1, "thread_vs_shared": 100 / 99},
        ...            {"threads": 2, "thread_vs_shared": 190 / 120}]
        >>> for f in _findings([1, 2], ["thread", "shared"], best, margins, lambda k: 0.05,
        ...                    {"num_overflows": 0}, 2):
        ...     print(f)
        from 1 to 2 threads, thread arenas' throughput grew 1.90x (2 cores to run on)
        1 thread: thread arenas equal to shared (1.01x, within the 5% run-to-run spread)
        2 threads: thread arenas 1.58x the throughput of shared
        no thread arena overflowed at its default size
    """
    out: list[str] = []
    if "thread" in strategies and 1 in threads:
        for t in threads:
            if t > 1 and t <= cores:
                r = best[("thread", t)]["ops_per_s"] / best[("thread", 1)]["ops_per_s"]
                out.append(
                    f"from 1 to {t} threads, thread arenas' throughput grew {r:.2f}x "
                    f"({cores} cores to run on)"
                )
    for m in margins:
        t = m["threads"]
        for key, v in m.items():
            if not key.startswith("thread_vs_"):
                continue
            o = key[len("thread_vs_"):]
            noise = max(spread(("thread", t)), spread((o, t)))
            out.append(f"{t} thread{'s' if t > 1 else ''}: thread arenas {compare_phrase(v, noise, o)}")
    if "thread" in strategies:
        n = delta.get("num_overflows", 0)
        out.append(
            "no thread arena overflowed at its default size"
            if n == 0
            else f"{n:,} requests did not fit a thread arena and were served another way: "
            "a larger TLALLOC_ARENA_SIZE would keep them in the arena (see tlalloc.advise())"
        )
    if cores < max(threads):
        out.append(f"{cores} usable cores: runs with more threads time-share them")
    return out


def run(args: argparse.Namespace) -> int:
    """Run the mix and print its tables."""
    threads = [1, 2, 4] if args.quick and args.threads == DEFAULT_THREADS else parse_threads(args.threads)
    strategies = parse_list(args.strategies, STRATEGIES, "--strategies")
    duration = min(args.duration, 0.1) if args.quick else args.duration
    repeat = 1 if args.quick else max(1, args.repeat)
    if duration <= 0:
        raise SystemExit("--duration must be > 0")
    info = machine_info()
    skipped: list[str] = []
    print(f"machine: {describe_machine(info)}")
    print(
        f"kernels: vectorised path {kernels.isa()}; arena size "
        f"{tlalloc.get_config().arena_size:,} bytes per thread"
    )
    w = make_workload()
    what = {
        "mix": "one op = cosine (768-d x 1000, top 10) + spread (1000 nodes x 10 edges, "
        "top 10) + decay (10,000)",
        "cosine": "one op = cosine similarity, 768-d query x 1000 float32 candidates, top 10",
        "spread": "one op = spreading activation, 1000 nodes x 10 edges, one seed, top 10",
        "decay": "one op = decay of 10,000 float32 strengths",
    }[args.kernel]
    print(f"workload: {what}")
    if "numpy" in strategies:
        print(
            "numpy strategy: BLAS limited to "
            + (f"{args.numpy_blas_threads} thread(s)" if args.numpy_blas_threads else "its default")
            + " while it runs"
        )

    problems = verify(w, args.kernel)
    if problems:
        print("verification FAILED: strategies disagree:")
        for p in problems[:20]:
            print(f"  {p}")
        return 1
    print("verified: thread, shared and malloc agree bit for bit; NumPy agrees within float32 rounding")

    fns = {s: operation(w, s, args.kernel) for s in strategies}
    best: dict[tuple[str, int], dict[str, float]] = {}
    samples: dict[tuple[str, int], list[float]] = {}
    cells = len(threads) * len(strategies) * repeat
    for s in strategies:  # warm-up, untimed: caches, page faults, BLAS threads
        with kernel_compare.blas_threads(args.numpy_blas_threads if s == "numpy" else None):
            measure(fns[s], 1, min(duration, 0.1))
    stats_before = _stats_summary()
    with Progress(total=cells, desc=f"bench {args.kernel}", enabled=args.progress) as bar:
        if bar.skipped:
            skipped.append("no progress bar: tqdm is not installed (pip install 'tlalloc[progress]')")
        # Rounds over every cell, strategies rotating within each thread count: the
        # repeats of one cell are spread over the whole run, so a burst of load from
        # elsewhere on the machine spoils one round of a cell, not all of them.
        for rep in range(repeat):
            for t in threads:
                for s in strategies[rep % len(strategies) :] + strategies[: rep % len(strategies)]:
                    limit = args.numpy_blas_threads if s == "numpy" and args.numpy_blas_threads else None
                    with kernel_compare.blas_threads(limit):
                        r = measure(fns[s], t, duration)
                    key = (s, t)
                    samples.setdefault(key, []).append(r["ops_per_s"])
                    if key not in best or r["ops_per_s"] > best[key]["ops_per_s"]:
                        best[key] = r
                    bar.update()
    stats_after = _stats_summary()

    def spread(key: tuple[str, int]) -> float:
        # run-to-run spread of a cell: best / worst repeat - 1 (0 with one repeat)
        v = samples[key]
        return max(v) / min(v) - 1 if min(v) > 0 else float("inf")

    cores = max(1, int(info.get("usable_cpus") or 1))
    rows, records = [], []
    for s in strategies:
        for t in threads:
            ops = best[(s, t)]["ops_per_s"]
            speedup = ops / best[(s, 1)]["ops_per_s"] if (s, 1) in best else float("nan")
            eff = speedup / min(t, cores)
            rows.append([s, t, f"{ops:,.0f}", f"{speedup:.2f}x", f"{eff:.0%}", f"{spread((s, t)):.0%}"])
            records.append(
                {
                    "strategy": s,
                    "threads": t,
                    "ops_per_s": ops,
                    "speedup": speedup,
                    "efficiency": eff,
                    "ops": best[(s, t)]["ops"],
                    "elapsed_s": best[(s, t)]["elapsed_s"],
                    "samples_ops_per_s": samples[(s, t)],
                    "spread": spread((s, t)),
                }
            )
    print(
        f"\nThroughput, best of {repeat} x {duration:g} s per cell "
        f"(efficiency = speed-up / min(threads, {cores} cores)):"
    )
    print(
        format_table(
            ["strategy", "threads", "ops/s", "speed-up vs 1 thread", "efficiency", "spread of repeats"],
            rows,
        )
    )

    margins = []
    if "thread" in strategies:
        others = [s for s in strategies if s != "thread"]
        mrows = []
        for t in threads:
            th = best[("thread", t)]["ops_per_s"]
            cells_m = {o: th / best[(o, t)]["ops_per_s"] for o in others}
            mrows.append([t] + [f"{cells_m[o]:.2f}x" for o in others])
            margins.append({"threads": t, **{f"thread_vs_{o}": v for o, v in cells_m.items()}})
        print("\nthread strategy's throughput relative to the others (>1: thread is faster):")
        print(format_table(["threads"] + [f"vs {o}" for o in others], mrows))

    delta = {
        k: stats_after.get(k, 0) - stats_before.get(k, 0)
        for k in ("num_allocations", "num_overflows", "fallback_bytes", "num_resets")
    }
    shared = _tlalloc._shared_scratch_stats()
    print(
        "\nThread-arena statistics (tlalloc.stats()) over the timed run: "
        f"{delta['num_allocations']:,} allocations, {delta['num_overflows']:,} overflows, "
        f"{delta['fallback_bytes']:,} bytes from the heap, {delta['num_resets']:,} rewinds; "
        f"peak {stats_after.get('peak_bytes', 0):,} of {stats_after.get('capacity_bytes', 0):,} "
        f"bytes (live arenas), {stats_after.get('num_threads', 0)} threads so far"
    )
    print(
        f"Shared-strategy arena: {shared['num_allocations']:,} allocations, "
        f"{shared['num_overflows']:,} overflows (served from the heap), peak "
        f"{shared['peak_bytes']:,} of {shared['capacity_bytes']:,} bytes"
    )

    findings = _findings(threads, strategies, best, margins, spread, delta, cores)
    print("\nWhat thread arenas changed on this machine:")
    for text in findings:
        print(f"  {text}")

    comparison = None
    if args.compare:
        print()
        comparison = kernel_compare.compare(quick=args.quick, big_nodes=20_000 if args.quick else 1_000_000)
        print(kernel_compare.report(comparison))

    from tlalloc.bench import scratch as scratch_bench  # it imports measure() from here

    scratch_result = None
    if not scratch_bench.gil_enabled():
        # Free-threaded CPython without the GIL: Python code itself runs in
        # parallel, so show what thread arenas do for Python-level scratch.
        print("\nPython-level scratch without the GIL (tlalloc bench scratch):")
        scratch_result = scratch_bench.scaling(
            threads if max(threads) <= 8 else [t for t in threads if t <= 8] or [1],
            0.1 if args.quick else 0.5,
            2 if args.quick else 5,
        )
        scratch_bench.report(scratch_result, cores)
    else:
        print(
            "\nnote: Python-level scratch scaling runs only without the GIL (a free-threaded "
            "CPython with PYTHON_GIL=0): see 'tlalloc bench scratch'"
        )

    if args.plot:
        msg = _plot(args.plot, threads, strategies, best, args.kernel, info)
        if msg:
            skipped.append(msg)
        else:
            print(f"\nwrote {args.plot}")
    if args.json:
        write_json(
            args.json,
            {
                "suite": "mix",
                "kernel": args.kernel,
                "duration_s": duration,
                "repeat": repeat,
                "threads": threads,
                "strategies": strategies,
                "results": records,
                "margins": margins,
                "arena_stats_delta": delta,
                "arena_stats_after": stats_after,
                "shared_scratch_stats": shared,
                "findings": findings,
                "scratch_scaling": scratch_result,
                "comparison": comparison,
                "machine": info,
            },
        )
        print(f"wrote {args.json}")
    for msg in skipped:
        print(f"note: {msg}")
    return 0
