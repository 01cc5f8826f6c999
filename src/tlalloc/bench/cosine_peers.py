"""Cosine similarity against the vector-search libraries and the memory-bandwidth floor.

Part of ``tlalloc bench kernels``, not of the default ``tlalloc bench``:

- **single query** over a grid of ``d x n`` float32 corpora: tlalloc (scores, and
  top 10) against bare NumPy ``C @ q``, SimSIMD ``cdist(q, C, "cosine")``, NumKong
  (SimSIMD's successor) ``cdist(q, C, "angular", threads=1)`` (with the faster of
  its output types, see :func:`numkong_cdist_output`) and its packed form
  ``angulars_packed(q, dots_pack(C))`` (the corpus packed once, outside the
  timing), faiss ``IndexFlatIP.search`` top 10 on normalised data and usearch's
  exact search top 10;
  with, in the same interleaved rounds, the **read floor**: the faster of two plain
  passes that only read the array (``np.add.reduce`` over the flat array, and the row
  sums ``C @ ones`` through BLAS), so that every method's read rate is printed as a
  fraction of what one core reads from that array;
- **batched queries** (m = 16 and 64, d = 768, n = 100,000): tlalloc's 2-D ``queries``
  where the installed kernel has them (otherwise a loop of m single calls, said so)
  against NumPy ``Q @ C.T`` with candidate norms computed once, SimSIMD ``cdist``,
  NumKong ``cdist`` and packed, and faiss / usearch top 10;
- **half precision**: the same corpus (n = 1,000,000, d = 768) in float16 against
  float32 (and bfloat16 when ``ml_dtypes`` is installed and the kernel takes it),
  with the peers that take each format (NumKong wants the query in the corpus's
  format: its answers are checked against tlalloc's for that rounded query).

Each peer is optional (``pip install 'tlalloc[peers]'``) and reported as skipped when
it is missing. One thread everywhere: BLAS and faiss's OpenMP are limited to one
thread, SimSIMD, NumKong's ``cdist`` and usearch are called with ``threads=1``
(NumKong's packed functions take no thread count: they run on the calling thread,
which the other-threads CPU check below confirms). Every timing is thread CPU
time (``time.thread_time``), best of interleaved rounds (each round runs every method
once, in a rotated order). Ratios are the peer's time over tlalloc's: above 1 means
tlalloc is faster. Before timing, every peer's scores or top 10 are checked against
tlalloc's.

Example:
    $ tlalloc bench kernels --cosine-only              # the default subset
    $ tlalloc bench kernels --cosine-only --full-grid  # d in 128..1536, n in 1e3..1e6
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tlalloc import kernels
from tlalloc._report import format_table
from tlalloc.bench._common import blas_threads

# import name -> the distribution to install
PEERS: dict[str, str] = {
    "simsimd": "simsimd",
    "numkong": "numkong",
    "faiss": "faiss-cpu",
    "usearch": "usearch",
}

# (d, n) cells of the single-query grid.
FULL_GRID = [(d, n) for d in (128, 384, 768, 1536) for n in (1_000, 10_000, 100_000, 1_000_000)]
DEFAULT_GRID = [
    (768, 1_000),
    (768, 10_000),
    (128, 100_000),
    (384, 100_000),
    (768, 100_000),
    (1536, 100_000),
    (768, 1_000_000),
]
QUICK_GRID = [(128, 1_000), (768, 20_000)]

TOP_K = 10


def load_peers() -> dict[str, Any]:
    """Each peer's module, or the sentence saying why it is skipped.

    Example:
        >>> sorted(load_peers()) == sorted(PEERS)
        True
    """
    out: dict[str, Any] = {}
    for name, dist in PEERS.items():
        try:
            out[name] = importlib.import_module("usearch.index" if name == "usearch" else name)
        except ImportError:
            out[name] = f"skipped (not installed: pip install {dist})"
    return out


def peer_versions(peers: dict[str, Any]) -> dict[str, str]:
    """Version of every installed peer (and of ``ml_dtypes``, if installed).

    Example:
        >>> "simsimd" in peer_versions({"simsimd": "skipped (not installed)"})
        False
    """
    out = {}
    for name, mod in peers.items():
        if isinstance(mod, str):
            continue
        version = getattr(mod, "__version__", None)  # usearch keeps it on the package
        if version is None:
            version = getattr(importlib.import_module(name), "__version__", "unknown")
        out[name] = str(version)
    with contextlib.suppress(ImportError):
        out["ml_dtypes"] = importlib.import_module("ml_dtypes").__version__
    return out


@contextlib.contextmanager
def one_thread(peers: dict[str, Any]) -> Iterator[None]:
    """BLAS and faiss's OpenMP limited to one thread inside the block, restored after.

    Example:
        >>> with one_thread({}):
        ...     pass
    """
    faiss = peers.get("faiss")
    before = None
    if faiss is not None and not isinstance(faiss, str):
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
    try:
        with blas_threads(1):
            yield
    finally:
        if before is not None:
            faiss.omp_set_num_threads(before)


def interleaved(
    fns: dict[str, Callable[[], object]], *, rounds: int, min_time: float
) -> dict[str, dict[str, float]]:
    """Seconds per call of each function: thread CPU time and wall time, best of
    ``rounds`` interleaved rounds.

    Each function first runs alone to pick how many calls one round makes (at
    least ``min_time`` CPU seconds; this also warms it up). Then every round runs
    each function once, in an order rotated by one per round, so that no method
    always follows the same one or always meets the same load.

    Example:
        >>> r = interleaved({"a": lambda: sum(range(100))}, rounds=2, min_time=0.001)
        >>> r["a"]["cpu_s"] > 0 and r["a"]["calls"] >= 1
        True
    """
    numbers: dict[str, int] = {}
    for name, fn in fns.items():
        number = 1
        while True:
            c0 = time.thread_time()
            for _ in range(number):
                fn()
            dt = time.thread_time() - c0
            if dt >= min_time or number >= 1 << 20:
                break
            number *= 2 if dt <= 0 else max(2, min(10, int(min_time / dt) + 1))
        numbers[name] = number
    names = list(fns)
    cpu = {k: float("inf") for k in names}
    wall = {k: float("inf") for k in names}
    own = dict.fromkeys(names, 0.0)
    other = dict.fromkeys(names, 0.0)
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            fn, number = fns[name], numbers[name]
            o0 = other_threads_cpu()
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(number):
                fn()
            c1, w1 = time.thread_time(), time.perf_counter()
            other[name] += other_threads_cpu() - o0
            own[name] += c1 - c0
            cpu[name] = min(cpu[name], (c1 - c0) / number)
            wall[name] = min(wall[name], (w1 - w0) / number)
    # CPU time that other threads of the process used while a method ran, as a
    # fraction of the calling thread's: a method that hands work to other threads
    # would look faster than it is in thread CPU time, and the report says so.
    return {
        k: {
            "cpu_s": cpu[k],
            "wall_s": wall[k],
            "calls": numbers[k],
            "other_threads_share": other[k] / own[k] if own[k] > 0 else 0.0,
            "other_threads_s": other[k],
        }
        for k in names
    }


def other_threads_cpu() -> float:
    """CPU seconds used so far by every thread of this process except the calling
    one (Linux, in clock ticks of 10 ms; 0 elsewhere). Threads that have exited
    are no longer listed: this sees thread pools (BLAS, OpenMP), not a thread
    started and joined within one call.

    Example:
        >>> other_threads_cpu() >= 0
        True
    """
    me = threading.get_native_id()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    ticks = 0
    for tid in tids:
        if tid == str(me):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def off_thread(r: dict[str, Any], share: float = 0.2, least_s: float = 0.05) -> list[str]:
    """Methods during which other threads of the process used more than ``share``
    of the calling thread's CPU time (and at least ``least_s``): their thread
    CPU times undercount.

    Example:
        >>> t = {"cpu_s": 1.0, "other_threads_share": 0.9, "other_threads_s": 2.0}
        >>> off_thread({"single": [{"times": {"x": t}}], "batched": []})
        ['x']
    """
    cells = r["single"] + r["batched"] + [r.get("half", {})]
    return sorted(
        {
            name
            for cell in cells
            for name, t in cell.get("times", {}).items()
            if t.get("other_threads_share", 0) > share and t.get("other_threads_s", 0) >= least_s
        }
    )


def llc_bytes() -> int:
    """Size of the last-level cache this CPU reports (32 MiB if it says nothing).

    Example:
        >>> llc_bytes() > 0
        True
    """
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    with contextlib.suppress(OSError):
        for entry in os.listdir(base):
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(base, entry, "size"), encoding="ascii") as fh:
                    text = fh.read().strip()
                mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
                best = max(best, int(text.rstrip("KMG")) * mult)
    return best or 32 << 20


def mem_available() -> int | None:
    """Bytes the kernel says can be allocated now without swapping (None if unknown).

    Example:
        >>> m = mem_available()
        >>> m is None or m > 0
        True
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


