"""NumPy ``a * b + c`` on large float64 arrays: tlalloc's pool allocator against
NumPy's default, interleaved rounds, time and minor page faults per operation.

    python bench/numpy_large_ab.py [--mib 64 256] [--rounds 5] [--ops 5]

Each round runs ``ops`` operations under each allocator (order alternating),
with the inputs made once under the default allocator. Prints, per size, the
median time per op of each, their ratio (>1: the pool is faster) and the faults
per op. Measurement only (not part of the test suite).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from tlalloc import numpy_alloc


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _run(a: np.ndarray, b: np.ndarray, c: np.ndarray, ops: int, pool: bool) -> tuple[float, float]:
    if pool:
        numpy_alloc.install()
    else:
        numpy_alloc.uninstall()
    try:
        r = a * b + c  # warm: the first result of a round may map fresh memory
        del r
        f0, t0 = _minflt(), time.perf_counter()
        for _ in range(ops):
            r = a * b + c
            del r
        return (time.perf_counter() - t0) / ops, (_minflt() - f0) / ops
    finally:
        numpy_alloc.uninstall()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ops", type=int, default=5)
    args = ap.parse_args()
    for mib in args.mib:
        n = mib * (1 << 20) // 8
        a, b, c = np.full(n, 1.5), np.full(n, 2.0), np.full(n, 0.5)
        res: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for r in range(args.rounds):
            for pool in ((True, False) if r % 2 == 0 else (False, True)):
                res[pool].append(_run(a, b, c, args.ops, pool))
        tp = statistics.median(t for t, _ in res[True])
        td = statistics.median(t for t, _ in res[False])
        fp = statistics.median(f for _, f in res[True])
        fd = statistics.median(f for _, f in res[False])
        ratios = [d[0] / p[0] for p, d in zip(res[True], res[False], strict=True)]
        print(f"{mib:4d} MiB: pool {tp * 1e3:7.1f} ms/op {fp:8.0f} faults/op | default "
              f"{td * 1e3:7.1f} ms/op {fd:8.0f} faults/op | speed ratio median "
              f"{statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
