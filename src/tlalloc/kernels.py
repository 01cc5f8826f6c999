"""Compute kernels whose scratch memory comes from the calling thread's arena.

Three kernels, written in C, that release the GIL while they run (all but calls
below an estimated 1 MiB of work, 64 KiB on a free-threaded build, for which that
costs more than it gives) and take every
temporary buffer from the calling thread's arena (a pointer bump, no lock), so
that they scale with threads:

- :func:`cosine_similarity`: one query, or a batch of queries, against many candidate vectors;
- :func:`spread_activation`: activation spreading over a weighted graph (CSR);
- :func:`decay`: exponential, half-life or power-law decay of strengths with age.

They never fail for lack of arena space: a request that does not fit is served
from the pool's blocks, freed when the call returns, and shows twice: as an
overflow in :func:`tlalloc.stats`, and per kernel in :func:`scratch_stats`, with
the arena size that would have held the whole call (``tlalloc.advise()`` and
``tlalloc stats`` name the kernel and that size). Each kernel's scratch, as a
formula of its arguments, is in ``docs/kernels.md``. Arguments are
checked before any memory is touched, so a bad argument raises and leaves the
caller's arrays as they were. The exact meaning of each kernel is in
``docs/kernels.md``.

Long calls can be interrupted: on the main thread a kernel looks for Ctrl-C
(SIGINT) between chunks of its work, at most 50 ms apart, and then raises
``KeyboardInterrupt`` (or whatever the SIGINT handler raises; a handler that
returns normally lets the call start over). An ``out=`` array is then partly
written. Calls on other threads run to the end: Python delivers signals to the
main thread only.

Benchmarking aid: the same kernel code can take its scratch from three sources,
``"thread"`` (the product, the default), ``"shared"`` (one arena for all threads
behind a mutex) or ``"malloc"`` (malloc/free per buffer); choose one per call
with the keyword-only ``_scratch=`` argument or per thread with
:func:`scratch_strategy`. Only ``tlalloc bench`` needs this.

Example:
    >>> import numpy as np
    >>> from tlalloc import kernels
    >>> q = np.array([1.0, 0.0], np.float32)
    >>> c = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    >>> kernels.cosine_similarity(q, c, top_k=2)[0].tolist()
    [0, 2]
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tlalloc import _tlalloc

__all__ = [
    "MAX_DEPTH",
    "cosine_similarity",
    "Metric",
    "quantize",
    "QuantizedCorpus",
    "spread_activation",
    "spread_activation_many",
    "decay",
    "scratch_strategy",
    "get_scratch_strategy",
    "isa",
    "scratch_stats",
]

ScratchStrategy = Literal["thread", "shared", "malloc"]
#: What :func:`cosine_similarity` scores: cosine, inner product, squared Euclidean distance.
Metric = Literal["cosine", "dot", "l2"]


class _DefaultTau(float):
    """The default ``tau`` (86400.0), distinguishable from an explicit one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "86400.0"


_DEFAULT_TAU = _DefaultTau(86400.0)
_tlalloc._set_default_tau(_DEFAULT_TAU)

#: The largest ``max_depth`` :func:`spread_activation` accepts (a step costs at
#: least the edges its frontier crosses, so this bounds a call on a small cycle).
MAX_DEPTH = 1_000_000

# Kernel calls on the main thread stop for Ctrl-C (SIGINT) within about 50 ms:
# the C side polls only on the thread recorded here (Python runs signal handlers
# there only). After fork the forking thread is the child's main thread.
_tlalloc._kernels_set_main_thread(threading.main_thread().ident)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _tlalloc._kernels_set_main_thread(threading.get_ident()))


@contextlib.contextmanager
def scratch_strategy(name: ScratchStrategy) -> Iterator[None]:
    """Benchmarking aid: run the kernels called by this thread with another scratch source.

    ``"thread"`` (the default) is the calling thread's arena; ``"shared"`` is one
    arena for all threads with a mutex around every allocation (reset when its last
    concurrent user finishes, the pool when full); ``"malloc"`` is malloc/free per
    buffer. The setting is per thread (a C thread-local, read by each kernel call
    without a Python lookup), so threads of one benchmark cannot interfere; it is
    restored when the block ends. A call's ``_scratch=`` argument overrides it.

    Example:
        >>> import numpy as np
        >>> with scratch_strategy("malloc"):
        ...     get_scratch_strategy()
        ...     s = decay(np.ones(3, np.float32), np.zeros(3))
        'malloc'
        >>> get_scratch_strategy()
        'thread'
    """
    prev = _tlalloc._set_thread_scratch(name)
    try:
        yield
    finally:
        _tlalloc._set_thread_scratch(prev)


