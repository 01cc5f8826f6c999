"""Fuzz target: the argument handling of tlalloc.kernels.

Every argument of cosine_similarity, spread_activation and decay is drawn from
every kind of value (arrays of any dtype, shape, layout and values, scalars,
wrong types). A call must return a result of the documented shape and range or
raise TypeError / ValueError / OverflowError / MemoryError; a crash, a
sanitizer report or another exception is a finding.
"""

from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports():
    import numpy as np
    from _gen import array, number

    from tlalloc import kernels

OK = (TypeError, ValueError, OverflowError, MemoryError)


def cosine(fdp: atheris.FuzzedDataProvider) -> None:
    q, c = array(fdp), array(fdp)
    top_k = number(fdp) if fdp.ConsumeBool() else None
    out = array(fdp) if fdp.ConsumeIntInRange(0, 3) == 0 else None
    norms = array(fdp) if fdp.ConsumeIntInRange(0, 3) == 0 else None
    r = kernels.cosine_similarity(q, c, top_k=top_k, out=out, candidate_norms=norms)
    scores = r[1] if isinstance(r, tuple) else r
    if scores.dtype != np.float32 or not np.all(np.abs(scores) <= 1.0):
        raise AssertionError(f"scores outside [-1, 1]: {scores!r}")


def spread(fdp: atheris.FuzzedDataProvider) -> None:
    if fdp.ConsumeBool():
        n = fdp.ConsumeIntInRange(0, 8)
        nnz = fdp.ConsumeIntInRange(0, 16)
        indptr = np.sort(np.array([fdp.ConsumeIntInRange(-1, nnz + 1) for _ in range(n + 1)]))
        graph: object = (indptr, np.array([fdp.ConsumeIntInRange(-2, n + 1) for _ in range(nnz)]),
                         array(fdp))
    else:
        graph = (array(fdp), array(fdp), array(fdp)) if fdp.ConsumeBool() else array(fdp)
    kw = {}
    for name in ("activation", "decay_rate", "threshold", "max_depth", "top_k"):
        if fdp.ConsumeBool():
            kw[name] = number(fdp) if name != "activation" or fdp.ConsumeBool() else array(fdp)
    if kw.get("max_depth", 0) is not None and isinstance(kw.get("max_depth"), int):
        kw["max_depth"] = min(kw["max_depth"], 50)  # bounded work per input
    kw["_engine"] = fdp.PickValueInList(["auto", "dense", "sparse"])
    kernels.spread_activation(graph, array(fdp), **kw)


def decay(fdp: atheris.FuzzedDataProvider) -> None:
    kw = {}
    for name in ("tau", "half_life", "alpha"):
        if fdp.ConsumeBool():
            kw[name] = number(fdp)
    if fdp.ConsumeBool():
        kw["model"] = fdp.PickValueInList(["exponential", "power", "Power", "", None])
    if fdp.ConsumeIntInRange(0, 3) == 0:
        kw["out"] = array(fdp)
    kernels.decay(array(fdp), array(fdp), **kw)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            (cosine, spread, decay)[which](fdp)
        except OK:
            pass


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