_corpus_cache: dict[tuple[int, int], np.ndarray] = {}


def corpus(n: int, d: int, seed: int = 0) -> np.ndarray:
    """A float32 ``(n, d)`` corpus of random unit rows (one cached at a time).

    Unit rows let faiss's inner product be the cosine; the other methods compute
    the norms anyway, and their cost does not depend on the values.

    Example:
        >>> c = corpus(3, 4)
        >>> c.shape, c.dtype.name, bool(np.allclose(np.linalg.norm(c, axis=1), 1))
        ((3, 4), 'float32', True)
    """
    key = (n, d)
    if key not in _corpus_cache:
        _corpus_cache.clear()  # frees the last one before making the next
        rng = np.random.default_rng(seed + 1000 * d + n)
        c = rng.standard_normal((n, d), dtype=np.float32)
        for i in range(0, n, 1 << 16):  # in blocks: the norm's temporary stays small
            blk = c[i : i + (1 << 16)]
            blk /= np.linalg.norm(blk, axis=1, keepdims=True)
        _corpus_cache[key] = c
    return _corpus_cache[key]


def kernel_refusal(call: Callable[[], object]) -> str | None:
    """None if the installed kernel accepts ``call``'s form, else why not.

    Lets one benchmark run before and after a kernel learns a new form (2-D
    queries, float16, ``candidate_norms=``).

    Example:
        >>> kernel_refusal(lambda: kernels.cosine_similarity(np.ones(2), np.eye(2)))
        >>> print(kernel_refusal(lambda: kernels.cosine_similarity(np.ones(2), np.eye(2), no_such=1)))
        not supported by this build: ...unexpected keyword argument 'no_such'
    """
    try:
        call()
    except (TypeError, ValueError) as exc:
        return f"not supported by this build: {exc}"
    return None


def _normalised(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, np.float32)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    return np.ascontiguousarray(q / n, dtype=np.float32)


def reference_cosine(q: np.ndarray, c: np.ndarray, block: int = 1 << 15) -> np.ndarray:
    """Cosine of ``q`` with every row of ``c``, in float64, a block of rows at a time
    (the float64 copy of a whole 1,000,000 x 768 corpus would be 6 GB).

    Example:
        >>> c = np.array([[2.0, 0.0], [1.0, 1.0]])
        >>> reference_cosine(np.array([1.0, 0.0]), c, block=1).round(4).tolist()
        [1.0, 0.7071]
    """
    q64 = np.asarray(q, np.float64)
    out = np.empty(c.shape[0], np.float64)
    for i in range(0, c.shape[0], block):
        blk = np.asarray(c[i : i + block], np.float64)
        out[i : i + block] = (blk @ q64) / (np.linalg.norm(blk, axis=1) * np.linalg.norm(q64))
    return out


