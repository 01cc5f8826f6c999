"""Pure-NumPy implementations of the three kernels: the user's alternative.

The same meaning as :mod:`tlalloc.kernels` (docs/kernels.md), written the way a
NumPy user would write it: whole-array operations with temporaries from NumPy's
allocator. ``tlalloc bench`` runs them as the ``numpy`` strategy, and the tests
use them as the reference. :func:`spread_activation` sums in float64 in the same
order as the C kernel (``np.bincount`` adds edge by edge in CSR order), so the
two agree bit for bit; :func:`spread_activation_scipy` is the sparse
matrix-vector formulation, used as the SciPy baseline of the benchmark.

Example:
    >>> import numpy as np
    >>> [round(float(x), 3) for x in cosine_similarity(np.ones(2), np.eye(2))]
    [0.707, 0.707]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _rank(values: NDArray[np.float32], k: int, lower_better: bool = False) -> NDArray[np.int64]:
    """Indices of the k best values (largest, or smallest), best first, ties to the lower index, NaN last."""
    order = np.argsort(values if lower_better else -values, kind="stable")  # NaN sorts last
    return order[: min(k, values.shape[0])].astype(np.int64)


def _allowed_rows(allow: ArrayLike | None, n: int) -> NDArray[np.int64] | None:
    """Row ids chosen by ``allow`` (a boolean mask of n, or distinct ids in [0, n))."""
    if allow is None:
        return None
    a = np.asarray(allow)
    if a.dtype == np.bool_:
        if a.shape != (n,):
            raise ValueError(f"allow as a mask must have shape ({n},), got {a.shape}")
        return np.flatnonzero(a).astype(np.int64)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"allow must be a boolean mask or an array of integer row ids, got dtype {a.dtype!r}")
    ids = a.astype(np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"allow ids must be in [0, {n})")
    if np.unique(ids).size != ids.size:
        raise ValueError("allow ids must be distinct")
    return ids


def cosine_similarity(
    query: ArrayLike,
    candidates: ArrayLike,
    *,
    top_k: int | None = None,
    metric: str = "cosine",
    normalized: bool = False,
    allow: ArrayLike | None = None,
) -> NDArray[np.float32] | tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Cosine similarity in NumPy: ``(C @ q) / (norm(C, axis=1) * norm(q))`` plus the rules.

    Float64 if either input is float64, else float32; a zero or non-finite norm
    gives 0; scores are clamped to [-1, 1]. ``metric="dot"`` gives ``C @ q``;
    ``metric="l2"`` gives ``((C - q) ** 2).sum(axis=1)`` (lower is better: ``top_k``
    ranks the smallest first); ``normalized=True`` takes every ``|c_i|`` as 1
    (l2: ``|q|^2 + 1 - 2 C @ q``); ``allow`` keeps the rows a mask or an id
    array chooses, in that order, and ``top_k`` returns their row ids.

    Example:
        >>> import numpy as np
        >>> cosine_similarity(np.array([1.0, 0.0]), np.array([[3.0, 0.0], [0.0, 0.0]])).tolist()
        [1.0, 0.0]
        >>> cosine_similarity(np.array([1.0, 0.0]), np.array([[3.0, 0.0], [0.0, 0.0]]), metric="l2").tolist()
        [4.0, 1.0]
    """
    if metric not in ("cosine", "dot", "l2"):
        raise ValueError(f"metric must be one of 'cosine', 'dot' or 'l2', got {metric!r}")
    q = np.asarray(query)
    c = np.asarray(candidates)
    wt = np.float64 if np.float64 in (q.dtype, c.dtype) else np.float32
    q = q.astype(wt, copy=False)
    c = c.astype(wt, copy=False)
    rows = _allowed_rows(allow, c.shape[0])
    if rows is not None:
        c = c[rows]
    with np.errstate(all="ignore"):
        dots = c @ q
        if metric == "dot":
            s = dots.astype(np.float32)
        elif metric == "l2":
            if normalized:
                d2 = np.float64(q @ q) + 1.0 - 2.0 * dots.astype(np.float64)
            else:
                d2 = ((c - q) ** 2).sum(axis=1, dtype=np.float64)
            s = np.maximum(d2, 0).astype(np.float32)
        else:
            cn = np.ones(c.shape[0], wt) if normalized else np.linalg.norm(c, axis=1)
            qn = np.linalg.norm(q)
            s = dots / qn / cn
            bad = ~np.isfinite(cn) | (cn == 0)
            if not (np.isfinite(qn) and qn > 0):
                bad[:] = True
            s[bad] = 0
            s[np.isnan(s)] = 0
            s = np.clip(s, -1, 1).astype(np.float32)
    if top_k is None:
        return s
    idx = _rank(s, top_k, lower_better=metric == "l2")
    return (idx if rows is None else rows[idx]), s[idx]