def get_scratch_strategy() -> ScratchStrategy:
    """The scratch source the calling thread's kernel calls use (see :func:`scratch_strategy`).

    Example:
        >>> get_scratch_strategy()
        'thread'
    """
    return _tlalloc._get_thread_scratch()  # type: ignore[no-any-return]


def scratch_stats() -> dict[str, dict[str, int]]:
    """Scratch statistics of each kernel, process-wide: ``{kernel: {counter: value}}``.

    Kernels: ``"cosine"``, ``"spread"``, ``"decay"``. Counters:

    - ``num_spilled_calls``: calls with at least one scratch request the arena could
      not hold; ``num_spills`` and ``spilled_bytes``: those requests and their bytes,
      served from the pool instead (and freed when the call returned);
    - ``peak_need_bytes``: the most arena bytes one call of the kernel needed
      (calls on thread arenas, spilled or not; alignment padding included);
    - ``fit_capacity_bytes``: the smallest arena capacity that would have held every
      spilled call whole (the bytes the thread's arena already held when the call
      began plus the call's need), 0 if no call spilled; ``spill_capacity_bytes``:
      the capacity of the arena of the call behind it.

    Names as in docs/naming.md.

    Example:
        >>> import numpy as np
        >>> s = spread_activation((np.array([0, 1, 1]), np.array([1]), np.array([1.0])), [0])
        >>> st = scratch_stats()
        >>> sorted(st), st["spread"]["peak_need_bytes"] > 0
        (['cosine', 'decay', 'spread'], True)
    """
    return _tlalloc._kernel_scratch_stats()


def isa() -> str:
    """The instruction set the vectorised kernel paths use: ``"avx512"``, ``"avx2"`` or ``"portable"``.

    Chosen once, at the first kernel call, from what the CPU supports.

    Example:
        >>> isa() in ("avx512", "avx2", "portable")
        True
    """
    return str(_tlalloc._kernels_isa())


# ---------------------------------------------------------------------------- cosine