def _top_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best scores of each row, best first."""
    s = np.atleast_2d(np.asarray(scores, np.float64))
    k = min(k, s.shape[1])
    return -np.sort(-s, axis=1)[:, :k]


def _check(label: str, got: np.ndarray, want: np.ndarray, tol: float, problems: list[str]) -> None:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        problems.append(f"{label}: shape {got.shape}, tlalloc's {want.shape}")
        return
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not diff <= tol:
        problems.append(f"{label}: differs from tlalloc by up to {diff:.2g} (tolerance {tol:g})")


def _peer_calls(
    peers: dict[str, Any], q: np.ndarray, c: np.ndarray, index: Any, chosen: dict[str, str]
) -> tuple[dict[str, Callable[[], object]], dict[str, Callable[[], np.ndarray]]]:
    """Timed calls of the peers on ``q`` (1-D or 2-D) against ``c``, and for each a
    function giving its similarities (full rows, or the best TOP_K) to check."""
    calls: dict[str, Callable[[], object]] = {}
    sims: dict[str, Callable[[], np.ndarray]] = {}
    q2 = np.atleast_2d(q)
    simsimd = peers.get("simsimd")
    if not isinstance(simsimd, (str, type(None))):
        calls["simsimd"] = lambda: simsimd.cdist(q2, c, "cosine")
        sims["simsimd"] = lambda: 1 - np.asarray(simsimd.cdist(q2, c, "cosine"))
    numkong = peers.get("numkong")
    if not isinstance(numkong, (str, type(None))):
        nk_calls, nk_sims = numkong_calls(numkong, q2, c, chosen=chosen)
        calls.update(nk_calls)
        sims.update(nk_sims)
    if index is not None:
        qn = _normalised(q2)
        calls["faiss_top10"] = lambda: index.search(qn, TOP_K)
        sims["faiss_top10"] = lambda: index.search(qn, TOP_K)[0]
    usearch = peers.get("usearch")
    if not isinstance(usearch, (str, type(None))):
        cos = usearch.MetricKind.Cos
        uq = q if q.ndim == 1 else q2

        def us() -> Any:
            return usearch.search(c, uq, TOP_K, cos, exact=True, threads=1)

        def us_sims() -> np.ndarray:
            return 1 - np.atleast_2d(np.asarray(us().distances, np.float64))

        calls["usearch_top10"] = us
        sims["usearch_top10"] = us_sims
    return calls, sims


# NumKong's cdist output types tried: float32, and its default (float64).
NUMKONG_OUTPUTS = ("f32", None)


def numkong_cdist_output(numkong: Any, q2: np.ndarray, c: np.ndarray, rows: int = 8192) -> str | None:
    """The ``out_dtype`` of the faster NumKong ``cdist`` for these inputs: float32
    (``"f32"``) or its default float64 (``None``), by thread CPU time on the first
    ``rows`` rows (best of 3).

    Which is faster depends on the input format, and by more than 10x: NumKong
    7.8.6 on a Zen 4 core, 1 query against 100,000 x 768, takes 12.5 ms with
    float32 output and 169 ms with float64 for a float32 corpus, but 6.3 ms with
    float64 and 143 ms with float32 for a float16 corpus (bfloat16: 7.6 and
    85 ms). Picking per format compares with NumKong at its best.

    Example (a stand-in whose float64 output is the slow one):
        >>> import types
        >>> def cdist(q, c, metric, *, threads, out_dtype=None):
        ...     return 1 - (q @ c.T if out_dtype else np.stack([q @ c.T] * 200)[0])
        >>> numkong_cdist_output(types.SimpleNamespace(cdist=cdist), corpus(500, 64)[:1], corpus(500, 64))
        'f32'
    """
    sample = c[:rows]
    best: tuple[float, str | None] = (float("inf"), None)
    for out_dtype in NUMKONG_OUTPUTS:
        kw = {} if out_dtype is None else {"out_dtype": out_dtype}
        for _ in range(3):
            t0 = time.thread_time()
            numkong.cdist(q2, sample, "angular", threads=1, **kw)
            best = min(best, (time.thread_time() - t0, out_dtype), key=lambda b: b[0])
    return best[1]


def numkong_calls(
    numkong: Any,
    q2: np.ndarray,
    c: np.ndarray,
    suffix: str = "",
    chosen: dict[str, str] | None = None,
    *,
    packed: bool = True,
) -> tuple[dict[str, Callable[[], object]], dict[str, Callable[[], np.ndarray]]]:
    """NumKong's two forms for the 2-D queries ``q2`` against ``c`` (same dtype):
    ``cdist(q2, c, "angular", threads=1)`` (with the faster output type, see
    :func:`numkong_cdist_output`; recorded in ``chosen`` when given) and
    ``angulars_packed(q2, dots_pack(c))``, the corpus packed once, here, outside
    the timing, as for a fixed corpus (the packed functions take no thread count:
    they run on the calling thread; ``packed=False`` leaves this form out). Both
    give the angular distance, 1 - cosine; the similarities are ``1 - distance``.

    Example (with a stand-in for the module, which takes the same calls):
        >>> import types
        >>> nk = types.SimpleNamespace(
        ...     dots_pack=lambda c: c,
        ...     cdist=lambda q, c, metric, threads, out_dtype=None: 1 - q @ c.T,
        ...     angulars_packed=lambda q, packed: 1 - q @ packed.T,
        ... )
        >>> c = corpus(50, 8)
        >>> chosen = {}
        >>> calls, sims = numkong_calls(nk, c[:2], c, "_f32", chosen)
        >>> sorted(calls), sims["numkong_f32_packed"]().shape, list(chosen)
        (['numkong_f32', 'numkong_f32_packed'], (2, 50), ['numkong_f32'])
    """
    out_dtype = numkong_cdist_output(numkong, q2, c)
    kw = {} if out_dtype is None else {"out_dtype": out_dtype}
    if chosen is not None:
        chosen[f"numkong{suffix}"] = out_dtype or "default (float64)"
    calls: dict[str, Callable[[], object]] = {
        f"numkong{suffix}": lambda: numkong.cdist(q2, c, "angular", threads=1, **kw),
    }
    if packed:
        matrix = numkong.dots_pack(c)
        calls[f"numkong{suffix}_packed"] = lambda: numkong.angulars_packed(q2, matrix)
    sims: dict[str, Callable[[], np.ndarray]] = {
        name: (lambda fn=fn: 1 - np.asarray(fn(), np.float64)) for name, fn in calls.items()
    }
    return calls, sims


def _faiss_index(peers: dict[str, Any], c: np.ndarray) -> Any:
    faiss = peers.get("faiss")
    if faiss is None or isinstance(faiss, str):
        return None
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)  # a copy inside faiss, made outside the timing
    return index


def _tol(d: int) -> float:
    return 1e-4 + 1e-6 * d


def single_cell(d: int, n: int, peers: dict[str, Any], *, rounds: int, min_time: float) -> dict[str, Any]:
    """One ``d x n`` cell of the single-query grid: every method's seconds per call,
    the read floor, and the peers' agreement with tlalloc.

    Example:
        >>> r = single_cell(16, 100, {}, rounds=1, min_time=0.001)
        >>> sorted(r["times"])[:3], r["agree"]
        (['floor_rowsum', 'floor_sum', 'matvec'], True)
    """
    c = corpus(n, d)
    q = np.random.default_rng(d + n).standard_normal(d, dtype=np.float32)
    flat = c.reshape(-1)
    ones = np.ones(d, np.float32)
    scores = np.empty(n, np.float32)
    mv = np.empty(n, np.float32)
    index = _faiss_index(peers, c)
    fns: dict[str, Callable[[], object]] = {
        "floor_sum": lambda: np.add.reduce(flat),
        "floor_rowsum": lambda: np.matmul(c, ones, out=mv),
        "tlalloc": lambda: kernels.cosine_similarity(q, c, out=scores),
        "tlalloc_top10": lambda: kernels.cosine_similarity(q, c, top_k=TOP_K),
        "matvec": lambda: np.matmul(c, q, out=mv),
    }
    chosen: dict[str, str] = {}
    calls, sims = _peer_calls(peers, q, c, index, chosen)
    fns.update(calls)
    problems: list[str] = []
    want = kernels.cosine_similarity(q, c)
    want_top = _top_scores(want, TOP_K)
    for name, fn in sims.items():
        _check(name, fn(), want_top if name.endswith("top10") else want[None], _tol(d), problems)
    times = interleaved(fns, rounds=rounds, min_time=min_time)
    del index
    return {
        "d": d,
        "n": n,
        "bytes": int(c.nbytes),
        "from_dram": bool(c.nbytes > llc_bytes()),
        "times": times,
        "numkong_out_dtype": chosen,
        "agree": not problems,
        "problems": problems,
    }


def batched_cell(
    m: int, d: int, n: int, peers: dict[str, Any], *, rounds: int, min_time: float
) -> dict[str, Any]:
    """``m`` queries at once against a ``d x n`` corpus.

    Example:
        >>> r = batched_cell(2, 8, 50, {}, rounds=1, min_time=0.001)
        >>> "numpy_gemm" in r["times"] and "tlalloc_loop" in r["times"]
        True
    """
    c = corpus(n, d)
    qs = np.random.default_rng(m + d + n).standard_normal((m, d), dtype=np.float32)
    cn = np.linalg.norm(c, axis=1)  # computed once, as a user with a fixed corpus would
    gemm = np.empty((m, n), np.float32)
    loop_out = np.empty((m, n), np.float32)

    def numpy_gemm() -> np.ndarray:
        np.matmul(qs, c.T, out=gemm)
        np.divide(gemm, np.linalg.norm(qs, axis=1)[:, None], out=gemm)
        np.divide(gemm, cn, out=gemm)
        return gemm

    def loop() -> None:
        for i in range(m):
            kernels.cosine_similarity(qs[i], c, out=loop_out[i])

    def loop_top() -> None:
        for i in range(m):
            kernels.cosine_similarity(qs[i], c, top_k=TOP_K)

    fns: dict[str, Callable[[], object]] = {
        "tlalloc_loop": loop,
        "tlalloc_loop_top10": loop_top,
        "numpy_gemm": numpy_gemm,
    }
    tiny_q, tiny_c = np.ones((2, 3), np.float32), np.eye(3, dtype=np.float32)
    refusal = kernel_refusal(lambda: _expect_2d(kernels.cosine_similarity(tiny_q, tiny_c), (2, 3)))
    out = np.empty((m, n), np.float32)
    if refusal is None:
        fns["tlalloc"] = lambda: kernels.cosine_similarity(qs, c, out=out)
        fns["tlalloc_top10"] = lambda: kernels.cosine_similarity(qs, c, top_k=TOP_K)
        norms_refusal = kernel_refusal(
            lambda: kernels.cosine_similarity(tiny_q, tiny_c, candidate_norms=np.ones(3, np.float32))  # type: ignore[call-arg]
        )
        if norms_refusal is None:
            fns["tlalloc_norms"] = lambda: kernels.cosine_similarity(  # type: ignore[call-arg]
                qs, c, out=out, candidate_norms=cn
            )
    index = _faiss_index(peers, c)
    chosen: dict[str, str] = {}
    calls, sims = _peer_calls(peers, qs, c, index, chosen)
    fns.update(calls)
    problems: list[str] = []
    want = np.stack([kernels.cosine_similarity(qs[i], c) for i in range(m)])
    want_top = _top_scores(want, TOP_K)
    if refusal is None:
        _check("tlalloc 2-D queries", kernels.cosine_similarity(qs, c), want, 1e-5, problems)
    _check("numpy_gemm", numpy_gemm(), want, _tol(d), problems)
    for name, fn in sims.items():
        _check(name, fn(), want_top if name.endswith("top10") else want, _tol(d), problems)
    times = interleaved(fns, rounds=rounds, min_time=min_time)
    del index
    return {
        "m": m,
        "d": d,
        "n": n,
        "batched": refusal or "supported",
        "times": times,
        "numkong_out_dtype": chosen,
        "agree": not problems,
        "problems": problems,
    }


def _expect_2d(result: Any, shape: tuple[int, int]) -> None:
    if getattr(result, "shape", None) != shape:
        raise ValueError(f"2-D queries gave shape {getattr(result, 'shape', None)}, not {shape}")


INCACHE_ROWS = 300  # 300 x 768 float32: 900 KiB, in L2


def _row_norms(c: np.ndarray) -> np.ndarray:
    """float32 norms of the stored values of each row, a block of rows at a time.

    Example:
        >>> _row_norms(np.array([[3, 4], [0, 0]], np.float16)).tolist()
        [5.0, 0.0]
    """
    out = np.empty(len(c), np.float32)
    for i in range(0, len(c), 65536):
        b = np.asarray(c[i : i + 65536], np.float64)
        out[i : i + len(b)] = np.sqrt(np.einsum("ij,ij->i", b, b))
    return out


def half_cell(n: int, d: int, peers: dict[str, Any], *, rounds: int, min_time: float) -> dict[str, Any]:
    """The same corpus in float32, float16 (and bfloat16 with ``ml_dtypes``): the
    kernel and the peers that take the format, with the read floor of each copy.

    Example:
        >>> r = half_cell(100, 16, {}, rounds=1, min_time=0.001)
        >>> "tlalloc_f32" in r["times"], r["float16"]
        (True, 'supported')
    """
    c32 = corpus(n, d)
    c16 = c32.astype(np.float16)
    q = np.random.default_rng(7 + d).standard_normal(d, dtype=np.float32)
    q16 = q.astype(np.float16)
    ones32 = np.ones(d, np.float32)
    s32, s16 = np.empty(n, np.float32), np.empty(n, np.float32)
    fns: dict[str, Callable[[], object]] = {
        "floor_sum_f32": lambda: np.add.reduce(c32.reshape(-1)),
        "floor_rowsum_f32": lambda: np.matmul(c32, ones32),
        "tlalloc_f32": lambda: kernels.cosine_similarity(q, c32, out=s32),
    }
    # No float16 floor: NumPy sums float16 through scalar conversions (under 1 GB/s);
    # the float32 floor, in bytes per second, is the bound for both copies.
    tiny = np.eye(3, dtype=np.float16)
    refusal16 = kernel_refusal(lambda: kernels.cosine_similarity(np.ones(3, np.float32), tiny))
    problems: list[str] = []
    chosen: dict[str, str] = {}
    ref = reference_cosine(q, c16)
    if refusal16 is None:
        fns["tlalloc_f16"] = lambda: kernels.cosine_similarity(q, c16, out=s16)
        _check("tlalloc float16", kernels.cosine_similarity(q, c16), ref, 1e-5, problems)
    simsimd = peers.get("simsimd")
    if not isinstance(simsimd, (str, type(None))):
        q2, q16_2 = q[None], q16[None]
        fns["simsimd_f32"] = lambda: simsimd.cdist(q2, c32, "cosine")
        fns["simsimd_f16"] = lambda: simsimd.cdist(q16_2, c16, "cosine")
        _check("simsimd float16", 1 - np.asarray(simsimd.cdist(q16_2, c16, "cosine"))[0], ref, 2e-3, problems)
    numkong = peers.get("numkong")
    has_numkong = not isinstance(numkong, (str, type(None)))
    if has_numkong:
        # NumKong takes the query in the corpus's format: checked against tlalloc
        # given the same rounded query (exact in float32), so the check is as tight
        # as the float32 one.
        # packed float32 is in the single-query grid: not packed again here
        nk_calls, nk_sims = numkong_calls(numkong, q[None], c32, "_f32", chosen, packed=False)
        fns.update(nk_calls)
        _check(
            "numkong_f32", nk_sims["numkong_f32"]()[0], kernels.cosine_similarity(q, c32), _tol(d), problems
        )
        if refusal16 is None:
            want16 = kernels.cosine_similarity(q16.astype(np.float32), c16)
        else:
            want16 = reference_cosine(q16, c16)
        nk_calls, nk_sims = numkong_calls(numkong, q16[None], c16, "_f16", chosen)
        fns.update(nk_calls)
        for name, sim in nk_sims.items():
            _check(name, sim()[0], want16, _tol(d), problems)
    usearch = peers.get("usearch")
    if not isinstance(usearch, (str, type(None))):
        cos = usearch.MetricKind.Cos
        fns["usearch_f16_top10"] = lambda: usearch.search(c16, q16, TOP_K, cos, exact=True, threads=1)
    bf16_status = "skipped (ml_dtypes not installed)"
    try:
        ml_dtypes = importlib.import_module("ml_dtypes")
    except ImportError:
        pass
    else:
        cb = c32.astype(ml_dtypes.bfloat16)
        refusal_b = kernel_refusal(lambda: kernels.cosine_similarity(q, cb[:3]))
        bf16_status = refusal_b or "supported"
        if refusal_b is None:
            sb = np.empty(n, np.float32)
            fns["tlalloc_bf16"] = lambda: kernels.cosine_similarity(q, cb, out=sb)
        if has_numkong:
            qb = q.astype(ml_dtypes.bfloat16)
            if refusal_b is None:
                want_b = kernels.cosine_similarity(qb.astype(np.float32), cb)
            else:
                want_b = reference_cosine(qb.astype(np.float32), cb)
            nk_calls, nk_sims = numkong_calls(numkong, qb[None], cb, "_bf16", chosen)
            fns.update(nk_calls)
            for name, sim in nk_sims.items():
                _check(name, sim()[0], want_b, _tol(d), problems)
    # The same passes with the norms given (a fixed corpus): dots only, one FMA
    # per element instead of two; and the rate in cache (INCACHE_ROWS rows, so
    # no DRAM), the bound a 16-bit pass from DRAM cannot beat.
    copies = {"f32": c32, "f16": c16} if "tlalloc_f16" in fns else {"f32": c32}
    if "tlalloc_bf16" in fns:
        copies["bf16"] = cb
    for name, c in copies.items():
        cn = _row_norms(c)
        small = np.ascontiguousarray(c[:INCACHE_ROWS])
        o = np.empty(n, np.float32)
        fns[f"tlalloc_{name}_norms"] = lambda c=c, cn=cn, o=o: kernels.cosine_similarity(
            q, c, out=o, candidate_norms=cn
        )
        fns[f"incache_{name}"] = lambda c=small: kernels.cosine_similarity(q, c)
        fns[f"incache_{name}_norms"] = lambda c=small, cn=cn[:INCACHE_ROWS]: kernels.cosine_similarity(
            q, c, candidate_norms=cn
        )
    times = interleaved(fns, rounds=rounds, min_time=min_time)
    return {
        "n": n,
        "d": d,
        "incache_rows": min(n, INCACHE_ROWS),
        "bytes_f32": int(c32.nbytes),
        "bytes_f16": int(c16.nbytes),
        "float16": refusal16 or "supported",
        "bfloat16": bf16_status,
        "times": times,
        "numkong_out_dtype": chosen,
        "agree": not problems,
        "problems": problems,
    }


def _fits(nbytes: int, copies: float) -> str | None:
    avail = mem_available()
    need = int(nbytes * copies)
    if avail is not None and need > 0.8 * avail:
        return f"skipped (needs {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available)"
    return None


def compare(mode: str = "default", peers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the cosine section: ``mode`` is ``"quick"``, ``"default"`` or ``"full"``.

    Example:
        >>> compare("fast")
        Traceback (most recent call last):
        ...
        ValueError: mode must be 'quick', 'default' or 'full', got 'fast'
    """
    if mode not in ("quick", "default", "full"):
        raise ValueError(f"mode must be 'quick', 'default' or 'full', got {mode!r}")
    peers = load_peers() if peers is None else peers
    quick = mode == "quick"
    grid = {"quick": QUICK_GRID, "default": DEFAULT_GRID, "full": FULL_GRID}[mode]
    rounds, min_time = {"quick": (2, 0.002), "default": (3, 0.05), "full": (5, 0.05)}[mode]
    batch_n, half_n = (2_000, 20_000) if quick else (100_000, 1_000_000)
    has_faiss = not isinstance(peers.get("faiss", "absent"), str)
    has_numkong = not isinstance(peers.get("numkong", "absent"), str)
    copies = 1.2 + has_faiss + has_numkong  # the corpus, faiss's copy, NumKong's packed copy
    out: dict[str, Any] = {
        "mode": mode,
        "rounds": rounds,
        "isa": kernels.isa(),
        "llc_bytes": llc_bytes(),
        "peers": {k: (v if isinstance(v, str) else "installed") for k, v in peers.items()},
        "versions": {"numpy": np.__version__, **peer_versions(peers)},
        "single": [],
        "batched": [],
    }
    with one_thread(peers):
        for d, n in grid:
            skip = _fits(n * d * 4, copies)
            if skip:
                out["single"].append({"d": d, "n": n, "skipped": skip})
                continue
            out["single"].append(single_cell(d, n, peers, rounds=rounds, min_time=min_time))
        # the half-precision corpus is the grid's last one (cached) in the default mode
        # float32, float16 and bfloat16 copies, and NumKong's packed float16 and bfloat16
        skip = _fits(half_n * 768 * 4, 2.1 + has_numkong)
        if skip:
            out["half"] = {"n": half_n, "d": 768, "skipped": skip}
        else:
            out["half"] = half_cell(half_n, 768, peers, rounds=rounds, min_time=min_time)
        for m in (16, 64):
            out["batched"].append(batched_cell(m, 768, batch_n, peers, rounds=rounds, min_time=min_time))
    _corpus_cache.clear()
    return out


