"""cosine_similarity: the batched form, half-precision candidates, candidate_norms, loop orders.

The batched form must give, row by row, the bits of the single-query form (the
kernels share one row arithmetic); every dtype pair must agree with a float64
reference; each instruction set the CPU has is forced in turn.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

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