def _csr(graph: Any) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    if isinstance(graph, tuple):
        indptr, indices, data = graph
    else:
        indptr, indices, data = graph.indptr, graph.indices, graph.data
    return np.asarray(indptr), np.asarray(indices), np.asarray(data)


def _seed_pulse(n: int, seeds: ArrayLike, activation: ArrayLike) -> NDArray[np.float64]:
    pulse = np.zeros(n)
    s = np.atleast_1d(np.asarray(seeds, dtype=np.int64))
    a = np.asarray(activation, dtype=np.float64)
    np.add.at(pulse, s, np.broadcast_to(a, s.shape))  # duplicate seeds add up, in order
    return pulse


def _finish(total: NDArray[np.float64], top_k: int | None) -> Any:
    t32 = total.astype(np.float32)
    if top_k is None:
        return t32
    idx = _rank(t32, top_k)
    return idx, t32[idx]


def spread_activation(
    graph: Any,
    seeds: ArrayLike,
    *,
    activation: ArrayLike = 1.0,
    decay_rate: float = 0.7,
    threshold: float = 0.01,
    max_depth: int = 4,
    top_k: int | None = None,
) -> Any:
    """Spreading activation in NumPy: every step touches every edge (``np.bincount``).

    Example:
        >>> import numpy as np
        >>> g = (np.array([0, 1, 2, 2]), np.array([1, 2]), np.array([1.0, 1.0]))
        >>> spread_activation(g, [0], decay_rate=0.0).tolist()
        [1.0, 1.0, 1.0]
    """
    indptr, indices, data = _csr(graph)
    n = indptr.shape[0] - 1
    src = np.repeat(np.arange(n), np.diff(indptr))
    w = data.astype(np.float64)
    f = math.exp(-decay_rate)
    pulse = _seed_pulse(n, seeds, activation)
    total = pulse.copy()
    for _ in range(max_depth):
        active = (pulse >= threshold)[src]
        contrib = pulse[src[active]] * w[active] * f
        new = np.bincount(indices[active], weights=contrib, minlength=n)
        total += new
        pulse = new
    return _finish(total, top_k)


def spread_activation_scipy(
    graph: Any,
    seeds: ArrayLike,
    *,
    activation: ArrayLike = 1.0,
    decay_rate: float = 0.7,
    threshold: float = 0.01,
    max_depth: int = 4,
    top_k: int | None = None,
    transposed: Any = None,
) -> Any:
    """Spreading activation as SciPy sparse matrix-vector products: ``new = f * (A.T @ p)``.

    ``transposed`` may pass ``A.T`` in CSR form, precomputed once (as a user
    would); otherwise it is built on every call. Requires SciPy.

    Example:
        >>> import numpy as np
        >>> g = (np.array([0, 1, 2, 2]), np.array([1, 2]), np.array([1.0, 1.0]))
        >>> spread_activation_scipy(g, [0], decay_rate=0.0).tolist()
        [1.0, 1.0, 1.0]
    """
    import scipy.sparse as sp

    if transposed is None:
        indptr, indices, data = _csr(graph)
        n = indptr.shape[0] - 1
        transposed = sp.csr_array((data, indices, indptr), shape=(n, n)).T.tocsr()
    n = transposed.shape[0]
    f = math.exp(-decay_rate)
    pulse = _seed_pulse(n, seeds, activation)
    total = pulse.copy()
    for _ in range(max_depth):
        p = np.where(pulse >= threshold, pulse, 0.0)
        new = (transposed @ p) * f
        total += new
        pulse = new
    return _finish(total, top_k)


def decay(
    strengths: ArrayLike,
    ages: ArrayLike,
    *,
    tau: float = 86400.0,
    half_life: float | None = None,
    model: str = "exponential",
    alpha: float = 0.5,
) -> NDArray[Any]:
    """Decay in NumPy: ``s * np.exp(-a / tau)`` (or ``2 ** (-a / h)``, or the power law).

    Float64 for float64 strengths, else float32.

    Example:
        >>> import numpy as np
        >>> decay(np.array([8.0]), np.array([7200.0]), half_life=3600.0).tolist()
        [2.0]
    """
    s = np.asarray(strengths)
    wt = np.float64 if s.dtype == np.float64 else np.float32
    s = s.astype(wt, copy=False)
    a = np.asarray(ages).astype(wt, copy=False)
    if model == "power":
        return (s * (1 + a / wt(tau)) ** wt(-alpha)).astype(wt, copy=False)
    if half_life is not None:
        return (s * np.exp2(-a / wt(half_life))).astype(wt, copy=False)
    return (s * np.exp(-a / wt(tau))).astype(wt, copy=False)