# --------------------------------------------------------------------------- report

_SINGLE_PEERS = [
    ("matvec", "tlalloc", "C @ q"),
    ("simsimd", "tlalloc", "SimSIMD"),
    ("numkong", "tlalloc", "NumKong cdist"),
    ("numkong_packed", "tlalloc", "NumKong packed"),
    ("faiss_top10", "tlalloc_top10", "faiss top10"),
    ("usearch_top10", "tlalloc_top10", "usearch top10"),
]


# The peers that give every score (no top-k), against tlalloc's scores.
_SCORE_PEERS = [("simsimd", "SimSIMD"), ("numkong", "NumKong cdist"), ("numkong_packed", "NumKong packed")]


def _t(cell: dict[str, Any], name: str) -> float | None:
    t = cell.get("times", {}).get(name)
    return None if t is None else float(t["cpu_s"])


def floor_s(cell: dict[str, Any], suffix: str = "") -> float:
    """The read floor of a cell: the faster of its two plain read passes.

    Example:
        >>> floor_s({"times": {"floor_sum": {"cpu_s": 2.0}, "floor_rowsum": {"cpu_s": 1.0}}})
        1.0
    """
    ts = [_t(cell, f"floor_sum{suffix}"), _t(cell, f"floor_rowsum{suffix}")]
    return min(t for t in ts if t is not None)


