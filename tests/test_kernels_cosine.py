"""cosine_similarity: the batched form, half-precision candidates, candidate_norms, loop orders.

The batched form must give, row by row, the bits of the single-query form (the
kernels share one row arithmetic); every dtype pair must agree with a float64
reference; each instruction set the CPU has is forced in turn.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from conftest import counts_during
from tlalloc import _tlalloc, kernels

try:
    import ml_dtypes

    BF16: type | None = ml_dtypes.bfloat16
except ImportError:  # optional: the bfloat16 tests are skipped without it
    BF16 = None

FLOATS = [np.float16, np.float32, np.float64]
needs_bf16 = pytest.mark.skipif(BF16 is None, reason="ml_dtypes (bfloat16) is not installed")


@pytest.fixture
def stream_bytes() -> Iterator[None]:
    prev = _tlalloc._cosine_stream_bytes(None)
    try:
        yield
    finally:
        _tlalloc._cosine_stream_bytes(prev)


def reference(q: np.ndarray, c: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """float64 scores of the values as stored (the docs' meaning)."""
    q64 = np.atleast_2d(np.asarray(q, np.float64))
    c64 = np.asarray(c, np.float64)
    dot = q64 @ c64.T
    qn = np.linalg.norm(q64, axis=1)[:, None]
    cn = np.linalg.norm(c64, axis=1) if norms is None else np.asarray(norms, np.float64)
    with np.errstate(all="ignore"):
        s = dot / qn / cn
    s[~((qn > 0) & np.isfinite(qn) & (cn > 0) & np.isfinite(cn))] = 0.0
    return np.clip(np.nan_to_num(s, nan=0.0), -1.0, 1.0)


def data(m: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((m, d)).astype(np.float32)
    c = rng.standard_normal((n, d)).astype(np.float32)
    if n > 3:
        c[3] = c[1]  # a tie
    if n > 5 and m:
        c[5] = q[0]  # a perfect match
    return q, c


def exact(a: np.ndarray, b: np.ndarray) -> None:
    """Same shape and the same bits."""
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


# ------------------------------------------------------------------ batched == single


@pytest.mark.parametrize("d", [0, 1, 7, 8, 9, 16, 17, 31, 33, 100, 768])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 9])
@pytest.mark.parametrize("n", [22, 23])  # the batched tile takes rows three at a time: both remainders
def test_batched_equals_single_query_row_by_row(isa: str, m: int, n: int, d: int) -> None:
    q, c = data(m, n, d)
    scores = kernels.cosine_similarity(q, c)
    idx, top = kernels.cosine_similarity(q, c, top_k=5)
    assert scores.shape == (m, n) and scores.dtype == np.float32
    assert idx.shape == top.shape == (m, 5) and idx.dtype == np.int64
    for i in range(m):
        exact(scores[i], kernels.cosine_similarity(q[i], c))
        i1, t1 = kernels.cosine_similarity(q[i], c, top_k=5)
        np.testing.assert_array_equal(idx[i], i1)
        exact(top[i], t1)
    np.testing.assert_allclose(scores, reference(q, c), atol=2e-6)


CAND_DTYPES = [*FLOATS, *([BF16] if BF16 is not None else [])]
QUERY_DTYPES = CAND_DTYPES


