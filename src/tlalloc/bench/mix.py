"""The main job: the realistic service first, then thread arenas against a shared arena, malloc and NumPy.

First the service (:mod:`tlalloc.bench.service`): batches of 16 queries over a
200,000 x 384 corpus with cosine top-k, spreading activation over a
100,000-node graph, decay of its strengths; tlalloc's kernels against the
NumPy/SciPy code a user would write (and faiss where installed), CPU time per
request and throughput from 1 thread to the machine's cores, the answers
checked equal first. ``--no-service`` skips it.

Then the allocation-strategy comparison, the kernel mix from 1 to 32 threads.
One operation of the mix is one call of each kernel: cosine similarity of a
768-d float32 query against 1000 candidates (top 10), spreading activation
from one seed over a 1000-node graph with 10 edges per node (top 10), and
decay of 10,000 float32 strengths. Every thread count runs every scratch
strategy of the same C kernels (``thread``: the calling thread's arena, the
product; ``shared``: one arena behind a mutex; ``malloc``) and the pure-NumPy
implementation of the same meaning (``numpy``). Each kernel can also run alone
(``--kernel``). Before timing, the three C strategies must agree bit for bit,
NumPy within float32 rounding.

Every figure is the median of ``--repeat`` interleaved samples (rounds over all
cells, the order rotating), and every verdict comes with the 95% bootstrap
interval of its ratio (``ratio_interval``): a margin whose interval holds 1 is
called equal. The machine's load average is printed before and after.
``--quick`` is a smoke run: small sizes, one sample a cell, and no verdicts.
The timing harness (:func:`tlalloc.bench._common.measure`) shares nothing
between threads on the path of an operation, so that on a free-threaded
CPython it does not slow the threads it measures.

After the run the thread arenas' statistics are printed, followed by the
single-thread comparison of each kernel with NumPy/SciPy (``tlalloc bench
kernels``; skip it with ``--no-compare``).

Example:
    $ tlalloc bench --quick
    $ tlalloc bench --threads 1,2 --json bench.json --plot bench.png
    $ tlalloc bench --no-service --kernel spread --threads 1,2,4
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import tlalloc
from tlalloc import _tlalloc, kernels, kernels_reference
from tlalloc._report import format_table
from tlalloc.bench import service
from tlalloc.bench._common import (
    BadArgument,
    Progress,
    blas_threads,
    describe_machine,
    load_average,
    machine_info,
    measure,
    median_interval,
    nonnegative_int,
    parse_threads,
    positive_float,
    positive_int,
    random_graph,
    ratio_interval,
    thread_counts,
    verdict,
    write_json,
)

__all__ = ["KERNELS", "STRATEGIES", "Workload", "add_arguments", "make_workload", "measure",
           "operation", "parse_list", "run", "verify"]

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
        graph=random_graph(n_nodes, degree, seed=seed + 1),
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
        cos = kernels_reference.cosine_similarity
        spread = kernels_reference.spread_activation
        dec = kernels_reference.decay

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


def parse_list(text: str, allowed: tuple[str, ...], name: str) -> list[str]:
    """Parse a comma-separated choice list.

    Example:
        >>> parse_list("thread, numpy", STRATEGIES, "--strategies")
        ['thread', 'numpy']
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if not items or bad:
        raise BadArgument(f"{name} must be a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench`` (the service, then the mix).

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> a = p.parse_args(["--threads", "2,1", "--repeat", "7"])
        >>> a.threads, a.repeat, a.duration
        ([1, 2], 7, 0.2)
    """
    parser.add_argument(
        "--kernel", choices=KERNELS, default="mix", help="run the mix (default) or one kernel alone"
    )
    parser.add_argument(
        "--threads",
        type=thread_counts,
        default=None,
        help=f"comma-separated thread counts of the mix (default {DEFAULT_THREADS}; "
        "--quick: 1,2,4) and of the service (default: 1, 2, 4, ... up to the usable cores)",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="comma-separated subset of thread,shared,malloc,numpy",
    )
    parser.add_argument(
        "--duration", type=positive_float, default=0.2, help="seconds per sample of the mix (default 0.2)"
    )
    parser.add_argument(
        "--service-seconds", type=positive_float, default=1.0,
        help="seconds per sample of the service (default 1.0)",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=5,
        help="samples per cell, in interleaved rounds (default 5; verdicts need at least 5)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: small sizes, one short sample per cell, no verdicts",
    )
    parser.add_argument(
        "--numpy-blas-threads",
        type=nonnegative_int,
        default=1,
        metavar="N",
        help="BLAS threads while NumPy code runs (default 1, as in a "
        "threaded server; 0 leaves the library default)",
    )
    parser.add_argument("--corpus-rows", type=positive_int, default=service.CORPUS_ROWS,
                        help=f"service: corpus rows (default {service.CORPUS_ROWS:,}; --quick "
                        f"{service.QUICK_CORPUS_ROWS:,})")
    parser.add_argument("--nodes", type=positive_int, default=service.NODES,
                        help=f"service: graph nodes (default {service.NODES:,}; --quick "
                        f"{service.QUICK_NODES:,})")
    parser.add_argument("--no-service", dest="service", action="store_false",
                        help="skip the service; only the allocation-strategy comparison")
    parser.add_argument("--no-mix", dest="mix", action="store_false",
                        help="skip the allocation-strategy comparison; only the service")
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the single-thread comparison with NumPy/SciPy",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--plot", metavar="PATH",
        help="write a PNG: the service's CPU per request and throughput, and the mix's "
        "throughput, against threads (medians, 95%% intervals as error bars)",
    )


def _plot(
    path: str,
    threads: list[int],
    strategies: list[str],
    samples: dict[tuple[str, int], list[float]] | None,
    kernel: str,
    info: dict[str, Any],
    service_result: dict[str, Any] | None,
) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped the plot: matplotlib is not installed (pip install 'tlalloc[plot]')"
    panels = (2 if service_result else 0) + (1 if samples else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.3), squeeze=False)
    ax = list(axes[0])
    if service_result:
        service.plot_axes(ax[0], ax[1], service_result)
        ax[0].set_title("service: CPU per request (lower is better)", fontsize=9)
        ax[1].set_title("service: throughput (higher is better)", fontsize=9)
    if samples:
        m = ax[-1]
        for s in strategies:
            med = [statistics.median(samples[(s, t)]) for t in threads]
            ivs = [median_interval(samples[(s, t)]) or (v, v) for v, t in zip(med, threads, strict=True)]
            err = [[v - lo for v, (lo, _) in zip(med, ivs, strict=True)],
                   [hi - v for v, (_, hi) in zip(med, ivs, strict=True)]]
            m.errorbar(threads, med, yerr=err, marker="o", capsize=4, label=s)
        m.set_xscale("log", base=2)
        m.set_xticks(threads, [str(t) for t in threads])
        m.set_xlabel("threads")
        m.set_ylabel(f"{kernel} operations per second")
        m.set_title(f"allocation strategies, --kernel {kernel}", fontsize=9)
        m.grid(True, alpha=0.3)
        m.legend()
    fig.suptitle(f"tlalloc bench: {info['cpu_model']}, {info['usable_cpus']} cores, "
                 f"Python {info['python']}{' (no GIL)' if info.get('gil_disabled') else ''}; "
                 f"{load_average()} at the end", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def margins(
    threads: list[int], strategies: list[str], by_round: dict[tuple[str, int], dict[int, float]]
) -> list[dict[str, Any]]:
    """The thread strategy's throughput against each other strategy's at each thread
    count: the ratio of the medians over the rounds and its 95% bootstrap interval
    (``ratio_interval``, rounds paired), None with fewer than 5 rounds.

    Example:
        >>> by = {("thread", 1): {r: 2.0 for r in range(5)}, ("shared", 1): {r: 1.0 for r in range(5)}}
        >>> margins([1], ["thread", "shared"], by)
        [{'threads': 1, 'other': 'shared', 'ratio': 2.0, 'interval': (2.0, 2.0)}]
    """
    out = []
    if "thread" not in strategies:
        return out
    for t in threads:
        ours = by_round[("thread", t)]
        for o in strategies:
            if o == "thread":
                continue
            theirs = by_round[(o, t)]
            ratio = statistics.median(ours.values()) / statistics.median(theirs.values())
            out.append({"threads": t, "other": o, "ratio": ratio, "interval": ratio_interval(ours, theirs)})
    return out


def _findings(
    threads: list[int],
    strategies: list[str],
    by_round: dict[tuple[str, int], dict[int, float]],
    margin_list: list[dict[str, Any]],
    delta: dict[str, int],
    cores: int,
) -> list[str]:
    """What the run says to a user, in sentences: scaling, the margin over each
    alternative (equal when its 95% interval holds 1), overflows.

    Example:
        >>> by = {("thread", 1): dict(enumerate([100.0, 103.0, 97.0, 101.0, 99.0])),
        ...       ("thread", 2): {r: 190.0 + r for r in range(5)},
        ...       ("shared", 1): dict(enumerate([101.0, 98.0, 100.0, 102.0, 99.0])),
        ...       ("shared", 2): {r: 120.0 - r for r in range(5)}}
        >>> ms = margins([1, 2], ["thread", "shared"], by)
        >>> for f in _findings([1, 2], ["thread", "shared"], by, ms, {"num_overflows": 0}, 2):
        ...     print(f)
        from 1 to 2 threads, thread arenas' median throughput grew 1.92x (2 cores to run on)
        1 thread: thread arenas equal to shared (1.00x, 95% interval 0.97-1.05 holds 1)
        2 threads: thread arenas 1.63x the throughput of shared (95% interval 1.58-1.67)
        no thread arena overflowed at its default size
    """
    out: list[str] = []
    if "thread" in strategies and 1 in threads:
        base = statistics.median(by_round[("thread", 1)].values())
        for t in threads:
            if 1 < t <= cores:
                r = statistics.median(by_round[("thread", t)].values()) / base
                out.append(
                    f"from 1 to {t} threads, thread arenas' median throughput grew {r:.2f}x "
                    f"({cores} cores to run on)"
                )
    for m in margin_list:
        t = m["threads"]
        text = verdict(m["interval"], m["ratio"], "the throughput of", "slower than", m["other"])
        out.append(f"{t} thread{'s' if t > 1 else ''}: thread arenas {text}")
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


def _service_threads(cores: int) -> list[int]:
    """1, 2, 4, ... up to the usable cores, and the core count itself.

    Example:
        >>> _service_threads(6), _service_threads(1)
        ([1, 2, 4, 6], [1])
    """
    out, t = [], 1
    while t < cores:
        out.append(t)
        t *= 2
    return sorted({*out, cores})


def _run_service(args: argparse.Namespace, threads: list[int] | None, cores: int, smoke: bool,
                 repeat: int, seconds: float) -> tuple[int, dict[str, Any] | None]:
    rows = min(args.corpus_rows, service.QUICK_CORPUS_ROWS) if smoke else args.corpus_rows
    nodes = min(args.nodes, service.QUICK_NODES) if smoke else args.nodes
    ts = threads or ([1, 2] if smoke else _service_threads(cores))
    impls = service.available()
    print(f"\n== The service: {service.describe(rows, service.DIM, service.BATCH, nodes, service.DEGREE)}")
    print(f"implementations: {', '.join(service.LABELS[i] for i in impls)}; threads {ts}; "
          f"{repeat} interleaved sample(s) of {seconds:g} s per cell")
    data = service.make_data(rows=rows, nodes=nodes)
    problems = service.verify(data, impls)
    if problems:
        print("verification FAILED: the implementations disagree:")
        for p in problems[:20]:
            print(f"  {p}")
        return 1, None
    print("verified: every implementation returns the same top-k ids, scores within float32 rounding")
    blas = args.numpy_blas_threads or None
    result = service.run(data, impls, ts, seconds, repeat, blas=blas, progress=args.progress)
    for line in service.report(result, smoke):
        print(line)
    result["rows"], result["nodes"], result["threads"] = rows, nodes, ts
    result["comparisons"] = [] if smoke else service.comparisons(result)
    return 0, result


def _json_ready(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The service's result without its per-round maps (tuple keys: not JSON)."""
    if result is None:
        return None
    return {k: v for k, v in result.items() if k != "by_round"}


def run(args: argparse.Namespace, payload: dict[str, Any] | None = None) -> int:
    """Run the service, then the mix, and print their tables.

    Alone (``payload`` None) it ends the run too (:func:`finish`). ``tlalloc
    bench`` passes ``payload``, the figures the JSON file will hold, and runs the
    sections of other suites (the kernel comparison, Python-level scratch) before
    :func:`finish`: see ``tlalloc.cli.SECTIONS``.
    """
    smoke = bool(args.quick)
    threads_arg = parse_threads(args.threads) if args.threads is not None else None
    threads = threads_arg or ([1, 2, 4] if smoke else parse_threads(DEFAULT_THREADS))
    strategies = parse_list(args.strategies, STRATEGIES, "--strategies")
    duration = min(args.duration, 0.1) if smoke else args.duration
    repeat = 1 if smoke else args.repeat
    if not duration > 0 or repeat < 1:  # the parser's rules; also for a Namespace built by hand
        raise BadArgument(f"--duration must be > 0 and --repeat >= 1, got {duration!r}, {repeat!r}")
    info = machine_info()
    skipped: list[str] = []
    cores = max(1, int(info.get("usable_cpus") or 1))
    print(f"machine: {describe_machine(info)}")
    print(f"{load_average()} (before the run)")
    gil = "without the GIL" if info.get("gil_disabled") else "with the GIL"
    print(f"Python {info['python']} {gil}; kernels: vectorised path {kernels.isa()}; arena size "
          f"{tlalloc.get_config().arena_size:,} bytes per thread")
    if smoke:
        print("SMOKE RUN (--quick): small sizes and one short sample per cell, to see that everything "
              "runs; it draws no verdicts. Run without --quick for figures to compare.")
    elif repeat < 5:
        print(f"note: --repeat {repeat}: verdicts need at least 5 samples per cell; none will be drawn")

    service_result = None
    if args.service:
        rc, service_result = _run_service(
            args, threads_arg, cores, smoke, repeat, min(args.service_seconds, 0.1) if smoke
            else args.service_seconds)
        if rc:
            return rc

    by_round: dict[tuple[str, int], dict[int, float]] = {}
    cpu_round: dict[tuple[str, int], dict[int, float]] = {}
    ops_round: dict[tuple[str, int], dict[int, float]] = {}
    margin_list: list[dict[str, Any]] = []
    findings: list[str] = []
    records: list[dict[str, Any]] = []
    delta: dict[str, int] = {}
    stats_after: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    if args.mix:
        w = make_workload()
        what = {
            "mix": "one op = cosine (768-d x 1000, top 10) + spread (1000 nodes x 10 edges, "
            "top 10) + decay (10,000)",
            "cosine": "one op = cosine similarity, 768-d query x 1000 float32 candidates, top 10",
            "spread": "one op = spreading activation, 1000 nodes x 10 edges, one seed, top 10",
            "decay": "one op = decay of 10,000 float32 strengths",
        }[args.kernel]
        print(f"\n== Allocation strategies of the kernels' scratch: {what}")
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

        def maker(s: str) -> Callable[[], Callable[[int], Any]]:
            return lambda: operation(w, s, args.kernel)  # each thread its own closures

        cells = len(threads) * len(strategies) * repeat
        for s in strategies:  # warm-up, untimed: caches, page faults, BLAS threads
            with blas_threads(args.numpy_blas_threads if s == "numpy" else None):
                measure(None, 1, min(duration, 0.1), make=maker(s))
        stats_before = _stats_summary()
        with Progress(total=cells, desc=f"bench {args.kernel}", enabled=args.progress) as bar:
            if bar.skipped:
                skipped.append("no progress bar: tqdm is not installed (pip install 'tlalloc[progress]')")
            # Rounds over every cell, strategies rotating within each thread count: the
            # samples of one cell are spread over the whole run, so a burst of load from
            # elsewhere on the machine spoils one sample of a cell, not all of them, and
            # the samples of one round can be paired (ratio_interval).
            for rnd in range(repeat):
                for t in threads:
                    for s in strategies[rnd % len(strategies):] + strategies[: rnd % len(strategies)]:
                        limit = args.numpy_blas_threads if s == "numpy" and args.numpy_blas_threads else None
                        with blas_threads(limit):
                            r = measure(None, t, duration, make=maker(s))
                        by_round.setdefault((s, t), {})[rnd] = r["ops_per_s"]
                        cpu_round.setdefault((s, t), {})[rnd] = r["cpu_ns_per_op"]
                        ops_round.setdefault((s, t), {})[rnd] = r["ops"]
                        bar.update()
        stats_after = _stats_summary()

        rows = []
        for s in strategies:
            for t in threads:
                v = list(by_round[(s, t)].values())
                med = statistics.median(v)
                iv = median_interval(v)
                cpu = statistics.median(cpu_round[(s, t)].values())
                base = statistics.median(by_round[(s, 1)].values()) if (s, 1) in by_round else float("nan")
                speedup = med / base
                rows.append([s, t, f"{med:,.0f}", f"{iv[0]:,.0f}-{iv[1]:,.0f}" if iv else "-",
                             f"{cpu / 1e3:,.1f}", f"{speedup:.2f}x", f"{speedup / min(t, cores):.0%}"])
                records.append({
                    "strategy": s, "threads": t, "ops_per_s": med, "ops_per_s_interval": iv,
                    "cpu_ns_per_op": cpu, "speedup": speedup, "efficiency": speedup / min(t, cores),
                    "samples_ops_per_s": v, "samples_cpu_ns_per_op": list(cpu_round[(s, t)].values()),
                    "ops": sum(ops_round[(s, t)].values()),
                })
        print(f"\nThroughput, median of {repeat} interleaved sample(s) of {duration:g} s per cell "
              f"(efficiency = speed-up / min(threads, {cores} cores)):")
        print(format_table(["strategy", "threads", "ops/s", "95% interval", "CPU us/op",
                            "speed-up vs 1 thread", "efficiency"], rows))

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
        if smoke:
            print("\nsmoke run (--quick): one sample per cell; no verdicts drawn")
        else:
            margin_list = margins(threads, strategies, by_round)
            findings = _findings(threads, strategies, by_round, margin_list, delta, cores)
            print("\nWhat thread arenas changed on this machine (throughput; equal when the 95% "
                  "interval of the ratio holds 1):")
            for text in findings:
                print(f"  {text}")

    figures: dict[str, Any] = {
        "suite": "mix",
        "smoke": smoke,
        "service": _json_ready(service_result),
        "kernel": args.kernel,
        "duration_s": duration,
        "repeat": repeat,
        "threads": threads,
        "strategies": strategies,
        "results": records,
        "margins": margin_list,
        "arena_stats_delta": delta,
        "arena_stats_after": stats_after,
        "shared_scratch_stats": shared,
        "findings": findings,
        "scratch_scaling": None,
        "comparison": None,
        "machine": info,
    }
    # What finish() needs and the JSON file does not hold.
    unwritten = {"by_round": by_round, "service_result": service_result, "skipped": skipped}
    standalone = payload is None
    payload = {} if payload is None else payload
    payload.update(figures, unwritten=unwritten)
    return finish(args, payload) if standalone else 0


def finish(args: argparse.Namespace, payload: dict[str, Any]) -> int:
    """End a run of :func:`run` and the sections after it: the load average, the
    plot (``--plot``), the JSON file (``--json``) and the notes."""
    unwritten = payload.pop("unwritten")
    by_round, skipped = unwritten["by_round"], unwritten["skipped"]
    threads, strategies = payload["threads"], payload["strategies"]
    print(f"\n{load_average()} (after the run)")
    if args.plot:
        msg = _plot(args.plot, threads, strategies, {k: list(v.values()) for k, v in by_round.items()}
                    if args.mix else None, args.kernel, payload["machine"], unwritten["service_result"])
        if msg:
            skipped.append(msg)
        else:
            print(f"wrote {args.plot}")
    if args.json:
        machine = payload.pop("machine")  # last in the file, as the other suites write it
        write_json(args.json, {**payload, "load_average_end": list(os.getloadavg()), "machine": machine})
        print(f"wrote {args.json}")
    for msg in skipped:
        print(f"note: {msg}")
    return 0
