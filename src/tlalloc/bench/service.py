"""The realistic service that leads ``tlalloc bench``: tlalloc kernels against NumPy/SciPy code.

One request of the service is what a memory service answers for a batch of
user queries:

1. cosine top-k: a batch of 16 float32 queries of 384 dimensions against a
   corpus of 200,000 rows (top 10 per query; the corpus norms computed once,
   as a fixed corpus allows);
2. spreading activation over a 100,000-node graph (10 weighted out-edges per
   node) from the nodes of the 16 best matches (top 10);
3. decay of the 100,000 nodes' strengths by their ages.

Implementations (each a function of the request index, built per thread):

- ``tlalloc``: ``tlalloc.kernels.cosine_similarity`` (the batched form, with
  ``candidate_norms``), ``spread_activation`` and ``decay``;
- ``numpy``: what a NumPy/SciPy user writes: ``Q @ C.T / (|q| |c|)`` with
  ``np.argpartition`` for the top k, the spreading as SciPy sparse
  matrix-vector products over the transposed adjacency built once
  (:func:`tlalloc.kernels_reference.spread_activation_scipy`; NumPy's
  ``bincount`` form without SciPy), ``s * np.exp(-age / tau)``;
- ``faiss`` (where ``faiss`` is installed): ``IndexFlatIP`` over the
  normalized corpus for the cosine step, the rest as ``numpy``.

Before timing, every implementation answers the same requests and the answers
are compared (same top-k ids, scores within float32 rounding). Then, in
interleaved rounds, each implementation runs from 1..N threads
(:func:`tlalloc.bench._common.measure`); the figures are each thread's CPU time
per request (``time.thread_time``: robust to other load on the machine) and the
throughput in requests per second. BLAS is limited to one thread per calling
thread while the NumPy code runs, as in a threaded server (and so that a
thread's CPU time holds all of its request's work).

Example:
    $ tlalloc bench --threads 1,2
    $ tlalloc bench --quick         # a smoke run: small sizes, no verdicts
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlalloc import kernels, kernels_reference
from tlalloc._report import format_table
from tlalloc.bench._common import (
    Progress,
    blas_threads,
    measure,
    median_interval,
    random_graph,
    ratio_interval,
    verdict,
)

CORPUS_ROWS, DIM, BATCH, NODES, DEGREE, TOP_K = 200_000, 384, 16, 100_000, 10, 10
QUICK_CORPUS_ROWS, QUICK_NODES = 20_000, 10_000
TAU = 86400.0  # decay time constant, seconds
N_BATCHES = 8  # distinct query batches, cycled by the request index

IMPLEMENTATIONS = ("tlalloc", "numpy", "faiss")
LABELS = {"tlalloc": "tlalloc kernels", "numpy": "NumPy/SciPy", "faiss": "faiss + NumPy/SciPy"}


@dataclass
class ServiceData:
    """The service's state, shared read-only by every thread."""

    corpus: np.ndarray  # (rows, dim) float32
    norms: np.ndarray  # (rows,) float32, computed once
    batches: np.ndarray  # (N_BATCHES, batch, dim) float32
    graph: tuple[np.ndarray, np.ndarray, np.ndarray]  # CSR (indptr, indices, weights)
    graph_t: Any  # the transposed adjacency as scipy.sparse CSR, or None without SciPy
    strengths: np.ndarray  # (nodes,) float32
    ages: np.ndarray  # (nodes,) float32 seconds
    faiss_index: Any = None  # built on demand by request(..., "faiss")

    @property
    def nodes(self) -> int:
        return int(self.graph[0].shape[0] - 1)


def make_data(
    rows: int = CORPUS_ROWS,
    dim: int = DIM,
    batch: int = BATCH,
    nodes: int = NODES,
    degree: int = DEGREE,
    seed: int = 0,
) -> ServiceData:
    """The service's corpus, queries, graph and strengths (deterministic for a seed).

    Example:
        >>> d = make_data(rows=50, dim=8, batch=3, nodes=40, degree=2)
        >>> d.corpus.shape, d.batches.shape, d.nodes, d.strengths.dtype.name
        ((50, 8), (8, 3, 8), 40, 'float32')
    """
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((rows, dim), dtype=np.float32)
    norms = np.linalg.norm(corpus, axis=1).astype(np.float32)
    batches = rng.standard_normal((N_BATCHES, batch, dim), dtype=np.float32)
    graph = random_graph(nodes, degree, seed=seed + 1)
    try:
        import scipy.sparse as sp
    except ImportError:
        graph_t = None
    else:
        indptr, indices, weights = graph
        graph_t = sp.csr_array((weights, indices, indptr), shape=(nodes, nodes)).T.tocsr()
    strengths = rng.random(nodes, dtype=np.float32)
    ages = (rng.random(nodes, dtype=np.float32) * 30 * 86400).astype(np.float32)
    return ServiceData(corpus, norms, batches, graph, graph_t, strengths, ages)


