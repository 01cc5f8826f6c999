"""Batched cosine against NumPy's GEMM with cached norms, side by side.

For m queries against an (n, d) float32 corpus whose norms are known, times
``kernels.cosine_similarity(Q, C, candidate_norms=norms, out=out)`` (the kernel
path the library picks for this CPU, or the one ``--isa`` forces) against
``np.divide(Q @ C.T, qn[:, None] * norms, out=...)``: the same scores with the
corpus norms cached, computed by BLAS. Rounds alternate which goes first; the
table gives the median thread CPU time of each and their ratio. Set
OPENBLAS_NUM_THREADS=1 for a one-thread comparison (the kernel is one thread).

    OPENBLAS_NUM_THREADS=1 python bench/cosine_batch_gemm.py          # m = 16, 64, 256; 100,000 x 768
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tlalloc import _tlalloc, kernels


def time_pair(
    q: np.ndarray, c: np.ndarray, norms: np.ndarray, out_k: np.ndarray, out_g: np.ndarray, rounds: int
) -> tuple[float, float]:
    """Median thread CPU seconds of the kernel and of the GEMM form, rounds alternating which goes first."""

    def run_kernel() -> None:
        kernels.cosine_similarity(q, c, candidate_norms=norms, out=out_k)

    def run_gemm() -> None:
        qn = np.linalg.norm(q, axis=1)
        np.divide(q @ c.T, qn[:, None] * norms[None, :], out=out_g)

    times: dict[str, list[float]] = {"kernel": [], "gemm": []}
    order = [("kernel", run_kernel), ("gemm", run_gemm)]
    for r in range(rounds):
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t0 = time.thread_time()
            fn()
            times[name].append(time.thread_time() - t0)
    return statistics.median(times["kernel"]), statistics.median(times["gemm"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--isa", choices=["portable", "avx2", "avx512"], default=None)
    a = ap.parse_args()
    if a.isa:
        _tlalloc._kernels_set_isa(a.isa)
    print(
        f"kernel ISA: {kernels.isa()}; corpus {a.rows} x {a.dim} float32; "
        f"thread CPU time, median of {a.rounds}"
    )
    rng = np.random.default_rng(0)
    c = rng.standard_normal((a.rows, a.dim), dtype=np.float32)
    norms = np.linalg.norm(c, axis=1)
    for m in a.queries:
        q = rng.standard_normal((m, a.dim), dtype=np.float32)
        out_k = np.empty((m, a.rows), np.float32)
        out_g = np.empty((m, a.rows), np.float32)
        tk, tg = time_pair(q, c, norms, out_k, out_g, a.rounds)
        diff = float(np.max(np.abs(out_k - out_g)))
        print(
            f"m = {m:4d}: kernel {tk * 1e3:8.1f} ms  gemm {tg * 1e3:8.1f} ms  gemm / kernel {tg / tk:5.2f}x  "
            f"({2 * m * a.rows * a.dim / tk / 1e9:.0f} GFLOP/s; max diff {diff:.1e})"
        )


if __name__ == "__main__":
    main()
