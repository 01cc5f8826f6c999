"""Dask benchmark: a real cluster with and without the tlalloc worker plugin.

One ``LocalCluster(processes=True)``, 2 workers x 2 threads by default. Rounds
alternate between ``TlallocPlugin(numpy_allocator=True)`` registered and no
plugin (unregistered, which puts NumPy's default allocator back for the tasks),
the order flipping every round, so that machine noise hits both alike. (Two
clusters side by side in one client process disturbed each other's timings by
far more than the effect measured, so both variants share one cluster.)

Two workloads:

1. ``arith``: ``dask.array`` chunked arithmetic and reductions over a persisted
   float64 matrix, many temporaries per chunk (Dask fuses the element-wise steps
   into one task per chunk);
2. ``kernels``: ``map_blocks`` calling ``tlalloc.kernels.cosine_similarity`` (top-k,
   whose scratch comes from the task thread's arena) and ``decay`` on persisted
   float32 blocks.

For each: wall-clock time of ``compute()``, the CPU seconds the worker processes
spent (``getrusage``, summed over workers: less sensitive than wall time to other
load on the machine), the workers' peak resident memory during the round (the
kernel's high-water mark, reset before each round through ``/proc/self/clear_refs``),
and the arena and pool statistics gathered with ``tlalloc.dask.stats(client)``.
Skipped, with a message, when Dask is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any

import numpy as np

from tlalloc._report import format_size, format_table
from tlalloc.bench._common import describe_machine, machine_info, write_json

SKIP_MESSAGE = 'tlalloc bench dask: skipped: Dask is not installed (pip install "tlalloc[dask]")'
VARIANTS = ("default", "tlalloc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench dask``."""
    parser.add_argument("--workers", type=int, default=2, help="worker processes per cluster (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (default 2)")
    parser.add_argument("--size", type=int, default=4096,
                        help="arith: the matrix is SIZE x SIZE float64 (default 4096)")
    parser.add_argument("--chunk", type=int, default=512, help="arith: chunk edge (default 512)")
    parser.add_argument("--rows", type=int, default=200_000,
                        help="kernels: candidate rows, float32 (default 200,000)")
    parser.add_argument("--dim", type=int, default=256, help="kernels: dimension (default 256)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per workload and cluster")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 2 rounds")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")


# ------------------------------------------------------------ worker side


TOP_K = 16


def _cosine_block(block: np.ndarray, query: np.ndarray) -> np.ndarray:
    from tlalloc import kernels

    _, scores = kernels.cosine_similarity(query, block, top_k=TOP_K)
    return scores


def _decay_block(strengths: np.ndarray, ages: np.ndarray) -> np.ndarray:
    from tlalloc import kernels

    return kernels.decay(strengths, ages, half_life=3600.0)


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux: VmHWM); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


# ------------------------------------------------------------ client side


