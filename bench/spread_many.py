"""Spreading activation from many seed sets: one call against a loop of single calls.

One thread, thread CPU time, best of interleaved rounds (each round runs every cell
once). Graphs of 100,000 nodes, 10 out-edges per node on average, weights in [0, 1):

- ``uniform``: every node has 10 edges to uniformly random targets (the graph of
  ``tlalloc bench kernels``);
- ``power-law``: out-degrees and in-degrees both follow a power law (Zipf, exponent
  about 2, at most 1,000 edges a node), as in citation or link graphs: a few hubs
  that many frontiers share.

For each graph: 16 sets of 4 random seeds, default parameters, with ``top_k=10`` and
with the dense ``(16, n)`` output; the loop of 16 ``spread_activation`` calls, one
``spread_activation_many`` call, and their ratio (loop time / many time). The
single-call row (one set alone) shows what the loop pays per call.

Usage: python bench/spread_many.py [ROUNDS] [--json PATH]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tlalloc import kernels
from tlalloc.bench._common import random_graph


def power_law_graph(n: int, mean_degree: int, seed: int) -> tuple[Any, Any, Any]:
    """CSR graph whose out- and in-degrees follow a power law (capped at 1,000).

    Example:
        >>> ip, ix, w = power_law_graph(100, 5, 0)
        >>> int(ip[-1]) == len(ix) == len(w)
        True
    """
    rng = np.random.default_rng(seed)
    deg = np.minimum(rng.zipf(2.0, n), 1000).astype(np.float64)
    deg = np.maximum(1, np.round(deg * (mean_degree / deg.mean()))).astype(np.int64)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    # in-degrees: targets drawn with probability ~ 1 / rank, ranks shuffled over ids
    p = 1.0 / np.arange(1, n + 1)
    p /= p.sum()
    targets = rng.choice(n, int(indptr[-1]), p=p)
    indices = rng.permutation(n)[targets].astype(np.int32)
    weights = rng.random(len(indices), dtype=np.float32)
    return indptr, indices, weights


def _cpu(fn: Callable[[], object], number: int) -> float:
    t0 = time.thread_time()
    for _ in range(number):
        fn()
    return (time.thread_time() - t0) / number


def main(rounds: int, json_path: str | None) -> None:
    n = 100_000
    graphs = {"uniform": random_graph(n, 10, seed=3), "power-law": power_law_graph(n, 10, seed=4)}
    sets = np.random.default_rng(5).integers(0, n, (16, 4)).tolist()
    cells: list[tuple[str, Callable[[], object]]] = []
    for gname, g in graphs.items():
        for out, kw in (("top 10", {"top_k": 10}), ("dense", {})):
            cells += [
                (f"{gname}, {out}, 1 set",
                 lambda g=g, kw=kw: kernels.spread_activation(g, sets[0], **kw)),
                (f"{gname}, {out}, loop of 16",
                 lambda g=g, kw=kw: [kernels.spread_activation(g, s, **kw) for s in sets]),
                (f"{gname}, {out}, many 16",
                 lambda g=g, kw=kw: kernels.spread_activation_many(g, sets, **kw)),
            ]
    for g in graphs.values():  # the results agree before anything is timed
        a = kernels.spread_activation_many(g, sets)
        assert all(np.array_equal(a[i], kernels.spread_activation(g, s)) for i, s in enumerate(sets))
    number = {name: max(1, int(0.02 / max(_cpu(fn, 1), 1e-6))) for name, fn in cells}
    best = {name: float("inf") for name, _ in cells}
    for _ in range(rounds):
        for name, fn in cells:
            best[name] = min(best[name], _cpu(fn, number[name]))
    touched = {
        gname: float(np.mean([np.count_nonzero(kernels.spread_activation(g, s)) for s in sets]))
        for gname, g in graphs.items()
    }
    print(f"{'cell':<34} {'us/call':>10}")
    for name, _ in cells:
        print(f"{name:<34} {best[name] * 1e6:>10.1f}")
    result: dict[str, Any] = {"us": {k: v * 1e6 for k, v in best.items()}, "touched": touched}
    for gname in graphs:
        for out in ("top 10", "dense"):
            r = best[f"{gname}, {out}, loop of 16"] / best[f"{gname}, {out}, many 16"]
            result[f"{gname}, {out}, loop/many"] = r
            print(f"{gname}, {out}: loop / many = {r:.2f}x  (mean touched nodes {touched[gname]:,.0f})")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    args = sys.argv[1:]
    path = None
    if "--json" in args:
        i = args.index("--json")
        path = args[i + 1]
        del args[i : i + 2]
    main(int(args[0]) if args else 5, path)