def _ratio(cell: dict[str, Any], peer: str, ref: str) -> str:
    a, b = _t(cell, peer), _t(cell, ref)
    return "-" if a is None or b is None else f"{a / b:.2f}"


def _skipped_names(r: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in r["peers"].items() if v != "installed"}


def ratios(r: dict[str, Any], peer: str) -> list[float]:
    """Peer time / tlalloc time in every measured single-query cell.

    Example:
        >>> ratios({"single": [{"times": {"tlalloc": {"cpu_s": 1.0}, "simsimd": {"cpu_s": 2.0}}}]}, "simsimd")
        [2.0]
    """
    ref = dict((p, rf) for p, rf, _ in _SINGLE_PEERS)[peer]
    out = []
    for cell in r["single"]:
        a, b = _t(cell, peer), _t(cell, ref)
        if a is not None and b is not None:
            out.append(a / b)
    return out


def findings(r: dict[str, Any]) -> list[str]:
    """What the cosine section says, in sentences.

    Example:
        >>> findings({"single": [], "batched": [], "peers": {}})
        ['verified: every peer agrees with tlalloc']
    """
    out: list[str] = []
    dram = [c for c in r["single"] if c.get("from_dram") and "times" in c]
    if dram:
        frac = [floor_s(c) / _t(c, "tlalloc") for c in dram]  # type: ignore[operator]
        gbs = [c["bytes"] / floor_s(c) / 1e9 for c in dram]
        out.append(
            f"single query from DRAM ({len(dram)} cells): tlalloc reads at {min(frac):.0%}-{max(frac):.0%} "
            f"of the read floor ({min(gbs):.1f}-{max(gbs):.1f} GB/s on one core)"
        )
        for peer, label in _SCORE_PEERS:
            if all(_t(c, peer) is not None for c in dram):
                fs = [floor_s(c) / _t(c, peer) for c in dram]  # type: ignore[operator]
                out.append(f"  {label} reaches {min(fs):.0%}-{max(fs):.0%} of the same floor")
    for peer, _, label in _SINGLE_PEERS:
        rs = ratios(r, peer)
        if rs:
            out.append(
                f"single query: {label} takes {min(rs):.2f}x-{max(rs):.2f}x tlalloc's time "
                f"over {len(rs)} cells (>1: tlalloc faster)"
            )
    for cell in r["batched"]:
        ref = "tlalloc" if "tlalloc" in cell["times"] else "tlalloc_loop"
        how = "2-D queries" if ref == "tlalloc" else "a loop of m single calls: this build has no 2-D queries"
        g = _t(cell, "numpy_gemm") / _t(cell, ref)  # type: ignore[operator]
        text = f"batched m={cell['m']}: tlalloc ({how}) vs NumPy Q @ C.T: {g:.2f}x"
        if _t(cell, "numkong_packed") is not None:
            text += f"; vs NumKong packed: {_t(cell, 'numkong_packed') / _t(cell, ref):.2f}x"  # type: ignore[operator]
        if _t(cell, "faiss_top10") is not None:
            ref_top = "tlalloc_top10" if ref == "tlalloc" else "tlalloc_loop_top10"
            text += f"; vs faiss top 10: {_t(cell, 'faiss_top10') / _t(cell, ref_top):.2f}x"  # type: ignore[operator]
        out.append(text)
    h = r.get("half", {})
    if "times" in h and "tlalloc_f16" in h["times"]:
        x = _t(h, "tlalloc_f32") / _t(h, "tlalloc_f16")  # type: ignore[operator]
        text = f"float16 corpus ({h['n']:,} x {h['d']}): {x:.2f}x the speed of the same corpus in float32"
        if _t(h, "tlalloc_f16_norms") is not None:
            y = _t(h, "tlalloc_f32_norms") / _t(h, "tlalloc_f16_norms")  # type: ignore[operator]
            text += f", {y:.2f}x with candidate_norms (dots only)"
        out.append(text)
        for fmt, label in (("f16", "float16"), ("bf16", "bfloat16")):
            mine = _t(h, f"tlalloc_{fmt}")
            theirs = [
                (_t(h, f"numkong_{fmt}{form}"), name) for form, name in (("", "cdist"), ("_packed", "packed"))
            ]
            theirs = [(t, name) for t, name in theirs if t is not None]
            if mine is not None and theirs:
                out.append(
                    f"  {label} corpus: NumKong takes "
                    + ", ".join(f"{t / mine:.2f}x ({name})" for t, name in theirs)
                    + " tlalloc's time"
                )
        rate = half_rates(h)
        if "f16_norms" in rate and "tlalloc_f32_norms" in h["times"]:
            f32 = min(_t(h, "tlalloc_f32"), _t(h, "tlalloc_f32_norms"))  # type: ignore[type-var]
            need = 1.8 * h["n"] * h["d"] / f32 / 1e9  # type: ignore[operator]
            out.append(
                f"  1.8x needs {need:.1f} G float16 elements/s from DRAM; this core converts and "
                f"multiplies {rate['f16_norms']:.1f} G/s with the rows in cache "
                f"(dots only; {rate['f16']:.1f} G/s computing the norms too; float32 {rate['f32']:.1f} G/s)"
            )
    bad = [p for c in r["single"] + r["batched"] + [h] for p in c.get("problems", [])]
    out.append("verified: every peer agrees with tlalloc" if not bad else "DISAGREE: " + "; ".join(bad))
    return out