def _workloads(da: Any, client: Any, size: int, chunk: int, rows: int, dim: int) -> dict[str, Any]:
    """Persist the inputs on ``client``'s cluster; return name -> (make graph, bytes read)."""
    rng = da.random.default_rng(7)
    x = client.persist(rng.random((size, size), chunks=(chunk, chunk)))
    rchunk = max(1, rows // 32)
    cand = client.persist(rng.standard_normal((rows, dim), chunks=(rchunk, dim), dtype=np.float32))
    strengths = client.persist(rng.random(rows * 8, chunks=rchunk * 8, dtype=np.float32))
    ages = client.persist(rng.random(rows * 8, chunks=rchunk * 8) * 86400.0)
    query = np.random.default_rng(3).standard_normal(dim).astype(np.float32)

    def arith() -> Any:
        y = (x + 1.0) * (x - 1.0) / (x * x + 1.0) + np.sqrt(x) * 0.5
        centred = x - x.mean(axis=0)
        return y.sum(axis=0).sum() + (centred * centred).mean(axis=1).sum() + abs(y - x).max()

    def kernels() -> Any:
        scores = cand.map_blocks(_cosine_block, query, drop_axis=1, dtype=np.float32,
                                 chunks=(min(TOP_K, rchunk),))
        decayed = strengths.map_blocks(_decay_block, ages, dtype=np.float32)
        return scores.max() + decayed.sum()

    return {"arith": (arith, x.nbytes), "kernels": (kernels, cand.nbytes + strengths.nbytes + ages.nbytes)}


def _round(client: Any, make: Any) -> dict[str, float]:
    """Wall seconds, worker CPU seconds, the workers' peak RSS and the result of one compute()."""
    from tlalloc.dask import process_memory

    client.run(_reset_peak_rss)
    before = client.run(_cpu_seconds)
    t0 = time.perf_counter()
    result = float(make().compute())
    wall = time.perf_counter() - t0
    after = client.run(_cpu_seconds)
    peaks = client.run(lambda: process_memory()[1])
    return {"wall": wall, "cpu": sum(after[w] - before[w] for w in after if w in before),
            "peak_rss": max(p or 0 for p in peaks.values()), "result": result}


def run(args: argparse.Namespace) -> int:
    """Run the Dask benchmark and print its tables (or a skip message without Dask)."""
    try:
        import dask.array as da
        from distributed import Client, LocalCluster

        import tlalloc.dask as tdask
    except ImportError:
        print(SKIP_MESSAGE)
        return 0
    import logging

    size, chunk, rows, dim, rounds = args.size, args.chunk, args.rows, args.dim, args.rounds
    if args.quick:
        size, chunk, rows, dim, rounds = 1024, 256, 20_000, 64, 2
    for name, v in (("--workers", args.workers), ("--threads", args.threads), ("--size", size),
                    ("--chunk", chunk), ("--rows", rows), ("--dim", dim), ("--rounds", rounds)):
        if v < 1:
            raise SystemExit(f"{name} must be a positive integer, got {v}")
    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    print(f"cluster: LocalCluster(processes=True), {args.workers} workers x {args.threads} threads; "
          f"rounds alternate TlallocPlugin(numpy_allocator=True) and no plugin; {rounds} rounds each")

    plugin = tdask.TlallocPlugin(numpy_allocator=True)
    registered = False

    def use(client: Any, v: str) -> None:
        nonlocal registered
        if v == "tlalloc" and not registered:
            client.register_plugin(plugin)
        elif v == "default" and registered:
            client.unregister_worker_plugin(tdask.PLUGIN_NAME)
        registered = v == "tlalloc"

    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    profiler: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if tdask.profiler_is_unsafe():
        import dask

        print("free-threaded CPython: Dask's statistical profiler off (it crashes this "
              "interpreter; tlalloc.dask.PROFILER_OFF)")
        profiler = dask.config.set(tdask.PROFILER_OFF)
    with profiler, LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                      host="127.0.0.1", dashboard_address=None, memory_limit=0,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        work = _workloads(da, client, size, chunk, rows, dim)
        for name, (make, _) in work.items():
            answers = {}
            for v in VARIANTS:  # warm-up, and both variants must agree
                use(client, v)
                answers[v] = _round(client, make)["result"]
            if not np.isclose(answers["default"], answers["tlalloc"], rtol=1e-4):
                raise AssertionError(f"{name}: the variants disagree ({answers})")
            for r in range(rounds):
                for v in (VARIANTS[::-1] if r % 2 else VARIANTS):
                    use(client, v)
                    results.setdefault((name, v), []).append(_round(client, make))
        gathered = tdask.stats(client)

    rows_out: list[list[Any]] = []
    figures: dict[str, Any] = {}
    for name, (_, nbytes) in work.items():
        med = {}
        for v in VARIANTS:
            rs = results[(name, v)]
            med[v] = {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu", "peak_rss")}
            figures[f"{name}_{v}"] = {"rounds": rs, "bytes": nbytes, "median": med[v]}
            rows_out.append([name, v, med[v]["wall"] * 1e3, min(r["wall"] for r in rs) * 1e3,
                             nbytes / med[v]["wall"] / 2**30, med[v]["cpu"] * 1e3,
                             _mib(med[v]["peak_rss"])])
        figures[f"{name}_ratio"] = {"wall": med["default"]["wall"] / med["tlalloc"]["wall"],
                                    "cpu": med["default"]["cpu"] / med["tlalloc"]["cpu"]}
    print(f"\nper round (median of {rounds}; GiB/s = input bytes / wall time; peak RSS: the largest "
          "worker's high-water mark during the round):")
    print(format_table(["workload", "numpy allocator", "wall ms (median)", "wall ms (best)", "GiB/s",
                        "worker CPU ms", "peak RSS MiB"], rows_out))
    for name in work:
        r = figures[f"{name}_ratio"]
        print(f"{name}: tlalloc / default throughput = {r['wall']:.2f}x by wall time, "
              f"{r['cpu']:.2f}x by worker CPU time")

    print("\nworkers after the run (tlalloc.dask.stats(client); counters cover both variants):")
    mem_rows = []
    for w in gathered.workers.values():
        pool = w.pool or {}
        o = w.overall
        mem_rows.append([w.name, _mib(w.peak_rss_bytes), o.num_arenas, o.num_allocations, o.num_overflows,
                         format_size(o.peak_bytes), _mib(pool.get("peak_bytes")),
                         pool.get("num_allocations", 0), pool.get("num_cross_thread_frees", 0)])
    print(format_table(["worker", "peak RSS MiB (life)", "arenas", "arena allocs", "overflows",
                        "arena peak", "pool peak MiB", "pool allocs", "cross-thread frees"], mem_rows))
    figures["stats"] = gathered.to_dict()
    if args.json:
        write_json(args.json, {"suite": "dask", "workers": args.workers, "threads": args.threads,
                               "size": size, "chunk": chunk, "rows": rows, "dim": dim,
                               "rounds": rounds, "figures": figures, "machine": info})
        print(f"\nwrote {args.json}")
    return 0


def _mib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"