@pytest.mark.parametrize("cdt", CAND_DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("qdt", QUERY_DTYPES, ids=lambda t: np.dtype(t).name)
def test_every_dtype_pair(isa: str, qdt: type, cdt: type) -> None:
    q, c = data(4, 37, 45, seed=3)
    q, c = q.astype(qdt), c.astype(cdt)
    got = kernels.cosine_similarity(q, c)
    # Working precision float32 unless an input is float64; half inputs widen exactly.
    np.testing.assert_allclose(got, reference(q, c), atol=2e-6)
    for i in range(len(q)):
        exact(got[i], kernels.cosine_similarity(q[i], c))


HALF_DTYPES = [np.float16, *([BF16] if BF16 is not None else [])]


@pytest.mark.parametrize("cdt", HALF_DTYPES, ids=lambda t: np.dtype(t).name)
def test_half_precision_corpus_against_float64(isa: str, cdt: type) -> None:
    q, c = data(3, 2000, 768, seed=4)
    ch = c.astype(cdt)
    got = kernels.cosine_similarity(q, ch)
    np.testing.assert_allclose(got, reference(q, ch), atol=2e-6)
    # The same values as float32 give the same scores (widening is exact; the
    # order of the sums is the same; only the head of unaligned float32 rows differs).
    np.testing.assert_allclose(got, kernels.cosine_similarity(q, ch.astype(np.float32)), atol=5e-7)
    # Strided half-precision rows go through conversion: same values, same results.
    wide = np.zeros((2000, 2 * 768), dtype=cdt)
    wide[:, ::2] = ch
    np.testing.assert_allclose(kernels.cosine_similarity(q, wide[:, ::2]), got, atol=5e-7)


@needs_bf16
def test_bfloat16_is_read_as_its_float32_top_half() -> None:
    rng = np.random.default_rng(9)
    raw = rng.integers(0, 1 << 16, size=(20, 9), dtype=np.uint16)
    raw[(raw & 0x7F80) == 0x7F80] = 0x3F80  # no NaN or Inf patterns: 1.0 instead
    as_f32 = (raw.astype(np.uint32) << 16).view(np.float32)
    q = rng.standard_normal(9).astype(np.float32)
    got = kernels.cosine_similarity(q, raw.view(BF16))
    np.testing.assert_allclose(got, reference(q, as_f32)[0], atol=2e-6)
    np.testing.assert_allclose(got, kernels.cosine_similarity(q, as_f32), atol=5e-7)


@needs_bf16
@pytest.mark.parametrize("n", [1, 4, 5, 11])  # around the in-cache group of four rows
def test_bfloat16_corpus_every_tail_against_float64(isa: str, stream_bytes: None, n: int) -> None:
    # Every length of a row's last block up to 32 elements x 4 rows and past it:
    # within the documented bound of a float64 computation of the values as
    # stored, (4 (d/16 + 6) + 8) 2^-24 / 2 (the vdpbf16ps path sums in another
    # order; the others are tighter); batched, streaming and one query alike, bit
    # for bit.
    for d in range(0, 133):
        q, c = data(7, n, d, seed=d)
        cb = c.astype(BF16)
        tol = (4 * (d / 16 + 6) + 8) * 2.0**-24 / 2
        got = kernels.cosine_similarity(q, cb)
        np.testing.assert_allclose(got, reference(q, cb), rtol=0, atol=tol)
        _tlalloc._cosine_stream_bytes(0)
        for i in range(len(q)):
            exact(kernels.cosine_similarity(q[i], cb), got[i])
        _tlalloc._cosine_stream_bytes(1 << 60)
        for i in range(len(q)):
            exact(kernels.cosine_similarity(q[i], cb), got[i])


@needs_bf16
@pytest.mark.skipif(
    "avx512_bf16" not in _tlalloc._kernels_best_ext(), reason="no avx512_bf16 extension to force on and off"
)
def test_bfloat16_with_and_without_the_dot_instruction() -> None:
    # vdpbf16ps (AVX512_BF16) sums the same exact products in another order:
    # within the documented bound of the AVX-512 path without it and of AVX2,
    # which give the same bits as each other.
    q, c = data(5, 301, 768, seed=21)
    cb = c.astype(BF16)
    tol = (4 * (768 / 16 + 6) + 8) * 2.0**-24
    prev_isa, prev_ext = _tlalloc._kernels_set_isa("avx512"), _tlalloc._kernels_ext()
    try:
        _tlalloc._kernels_set_ext(_tlalloc._kernels_best_ext())
        with_dp = kernels.cosine_similarity(q, cb)
        _tlalloc._kernels_set_ext(tuple(e for e in _tlalloc._kernels_best_ext() if e != "avx512_bf16"))
        without = kernels.cosine_similarity(q, cb)
        _tlalloc._kernels_set_isa("avx2")
        exact(kernels.cosine_similarity(q, cb), without)
    finally:
        _tlalloc._kernels_set_ext(prev_ext)
        _tlalloc._kernels_set_isa(prev_isa)
    np.testing.assert_allclose(with_dp, without, rtol=0, atol=tol)
    np.testing.assert_allclose(with_dp, reference(q, cb), rtol=0, atol=tol / 2)


def test_float64_batched_equals_single() -> None:
    q, c = data(5, 31, 19, seed=5)
    q64 = q.astype(np.float64)
    got = kernels.cosine_similarity(q64, c)
    for i in range(5):
        exact(got[i], kernels.cosine_similarity(q64[i], c))
    np.testing.assert_allclose(got, reference(q64, c), atol=1e-7)


# ------------------------------------------------------------------------ shapes


def test_empty_queries_and_candidates() -> None:
    q, c = data(3, 4, 8)
    assert kernels.cosine_similarity(q[:0], c).shape == (0, 4)
    idx, top = kernels.cosine_similarity(q[:0], c, top_k=2)
    assert idx.shape == top.shape == (0, 2)
    assert kernels.cosine_similarity(q, c[:0]).shape == (3, 0)
    idx, top = kernels.cosine_similarity(q, c[:0], top_k=2)
    assert idx.shape == top.shape == (3, 0)
    assert kernels.cosine_similarity(np.zeros((2, 0)), np.zeros((3, 0))).tolist() == [[0.0] * 3] * 2


def test_top_k_ties_and_k_above_n(isa: str) -> None:
    c = np.array([[1, 0], [0, 1], [1, 0], [2, 0], [0, 0]], np.float32)
    q = np.array([[1, 0], [0, 1], [0, 0]], np.float32)
    idx, top = kernels.cosine_similarity(q, c, top_k=10)
    assert idx.shape == (3, 5)
    assert idx[0].tolist() == [0, 2, 3, 1, 4]  # three 1.0s by index, then the 0.0s by index
    assert top[0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert idx[1].tolist() == [1, 0, 2, 3, 4]
    assert idx[2].tolist() == [0, 1, 2, 3, 4] and top[2].tolist() == [0.0] * 5  # zero query
    idx, _ = kernels.cosine_similarity(q, c, top_k=2)
    assert idx.tolist() == [[0, 2], [1, 0], [0, 1]]


@pytest.mark.parametrize(
    "qview, cview",
    [
        (lambda q: q[:, ::2], lambda c: c[:, ::2]),  # strided columns
        (lambda q: q[::-1], lambda c: c[::-1]),  # negative row strides
        (lambda q: np.asfortranarray(q), lambda c: np.asfortranarray(c)),  # column-major
        (lambda q: q[1::2], lambda c: c[::3]),  # strided rows
    ],
)
def test_non_contiguous_inputs(isa: str, qview, cview) -> None:  # type: ignore[no-untyped-def]
    q, c = data(6, 40, 34, seed=6)
    qv, cv = qview(q), cview(c)
    got = kernels.cosine_similarity(qv, cv)
    np.testing.assert_allclose(got, reference(qv, cv), atol=2e-6)
    np.testing.assert_allclose(got, kernels.cosine_similarity(qv.copy(), cv.copy()), atol=5e-7)
    for i in range(len(qv)):
        exact(got[i], kernels.cosine_similarity(qv[i], cv))


def test_out_in_the_batched_form() -> None:
    q, c = data(3, 7, 5)
    out = np.full((3, 7), 9.0, np.float32)
    assert kernels.cosine_similarity(q, c, out=out) is out
    exact(out, kernels.cosine_similarity(q, c))
    big = np.zeros((7, 6), np.float32)  # a transposed, strided view
    kernels.cosine_similarity(q, c, out=big[:, ::2].T)
    exact(big[:, ::2].T, out)
    assert (big[:, 1::2] == 0).all()


@pytest.mark.parametrize(
    "out, exc, match",
    [
        (np.zeros((3, 7), np.float64), TypeError, "out must have dtype float32"),
        (np.zeros((3, 6), np.float32), ValueError, r"out must have shape \(3, 7\).*\(3, 6\)"),
        (np.zeros((7, 3), np.float32), ValueError, r"out must have shape \(3, 7\)"),
        (np.zeros(21, np.float32), ValueError, r"out must have shape \(3, 7\)"),
        (np.zeros((1, 3, 7), np.float32), ValueError, r"out must have shape \(3, 7\)"),
    ],
)
def test_out_of_the_wrong_shape_or_dtype(out: np.ndarray, exc: type, match: str) -> None:
    q, c = data(3, 7, 5)
    before = out.copy()
    with pytest.raises(exc, match=match):
        kernels.cosine_similarity(q, c, out=out)
    np.testing.assert_array_equal(out, before)


def test_out_of_the_wrong_shape_single_query() -> None:
    q, c = data(1, 7, 5)
    with pytest.raises(ValueError, match=r"out must have shape \(7,\)"):
        kernels.cosine_similarity(q[0], c, out=np.zeros((1, 7), np.float32))


def test_queries_of_other_dimensions_are_refused() -> None:
    msg = r"queries must be 1-dimensional \(d,\) or 2-dimensional \(m, d\), got 3"
    with pytest.raises(ValueError, match=msg):
        kernels.cosine_similarity(np.ones((1, 2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"queries must be 1-dimensional .* got 0"):
        kernels.cosine_similarity(np.float32(1.0), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"candidates must have shape \(n, 3\) to match queries of length 3"):
        kernels.cosine_similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(TypeError, match="queries must have a floating-point dtype"):
        kernels.cosine_similarity(np.ones((2, 3), np.int64), np.ones((2, 3)))


# ------------------------------------------------------------------- candidate_norms


@pytest.mark.parametrize("ndt", [np.float32, np.float64])
def test_candidate_norms_replace_the_computed_ones(isa: str, ndt: type) -> None:
    q, c = data(4, 50, 24, seed=7)
    norms = np.linalg.norm(c.astype(np.float64), axis=1)
    got = kernels.cosine_similarity(q, c, candidate_norms=norms.astype(ndt))
    np.testing.assert_allclose(got, kernels.cosine_similarity(q, c), atol=1e-6)
    doubled = (2 * norms).astype(ndt)
    doubled[7] = 0.0  # a zero norm gives 0
    got = kernels.cosine_similarity(q, c, candidate_norms=doubled)
    np.testing.assert_allclose(got, reference(q, c, doubled), atol=1e-6)
    assert (got[:, 7] == 0).all()
    # single query, top_k, float64 working precision: the same meaning
    exact(kernels.cosine_similarity(q[1], c, candidate_norms=doubled), got[1])
    idx, top = kernels.cosine_similarity(q, c, top_k=3, candidate_norms=doubled)
    np.testing.assert_array_equal(top, -np.sort(-got, axis=1, kind="stable")[:, :3])
    g64 = kernels.cosine_similarity(q.astype(np.float64), c, candidate_norms=doubled)
    np.testing.assert_allclose(g64, reference(q, c, doubled), atol=1e-7)


def test_candidate_norms_at_the_ends_of_the_float_range(isa: str) -> None:
    for scale in (1e-30, 1e19):
        v = (np.arange(1, 17) * scale).astype(np.float32)
        c = np.stack([v, v])
        norms = np.linalg.norm(c.astype(np.float64), axis=1)
        got = kernels.cosine_similarity(np.stack([v, v]), c, candidate_norms=norms)
        np.testing.assert_allclose(got, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "norms, exc, match",
    [
        (np.ones(4), ValueError, r"candidate_norms must have shape \(5,\).*size 4"),
        (np.ones((5, 1)), ValueError, r"candidate_norms must have shape \(5,\).*2 dimension"),
        (np.ones(5, np.int64), TypeError, "candidate_norms must have dtype float32 or float64, got .*int64"),
        (np.ones(5, np.float16), TypeError, "candidate_norms must have dtype float32 or float64"),
        (np.array([1, 1, np.nan, 1, 1]), ValueError, r"candidate_norms\[2\] = nan is not finite"),
        (np.array([1, 1, 1, np.inf, 1], np.float32), ValueError, r"candidate_norms\[3\] = inf is not finite"),
        (np.array([1, -0.5, 1, 1, 1]), ValueError, r"candidate_norms\[1\] = -0.5 is negative"),
        ("abc", TypeError, "candidate_norms must have dtype"),
    ],
)
def test_candidate_norms_validation(norms: object, exc: type, match: str) -> None:
    q, c = data(2, 5, 3)
    out = np.full((2, 5), 7.0, np.float32)
    with pytest.raises(exc, match=match):
        kernels.cosine_similarity(q, c, candidate_norms=norms, out=out)
    assert (out == 7.0).all()  # nothing written


def test_out_overlapping_candidate_norms_is_refused() -> None:
    q, c = data(1, 4, 3)
    buf = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        kernels.cosine_similarity(q[0], c, candidate_norms=buf[:4], out=buf[2:6])


# ------------------------------------------------------------------- loop orders


def test_streaming_order_equals_the_in_cache_order(isa: str, stream_bytes: None) -> None:
    # 4,000 x 300 float32 = 4.8 MB: above the default threshold, so the default
    # call streams; forcing the other order must give the same bits.
    q, c = data(2, 4000, 300, seed=8)
    assert c.nbytes > _tlalloc._cosine_stream_bytes(None)
    streamed = kernels.cosine_similarity(q[0], c)
    _tlalloc._cosine_stream_bytes(1 << 60)
    in_cache = kernels.cosine_similarity(q[0], c)
    exact(streamed, in_cache)
    exact(kernels.cosine_similarity(q, c)[0], in_cache)
    for cdt in HALF_DTYPES:
        ch = c.astype(cdt)
        a = kernels.cosine_similarity(q[0], ch)
        _tlalloc._cosine_stream_bytes(0)
        exact(kernels.cosine_similarity(q[0], ch), a)
        _tlalloc._cosine_stream_bytes(1 << 60)


def test_stream_bytes_setting_is_validated(stream_bytes: None) -> None:
    with pytest.raises(ValueError, match="bytes must be >= 0"):
        _tlalloc._cosine_stream_bytes(-1)
    assert _tlalloc._cosine_stream_bytes(123) >= 0
    assert _tlalloc._cosine_stream_bytes(None) == 123


@pytest.mark.parametrize("n", [1, 2, 7, 300])
def test_given_norms_take_the_dot_only_path_with_the_same_bits(isa: str, stream_bytes: None, n: int) -> None:
    # With candidate_norms one query reads each row for its dot product only;
    # those dots are the bits the batched form (and the fused dot+norm pass)
    # computes, in the in-cache and the streaming orders and for every kind of
    # row the kernels read in registers.
    q, c = data(3, n, 37, seed=11)
    for cdt in [np.float32, *HALF_DTYPES]:
        ch = c.astype(cdt)
        norms = np.linalg.norm(ch.astype(np.float64), axis=1) * 1.5
        batched = kernels.cosine_similarity(q, ch, candidate_norms=norms)
        for sb in (1 << 60, 0):
            _tlalloc._cosine_stream_bytes(sb)
            for i in range(3):
                exact(kernels.cosine_similarity(q[i], ch, candidate_norms=norms), batched[i])
        np.testing.assert_allclose(batched, reference(q, ch, norms), atol=2e-6)


# ------------------------------------------------------------------ metrics: dot and l2


def reference_metric(q: np.ndarray, c: np.ndarray, metric: str) -> np.ndarray:
    """float64 dot products or squared distances of the values as stored, (m, n)."""
    q64 = np.atleast_2d(np.asarray(q, np.float64))
    c64 = np.asarray(c, np.float64)
    if metric == "dot":
        return q64 @ c64.T
    return ((q64[:, None, :] - c64[None, :, :]) ** 2).sum(axis=2)


def metric_tolerance(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The documented float32 bound: (d + 2) * 2^-23 * (|q|^2 + |c|^2), plus the final rounding."""
    q64 = np.atleast_2d(np.asarray(q, np.float64))
    c64 = np.asarray(c, np.float64)
    d = max(q64.shape[1], 1)
    qq = (q64**2).sum(axis=1)[:, None]
    cc = (c64**2).sum(axis=1)[None, :]
    return (d + 2) * 2.0**-23 * (qq + cc) + 1e-30


CORPUS_DTYPES = [np.float32, np.float16, pytest.param("bf16", marks=needs_bf16)]


def as_dtype(a: np.ndarray, dt: object) -> np.ndarray:
    return a.astype(BF16 if dt == "bf16" else dt)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["dot", "l2"])
@pytest.mark.parametrize("cdt", CORPUS_DTYPES)
@pytest.mark.parametrize("d", [1, 17, 100, 768])
def test_dot_and_l2_against_float64(isa: str, metric: str, cdt: object, d: int) -> None:
    q, c = data(5, 41, d, seed=d)
    c = as_dtype(c, cdt)
    got = kernels.cosine_similarity(q, c, metric=metric)
    assert got.shape == (5, 41) and got.dtype == np.float32
    want = reference_metric(q, c, metric)
    if metric == "dot":  # d * 2^-24 * |q| |c|, plus the final rounding
        qn = np.linalg.norm(np.asarray(q, np.float64), axis=1)[:, None]
        cn = np.linalg.norm(np.asarray(c, np.float64), axis=1)[None, :]
        bound = d * 2.0**-24 * qn * cn
    else:
        bound = metric_tolerance(q, c)
    assert np.all(np.abs(got - want) <= bound + np.abs(want) * 2.0**-24)
    if metric == "l2":
        assert np.all(got >= 0)
        if cdt == np.float32:  # row 5 is query 0: distance 0 within the bound
            assert got[0, 5] <= metric_tolerance(q[0], c[5:6])[0, 0]
    # one query gives the bits of the batched row; a 1-D query keeps the (n,) shape
    for i in range(5):
        exact(kernels.cosine_similarity(q[i], c, metric=metric), got[i])


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_float64_inputs_compute_dot_and_l2_in_float64(metric: str) -> None:
    q, c = data(3, 30, 33)
    got = kernels.cosine_similarity(q.astype(np.float64), c, metric=metric)
    want = reference_metric(q, c, metric)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=2e-7, atol=1e-12)


def test_cosine_metric_is_the_default_bit_for_bit(isa: str) -> None:
    q, c = data(4, 50, 40)
    exact(kernels.cosine_similarity(q, c, metric="cosine"), kernels.cosine_similarity(q, c))


@pytest.mark.parametrize("cdt", CORPUS_DTYPES)
def test_normalized_skips_the_candidate_norms(isa: str, cdt: object) -> None:
    q, c = data(3, 40, 64)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    c = as_dtype(c, cdt)
    ones = np.ones(40)
    got = kernels.cosine_similarity(q, c, normalized=True)
    exact(got, kernels.cosine_similarity(q, c, candidate_norms=ones))  # |c_i| taken as 1
    np.testing.assert_allclose(got, reference(q, c, ones), atol=2e-6)
    # rows of unit norm (up to their dtype's rounding): close to computing the norms
    np.testing.assert_allclose(got, kernels.cosine_similarity(q, c), atol=4e-3 if cdt != np.float32 else 2e-6)
    l2 = kernels.cosine_similarity(q, c, metric="l2", normalized=True)
    q64 = q.astype(np.float64)
    want = (q64**2).sum(axis=1)[:, None] + 1.0 - 2.0 * reference_metric(q, c, "dot")
    assert np.all(
        np.abs(l2 - np.maximum(want, 0)) <= metric_tolerance(q, np.ones((1, 1))) + 1e-6 * np.abs(want)
    )
    exact(
        kernels.cosine_similarity(q, c, metric="dot", normalized=True),
        kernels.cosine_similarity(q, c, metric="dot"),
    )


def test_normalized_with_candidate_norms_is_refused() -> None:
    with pytest.raises(ValueError, match="normalized=True cannot be combined with candidate_norms"):
        kernels.cosine_similarity(np.ones(3), np.ones((2, 3)), normalized=True, candidate_norms=np.ones(2))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (
            {"metric": "euclidean"},
            ValueError,
            "metric must be one of 'cosine', 'dot', 'l2', got 'euclidean'",
        ),
        ({"metric": 2}, TypeError, "metric must be one of"),
        ({"normalized": 1}, TypeError, "normalized must be True or False, got 1"),
        ({"normalized": "yes"}, TypeError, "normalized must be True or False"),
    ],
)
def test_metric_and_normalized_validation(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        kernels.cosine_similarity(np.ones(3), np.ones((2, 3)), **kwargs)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_top_k_order_and_ties_per_metric(isa: str, metric: str) -> None:
    q, c = data(3, 200, 24, seed=4)
    c[150] = c[40]  # ties: 40 before 150
    c[151] = c[5]  # row 5 is query 0: 5 before 151
    scores = kernels.cosine_similarity(q, c, metric=metric)
    idx, top = kernels.cosine_similarity(q, c, metric=metric, top_k=12)
    assert idx.shape == top.shape == (3, 12)
    key = scores if metric == "l2" else -scores
    for i in range(3):
        order = np.argsort(key[i], kind="stable")[:12]  # best first, ties to the lower index
        np.testing.assert_array_equal(idx[i], order)
        exact(top[i], scores[i, order])
    if metric != "dot":  # query 0 itself: the nearest and the most similar, twice
        assert idx[0, :2].tolist() == [5, 151]


def test_the_numpy_reference_ranks_each_metric_alike() -> None:
    from tlalloc import kernels_reference

    q, c = data(1, 60, 16, seed=8)
    for metric in ("cosine", "dot", "l2"):
        ri, rs = kernels_reference.cosine_similarity(q[0], c, top_k=6, metric=metric)
        ki, ks = kernels.cosine_similarity(q[0], c, top_k=6, metric=metric)
        np.testing.assert_array_equal(ki, ri)
        np.testing.assert_allclose(ks, rs, rtol=1e-5, atol=1e-4)
    mask = np.arange(60) % 7 == 2
    ri, rs = kernels_reference.cosine_similarity(q[0], c, top_k=4, metric="l2", allow=mask)
    ki, ks = kernels.cosine_similarity(q[0], c, top_k=4, metric="l2", allow=mask)
    np.testing.assert_array_equal(ki, ri)


# ------------------------------------------------------------------ filters: allow=


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("cdt", [np.float32, np.float16, np.float64, pytest.param("bf16", marks=needs_bf16)])
def test_allow_scores_the_chosen_rows_with_the_same_bits(isa: str, metric: str, cdt: object) -> None:
    q, c = data(4, 300, 40, seed=2)
    c = as_dtype(c, cdt)
    full = kernels.cosine_similarity(q, c, metric=metric)
    ids = np.array([299, 7, 8, 9, 10, 0, 150, 151])  # any order, runs of adjacent rows
    exact(kernels.cosine_similarity(q, c, metric=metric, allow=ids), full[:, ids])
    exact(kernels.cosine_similarity(q[1], c, metric=metric, allow=ids), full[1, ids])
    mask = np.zeros(300, bool)
    mask[::13] = True
    mask[100:140] = True
    exact(kernels.cosine_similarity(q, c, metric=metric, allow=mask), full[:, mask])
    idx, top = kernels.cosine_similarity(q, c, metric=metric, allow=mask, top_k=9)
    chosen = np.flatnonzero(mask)
    key = full[:, chosen] if metric == "l2" else -full[:, chosen]
    for i in range(4):
        order = chosen[np.argsort(key[i], kind="stable")[:9]]
        np.testing.assert_array_equal(idx[i], order)
        exact(top[i], full[i, order])


@pytest.mark.parametrize("how", ["mask", "ids"])
def test_allow_keeping_none_one_or_every_row(isa: str, how: str) -> None:
    q, c = data(2, 50, 12)
    full = kernels.cosine_similarity(q, c, metric="l2")
    for keep in ([], [17], list(range(50))):
        if how == "mask":
            allow = np.zeros(50, bool)
            allow[keep] = True
        else:
            allow = np.array(keep, np.int64)
        scores = kernels.cosine_similarity(q, c, metric="l2", allow=allow)
        assert scores.shape == (2, len(keep))
        exact(scores, full[:, keep])
        idx, top = kernels.cosine_similarity(q, c, metric="l2", allow=allow, top_k=5)
        assert idx.shape == top.shape == (2, min(5, len(keep)))
        if len(keep) == 1:
            assert idx.tolist() == [[17], [17]]
        if len(keep) == 50:
            exact(top, kernels.cosine_similarity(q, c, metric="l2", top_k=5)[1])
    assert kernels.cosine_similarity(q[0], c, allow=[]).shape == (0,)  # an empty list: no rows


def test_allow_ids_of_any_integer_dtype() -> None:
    q, c = data(1, 20, 8)
    full = kernels.cosine_similarity(q[0], c)
    for dt in (np.int8, np.uint16, np.int32, np.uint64, np.int64):
        exact(kernels.cosine_similarity(q[0], c, allow=np.array([3, 1, 19], dt)), full[[3, 1, 19]])
    exact(kernels.cosine_similarity(q[0], c, allow=np.arange(40)[::2][:5]), full[[0, 2, 4, 6, 8]])  # strided


@pytest.mark.parametrize(
    "allow, exc, match",
    [
        (np.array([0, 20]), ValueError, r"allow\[1\] = 20 is out of range for 20 candidates"),
        (np.array([-1]), ValueError, r"allow\[0\] = -1 is out of range for 20 candidates"),
        (np.array([2**63 + 5], np.uint64), ValueError, r"allow\[0\] = 9223372036854775813 is out of range"),
        (np.array([4, 9, 4]), ValueError, r"allow\[2\] = 4 repeats an earlier row id"),
        (np.array([1, 2, 3, 3]), ValueError, r"allow\[3\] = 3 repeats"),
        (
            np.array([0.0, 1.0]),
            TypeError,
            "allow must be a boolean mask or an array of integer row ids, got dtype",
        ),
        (np.array(["a"]), TypeError, "allow must be a boolean mask or an array of integer row ids"),
        (
            np.zeros(19, bool),
            ValueError,
            r"allow as a mask must have shape \(20,\) \(one per candidate\), got \(19,\)",
        ),
        (np.zeros((20, 1), bool), ValueError, "allow must be 1-dimensional"),
        (np.int64(3), ValueError, "allow must be 1-dimensional"),
    ],
)
def test_allow_validation(allow: object, exc: type, match: str) -> None:
    q, c = data(2, 20, 8)
    out = np.full((2, 20), 7.0, np.float32)
    with pytest.raises(exc, match=match):
        kernels.cosine_similarity(
            q, c, allow=allow, out=out[:, : np.size(allow)] if np.ndim(allow) == 1 else out
        )
    assert np.all(out == 7.0)
    with pytest.raises(exc, match=match):
        kernels.cosine_similarity(q, c, allow=allow, top_k=3)


def test_allow_out_shape_follows_the_chosen_rows() -> None:
    q, c = data(2, 20, 8)
    out = np.zeros((2, 3), np.float32)
    assert kernels.cosine_similarity(q, c, allow=[4, 2, 9], out=out) is out
    exact(out, kernels.cosine_similarity(q, c)[:, [4, 2, 9]])
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3\)"):
        kernels.cosine_similarity(q, c, allow=[4, 2, 9], out=np.zeros((2, 20), np.float32))


# ------------------------------------------------------------------ top_k with out=


def test_top_k_into_caller_arrays(isa: str) -> None:
    q, c = data(3, 40, 16)
    idx, top = np.empty((3, 5), np.int64), np.empty((3, 5), np.float32)
    ri, rs = kernels.cosine_similarity(q, c, top_k=5, out=(idx, top), metric="l2")
    assert ri is idx and rs is top
    wi, ws = kernels.cosine_similarity(q, c, top_k=5, metric="l2")
    np.testing.assert_array_equal(idx, wi)
    exact(top, ws)
    i1, s1 = np.empty(5, np.int64), np.empty(5, np.float32)
    assert kernels.cosine_similarity(q[0], c, top_k=5, out=(i1, s1))[0] is i1
    np.testing.assert_array_equal(i1, kernels.cosine_similarity(q[0], c, top_k=5)[0])


def test_top_k_into_caller_arrays_with_fewer_rows_than_k() -> None:
    q, c = data(2, 40, 16)
    idx, top = np.zeros((2, 6), np.int64), np.zeros((2, 6), np.float32)
    ri, rs = kernels.cosine_similarity(q, c, top_k=6, out=(idx, top), allow=[30, 3, 12])
    assert ri.shape == rs.shape == (2, 3) and ri.base is idx and rs.base is top
    wi, ws = kernels.cosine_similarity(q, c, top_k=6, allow=[30, 3, 12])
    np.testing.assert_array_equal(ri, wi)
    exact(rs, ws)
    assert np.all(idx[:, 3:] == -1) and np.all(np.isnan(top[:, 3:]))


@pytest.mark.parametrize(
    "out, exc, match",
    [
        (
            (np.empty((2, 4), np.int64), np.empty((2, 4), np.float32)),
            ValueError,
            r"out\[0\] \(indices\) must have shape \(2, 3\)",
        ),
        (
            (np.empty((2, 3), np.int64), np.empty((3, 2), np.float32)),
            ValueError,
            r"out\[1\] \(scores\) must have shape \(2, 3\)",
        ),
        (
            (np.empty(3, np.int64), np.empty(3, np.float32)),
            ValueError,
            r"out\[0\] \(indices\) must have shape",
        ),
        (
            (np.empty((2, 3), np.int32), np.empty((2, 3), np.float32)),
            TypeError,
            r"out\[0\] \(indices\) must have dtype int64",
        ),
        (
            (np.empty((2, 3), np.int64), np.empty((2, 3), np.float64)),
            TypeError,
            r"out\[1\] \(scores\) must have dtype float32",
        ),
        ((np.empty((2, 3), np.int64),), TypeError, r"out with top_k must be a pair \(indices, scores\)"),
        (np.empty((2, 3), np.float32), TypeError, "out with top_k must be a pair"),
        (
            [np.empty((2, 3), np.int64), np.empty((2, 3), np.float32)],
            TypeError,
            "out with top_k must be a pair",
        ),
        (
            (np.empty((2, 3), np.int64), [[0.0] * 3] * 2),
            TypeError,
            r"out\[1\] \(scores\) must be a numpy.ndarray",
        ),
        ((np.empty((3, 2), np.int64).T, np.empty((2, 3), np.float32)), ValueError, "C-contiguous"),
        ((np.empty((2, 3), np.int64), np.empty((2, 3), np.float32)[::-1]), ValueError, "C-contiguous"),
    ],
)
def test_top_k_out_validation(out: object, exc: type, match: str) -> None:
    q, c = data(2, 20, 8)
    with pytest.raises(exc, match=match):
        kernels.cosine_similarity(q, c, top_k=3, out=out)


def test_top_k_out_read_only_or_overlapping_is_refused() -> None:
    q, c = data(2, 20, 8)
    idx, top = np.empty((2, 3), np.int64), np.empty((2, 3), np.float32)
    top.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.cosine_similarity(q, c, top_k=3, out=(idx, top))
    buf = np.zeros(6, np.int64)
    with pytest.raises(ValueError, match="must not overlap"):
        kernels.cosine_similarity(
            q, c, top_k=3, out=(buf.reshape(2, 3), buf.view(np.float32)[:6].reshape(2, 3))
        )
    c32 = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="must not overlap"):
        kernels.cosine_similarity(c32[0], c32, top_k=3, out=(np.empty(3, np.int64), c32[1]))


# ------------------------------------------------------------------ the GIL


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_metrics_and_filters_release_the_gil(metric: str) -> None:
    # With a long switch interval, the main thread runs while the worker is in
    # the kernel only if the kernel released the GIL.
    import sys

    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        pytest.skip("the GIL is disabled")
    q, c = data(4, 20_000, 256)
    mask = np.ones(20_000, bool)
    mask[::3] = False
    # until the main thread ran during a call (a busy machine may not schedule it at once)
    seen = counts_during([lambda: kernels.cosine_similarity(q, c, metric=metric, allow=mask, top_k=10)] * 100,
                         until_nonzero=True)
    assert seen and seen[-1] > 0


def test_threads_scoring_one_corpus_get_single_thread_bits() -> None:
    # Eight threads share one corpus, one mask and one id array (without the GIL
    # on a free-threaded build): every call gives the bits of a lone call.
    import threading

    q, c = data(6, 3000, 96, seed=11)
    mask = np.arange(3000) % 5 == 1
    ids = np.flatnonzero(mask)[::-1].copy()
    calls = [
        {"metric": "l2", "allow": mask, "top_k": 7},
        {"metric": "dot", "allow": ids},
        {"metric": "cosine", "normalized": True, "top_k": 4},
        {"metric": "l2"},
    ]
    want = [kernels.cosine_similarity(q, c, **kw) for kw in calls]
    errors: list[str] = []

    def work(t: int) -> None:
        for r in range(20):
            j = (t + r) % len(calls)
            got = kernels.cosine_similarity(q, c, **calls[j])
            pairs = zip(got, want[j], strict=True) if isinstance(got, tuple) else [(got, want[j])]
            for a, b in pairs:
                if a.shape != b.shape or a.tobytes() != b.tobytes():
                    errors.append(f"thread {t} call {j}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_allow_with_candidate_norms(isa: str, metric: str) -> None:
    q, c = data(3, 120, 20, seed=5)
    norms = np.linalg.norm(c.astype(np.float64), axis=1) * 1.5
    full = kernels.cosine_similarity(q, c, metric=metric, candidate_norms=norms)
    ids = np.array([100, 3, 4, 5, 77])
    exact(kernels.cosine_similarity(q, c, metric=metric, candidate_norms=norms, allow=ids), full[:, ids])
    exact(kernels.cosine_similarity(q[0], c, metric=metric, candidate_norms=norms, allow=ids), full[0, ids])
    if metric == "l2":  # |c|^2 taken as norms^2
        q64, c64 = q.astype(np.float64), c.astype(np.float64)
        want = (q64**2).sum(1)[:, None] + norms[None, :] ** 2 - 2 * q64 @ c64.T
        assert np.all(np.abs(full - want) <= metric_tolerance(q, c * 1.5))


def test_allow_leaves_the_callers_arrays_unchanged() -> None:
    q, c = data(1, 30, 8)
    mask = np.arange(30) % 4 == 0
    ids = np.array([9, 2, 20])
    before_m, before_i = mask.copy(), ids.copy()
    kernels.cosine_similarity(q[0], c, allow=mask, top_k=3)
    kernels.cosine_similarity(q[0], c, allow=ids, top_k=3)
    np.testing.assert_array_equal(mask, before_m)
    np.testing.assert_array_equal(ids, before_i)