def available() -> list[str]:
    """The implementations this Python can run (``faiss`` only where installed).

    Example:
        >>> available()[:2]
        ['tlalloc', 'numpy']
    """
    out = ["tlalloc", "numpy"]
    try:
        import faiss  # noqa: F401
    except ImportError:
        pass
    else:
        out.append("faiss")
    return out


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each row, best first, ties to the lower index (np.argpartition)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(vals, order, axis=1)


def request(data: ServiceData, impl: str) -> Callable[[int], tuple[Any, ...]]:
    """One request of ``impl`` as a function of the request index. Build one per
    thread (the harness does): the function and its closure are that thread's own.

    Returns ``(ids, scores, node_ids, activations, decayed)``: the top-k of each
    query (shape ``(batch, k)``), the top-k most activated nodes, every node's
    decayed strength.

    Example:
        >>> d = make_data(rows=50, dim=8, batch=3, nodes=40, degree=2)
        >>> ids, scores, nodes, act, decayed = request(d, "tlalloc")(0)
        >>> ids.shape, nodes.shape, decayed.shape
        ((3, 10), (10,), (40,))
    """
    corpus, norms, batches = data.corpus, data.norms, data.batches
    graph, graph_t, strengths, ages = data.graph, data.graph_t, data.strengths, data.ages
    nb, n_nodes, k = len(batches), data.nodes, TOP_K

    if impl == "tlalloc":
        kcos, kspread, kdecay = kernels.cosine_similarity, kernels.spread_activation, kernels.decay

        def one(i: int) -> tuple[Any, ...]:
            ids, scores = kcos(batches[i % nb], corpus, top_k=k, candidate_norms=norms)
            seeds = ids[:, 0] % n_nodes  # the best match of each query, as a node
            node_ids, act = kspread(graph, seeds, top_k=k)
            return ids, scores, node_ids, act, kdecay(strengths, ages, tau=TAU)

        return one

    if impl not in ("numpy", "faiss"):
        raise ValueError(f"unknown implementation {impl!r}; choose from {IMPLEMENTATIONS}")
    if graph_t is not None:
        sspread = kernels_reference.spread_activation_scipy

        def spread(seeds: np.ndarray) -> Any:
            return sspread(graph, seeds, top_k=k, transposed=graph_t)
    else:
        nspread = kernels_reference.spread_activation

        def spread(seeds: np.ndarray) -> Any:
            return nspread(graph, seeds, top_k=k)

    if impl == "numpy":

        def cosine(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            qn = np.linalg.norm(q, axis=1)
            scores = (q @ corpus.T) / (qn[:, None] * norms)
            return _topk_rows(scores, k)

    else:
        index = _faiss_index(data)

        def cosine(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            scores, ids = index.search(qn, k)
            return ids.astype(np.int64), scores

    exp = np.exp

    def one_numpy(i: int) -> tuple[Any, ...]:
        ids, scores = cosine(batches[i % nb])
        node_ids, act = spread(ids[:, 0] % n_nodes)
        return ids, scores, node_ids, act, strengths * exp(-ages / np.float32(TAU))

    return one_numpy


def _faiss_index(data: ServiceData) -> Any:
    if data.faiss_index is None:
        import faiss

        faiss.omp_set_num_threads(1)  # one thread per request, as the others
        index = faiss.IndexFlatIP(data.corpus.shape[1])
        index.add(np.ascontiguousarray(data.corpus / data.norms[:, None], dtype=np.float32))
        data.faiss_index = index
    return data.faiss_index


def _ties_only(ids: Any, scores: Any, want_ids: Any, rtol: float = 0.0, atol: float = 2e-5) -> bool:
    """Whether ``ids`` differs from ``want_ids`` only where two near-equal scores may
    come in either order: at each differing rank, the score equals a neighbour's
    (within the tolerance), or it is the last rank (a tie at the cut)."""
    for row, s, w in zip(np.atleast_2d(ids), np.atleast_2d(scores), np.atleast_2d(want_ids), strict=True):
        for j in np.flatnonzero(row != w):
            if j == len(s) - 1:
                continue
            near = [s[x] for x in (j - 1, j + 1) if 0 <= x < len(s)]
            if not any(abs(s[j] - v) <= atol + rtol * abs(v) for v in near):
                return False
    return True


def compare_answers(got: tuple[Any, ...], want: tuple[Any, ...]) -> list[str]:
    """Differences between two answers to one request: top-k ids must match (a swap
    of two scores within float32 rounding is allowed), scores within 2e-5,
    activations within 1e-5 relative, decayed strengths within 2e-6 relative.

    Example:
        >>> d = make_data(rows=50, dim=8, batch=3, nodes=40, degree=2)
        >>> compare_answers(request(d, "tlalloc")(1), request(d, "numpy")(1))
        []
    """
    problems = []
    ids, scores, node_ids, act, decayed = got
    w_ids, w_scores, w_nodes, w_act, w_decayed = want
    if not np.allclose(scores, w_scores, rtol=0, atol=2e-5):
        problems.append("top-k scores differ beyond 2e-5")
    elif not _ties_only(ids, scores, w_ids):
        problems.append("top-k ids differ")
    if not np.allclose(act, w_act, rtol=1e-5, atol=1e-9):
        problems.append("activations differ beyond 1e-5")
    elif not _ties_only(node_ids, act, w_nodes, rtol=1e-5):
        problems.append("activated node ids differ")
    if not np.allclose(decayed, w_decayed, rtol=2e-6, atol=1e-30):
        problems.append("decayed strengths differ beyond 2e-6")
    return problems


def verify(data: ServiceData, impls: list[str], requests: int = 3) -> list[str]:
    """Answer the same requests with every implementation and compare with tlalloc's.

    Example:
        >>> verify(make_data(rows=200, dim=16, batch=4, nodes=100, degree=3), ["tlalloc", "numpy"])
        []
    """
    problems: list[str] = []
    ref = request(data, "tlalloc")
    others = {impl: request(data, impl) for impl in impls if impl != "tlalloc"}
    for i in range(requests):
        want = ref(i)
        for impl, fn in others.items():
            problems += [f"request {i}: {impl} against tlalloc: {p}" for p in compare_answers(fn(i), want)]
    return problems


def run(
    data: ServiceData,
    impls: list[str],
    threads: list[int],
    seconds: float,
    rounds: int,
    blas: int | None = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Time every implementation at every thread count in ``rounds`` interleaved
    rounds (the order of the implementations rotates from round to round).

    Returns ``{"cells": [...]}``, one cell per (implementation, threads) with the
    samples of each round (``cpu_ms``: CPU ms per request averaged over the
    threads; ``rps``: requests per second) and their medians.

    Example:
        >>> d = make_data(rows=100, dim=8, batch=2, nodes=50, degree=2)
        >>> r = run(d, ["tlalloc", "numpy"], [1], 0.01, 1)
        >>> [(c["impl"], c["threads"], len(c["cpu_ms"])) for c in r["cells"]]
        [('tlalloc', 1, 1), ('numpy', 1, 1)]
    """
    cpu: dict[tuple[str, int], dict[int, float]] = {}
    rps: dict[tuple[str, int], dict[int, float]] = {}
    with Progress(total=rounds * len(threads) * len(impls), desc="service", enabled=progress) as bar:
        for rnd in range(rounds):
            for t in threads:
                shift = rnd % len(impls)
                for impl in impls[shift:] + impls[:shift]:
                    with blas_threads(blas if impl != "tlalloc" else None):
                        r = measure(None, t, seconds, make=lambda impl=impl: request(data, impl))
                    cpu.setdefault((impl, t), {})[rnd] = r["cpu_ns_per_op"] / 1e6
                    rps.setdefault((impl, t), {})[rnd] = r["ops_per_s"]
                    bar.update()
    cells = []
    for impl in impls:
        for t in threads:
            c, q = cpu[(impl, t)], rps[(impl, t)]
            cells.append({
                "impl": impl, "threads": t,
                "cpu_ms": [c[r] for r in sorted(c)], "rps": [q[r] for r in sorted(q)],
                "cpu_ms_median": statistics.median(c.values()),
                "rps_median": statistics.median(q.values()),
                "cpu_ms_interval": median_interval(list(c.values())),
                "rps_interval": median_interval(list(q.values())),
            })
    return {"cells": cells, "by_round": {"cpu": cpu, "rps": rps}}


def comparisons(result: dict[str, Any]) -> list[dict[str, Any]]:
    """tlalloc against each other implementation at each thread count: the ratio of
    the median CPU ms per request (theirs / tlalloc's: >1, tlalloc is faster) and
    its 95% bootstrap interval over the rounds (``ratio_interval``), or None.

    Example:
        >>> cpu = {("tlalloc", 1): {r: 1.0 for r in range(6)}, ("numpy", 1): {r: 3.0 for r in range(6)}}
        >>> c = comparisons({"by_round": {"cpu": cpu}})[0]
        >>> c["other"], c["ratio"], c["interval"]
        ('numpy', 3.0, (3.0, 3.0))
    """
    cpu = result["by_round"]["cpu"]
    out = []
    for (impl, t), theirs in sorted(cpu.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ours = cpu.get(("tlalloc", t))
        if impl == "tlalloc" or ours is None:
            continue
        ratio = statistics.median(theirs.values()) / statistics.median(ours.values())
        out.append({"threads": t, "other": impl, "ratio": ratio, "interval": ratio_interval(theirs, ours)})
    return out


def report(result: dict[str, Any], smoke: bool) -> list[str]:
    """The service's table and, unless ``smoke``, its verdicts, as lines of text."""
    rows = []
    for c in result["cells"]:
        iv = c["cpu_ms_interval"]
        rows.append([
            LABELS.get(c["impl"], c["impl"]), c["threads"], f"{c['cpu_ms_median']:.1f}",
            f"{iv[0]:.1f}-{iv[1]:.1f}" if iv else "-", f"{c['rps_median']:.1f}", len(c["cpu_ms"]),
        ])
    lines = [format_table(
        ["implementation", "threads", "CPU ms/request", "95% interval", "requests/s", "samples"], rows)]
    if smoke:
        lines.append("smoke run (--quick): too few samples for an interval; no verdicts drawn")
        return lines
    lines.append("tlalloc's kernels against the others (CPU time per request; equal when the "
                 "95% interval of the ratio holds 1):")
    for c in comparisons(result):
        t = c["threads"]
        text = verdict(c["interval"], c["ratio"], "faster than", "slower than", LABELS[c["other"]])
        lines.append(f"  {t} thread{'s' if t > 1 else ''}: tlalloc {text}")
    return lines


def plot_axes(ax_cpu: Any, ax_rps: Any, result: dict[str, Any]) -> None:
    """CPU ms per request and requests per second against threads, medians with
    their 95% intervals as error bars, on two matplotlib axes."""
    for impl in dict.fromkeys(c["impl"] for c in result["cells"]):
        cells = [c for c in result["cells"] if c["impl"] == impl]
        ts = [c["threads"] for c in cells]
        for ax, key in ((ax_cpu, "cpu_ms"), (ax_rps, "rps")):
            med = [c[f"{key}_median"] for c in cells]
            err = [[m - (c[f"{key}_interval"] or (m, m))[0] for m, c in zip(med, cells, strict=True)],
                   [(c[f"{key}_interval"] or (m, m))[1] - m for m, c in zip(med, cells, strict=True)]]
            ax.errorbar(ts, med, yerr=err, marker="o", capsize=4, label=LABELS.get(impl, impl))
    for ax, label in ((ax_cpu, "CPU ms per request"), (ax_rps, "requests per second")):
        ts = sorted({c["threads"] for c in result["cells"]})
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.set_xlabel("threads")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_cpu.legend()


def describe(rows: int, dim: int, batch: int, nodes: int, degree: int) -> str:
    """One line saying what a request does.

    Example:
        >>> describe(200_000, 384, 16, 100_000, 10)[:60]
        'one request = cosine top-10 of 16 queries (384-d) over 200,0'
    """
    return (f"one request = cosine top-{TOP_K} of {batch} queries ({dim}-d) over {rows:,} corpus rows, "
            f"then spreading activation from their best matches over {nodes:,} nodes x {degree} edges "
            f"(top {TOP_K}), then decay of {nodes:,} strengths")