def cosine_similarity(
    queries: ArrayLike,
    candidates: ArrayLike,
    *,
    top_k: int | None = None,
    out: NDArray[np.float32] | tuple[NDArray[np.int64], NDArray[np.float32]] | None = None,
    candidate_norms: ArrayLike | None = None,
    metric: Metric = "cosine",
    normalized: bool = False,
    allow: ArrayLike | None = None,
    _scratch: ScratchStrategy | None = None,
) -> NDArray[np.float32] | tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Cosine similarity (or dot product, or squared distance) of one or ``m`` queries with ``candidates``.

    ``score[i] = dot(q, c_i) / (|q| * |c_i|)`` as float32; a zero or non-finite
    norm gives 0, and scores are clamped to [-1, 1]. One fused pass over the
    candidates computes each dot product and norm together (AVX2+FMA where the
    CPU has it). Any float dtype and any strides are accepted: float16 and
    bfloat16 (``ml_dtypes.bfloat16``) widen exactly to float32, in registers when
    the rows are contiguous; float64 inputs are computed in float64.

    With ``queries`` of shape ``(m, d)`` the result has one row per query, and
    row ``i`` is bit for bit what ``cosine_similarity(queries[i], candidates)``
    returns; the candidates are read from memory once for all queries, and their
    norms computed once.

    ``metric="dot"`` scores ``dot(q, c_i)`` (the same dot products, without the
    norms); ``metric="l2"`` scores the squared Euclidean distance
    ``|q - c_i|^2``, for which lower is better: ``top_k`` then returns the
    nearest rows, nearest first. ``allow`` restricts a call to some rows: only
    those are read, scored and ranked.

    Args:
        queries: shape ``(d,)`` (one query) or ``(m, d)``; a float dtype.
        candidates: shape ``(n, d)``; a float dtype; or a :class:`QuantizedCorpus`
            (int8 rows, 4x smaller than float32: see :func:`quantize`).
        top_k: if given, return ``(indices, scores)`` of the ``top_k`` best rows
            (per query), best first, ties to the lower index (``top_k > n``
            returns all n). Selection uses a bounded heap in scratch, not a sort.
        out: float32 array of shape ``(n,)`` (one query) or ``(m, n)`` to write
            the scores to; with ``top_k``, a pair ``(indices, scores)`` of
            C-contiguous int64 and float32 arrays of shape ``(top_k,)`` or
            ``(m, top_k)`` (the result is views of them, cut to the rows found;
            entries past those get index -1 and score NaN).
        candidate_norms: optional ``(n,)`` float32 or float64 array of the
            candidates' norms, for a fixed corpus: used instead of computing
            ``|c_i|`` (every value must be finite and >= 0; a norm of 0 gives 0).
        metric: ``"cosine"`` (default), ``"dot"`` or ``"l2"`` (squared
            Euclidean distance, lower is better).
        normalized: the candidates have unit norm: ``|c_i|`` is taken as 1 and
            not computed (cosine: ``dot / |q|``; l2: ``|q|^2 + 1 - 2 dot``).
            Not with ``candidate_norms``.
        allow: a boolean mask of shape ``(n,)``, or an array of distinct row ids
            in ``[0, n)``: only those rows are scored and ranked. Scores then
            have one column per chosen row (mask: in row order; ids: in the
            order given); ``top_k`` indices are row ids of ``candidates``.
        _scratch: benchmarking aid, see :func:`scratch_strategy`.

    Returns:
        float32 scores of shape ``(n,)`` or ``(m, n)``, or ``(int64 indices,
        float32 scores)`` of shape ``(k,)`` or ``(m, k)`` with ``k = min(top_k, n)``
        (``n``: the rows ``allow`` chooses, if given).

    Raises:
        TypeError: a non-float dtype, ``out`` or ``candidate_norms`` of the wrong
            dtype, ``top_k`` not an int, ``metric`` not a str, ``normalized`` not
            a bool, ``allow`` neither boolean nor integer.
        ValueError: wrong dimensions or lengths, negative ``top_k``, ``out`` that
            overlaps the inputs, a negative or non-finite candidate norm, an
            unknown ``metric``, ``normalized`` with ``candidate_norms``, an
            ``allow`` id out of range or repeated.

    Example:
        >>> import numpy as np
        >>> q = np.array([1.0, 0.0])
        >>> c = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0], [-1.0, 0.0]])
        >>> cosine_similarity(q, c).tolist()
        [1.0, 0.0, 0.0, -1.0]
        >>> idx, scores = cosine_similarity(q, c, top_k=2)
        >>> idx.tolist(), scores.tolist()
        ([0, 1], [1.0, 0.0])
        >>> Q = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> cosine_similarity(Q, c, top_k=1)[0].tolist()
        [[0], [1]]
        >>> cosine_similarity(Q, c, candidate_norms=np.array([2.0, 3.0, 0.0, 1.0]))[1].tolist()
        [0.0, 1.0, 0.0, 0.0]
        >>> cosine_similarity(q, c, metric="l2", top_k=2)
        (array([0, 2]), array([1., 1.], dtype=float32))
        >>> cosine_similarity(q, c, metric="dot", allow=[3, 0]).tolist()
        [-1.0, 2.0]
        >>> idx, best = np.empty(3, np.int64), np.empty(3, np.float32)
        >>> cosine_similarity(q, c, top_k=3, out=(idx, best), allow=c[:, 0] != 0)[0].tolist()
        [0, 3]
    """
    if isinstance(candidates, QuantizedCorpus):  # an int8 corpus: see quantize()
        if candidate_norms is not None:
            raise TypeError("candidate_norms cannot be given with a QuantizedCorpus (it holds its own norms)")
        if normalized is not False:
            raise ValueError("normalized=True cannot be given with a QuantizedCorpus (it has its own norms)")
        if allow is not None:
            raise ValueError("allow= is not supported for a QuantizedCorpus")
        if metric == "l2":
            raise ValueError("metric='l2' is not supported for a QuantizedCorpus: use 'cosine' or 'dot'")
        return _tlalloc._score_int8(queries, candidates, top_k, out, metric, _scratch)
    return _tlalloc._cosine_similarity(  # type: ignore[no-any-return]
        queries, candidates, top_k, out, candidate_norms, _scratch, metric, normalized, allow
    )


# ---------------------------------------------------------------------------- int8

#: An int8 corpus made by :func:`quantize` (immutable; see its docstring).
QuantizedCorpus = _tlalloc.QuantizedCorpus


def quantize(C: ArrayLike, *, _scratch: ScratchStrategy | None = None) -> QuantizedCorpus:
    """Quantize the rows of ``C`` to int8 with one float32 scale per row, for :func:`cosine_similarity`.

    The scheme is symmetric, with one scale per row from the row's largest
    magnitude (absmax; needs no calibration data, and a row's cosine does not
    depend on its scale)::

        scale[r] = max_j |C[r, j]| / 127                (0 for a row of zeros)
        data[r, j] = round(C[r, j] / scale[r])          to nearest, ties to even, in [-127, 127]

    so ``data[r] * scale[r]`` stands for ``C[r]`` within half a step. The result
    is 4x smaller than float32 (``n * d`` bytes plus 12 per row), and scoring it
    reads 1 byte per element: from DRAM about 3.5-4x faster than the float32
    corpus. ``cosine_similarity(q, corpus)`` quantizes each query by the same
    scheme, sums the integer dot products exactly in int32 (AVX512_VNNI,
    AVX-VNNI or AVX2, all giving the same integers) and returns the cosine of
    the two dequantized vectors, computed in float64 and rounded once to float32.
    The only error is the quantization's; what it does to a ranking depends on
    the data (on all-MiniLM-L6-v2 sentence embeddings, recall@10 against the
    float32 ranking is reported by ``python -m tlalloc.bench.int8_recall``).

    The result owns its memory and cannot be changed: its arrays (``data``,
    ``scale``, and the per-row ``sum`` and ``sumsq`` of the int8 values that the
    integer kernels rely on) are read-only views, and the type has no
    constructor, so a corpus always holds what this function computed. One
    corpus can be searched from many threads at once. The GIL is released while
    it is computed.

    Args:
        C: shape ``(n, d)`` with ``d <= 65536``; float16, float32, float64 or
            bfloat16, any strides; every value finite.
        _scratch: benchmarking aid, see :func:`scratch_strategy`.

    Returns:
        A :class:`QuantizedCorpus` of shape ``(n, d)``.

    Raises:
        TypeError: ``C`` does not have a float dtype.
        ValueError: ``C`` is not 2-dimensional, has more than 65,536 columns, or
            holds a NaN or infinity (the message names the first one).

    Example:
        >>> import numpy as np
        >>> C = np.array([[0.5, -1.0, 0.25], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
        >>> corpus = quantize(C)
        >>> corpus
        QuantizedCorpus(rows=3, cols=3, dtype=int8)
        >>> corpus.data.tolist(), corpus.scale.tolist()
        ([[64, -127, 32], [127, 0, 0], [0, 0, 0]], [0.007874015718698502, 0.023622047156095505, 0.0])
        >>> idx, scores = cosine_similarity(np.array([1.0, -2.0, 0.5], np.float32), corpus, top_k=2)
        >>> idx.tolist(), [round(float(s), 3) for s in scores]
        ([0, 1], [1.0, 0.439])
    """
    return _tlalloc._quantize(C, _scratch)


# ---------------------------------------------------------------------------- spread


def _csr_parts(graph: Any) -> tuple[Any, Any, Any]:
    if isinstance(graph, tuple):
        if len(graph) != 3:
            raise ValueError(f"graph as a tuple must be (indptr, indices, weights), got {len(graph)} items")
        return graph[0], graph[1], graph[2]
    try:
        indptr, indices, data = graph.indptr, graph.indices, graph.data
    except AttributeError:
        raise TypeError(
            "graph must be a CSR adjacency (an object with .indptr, .indices and .data, "
            f"such as scipy.sparse.csr_array) or a tuple (indptr, indices, weights), got "
            f"{type(graph).__name__}"
        ) from None
    fmt = getattr(graph, "format", "csr")
    if fmt != "csr":
        raise ValueError(f"graph must be in CSR format, got format {fmt!r}")
    shape = getattr(graph, "shape", None)
    if shape is not None and (len(shape) != 2 or shape[0] != shape[1]):
        raise ValueError(f"graph must be a square adjacency matrix, got shape {tuple(shape)}")
    return indptr, indices, data


def spread_activation(
    graph: Any,
    seeds: ArrayLike,
    *,
    activation: ArrayLike = 1.0,
    decay_rate: float = 0.7,
    threshold: float = 0.01,
    max_depth: int = 4,
    top_k: int | None = None,
    _scratch: ScratchStrategy | None = None,
    _engine: Literal["auto", "dense", "sparse", "indexed"] = "auto",
) -> NDArray[np.float32] | tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Spread activation from ``seeds`` along the weighted edges of ``graph``.

    With ``f = exp(-decay_rate)``::

        pulse = zeros(n); pulse[seeds] += activation     # duplicate seeds add up
        total = pulse.copy()
        repeat max_depth times:
            new = zeros(n)
            for every node u with pulse[u] >= threshold:
                for every edge u -> v with weight w:
                    new[v] += pulse[u] * w * f
            total += new
            pulse = new
        return total                                      # float32, shape (n,)

    The work is frontier-driven: only nodes the pulse reaches have state (in
    scratch), so a call costs in proportion to the edges the pulse crosses, not
    to the size of the graph. (Graphs of at most 4096 nodes use plain arrays of n
    doubles instead, a bounded cost that beats hashing there.) Sums are float64 in
    exactly the order above, so the result equals the reference loop bit for bit.

    The graph is validated lazily, to stay sublinear: the lengths (O(1)), every
    seed, and each row the pulse visits (``indptr`` non-decreasing and within
    range, ``indices`` in range, weights finite). A fault in a row the pulse never
    reaches cannot change the result and is not looked for.

    Args:
        graph: CSR adjacency, an object with ``.indptr``, ``.indices``, ``.data``
            (``scipy.sparse.csr_array``/``csr_matrix`` work; SciPy is not needed) or
            a tuple ``(indptr, indices, weights)``. Edge ``u -> v`` with weight ``w``
            means u spreads to v. int32/int64 indices and float32/float64 weights
            are used in place; other integer or real dtypes are converted (a copy).
        seeds: a node id or a 1-D sequence of node ids.
        activation: a number, or one number per seed.
        decay_rate: finite, >= 0.
        threshold: a node spreads while its pulse is >= threshold.
        max_depth: number of spreading steps (0 returns the seeds' activation), at
            most :data:`MAX_DEPTH`; spreading stops early once no node's pulse
            reaches the threshold.
        top_k: if given, return ``(node ids, activations)`` of the ``top_k`` most
            activated nodes, best first, ties to the lower id; no O(n) output.
        _scratch: benchmarking aid, see :func:`scratch_strategy`.
        _engine: testing aid: ``"dense"``, ``"sparse"`` or ``"indexed"`` (the
            sparse engine's slots found through an array of n slot numbers
            instead of a hash table) forces one engine (same results);
            ``"auto"`` picks by graph size.

    Returns:
        float32 totals of shape ``(n,)``, or ``(int64 ids, float32 activations)``.

    Raises:
        TypeError: a graph of another kind, non-integer seeds, non-numeric arguments.
        ValueError: a malformed graph (the message names the array, position and
            value), a seed out of range, a non-finite activation, a negative
            ``decay_rate``, ``max_depth`` or ``top_k``, a ``max_depth`` above
            :data:`MAX_DEPTH`, a NaN ``threshold``.
        KeyboardInterrupt: Ctrl-C while the call runs on the main thread (see
            the module docstring).

    Example:
        >>> import numpy as np
        >>> indptr = np.array([0, 1, 2, 2])        # 0 -> 1 -> 2
        >>> indices = np.array([1, 2])
        >>> weights = np.array([1.0, 1.0])
        >>> act = spread_activation((indptr, indices, weights), [0], decay_rate=0.0)
        >>> act.tolist()
        [1.0, 1.0, 1.0]
        >>> spread_activation((indptr, indices, weights), 0, max_depth=1, top_k=1)[0].tolist()
        [0]
    """
    if isinstance(graph, tuple) and len(graph) == 3:
        indptr, indices, data = graph
    else:
        indptr, indices, data = _csr_parts(graph)
    return _tlalloc._spread_activation(  # type: ignore[no-any-return]
        indptr, indices, data, seeds, activation, decay_rate, threshold, max_depth, top_k,
        _scratch, _engine,
    )


def _seed_sets_flat(seed_sets: Any, activation: Any) -> tuple[Any, Any, Any]:
    """``(seed_ids, set_indptr, activation)`` from a sequence of seed sets."""
    if isinstance(seed_sets, np.ndarray):
        if seed_sets.ndim != 2:
            raise ValueError(
                "seed_sets as an array must be 2-dimensional (one row per set), got "
                f"{seed_sets.ndim} dimension(s); pass set_indptr= for sets of different sizes"
            )
        m, s = seed_sets.shape
        ids, ptr = seed_sets.reshape(-1), np.arange(0, m * s + 1, max(s, 1), dtype=np.int64)[: m + 1]
        if s == 0:
            ptr = np.zeros(m + 1, np.int64)
    else:
        if isinstance(seed_sets, (str, bytes)) or not hasattr(seed_sets, "__len__"):
            raise TypeError(
                f"seed_sets must be a sequence of seed sets, got {type(seed_sets).__name__}"
            )
        parts = [np.atleast_1d(np.asarray(s)) for s in seed_sets]
        for i, part in enumerate(parts):
            if part.ndim != 1:
                raise ValueError(
                    f"seed_sets[{i}] must be a node id or a 1-D sequence of node ids, got "
                    f"{part.ndim} dimensions"
                )
            if part.size and part.dtype.kind not in "iu":
                raise TypeError(f"seed_sets[{i}] must hold node ids (integers), got dtype {part.dtype}")
        sizes = np.fromiter((p.size for p in parts), np.int64, len(parts))
        ptr = np.zeros(len(parts) + 1, np.int64)
        np.cumsum(sizes, out=ptr[1:])
        ids = np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)
        if ids.dtype.kind not in "iu":  # only empty sets: float64 from concatenate
            ids = ids.astype(np.int64)
    if not np.isscalar(activation) and not (isinstance(activation, np.ndarray) and activation.ndim == 0):
        if isinstance(activation, np.ndarray) and activation.ndim == 2:
            activation = activation.reshape(-1)
        else:
            acts = [np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in activation]
            if len(acts) != len(ptr) - 1:
                raise ValueError(
                    f"activation must be a number or one sequence per seed set ({len(ptr) - 1}), "
                    f"got {len(acts)}"
                )
            for i, a in enumerate(acts):
                if a.shape != (int(ptr[i + 1] - ptr[i]),):
                    raise ValueError(
                        f"activation[{i}] must have one value per seed of seed_sets[{i}] "
                        f"({int(ptr[i + 1] - ptr[i])}), got shape {a.shape}"
                    )
            activation = np.concatenate(acts) if acts else np.zeros(0)
    return ids, ptr, activation


def spread_activation_many(
    graph: Any,
    seed_sets: Any,
    *,
    set_indptr: ArrayLike | None = None,
    activation: Any = 1.0,
    decay_rate: float = 0.7,
    threshold: float = 0.01,
    max_depth: int = 4,
    top_k: int | None = None,
    _scratch: ScratchStrategy | None = None,
    _engine: Literal["auto", "dense", "sparse", "indexed"] = "auto",
) -> NDArray[np.float32] | tuple[NDArray[np.int64], NDArray[np.float32]]:
    """:func:`spread_activation` from several seed sets in one call.

    Result row ``i`` equals ``spread_activation(graph, seed_sets[i], ...)`` bit
    for bit. The call checks the arguments, the graph's ends and every seed of
    every set once, before any work, then runs the sets back to back with the
    GIL released, in one traversal state (touched nodes, their index, frontier,
    top-k heap) that is emptied between sets and never shrunk or freed:
    what a loop of calls pays per call (argument checks, the GIL hand-off, a
    scratch bracket, growing the state from empty) it pays once. Once a set has
    touched n / 16 nodes, the touched nodes are found through an array of n
    slot numbers (cleared once per call) instead of a hash table, with the
    rows and slot numbers fetched ahead: about 1.6-2x faster than a loop of
    single calls when the pulse reaches a large part of the graph. See
    docs/kernels.md for the measured gain.

    Args:
        graph: as for :func:`spread_activation`.
        seed_sets: a sequence of seed sets (each a node id or a 1-D sequence of
            node ids; sets may be empty), a 2-D integer array (one row per set),
            or, with ``set_indptr``, a 1-D array of node ids holding every set
            one after the other.
        set_indptr: with a flat ``seed_sets``: set ``i`` is
            ``seed_sets[set_indptr[i]:set_indptr[i + 1]]`` (starts at 0, ends at
            ``len(seed_sets)``, non-decreasing), as in CSR.
        activation: a number for every seed, or one value per seed: a sequence
            parallel to ``seed_sets`` (of sequences), or with ``set_indptr`` a
            1-D array parallel to the flat ``seed_sets``.
        decay_rate, threshold, max_depth, top_k: as for :func:`spread_activation`.
        _scratch: benchmarking aid, see :func:`scratch_strategy`.
        _engine: testing aid, as for :func:`spread_activation`; ``"indexed"``
            uses the array of n slot numbers from the start (``"sparse"``: the
            hash table throughout).

    Returns:
        float32 totals of shape ``(len(sets), n)``, or with ``top_k`` a pair of
        int64 ids and float32 activations, each of shape
        ``(len(sets), min(top_k, n))``.

    Raises:
        TypeError, ValueError: as :func:`spread_activation`; a seed out of range
            names its set and its position in the set.
        KeyboardInterrupt: Ctrl-C while the call runs on the main thread.

    Example:
        >>> import numpy as np
        >>> g = (np.array([0, 1, 2, 2]), np.array([1, 2]), np.array([1.0, 1.0]))
        >>> spread_activation_many(g, [[0], [1], []], decay_rate=0.0).tolist()
        [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
        >>> ids, act = spread_activation_many(g, [0, 1], max_depth=1, top_k=2)
        >>> ids.tolist()
        [[0, 1], [1, 2]]
    """
    if isinstance(graph, tuple) and len(graph) == 3:
        indptr, indices, data = graph
    else:
        indptr, indices, data = _csr_parts(graph)
    if set_indptr is None:
        seed_ids, set_indptr, activation = _seed_sets_flat(seed_sets, activation)
    else:
        seed_ids = seed_sets
    return _tlalloc._spread_activation_many(  # type: ignore[no-any-return]
        indptr, indices, data, seed_ids, set_indptr, activation, decay_rate, threshold, max_depth,
        top_k, _scratch, _engine,
    )


# ---------------------------------------------------------------------------- decay

def decay(
    strengths: ArrayLike,
    ages: ArrayLike,
    *,
    tau: float = _DEFAULT_TAU,
    half_life: float | None = None,
    model: Literal["exponential", "power"] = "exponential",
    alpha: float = 0.5,
    out: NDArray[np.floating[Any]] | None = None,
    _scratch: ScratchStrategy | None = None,
) -> NDArray[np.floating[Any]]:
    """Decay ``strengths`` by ``ages`` (seconds).

    - ``model="exponential"``: ``s * exp(-age / tau)``, or with ``half_life=h``
      instead of ``tau``: ``s * 2 ** (-age / h)``;
    - ``model="power"``: ``s * (1 + age / tau) ** (-alpha)``.

    Float32 work (float16 or float32 strengths) runs one fused, vectorised pass
    (exp2/log2 polynomials, within 1e-6 relative; AVX-512 or AVX2 where available); float64
    strengths are computed in float64 with libm. Ages may have any integer or
    float dtype; strengths and ages broadcast against each other.

    Args:
        strengths: a float array.
        ages: ages in seconds, integer or float, every one >= 0 (inf allowed).
        tau: time constant in seconds (finite, > 0).
        half_life: half-life in seconds (exponential model only), instead of ``tau``.
        model: ``"exponential"`` or ``"power"``.
        alpha: exponent of the power model (finite).
        out: where to write the result; ``out=strengths`` works in place. Its dtype
            must be the result dtype: float64 for float64 strengths, else float32.
        _scratch: benchmarking aid, see :func:`scratch_strategy`.

    Returns:
        The decayed strengths (``out`` if given).

    Raises:
        TypeError: both ``tau`` and ``half_life`` given; non-numeric dtypes; ``out``
            of the wrong dtype.
        ValueError: a negative or NaN age (nothing is written), a bad ``model``,
            ``tau``/``half_life`` not finite and > 0, ``half_life`` with the power
            model, shapes that do not broadcast.

    Example:
        >>> import numpy as np
        >>> s = np.array([1.0, 1.0, 8.0], np.float32)
        >>> decay(s, np.array([0, 3600, 7200]), half_life=3600).tolist()
        [1.0, 0.5, 2.0]
        >>> _ = decay(s, np.zeros(3), out=s)     # in place
    """
    # Every check (model, tau/half_life, alpha, the arrays) happens in C before any
    # array is read: the wrapper only passes the arguments on.
    return _tlalloc._decay(  # type: ignore[no-any-return]
        strengths, ages, model, tau, half_life, alpha, out, _scratch
    )
