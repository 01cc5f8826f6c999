"""Compute rate of the cosine kernel with the corpus in cache: float32 against float16.

Shows whether a half-precision corpus can be bandwidth-bound on this machine: from DRAM a
float16 pass can only be 2x a float32 one if the kernel converts and accumulates float16
rows in cache at least that much faster than float32 rows come from DRAM.

    python bench/cosine_half_incache.py            # 300 x 768, 20,000 calls, 2 rounds each
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tlalloc import kernels


def rate(dtype: str, n: int, d: int, calls: int) -> float:
    """Elements per second of thread CPU time for ``calls`` calls on an (n, d) corpus."""
    rng = np.random.default_rng(0)
    c = rng.standard_normal((n, d), dtype=np.float32).astype(dtype)
    q = rng.standard_normal(d).astype(np.float32)
    out = np.empty(n, np.float32)
    t0 = time.thread_time()
    for _ in range(calls):
        kernels.cosine_similarity(q, c, out=out)
    return n * d * calls / (time.thread_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    for _ in range(a.rounds):
        for dt in ("float32", "float16"):
            print(f"{dt}: {rate(dt, a.rows, a.dim, a.calls) / 1e9:.2f} G elements/s (thread CPU time)")


if __name__ == "__main__":
    main()
