"""One query through the cache levels, AVX2 against AVX-512, as Python calls it.

The call users make, ``kernels.cosine_similarity(q, C, top_k=10)`` (d = 768, float32
query), on a float32, float16 and bfloat16 corpus of 8 rows (L1), 200 rows (L2 for
float32: 600 KiB), 1,000 rows (L3: 3 MB of float32) and 100,000 rows (DRAM), under
each instruction set the CPU has (forced with ``_tlalloc._kernels_set_isa``, the
switch the tests use), interleaved round by round in one process: per round, enough
calls for about 20 ms of thread CPU time under each path in turn (which goes first
alternates). Prints the median and best time per call and their ratio, and the corpus
bytes per second. ``bench/c/cosine_isa.c single`` gives the same cells without Python,
the row kernel alone and the cache levels' plain read bandwidth.

    python bench/cosine_isa_single.py                 # 15 rounds
    python bench/cosine_isa_single.py --rounds 31 --dtypes float32
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tlalloc import _tlalloc, kernels

try:
    import ml_dtypes

    BF16: type | None = ml_dtypes.bfloat16
except ImportError:  # optional: bfloat16 cells are left out without it
    BF16 = None

CELLS = [(8, "L1"), (200, "L2"), (1000, "L3"), (100_000, "DRAM")]


def isas() -> list[str]:
    """The vector instruction sets this CPU has, AVX2 first."""
    best = _tlalloc._kernels_best_isa()
    return ["avx2", "avx512"] if best == "avx512" else ["avx2"] if best == "avx2" else []


def per_call(q: np.ndarray, c: np.ndarray, calls: int) -> float:
    """Seconds of thread CPU time per call, over ``calls`` calls."""
    t0 = time.thread_time()
    for _ in range(calls):
        kernels.cosine_similarity(q, c, top_k=10)
    return (time.thread_time() - t0) / calls


def cell(q: np.ndarray, c: np.ndarray, paths: list[str], rounds: int) -> dict[str, list[float]]:
    """Times per call under each path, ``rounds`` interleaved rounds."""
    prev = _tlalloc._kernels_set_isa(paths[0])
    try:
        calls = max(1, int(0.02 / per_call(q, c, 3)))
        times: dict[str, list[float]] = {p: [] for p in paths}
        for r in range(rounds):
            for p in paths if r % 2 == 0 else paths[::-1]:
                _tlalloc._kernels_set_isa(p)
                times[p].append(per_call(q, c, calls))
        return times
    finally:
        _tlalloc._kernels_set_isa(prev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--dtypes", default="float32,float16,bfloat16")
    a = ap.parse_args()
    paths = isas()
    if not paths:
        print("no vector instruction set on this CPU")
        return
    rng = np.random.default_rng(0)
    base = rng.standard_normal((CELLS[-1][0], a.dim), dtype=np.float32)
    q = rng.standard_normal(a.dim).astype(np.float32)
    for name in a.dtypes.split(","):
        dt = BF16 if name == "bfloat16" else np.dtype(name)
        if dt is None:
            print(f"{name}: ml_dtypes is not installed, skipped")
            continue
        corpus = base.astype(dt)
        for n, level in CELLS:
            c = corpus[:n]
            t = cell(q, c, paths, a.rounds)
            med = {p: statistics.median(v) for p, v in t.items()}
            line = f"{name:9s} {n:7,d} rows {level:4s}"
            for p in paths:
                gbs = c.nbytes / med[p] / 1e9
                line += f"  {p} {med[p] * 1e6:9.2f} us (best {min(t[p]) * 1e6:9.2f}) {gbs:6.1f} GB/s"
            if len(paths) > 1:
                lo, hi = paths[0], paths[-1]
                ratio, best = med[lo] / med[hi], min(t[lo]) / min(t[hi])
                line += f"  avx2/avx512 {ratio:.2f}x (best {best:.2f}x)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
