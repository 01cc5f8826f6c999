"""Cost of cosine_similarity's metrics, normalised corpora and row filters, side by side.

One thread, top 10, d = 768, float32: cosine, dot and squared l2 on 1,000 rows (in
cache), 100,000 rows (from DRAM) and 64 queries over 100,000 rows; then
``normalized=True``, a mask keeping 1% of the rows, the same rows as ids, and a mask
keeping every row. Each round runs every cell once (the cells interleave); the median
of thread CPU time over the rounds is printed.

Usage: OPENBLAS_NUM_THREADS=1 python bench/cosine_metrics.py [ROUNDS]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from tlalloc import kernels


def main(rounds: int) -> None:
    rng = np.random.default_rng(0)
    d, n = 768, 100_000
    big = rng.standard_normal((n, d), dtype=np.float32)
    small = big[:1000].copy()
    queries = rng.standard_normal((64, d), dtype=np.float32)
    q = queries[0].copy()
    mask = np.zeros(n, bool)
    mask[rng.choice(n, 1000, replace=False)] = True
    ids = np.flatnonzero(mask)
    every = np.ones(n, bool)
    cos = kernels.cosine_similarity
    cells: list[tuple[str, int, Callable[[], object]]] = []  # name, calls per sample, call
    for metric in ("cosine", "dot", "l2"):
        cells += [
            (f"1 query, 1,000 rows, {metric}", 50, lambda m=metric: cos(q, small, top_k=10, metric=m)),
            (f"1 query, 100,000 rows, {metric}", 1, lambda m=metric: cos(q, big, top_k=10, metric=m)),
            (f"64 queries, 100,000 rows, {metric}", 1,
             lambda m=metric: cos(queries, big, top_k=10, metric=m)),
        ]
    cells += [
        ("1 query, 100,000 rows, normalized=True", 1, lambda: cos(q, big, top_k=10, normalized=True)),
        ("1 query, 100,000 rows, 1% mask", 1, lambda: cos(q, big, top_k=10, allow=mask)),
        ("1 query, 100,000 rows, 1% as ids", 1, lambda: cos(q, big, top_k=10, allow=ids)),
        ("1 query, 100,000 rows, mask of every row", 1, lambda: cos(q, big, top_k=10, allow=every)),
        ("64 queries, 100,000 rows, 1% mask", 1, lambda: cos(queries, big, top_k=10, allow=mask)),
    ]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cells}
    for _ in range(rounds):
        for name, reps, call in cells:
            t = time.thread_time()
            for _ in range(reps):
                call()
            times[name].append((time.thread_time() - t) / reps)
    for name, _, _ in cells:
        print(f"{name:45s} {np.median(times[name]) * 1e3:9.3f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
