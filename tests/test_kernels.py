"""Kernels against the NumPy reference (tlalloc.kernels_reference), on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tlalloc
from tlalloc import _tlalloc, kernels
from tlalloc import kernels_reference as ref

STRATEGIES = ["thread", "shared", "malloc"]
FLOATS = [np.float16, np.float32, np.float64]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Values that are 0 or at least 1e-3 in magnitude: no float32 underflow in squares.
values = st.integers(-(10**6), 10**6).map(lambda i: i / 1000.0)


@st.composite
def cosine_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 30))
    d = draw(st.integers(0, 24))
    dtype = draw(st.sampled_from(FLOATS))
    q = np.array(draw(st.lists(values, min_size=d, max_size=d)), dtype=dtype)
    c = np.array(draw(st.lists(values, min_size=n * d, max_size=n * d)), dtype=dtype)
    c = c.reshape(n, d)
    if n and d:
        for _ in range(draw(st.integers(0, 3))):  # zero, NaN, Inf rows and copies
            i = draw(st.integers(0, n - 1))
            kind = draw(st.sampled_from(["zero", "nan", "inf", "-inf", "copy", "query"]))
            if kind == "zero":
                c[i] = 0
            elif kind == "copy":
                c[i] = c[draw(st.integers(0, n - 1))]
            elif kind == "query":
                c[i] = q
            else:
                c[i, draw(st.integers(0, d - 1))] = float(kind)
    layout = draw(st.sampled_from(["c", "fortran", "strided", "reversed"]))
    if layout == "fortran":
        c = np.asfortranarray(c)
    elif layout == "strided":
        big = np.zeros((n, 2 * d + 1), dtype)
        big[:, 1::2] = c
        c = big[:, 1::2]
        qq = np.zeros(2 * d, dtype)
        qq[::2] = q
        q = qq[::2]
    elif layout == "reversed":
        c = c[::-1].copy()[::-1]
    if draw(st.booleans()) and dtype != np.float64:
        q = q.astype(np.float64)  # mixed precision: float64 work
    return q, c


def _expected_cos(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return ref.cosine_similarity(q.astype(np.float64), c.astype(np.float64))


@SETTINGS
@given(cosine_inputs())
def test_cosine_matches_reference(inputs: tuple[np.ndarray, np.ndarray]) -> None:
    q, c = inputs
    got = kernels.cosine_similarity(q, c)
    assert got.dtype == np.float32 and got.shape == (c.shape[0],)
    np.testing.assert_allclose(got, _expected_cos(q, c), rtol=0, atol=2e-5)
    assert np.all(np.abs(got) <= 1)


@SETTINGS
@given(cosine_inputs(), st.integers(0, 40))
def test_cosine_top_k_is_the_stable_ranking(inputs: tuple[np.ndarray, np.ndarray], k: int) -> None:
    q, c = inputs
    full = kernels.cosine_similarity(q, c)
    idx, scores = kernels.cosine_similarity(q, c, top_k=k)
    want = np.argsort(-full, kind="stable")[: min(k, c.shape[0])]
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(scores, full[want])


def test_cosine_every_isa_and_strategy(isa: str) -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal(77).astype(np.float32)
    c = rng.standard_normal((103, 77)).astype(np.float32)
    c[5] = 0
    c[6, 3] = np.nan
    c[7, 0] = np.inf
    c[8] = q
    c[9] = -q
    want = _expected_cos(q, c)
    results = [kernels.cosine_similarity(q, c, _scratch=s) for s in STRATEGIES]
    for r in results:
        np.testing.assert_array_equal(r, results[0])
        np.testing.assert_allclose(r, want, atol=2e-6)
    assert results[0][8] == 1.0 and results[0][9] == -1.0
    assert results[0][5] == results[0][6] == results[0][7] == 0.0


def test_cosine_ties_go_to_the_lower_index() -> None:
    c = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]], np.float32)
    idx, scores = kernels.cosine_similarity(np.array([1.0, 0.0], np.float32), c, top_k=4)
    assert idx.tolist() == [0, 2, 3, 1]
    assert scores.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_cosine_edge_sizes() -> None:
    q = np.ones(4, np.float32)
    assert kernels.cosine_similarity(q, np.zeros((0, 4), np.float32)).shape == (0,)
    idx, sc = kernels.cosine_similarity(q, np.zeros((0, 4), np.float32), top_k=3)
    assert idx.shape == sc.shape == (0,)
    idx, sc = kernels.cosine_similarity(q, np.eye(4, dtype=np.float32), top_k=10)
    assert idx.tolist() == [0, 1, 2, 3]
    assert kernels.cosine_similarity(q, np.eye(4), top_k=0)[0].shape == (0,)
    assert kernels.cosine_similarity(np.zeros(0), np.zeros((3, 0))).tolist() == [0, 0, 0]
    assert kernels.cosine_similarity(np.zeros(4), np.eye(4)).tolist() == [0, 0, 0, 0]
    assert kernels.cosine_similarity([1.0, 0.0], [[1.0, 0.0]]).tolist() == [1.0]  # lists
    out = np.full(4, 7.0, np.float32)
    assert kernels.cosine_similarity(q, np.eye(4), out=out) is out
    assert out.tolist() == [0.5] * 4
    strided = np.full(8, 7.0, np.float32)
    kernels.cosine_similarity(q, np.eye(4), out=strided[::2])
    assert strided.tolist() == [0.5, 7.0] * 4


def test_cosine_longdouble_and_byteswapped() -> None:
    q = np.array([1.0, 2.0], np.longdouble)
    c = np.array([[1.0, 2.0], [2.0, -1.0]], dtype=">f4")
    assert kernels.cosine_similarity(q, c).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"query": np.ones(3, np.int32)}, TypeError, "queries must have a floating-point dtype"),
        ({"query": np.ones(3, complex)}, TypeError, "queries"),
        ({"candidates": np.ones((2, 3), bool)}, TypeError, "candidates"),
        ({"query": np.ones((1, 1, 3))}, ValueError, "queries must be 1-dimensional"),
        ({"candidates": np.ones(3)}, ValueError, "candidates must be 2-dimensional"),
        ({"candidates": np.ones((2, 4))}, ValueError, r"shape \(n, 3\)"),
        ({"top_k": -1}, ValueError, "top_k must be >= 0"),
        ({"top_k": 1.5}, TypeError, "top_k must be an int"),
        ({"top_k": True}, TypeError, "top_k must be an int"),
        ({"out": np.zeros(2, np.float64)}, TypeError, "out must have dtype float32"),
        ({"out": np.zeros(3, np.float32)}, ValueError, r"out must have shape \(2,\)"),
        ({"out": [0.0, 0.0]}, TypeError, "out must be a numpy.ndarray"),
        ({"out": np.zeros(2, np.float32), "top_k": 1}, TypeError, "out with top_k must be a pair"),
        ({"_scratch": "mmap"}, ValueError, "_scratch must be one of"),
    ],
)
def test_cosine_bad_input(kwargs: dict, exc: type, match: str) -> None:
    args = {"query": np.ones(3, np.float32), "candidates": np.ones((2, 3), np.float32)}
    args.update(kwargs)
    snapshot = {k: np.array(v, copy=True) for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(exc, match=match):
        kernels.cosine_similarity(args.pop("query"), args.pop("candidates"), **args)
    for k, v in snapshot.items():
        np.testing.assert_array_equal(kwargs.get(k, v), v)


def test_cosine_out_overlapping_input_is_refused() -> None:
    c = np.ones((4, 4), np.float32)
    before = c.copy()
    with pytest.raises(ValueError, match="overlap"):
        kernels.cosine_similarity(np.ones(4, np.float32), c, out=c[0])
    with pytest.raises(ValueError, match="overlap"):
        kernels.cosine_similarity(np.ones(4, np.float32), c, out=c[::-1, 2])  # reversed column
    np.testing.assert_array_equal(c, before)
    buf = np.ones(12, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        kernels.cosine_similarity(buf[4:8], np.eye(4, dtype=np.float32), out=buf[6:10])
    assert buf.tolist() == [1.0] * 12
    out = buf[8:12]  # adjacent, not overlapping: accepted
    kernels.cosine_similarity(buf[:4], np.eye(4, dtype=np.float32), out=out)
    assert buf[:8].tolist() == [1.0] * 8 and out.tolist() == [0.5] * 4


def test_cosine_readonly_out() -> None:
    out = np.zeros(2, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.cosine_similarity(np.ones(3), np.ones((2, 3)), out=out)


# ------------------------------------------------------------------------------- spread


@st.composite
def graphs(draw: st.DrawFn, max_n: int = 40) -> tuple:
    n = draw(st.integers(1, max_n))
    rows = []
    for u in range(n):
        deg = draw(st.integers(0, 5))
        targets = draw(st.lists(st.integers(0, n - 1), min_size=deg, max_size=deg))
        if draw(st.integers(0, 9)) == 0:
            targets.append(u)  # self-loop
        rows.append(targets)
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.array([v for r in rows for v in r], np.int64)
    wvals = st.sampled_from([0.25, 0.5, 1.0, 2.0, -0.5, 0.1, 0.3]) | st.floats(-2, 2)
    data = np.array(draw(st.lists(wvals, min_size=len(indices), max_size=len(indices))))
    itype = draw(st.sampled_from([np.int32, np.int64]))
    wtype = draw(st.sampled_from([np.float32, np.float64]))
    return indptr.astype(itype), indices.astype(itype), data.astype(wtype)


@SETTINGS
@given(
    graphs(),
    st.data(),
    st.sampled_from([0.0, 0.7, 0.1, 2.0]),
    st.sampled_from([0.01, 0.0, -1.0, 0.5, 1e9]) | st.floats(-1, 2),
    st.integers(0, 6),
)
def test_spread_matches_reference_exactly(
    g: tuple, data: st.DataObject, decay_rate: float, threshold: float, depth: int
) -> None:
    n = g[0].shape[0] - 1
    seeds = data.draw(st.lists(st.integers(0, n - 1), min_size=0, max_size=5))  # duplicates
    if data.draw(st.booleans()):
        activation: object = data.draw(st.sampled_from([1.0, 0.5, 3.0, -1.0]))
    else:
        activation = np.array(data.draw(st.lists(st.floats(-3, 3), min_size=len(seeds), max_size=len(seeds))))
    kw = dict(activation=activation, decay_rate=decay_rate, threshold=threshold, max_depth=depth)
    want = ref.spread_activation(g, seeds, **kw)
    k = data.draw(st.integers(0, n + 3))
    wi, wv = ref.spread_activation(g, seeds, top_k=k, **kw)
    for engine in ("auto", "dense", "sparse"):
        got = kernels.spread_activation(g, seeds, _engine=engine, **kw)
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got, want)
        gi, gv = kernels.spread_activation(g, seeds, top_k=k, _engine=engine, **kw)
        np.testing.assert_array_equal(gi, wi)
        np.testing.assert_array_equal(gv, wv)


def _random_graph(n: int, deg: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n * deg + 1, deg, dtype=np.int64)
    indices = rng.integers(0, n, n * deg).astype(np.int32)
    weights = rng.random(n * deg).astype(np.float32)
    return indptr, indices, weights


@pytest.mark.parametrize("n", [1000, 50_000])  # direct index, hash index
def test_spread_large_graphs_match_reference(n: int) -> None:
    g = _random_graph(n, 10)
    for seeds in ([0], [3, n - 1, 3], list(range(0, n, n // 7))):
        for strategy in STRATEGIES:
            got = kernels.spread_activation(g, seeds, threshold=0.005, _scratch=strategy)
            np.testing.assert_array_equal(got, ref.spread_activation(g, seeds, threshold=0.005))
        gi, gv = kernels.spread_activation(g, seeds, top_k=25)
        wi, wv = ref.spread_activation(g, seeds, top_k=25)
        np.testing.assert_array_equal(gi, wi)
        np.testing.assert_array_equal(gv, wv)


def test_spread_top_k_every_isa(isa: str) -> None:
    # The top-k scan is vectorised: every instruction set ranks exactly like the reference,
    # ties and zeros included.
    g = _random_graph(20_000, 4, seed=7)
    g[2][::3] = 0.5  # many equal weights: equal totals
    for engine in ("dense", "sparse"):
        for k in (1, 10, 300, 20_003):
            gi, gv = kernels.spread_activation(g, [0, 1], top_k=k, _engine=engine)
            wi, wv = ref.spread_activation(g, [0, 1], top_k=k)
            np.testing.assert_array_equal(gi, wi)
            np.testing.assert_array_equal(gv, wv)


def test_spread_special_graphs() -> None:
    # cycle 0 -> 1 -> 2 -> 0, self-loop on 3, isolated 4
    g = (np.array([0, 1, 2, 3, 4, 4]), np.array([1, 2, 0, 3]), np.array([0.5, 0.5, 0.5, 1.0]))
    for depth in range(6):
        for thr in (0.0, 0.01, 0.3, 100.0):
            want = ref.spread_activation(g, [0, 3, 4, 4], max_depth=depth, threshold=thr)
            for engine in ("dense", "sparse"):
                got = kernels.spread_activation(
                    g, [0, 3, 4, 4], max_depth=depth, threshold=thr, _engine=engine
                )
                np.testing.assert_array_equal(got, want)
    only_seeds = kernels.spread_activation(g, [1, 1, 4], max_depth=0)
    assert only_seeds.tolist() == [0.0, 2.0, 0.0, 0.0, 1.0]
    above = kernels.spread_activation(g, [0], threshold=1.5)  # threshold above every pulse
    assert above.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert kernels.spread_activation(g, []).tolist() == [0.0] * 5
    empty = (np.array([0]), np.array([], np.int32), np.array([], np.float32))
    assert kernels.spread_activation(empty, []).shape == (0,)
    for engine in ("dense", "sparse"):  # k > n: all n, zeros by id
        ids, vals = kernels.spread_activation(g, [4], top_k=10, _engine=engine)
        assert ids.tolist() == [4, 0, 1, 2, 3] and vals.tolist() == [1.0, 0, 0, 0, 0]


def test_spread_accepts_scipy_csr() -> None:
    sp = pytest.importorskip("scipy.sparse")
    indptr, indices, weights = _random_graph(300, 6, seed=3)
    a = sp.csr_array((weights, indices, indptr), shape=(300, 300))
    got = kernels.spread_activation(a, [1, 2])
    np.testing.assert_array_equal(got, kernels.spread_activation((indptr, indices, weights), [1, 2]))
    np.testing.assert_allclose(got, ref.spread_activation_scipy(a, [1, 2]), rtol=1e-6, atol=1e-7)
    m = sp.csr_matrix((weights, indices, indptr), shape=(300, 300))
    np.testing.assert_array_equal(kernels.spread_activation(m, [1, 2]), got)
    with pytest.raises(ValueError, match="CSR format"):
        kernels.spread_activation(a.tocsc(), [1])


def _g() -> tuple:
    return (np.array([0, 2, 3, 4]), np.array([1, 2, 0, 1]), np.array([1.0, 1.0, 1.0, 1.0]))


def _bad(i: int, value: object) -> tuple:
    g = list(_g())
    g[i] = value
    return tuple(g)


@pytest.mark.parametrize(
    "graph, seeds, kwargs, exc, match",
    [
        (_g(), [0, 3], {}, ValueError, r"seeds\[1\] = 3 is out of range for a graph of 3 nodes"),
        (_g(), [-1], {}, ValueError, r"seeds\[0\] = -1 is out of range"),
        (_g(), [0.5], {}, TypeError, "seeds must be node ids"),
        (_g(), [[0]], {}, ValueError, "seeds must be an int or a 1-dimensional"),
        (
            _bad(0, np.array([0, 3, 2, 4])),
            [0],
            {},
            ValueError,
            r"graph.indptr is not a valid row pointer at row 1: indptr\[1\] = 3, indptr\[2\] = 2",
        ),
        (_bad(0, np.array([0, 2, 3, 5])), [0], {}, ValueError, "must start at 0 and end at len"),
        (_bad(0, np.array([1, 2, 3, 4])), [0], {}, ValueError, "must start at 0"),
        (_bad(0, np.array([], np.int64)), [], {}, ValueError, "at least one element"),
        (_bad(0, np.zeros((2, 2), np.int64)), [0], {}, ValueError, "indptr must be 1-dimensional"),
        (_bad(0, np.array([0.0, 2, 3, 4])), [0], {}, TypeError, "indptr must have an integer dtype"),
        (
            _bad(1, np.array([1, 7, 0, 1])),
            [0],
            {},
            ValueError,
            r"graph.indices\[1\] = 7 is out of range for a graph of 3 nodes",
        ),
        (_bad(1, np.array([1, -2, 0, 1])), [0], {}, ValueError, r"graph.indices\[1\] = -2"),
        (
            _bad(2, np.array([1.0, np.nan, 1.0, 1.0])),
            [0],
            {},
            ValueError,
            r"graph.data\[1\] = nan is not finite",
        ),
        (_bad(2, np.array([1.0, 1.0, np.inf, 1.0])), [1], {}, ValueError, r"graph.data\[2\] = inf"),
        (_bad(2, np.array([1.0, 1.0])), [0], {}, ValueError, "graph.data must have the length"),
        (_bad(2, np.array(["a"] * 4)), [0], {}, TypeError, "graph.data must have a real numeric"),
        (_g(), [0], {"activation": np.nan}, ValueError, "activation must be finite"),
        (_g(), [0, 1], {"activation": [1.0, np.inf]}, ValueError, r"activation\[1\] = inf"),
        (_g(), [0, 1], {"activation": [1.0, 2.0, 3.0]}, ValueError, "one value per seed"),
        (_g(), [0], {"activation": "x"}, TypeError, "activation must be a real number"),
        (_g(), [0], {"decay_rate": -0.1}, ValueError, "decay_rate must be finite and >= 0"),
        (_g(), [0], {"decay_rate": "fast"}, TypeError, "decay_rate must be a real number"),
        (_g(), [0], {"threshold": math.nan}, ValueError, "threshold must not be NaN"),
        (_g(), [0], {"max_depth": -1}, ValueError, "max_depth must be >= 0"),
        (_g(), [0], {"max_depth": 2.0}, TypeError, "max_depth must be an int"),
        (_g(), [0], {"max_depth": None}, TypeError, "max_depth must be an int"),
        (_g(), [0], {"top_k": -3}, ValueError, "top_k must be >= 0"),
        (_g(), [0], {"max_depth": 10**30}, ValueError, "max_depth is out of range"),
        ([1, 2, 3], [0], {}, TypeError, "graph must be a CSR adjacency"),
        ((np.array([0]), np.array([])), [0], {}, ValueError, "must be \\(indptr, indices, weights\\)"),
    ],
)
@pytest.mark.parametrize("engine", ["dense", "sparse"])
def test_spread_bad_input(
    graph: object, seeds: object, kwargs: dict, exc: type, match: str, engine: str
) -> None:
    arrays = [np.array(a, copy=True) for a in graph] if isinstance(graph, tuple) else []
    with pytest.raises(exc, match=match):
        kernels.spread_activation(graph, seeds, _engine=engine, **kwargs)
    if isinstance(graph, tuple):
        for a, b in zip(graph, arrays, strict=True):
            np.testing.assert_array_equal(a, b)


def test_spread_validation_is_lazy_but_complete_where_it_matters() -> None:
    # A bad index in row 2, which seed 0 (0 -> 1 only, depth 1) never reaches.
    g = (np.array([0, 1, 1, 2]), np.array([1, 99]), np.array([1.0, 1.0]))
    got = kernels.spread_activation(g, [0], max_depth=1)
    assert got.tolist() == [1.0, pytest.approx(math.exp(-0.7), abs=1e-6), 0.0]
    with pytest.raises(ValueError, match=r"graph.indices\[1\] = 99"):
        kernels.spread_activation(g, [2], max_depth=1)


# -------------------------------------------------------------------------------- decay


@st.composite
def decay_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 70))
    sdtype = draw(st.sampled_from(FLOATS))
    s = np.array(draw(st.lists(st.floats(-100, 100, width=16), min_size=n, max_size=n)), sdtype)
    adtype = draw(
        st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint16, np.uint64, np.float16])
    )
    hi = {np.uint16: 60000, np.float16: 60000}.get(adtype, 10**7)
    a = np.array(draw(st.lists(st.integers(0, hi), min_size=n, max_size=n)), adtype)
    if n and draw(st.booleans()) and adtype in (np.float32, np.float64):
        a[draw(st.integers(0, n - 1))] = np.inf
    if draw(st.booleans()):
        s, a = s[::-1], a[::-1]
    return s, a


def _expected_decay(s: np.ndarray, a: np.ndarray, **kw: float | str) -> np.ndarray:
    s64 = s.astype(np.float64)
    a64 = a.astype(np.float32).astype(np.float64) if s.dtype != np.float64 else a.astype(np.float64)
    with np.errstate(all="ignore"):
        return ref.decay(s64, a64, **kw)  # type: ignore[arg-type]


@SETTINGS
@given(
    decay_inputs(),
    st.sampled_from(
        [
            {"tau": 86400.0},
            {"tau": 1.0},
            {"half_life": 3600.0},
            {"model": "power", "tau": 600.0, "alpha": 0.5},
            {"model": "power", "tau": 10.0, "alpha": 2.0},
            {"model": "power", "tau": 10.0, "alpha": 0.0},
        ]
    ),
)
def test_decay_matches_reference(inputs: tuple[np.ndarray, np.ndarray], kw: dict) -> None:
    s, a = inputs
    got = kernels.decay(s, a, **kw)
    want = _expected_decay(s, a, **kw)
    assert got.dtype == (np.float64 if s.dtype == np.float64 else np.float32)
    rtol = 1e-12 if s.dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-37)


def test_decay_every_isa(isa: str) -> None:
    rng = np.random.default_rng(2)
    s = rng.random(1001).astype(np.float32) * 10
    a = (rng.random(1001) * 1e6).astype(np.float32)
    a[:3] = [0, np.inf, 1e30]
    for kw in ({"tau": 86400.0}, {"half_life": 3600.0}, {"model": "power", "tau": 600.0}):
        results = [kernels.decay(s, a, _scratch=st_, **kw) for st_ in STRATEGIES]  # type: ignore[arg-type]
        for r in results:
            np.testing.assert_array_equal(r, results[0])
        np.testing.assert_allclose(results[0], _expected_decay(s, a, **kw), rtol=2e-6, atol=1e-37)  # type: ignore[arg-type]


def test_decay_special_ages() -> None:
    s = np.array([1.0, 2.0, 3.0], np.float32)
    assert kernels.decay(s, np.zeros(3)).tolist() == s.tolist()  # zero ages: unchanged
    assert kernels.decay(s, np.zeros(3, np.int8), model="power").tolist() == s.tolist()
    huge = np.array([1e30, np.inf, 2**62], np.float64)
    assert kernels.decay(s, huge).tolist() == [0.0, 0.0, 0.0]
    assert kernels.decay(s, huge, half_life=1.0).tolist() == [0.0, 0.0, 0.0]
    p = kernels.decay(s, huge, model="power")
    assert p[1] == 0.0 and 0 < p[0] < 1e-12
    assert kernels.decay(s, huge, model="power", alpha=0.0).tolist() == s.tolist()
    ints = kernels.decay(s, np.array([0, 86400, 172800], np.int64))
    np.testing.assert_allclose(ints, [1.0, 2 / math.e, 3 / math.e**2], rtol=1e-6)
    uints = kernels.decay(s, np.array([0, 86400, 172800], np.uint64))
    np.testing.assert_array_equal(uints, ints)


def test_decay_in_place_out_and_shapes() -> None:
    rng = np.random.default_rng(5)
    s = rng.random(5000).astype(np.float32)
    a = (rng.random(5000) * 1e5).astype(np.float32)
    want = kernels.decay(s, a)
    t = s.copy()
    assert kernels.decay(t, a, out=t) is t
    np.testing.assert_array_equal(t, want)
    out = np.empty_like(s)
    assert kernels.decay(s, a, out=out) is out
    np.testing.assert_array_equal(out, want)
    # 2-D, non-contiguous, broadcasting: the iterator path gives the same values
    s2 = s.reshape(50, 100).T
    a2 = a.reshape(50, 100).T
    np.testing.assert_array_equal(kernels.decay(s2, a2), want.reshape(50, 100).T)
    col = kernels.decay(s2, np.float32(3600.0))
    np.testing.assert_array_equal(col, kernels.decay(s, np.full(5000, 3600.0, np.float32)).reshape(50, 100).T)
    t2 = s.copy().reshape(50, 100)
    kernels.decay(t2, a.reshape(50, 100), out=t2)
    np.testing.assert_array_equal(t2.ravel(), want)
    # out aliasing ages with another dtype layout: copied, still correct
    af = a.copy()
    kernels.decay(s, af, out=af)
    np.testing.assert_array_equal(af, want)
    # out is strengths but ages overlap it shifted by one element: not one pass
    buf = (rng.random(5001) * 1e5).astype(np.float32)
    want3 = kernels.decay(buf[1:].copy(), buf[:5000].copy())
    kernels.decay(buf[1:], buf[:5000], out=buf[1:])
    np.testing.assert_array_equal(buf[1:], want3)
    assert kernels.decay(np.float32(2.0), 0.0).tolist() == 2.0
    assert kernels.decay(np.zeros(0, np.float32), np.zeros(0)).shape == (0,)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"ages": np.array([1.0, -2.0, 3.0])}, ValueError, r"ages\[1\] = -2.0 is negative or NaN"),
        ({"ages": np.array([1.0, 2.0, np.nan])}, ValueError, r"ages\[2\] = nan"),
        ({"ages": np.array([5, -1, 3])}, ValueError, r"ages\[1\] = -1"),
        ({"ages": np.array([[1.0, -1.0, 0.0]])}, ValueError, "ages contains -1.0"),
        ({"tau": 10.0, "half_life": 5.0}, TypeError, "either tau or half_life"),
        ({"half_life": 5.0, "model": "power"}, ValueError, "exponential model only"),
        ({"model": "linear"}, ValueError, "model must be"),
        ({"tau": 0.0}, ValueError, "tau must be finite and > 0"),
        ({"tau": -5}, ValueError, "tau must be finite and > 0"),
        ({"tau": math.inf}, ValueError, "tau must be finite"),
        ({"tau": "1d"}, TypeError, "tau must be a real number"),
        ({"tau": True}, TypeError, "tau must be a real number"),
        ({"half_life": math.nan}, ValueError, "half_life must be finite"),
        ({"alpha": math.nan, "model": "power"}, ValueError, "alpha must be finite"),
        ({"strengths": np.array([1, 2, 3])}, TypeError, "strengths must have a floating-point"),
        ({"ages": np.array([1, 2, 3], complex)}, TypeError, "ages must have an integer or floating"),
        ({"ages": np.array([True, False, True])}, TypeError, "ages must have an integer or floating"),
        ({"out": np.zeros(3, np.float64)}, TypeError, "out must have dtype float32"),
        ({"out": np.zeros(4, np.float32)}, ValueError, "matching shapes"),
        ({"ages": np.zeros(4)}, ValueError, "do not broadcast"),
        ({"_scratch": "arena"}, ValueError, "_scratch must be one of"),
    ],
)
def test_decay_bad_input_leaves_arrays_untouched(kwargs: dict, exc: type, match: str) -> None:
    strengths = kwargs.pop("strengths", np.array([1.0, 2.0, 3.0], np.float32))
    ages = kwargs.pop("ages", np.array([1.0, 2.0, 3.0]))
    before_s, before_a = strengths.copy(), ages.copy()
    out = kwargs.get("out")
    before_out = None if out is None else out.copy()
    with pytest.raises(exc, match=match):
        kernels.decay(strengths, ages, **kwargs)
    np.testing.assert_array_equal(strengths, before_s)
    np.testing.assert_array_equal(ages, before_a)
    if out is not None:
        np.testing.assert_array_equal(out, before_out)


def test_decay_bad_age_in_place_writes_nothing() -> None:
    s = np.arange(1, 3001, dtype=np.float32)
    a = np.zeros(3000, np.float32)
    a[2999] = -1
    before = s.copy()
    with pytest.raises(ValueError, match=r"ages\[2999\]"):
        kernels.decay(s, a, out=s)
    np.testing.assert_array_equal(s, before)


# ----------------------------------------------------------------------------- strategies


def test_scratch_strategy_is_per_thread_and_restored() -> None:
    import threading

    seen: list[str] = []
    with kernels.scratch_strategy("shared"):
        t = threading.Thread(target=lambda: seen.append(kernels.get_scratch_strategy()))
        t.start()
        t.join()
        assert kernels.get_scratch_strategy() == "shared"
    assert seen == ["thread"]
    assert kernels.get_scratch_strategy() == "thread"
    with pytest.raises(ValueError):
        with kernels.scratch_strategy("nope"):  # type: ignore[arg-type]
            pass


def test_shared_strategy_arena_is_reset_after_use() -> None:
    g = _random_graph(1000, 10)
    kernels.spread_activation(g, [0], _scratch="shared")
    st_ = _tlalloc._shared_scratch_stats()
    assert st_["used_bytes"] == 0 and st_["num_allocations"] > 0 and st_["num_resets"] >= 1


def test_kernels_count_overflows_instead_of_failing() -> None:
    """A thread whose arena is tiny still gets right answers; the overflows are counted."""
    import threading

    old = tlalloc.get_config()
    tlalloc.configure(arena_size="16KiB")
    result: dict[str, object] = {}

    def work() -> None:
        rng = np.random.default_rng(0)
        q = rng.standard_normal(3000)
        c = rng.standard_normal((40, 3000))  # float64 blocks of 64 KiB: do not fit
        result["cos"] = kernels.cosine_similarity(q, c)
        result["spread"] = kernels.spread_activation(_random_graph(50_000, 10), [0, 1, 2])
        result["stats"] = tlalloc.thread_arena().stats()

    try:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    finally:
        tlalloc.configure(**old.as_dict())
    rng = np.random.default_rng(0)
    q = rng.standard_normal(3000)
    c = rng.standard_normal((40, 3000))
    np.testing.assert_array_equal(result["cos"], kernels.cosine_similarity(q, c))
    np.testing.assert_array_equal(
        result["spread"], ref.spread_activation(_random_graph(50_000, 10), [0, 1, 2])
    )
    stats = result["stats"]
    assert stats.num_overflows > 0 and stats.fallback_bytes > 0  # type: ignore[attr-defined]
    assert stats.used_bytes == 0  # type: ignore[attr-defined]


def test_decay_of_the_largest_strengths_far_out_every_isa(isa: str) -> None:
    # Every finite float32 strength, decayed by up to 400 halvings: the exact
    # result rounded to float32 (0 once it is below half the smallest
    # subnormal). Every path must reach the far ages: one that stops at 2^-252
    # returns up to 2^-123 for a strength above 2^102.
    s = np.array([3.4e38, 2.0**127, 2.0**110, 2.0**102, 1e30, 1.0, 1e-30, 1e-45], np.float32)
    ages = np.arange(0, 401, dtype=np.float32)
    strengths = np.repeat(s, len(ages))
    a = np.tile(ages, len(s))
    got = kernels.decay(strengths, a, half_life=1.0)
    want = (strengths.astype(np.float64) * 2.0 ** (-a.astype(np.float64))).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=0)