def half_rates(h: dict[str, Any]) -> dict[str, float]:
    """G elements per CPU second of the in-cache passes of a half-precision cell.

    Example:
        >>> half_rates({"d": 10, "incache_rows": 100, "times": {"incache_f16": {"cpu_s": 1e-6}}})
        {'f16': 1.0}
    """
    out = {}
    for key, t in h.get("times", {}).items():
        if key.startswith("incache_"):
            out[key[len("incache_") :]] = h["incache_rows"] * h["d"] / float(t["cpu_s"]) / 1e9
    return out


def goals(r: dict[str, Any]) -> list[tuple[str, bool]]:
    """The cosine kernel's goals with what was measured (for the JSON report).

    Example:
        >>> goals({"single": [], "batched": [], "peers": {}})
        []
    """
    g: list[tuple[str, bool]] = []
    for peer, label in _SCORE_PEERS:
        rs = ratios(r, peer)
        if rs:
            g.append((f"single query no slower than {label} (worst {min(rs):.2f}x)", min(rs) >= 1))
    dram = [c for c in r["single"] if c.get("from_dram") and "times" in c]
    if dram:
        worst = min(floor_s(c) / _t(c, "tlalloc") for c in dram)  # type: ignore[operator]
        g.append((f"from DRAM >= 80% of the read floor (worst {worst:.0%})", worst >= 0.8))
    for cell in r["batched"]:
        if "tlalloc" in cell["times"]:
            x = _t(cell, "numpy_gemm") / _t(cell, "tlalloc")  # type: ignore[operator]
            g.append((f"batched m={cell['m']} no slower than NumPy GEMM ({x:.2f}x)", x >= 1))
            if "numkong_packed" in cell["times"]:
                z = _t(cell, "numkong_packed") / _t(cell, "tlalloc")  # type: ignore[operator]
                g.append((f"batched m={cell['m']} no slower than NumKong packed ({z:.2f}x)", z >= 1))
            if "faiss_top10" in cell["times"]:
                y = _t(cell, "faiss_top10") / _t(cell, "tlalloc_top10")  # type: ignore[operator]
                g.append((f"batched m={cell['m']} faster than faiss ({y:.2f}x)", y > 1))
    h = r.get("half", {})
    if "times" in h and "tlalloc_f16" in h["times"]:
        x = _t(h, "tlalloc_f32") / _t(h, "tlalloc_f16")  # type: ignore[operator]
        g.append((f"float16 >= 1.8x faster than float32 ({x:.2f}x)", x >= 1.8))
        if _t(h, "tlalloc_f16_norms") is not None:
            y = _t(h, "tlalloc_f32_norms") / _t(h, "tlalloc_f16_norms")  # type: ignore[operator]
            g.append((f"float16 >= 1.8x faster than float32, norms given ({y:.2f}x)", y >= 1.8))
    return g


