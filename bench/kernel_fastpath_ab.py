"""Kernel fast paths of two builds side by side: a reference build of the
extension (for example main before a change) against this checkout's, in one
process, interleaved, thread CPU time per call, medians and ratios.

    git archive COMMIT | tar -x -C /tmp/ref
    (cd /tmp/ref && python setup.py build_ext -q -b /tmp/refbuild)
    python bench/kernel_fastpath_ab.py /tmp/refbuild/tlalloc/_tlalloc.cpython-*.so 60 [SUBSTRING]

SUBSTRING keeps only the cases whose name contains it (e.g. "in cache": the
single-query cosine cells whose corpus fits in cache, d = 128 to 1536).

The reference module is loaded under its own name from its file, so the two
builds' C state stays apart; scratch is 'malloc' for both, so only the kernels'
own code differs.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time

import numpy as np

import tlalloc  # noqa: F401 - initialises the module under test
from tlalloc import _tlalloc as new


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("_tlalloc", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod._set_default_tau(object())
    return mod


class NoNorms(Exception):
    """The reference build predates candidate_norms."""


def cosine(m, q, c, k, norms=None):
    """One cosine call through either private signature (candidate_norms came later)."""
    try:
        return m._cosine_similarity(q, c, k, None, norms, "malloc")
    except TypeError:
        if norms is not None:
            raise NoNorms from None
        return m._cosine_similarity(q, c, k, None, "malloc")


def main() -> None:
    old = load_reference(sys.argv[1])
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    only = sys.argv[3] if len(sys.argv) > 3 else ""
    rng = np.random.default_rng(0)
    q = rng.standard_normal(768).astype(np.float32)
    c = rng.standard_normal((20000, 768)).astype(np.float32)
    s = rng.random(1_000_000).astype(np.float32)
    a = (rng.random(1_000_000) * 1e5).astype(np.float32)
    o = np.empty_like(s)
    n = 100_000
    ip, ix, w = np.arange(0, 4 * n + 1, 4), rng.integers(0, n, 4 * n), rng.random(4 * n)
    cases = {
        "cosine f32 20000x768": lambda m: cosine(m, q, c, None),
        "cosine top-10": lambda m: cosine(m, q, c, 10),
        "decay f32 exp 1e6": lambda m: m._decay(s, a, "exponential", 86400.0, None, 0.5, o, "malloc"),
        "decay f32 power 1e6": lambda m: m._decay(s, a, "power", 86400.0, None, 0.5, o, "malloc"),
        "spread 100k nodes": lambda m: m._spread_activation(
            ip, ix, w, [0, 1, 2], 1.0, 0.7, 0.01, 4, None, "malloc", "auto"
        ),
    }
    for d in (128, 384, 768, 1536):
        qd, cd = rng.standard_normal(d).astype(np.float32), rng.standard_normal((1000, d)).astype(np.float32)
        cases[f"cosine in cache {d}x1000"] = lambda m, qd=qd, cd=cd: cosine(m, qd, cd, None)
        # enough calls per sample to be well above the clock's resolution
        cases[f"cosine in cache {d}x1000"].calls = max(1, 2_000_000 // (d * 1000))  # type: ignore[attr-defined]
    # From DRAM (293 MB float32, 146 MB float16), with and without given norms.
    big = np.concatenate([c] * 5)
    for name, cc in (("f32", big), ("f16", big.astype(np.float16))):
        cn = np.linalg.norm(cc.astype(np.float32), axis=1)
        cases[f"cosine DRAM 100000x768 {name}"] = lambda m, cc=cc: cosine(m, q, cc, None)
        cases[f"cosine DRAM 100000x768 {name} norms"] = lambda m, cc=cc, cn=cn: cosine(m, q, cc, None, cn)
    first = cases["cosine f32 20000x768"]
    np.testing.assert_allclose(first(old), first(new), atol=1e-5)  # summation orders may differ
    for name, f in cases.items():
        if only not in name:
            continue
        calls = getattr(f, "calls", 1)
        try:
            f(old)
        except NoNorms:
            print(f"{name:24s} (the reference build has no candidate_norms)")
            continue
        t: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(3):
            f(old)
            f(new)
        for r in range(reps):
            order = (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old))
            for label, m in order:
                t0 = time.thread_time()
                for _ in range(calls):
                    f(m)
                t[label].append((time.thread_time() - t0) / calls)
        mo, mn = statistics.median(t["old"]), statistics.median(t["new"])
        print(
            f"{name:24s} reference {mo * 1e3:8.3f} ms  this {mn * 1e3:8.3f} ms  this/reference {mn / mo:5.3f}"
        )


if __name__ == "__main__":
    main()