def report(r: dict[str, Any]) -> str:
    """The cosine section as tables plus findings.

    Example:
        >>> cell = single_cell(16, 100, {}, rounds=1, min_time=0.001)
        >>> r = {"isa": "avx2", "llc_bytes": 2**25, "versions": {}, "single": [cell], "batched": [],
        ...      "peers": {"faiss": "skipped (not installed)"}}
        >>> "faiss: skipped (not installed)" in report(r)
        True
    """
    us = 1e6
    lines = [
        "Cosine similarity against vector-search libraries, one thread, thread CPU time, best of "
        f"{r.get('rounds', '')} interleaved rounds (vectorised path: {r['isa']}; "
        f"last-level cache {r['llc_bytes'] / 2**20:.0f} MiB)",
        "  versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
    ]
    for name, why in _skipped_names(r).items():
        lines.append(f"  {name}: {why}")
    picks: dict[str, set[str]] = {}
    for cell in r["single"] + r["batched"] + [r.get("half", {})]:
        for k, v in cell.get("numkong_out_dtype", {}).items():
            picks.setdefault(k, set()).add(v)
    if picks:
        lines.append(
            '  NumKong cdist(..., "angular", threads=1) with the faster output type, tried per cell: '
            + ", ".join(f"{k}: {' or '.join(sorted(v))}" for k, v in sorted(picks.items()))
        )
    rows = []
    frows = []
    for cell in r["single"]:
        d, n = cell["d"], cell["n"]
        if "skipped" in cell:
            rows.append([d, f"{n:,}", "", cell["skipped"]] + [""] * (2 + len(_SINGLE_PEERS)))
            continue
        t_k, t_top = _t(cell, "tlalloc"), _t(cell, "tlalloc_top10")
        where = "DRAM" if cell["from_dram"] else "cache"
        rows.append(
            [d, f"{n:,}", f"{cell['bytes'] / 2**20:.1f}", where, f"{t_k * us:.1f}", f"{t_top * us:.1f}"]  # type: ignore[operator]
            + [_ratio(cell, p, ref) for p, ref, _ in _SINGLE_PEERS]
        )
        fl = floor_s(cell)
        fr = [
            d,
            f"{n:,}",
            where,
            f"{cell['bytes'] / fl / 1e9:.1f}",
            f"{cell['bytes'] / _t(cell, 'floor_sum') / 1e9:.1f}",
            f"{cell['bytes'] / _t(cell, 'floor_rowsum') / 1e9:.1f}",
        ]  # type: ignore[operator]
        for name in (
            "tlalloc",
            "tlalloc_top10",
            "matvec",
            "simsimd",
            "numkong",
            "numkong_packed",
            "faiss_top10",
            "usearch_top10",
        ):
            t = _t(cell, name)
            fr.append("-" if t is None else f"{fl / t:.0%}")
        frows.append(fr)
    lines.append(
        "Single query, float32 corpus: tlalloc us/call, then each peer's time / tlalloc's "
        "(>1: tlalloc faster; top-10 peers against tlalloc top_k=10)"
    )
    lines.append(
        format_table(
            ["d", "n", "MiB", "from", "tlalloc us", "top10 us"] + [lbl for _, _, lbl in _SINGLE_PEERS], rows
        )
    )
    lines.append(
        "Read rate as a fraction of the floor (floor = the faster of np.add.reduce over the flat "
        "array and C @ ones, same array, same rounds)"
    )
    lines.append(
        format_table(
            [
                "d",
                "n",
                "from",
                "floor GB/s",
                "sum GB/s",
                "C@1 GB/s",
                "tlalloc",
                "top10",
                "C @ q",
                "SimSIMD",
                "NumKong",
                "NK packed",
                "faiss",
                "usearch",
            ],
            frows,
        )
    )
    brows = []
    for cell in r["batched"]:
        ref = "tlalloc" if "tlalloc" in cell["times"] else "tlalloc_loop"
        ref_top = "tlalloc_top10" if ref == "tlalloc" else "tlalloc_loop_top10"
        labels = [
            ("tlalloc", "tlalloc, 2-D queries", ref),
            ("tlalloc_norms", "tlalloc, 2-D, candidate_norms=", ref),
            ("tlalloc_top10", "tlalloc, 2-D, top_k=10", ref_top),
            ("tlalloc_loop", "tlalloc, loop of m single calls", ref),
            ("tlalloc_loop_top10", "tlalloc, loop, top_k=10", ref_top),
            ("numpy_gemm", "NumPy Q @ C.T / norms (norms of C once)", ref),
            ("simsimd", "SimSIMD cdist", ref),
            ("numkong", "NumKong cdist", ref),
            ("numkong_packed", "NumKong angulars_packed (packed once)", ref),
            ("faiss_top10", "faiss IndexFlatIP top 10", ref_top),
            ("usearch_top10", "usearch exact top 10", ref_top),
        ]
        first = f"m={cell['m']}, {cell['d']} x {cell['n']:,}"
        for name, label, rf in labels:
            t = _t(cell, name)
            if t is not None:
                brows.append([first, label, f"{t * 1e3:.2f}", f"{t / _t(cell, rf):.2f}"])  # type: ignore[operator]
                first = ""
    lines.append(
        "Batched queries (ms per batch; time / tlalloc's, >1: tlalloc faster; reference: the "
        "2-D call where supported, else the loop)"
    )
    lines.append(format_table(["batch", "implementation", "ms", "x tlalloc"], brows))
    for cell in r["batched"][:1]:
        if cell["batched"] != "supported":
            lines.append(f"  tlalloc with 2-D queries: {cell['batched']}")
    h = r.get("half", {})
    if "skipped" in h:
        lines.append(f"Half precision ({h['n']:,} x {h['d']}): {h['skipped']}")
    elif h:
        hrows = []
        ref = _t(h, "tlalloc_f32")
        for name, label, nbytes in (
            ("floor_sum_f32", "read floor: np.add.reduce, float32", h["bytes_f32"]),
            ("floor_rowsum_f32", "read floor: C @ ones, float32", h["bytes_f32"]),
            ("tlalloc_f32", "tlalloc, float32 corpus", h["bytes_f32"]),
            ("tlalloc_f16", "tlalloc, float16 corpus", h["bytes_f16"]),
            ("tlalloc_bf16", "tlalloc, bfloat16 corpus", h["bytes_f16"]),
            ("tlalloc_f32_norms", "tlalloc, float32, candidate_norms", h["bytes_f32"]),
            ("tlalloc_f16_norms", "tlalloc, float16, candidate_norms", h["bytes_f16"]),
            ("tlalloc_bf16_norms", "tlalloc, bfloat16, candidate_norms", h["bytes_f16"]),
            ("simsimd_f32", "SimSIMD, float32", h["bytes_f32"]),
            ("simsimd_f16", "SimSIMD, float16", h["bytes_f16"]),
            ("numkong_f32", "NumKong cdist, float32", h["bytes_f32"]),
            ("numkong_f16", "NumKong cdist, float16", h["bytes_f16"]),
            ("numkong_f16_packed", "NumKong packed, float16", h["bytes_f16"]),
            ("numkong_bf16", "NumKong cdist, bfloat16", h["bytes_f16"]),
            ("numkong_bf16_packed", "NumKong packed, bfloat16", h["bytes_f16"]),
            ("usearch_f16_top10", "usearch exact top 10, float16", h["bytes_f16"]),
        ):
            t = _t(h, name)
            if t is not None:
                hrows.append([label, f"{t * 1e3:.1f}", f"{nbytes / t / 1e9:.1f}", f"{ref / t:.2f}"])  # type: ignore[operator]
        lines.append(
            f"Half precision, {h['n']:,} x {h['d']} (float16: {h['float16']}; bfloat16: {h['bfloat16']})"
        )
        lines.append(format_table(["implementation", "ms", "GB/s", "speed vs tlalloc float32"], hrows))
        rates = half_rates(h)
        if rates:
            lines.append(
                f"  in cache ({h['incache_rows']} x {h['d']}), G elements per CPU second: "
                + ", ".join(f"{k.replace('_norms', ' with norms')} {v:.1f}" for k, v in sorted(rates.items()))
            )
    extra = off_thread(r)
    if extra:
        lines.append(
            "  NOTE: other threads of the process ran while " + ", ".join(extra) + " ran: their "
            "thread CPU times above may undercount"
        )
    lines.append("What the cosine comparison says:")
    lines += [f"  {t}" for t in findings(r)]
    return "\n".join(lines)


def section(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """The cosine section of ``tlalloc bench kernels``: the grid of ``--quick``,
    ``--full-grid`` or the default subset; its figures under
    ``payload["cosine_peers"]``, its findings and targets added to the payload's."""
    mode = "quick" if args.quick else "full" if args.full_grid else "default"
    cos = compare(mode)
    print(report(cos))
    payload["cosine_peers"] = cos
    payload["findings"] += findings(cos)
    payload["targets"] += [{"target": g, "reached": ok} for g, ok in goals(cos)]
