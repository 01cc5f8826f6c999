"""spread_activation_many: one result per seed set, each equal to a single call's bit for bit."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import counts_during
from tlalloc import kernels

ENGINES = ["auto", "dense", "sparse", "indexed"]


def _graph(n: int, deg: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n * deg + 1, deg, dtype=np.int64)
    indices = rng.integers(0, n, n * deg).astype(np.int32)
    weights = rng.random(n * deg).astype(np.float32)
    return indptr, indices, weights


def _sets(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    sets = [rng.integers(0, n, int(rng.integers(1, 6))).tolist() for _ in range(9)]
    sets.insert(3, [])  # an empty set between others
    sets.append([sets[0][0]] * 3)  # duplicates add up
    sets.append(list(range(0, n, max(1, n // 40))))  # a large set after small ones
    sets.append(sets[1])  # a set seen before, after the state has grown
    return sets


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32)


@pytest.mark.parametrize("n", [300, 20_000])  # dense engine's size, sparse engine's size
@pytest.mark.parametrize("engine", ENGINES)
def test_each_row_equals_the_single_call(n: int, engine: str) -> None:
    # against the single call with its default engine: every engine of the
    # many-set call gives the same bits
    g = _graph(n, 8, seed=n)
    sets = _sets(n, seed=1)
    kw = dict(decay_rate=0.4, threshold=0.002, max_depth=5)
    got = kernels.spread_activation_many(g, sets, _engine=engine, **kw)
    assert got.dtype == np.float32 and got.shape == (len(sets), n)
    for i, s in enumerate(sets):
        want = kernels.spread_activation(g, s, **kw)
        np.testing.assert_array_equal(_bits(got[i]), _bits(want))
    for k in (0, 1, 10, n + 5):
        gi, gv = kernels.spread_activation_many(g, sets, top_k=k, _engine=engine, **kw)
        assert gi.shape == gv.shape == (len(sets), min(k, n))
        assert gi.dtype == np.int64 and gv.dtype == np.float32
        for i, s in enumerate(sets):
            wi, wv = kernels.spread_activation(g, s, top_k=k, **kw)
            np.testing.assert_array_equal(gi[i], wi)
            np.testing.assert_array_equal(_bits(gv[i]), _bits(wv))


def test_engines_agree_and_forms_agree() -> None:
    g = _graph(6000, 6, seed=3)
    sets = _sets(6000, seed=4)
    act = [np.linspace(-1.0, 2.0, len(s)) for s in sets]
    base = kernels.spread_activation_many(g, sets, activation=act)
    for engine in ("dense", "sparse", "indexed"):
        got = kernels.spread_activation_many(g, sets, activation=act, _engine=engine)
        np.testing.assert_array_equal(got, base)
    # the CSR-like pair: flat ids and set boundaries, activation parallel to the ids
    ptr = np.cumsum([0] + [len(s) for s in sets])
    flat = np.concatenate([np.asarray(s, np.int64) for s in sets])
    got = kernels.spread_activation_many(g, flat, set_indptr=ptr, activation=np.concatenate(act))
    np.testing.assert_array_equal(got, base)
    for i, s in enumerate(sets):
        np.testing.assert_array_equal(base[i], kernels.spread_activation(g, s, activation=act[i]))
    # a 2-D array: one row per set
    rows = np.array([[1, 2], [5, 5], [7, 0]], np.int32)
    got = kernels.spread_activation_many(g, rows, top_k=4)
    for i in range(3):
        wi, wv = kernels.spread_activation(g, rows[i], top_k=4)
        np.testing.assert_array_equal(got[0][i], wi)
        np.testing.assert_array_equal(got[1][i], wv)


def _hub_graph(n: int, dtypes: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes 0..99 without edges; the others 8 edges each, to targets drawn with
    probability ~ 1 / rank (hubs that many rows share)."""
    rng = np.random.default_rng(11)
    deg = np.where(np.arange(n) < 100, 0, 8)
    indptr = np.concatenate([[0], np.cumsum(deg)]).astype(dtypes[0])
    p = 1.0 / np.arange(1, n + 1)
    indices = rng.permutation(n)[rng.choice(n, int(indptr[-1]), p=p / p.sum())].astype(dtypes[1])
    weights = rng.random(len(indices)).astype(dtypes[2])
    return indptr, indices, weights


@pytest.mark.parametrize("dtypes", [("int64", "int32", "float32"), ("int32", "int64", "float64")])
@pytest.mark.parametrize("params", [
    dict(decay_rate=0.7, threshold=0.01, max_depth=4),
    dict(decay_rate=0.0, threshold=0.0, max_depth=3),
    dict(decay_rate=0.3, threshold=-1.0, max_depth=2),
    dict(decay_rate=0.5, threshold=0.05, max_depth=0),
])
def test_sets_before_and_after_the_state_moves_to_the_direct_map(
    dtypes: tuple[str, str, str], params: dict[str, float]
) -> None:
    # The default engine of a many-set call starts with a hash table and moves
    # to an array of n slot numbers once a set has touched n / 16 nodes: tiny
    # sets (isolated nodes) before that, big ones that cause it mid-set, tiny
    # and repeated ones after it, each equal to its single call.
    n = 12_000
    g = _hub_graph(n, dtypes)
    rng = np.random.default_rng(12)
    sets = [[0], [1, 2, 1], [], rng.integers(100, n, 3).tolist(), [5], rng.integers(0, n, 300).tolist(),
            [7, 7], [0], rng.integers(100, n, 3).tolist()]
    act = [rng.uniform(-0.5, 2.0, len(s)) for s in sets]
    got = kernels.spread_activation_many(g, sets, activation=act, **params)
    ids, vals = kernels.spread_activation_many(g, sets, activation=act, top_k=25, **params)
    touched = []
    for i, s in enumerate(sets):
        want = kernels.spread_activation(g, s, activation=act[i], **params)
        np.testing.assert_array_equal(_bits(got[i]), _bits(want))
        wi, wv = kernels.spread_activation(g, s, activation=act[i], top_k=25, **params)
        np.testing.assert_array_equal(ids[i], wi)
        np.testing.assert_array_equal(_bits(vals[i]), _bits(wv))
        touched.append(int(np.count_nonzero(want)))
    assert touched[:3] == [1, 2, 0]
    if params["max_depth"] >= 3:
        assert max(touched) >= n // 16  # the move did happen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4097, 9000),
    deg=st.integers(0, 12),
    wide=st.booleans(),
    sets=st.lists(st.lists(st.integers(0, 4096), max_size=40), max_size=6),
    decay=st.floats(0.0, 2.0),
    thr=st.floats(-0.1, 0.2),
    depth=st.integers(0, 6),
    engine=st.sampled_from(ENGINES),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_graphs_sets_and_parameters(n: int, deg: int, wide: bool, sets: list[list[int]], decay: float,
                                           thr: float, depth: int, engine: str, seed: int) -> None:
    # Any graph above the dense engine's size, any sets (empty, repeated seeds,
    # hundreds of them), any parameters: each row is the single call's.
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(rng.integers(0, 2 * deg + 1, n))]).astype(np.int64)
    indices = rng.integers(0, n, int(indptr[-1]))
    weights = rng.random(len(indices))
    g = (indptr, indices.astype(np.int64 if wide else np.int32),
         weights.astype(np.float64 if wide else np.float32))
    sets = sets + [rng.integers(0, n, 300).tolist()] if seed % 3 == 0 else sets  # a large set
    act = [rng.uniform(-1.0, 2.0, len(s)) for s in sets]
    kw = dict(decay_rate=decay, threshold=thr, max_depth=depth)
    got = kernels.spread_activation_many(g, sets, activation=act, _engine=engine, **kw)
    ids, vals = kernels.spread_activation_many(g, sets, activation=act, top_k=9, _engine=engine, **kw)
    assert got.shape == (len(sets), n) and ids.shape == (len(sets), 9)
    for i, s in enumerate(sets):
        want = kernels.spread_activation(g, s, activation=act[i], **kw)
        np.testing.assert_array_equal(_bits(got[i]), _bits(want))
        wi, wv = kernels.spread_activation(g, s, activation=act[i], top_k=9, **kw)
        np.testing.assert_array_equal(ids[i], wi)
        np.testing.assert_array_equal(_bits(vals[i]), _bits(wv))


def test_empty_sets_and_no_sets() -> None:
    g = _graph(5000, 4, seed=5)
    out = kernels.spread_activation_many(g, [[], []])
    assert out.shape == (2, 5000) and not out.any()
    ids, vals = kernels.spread_activation_many(g, [[]], top_k=3)
    assert ids.tolist() == [[0, 1, 2]] and vals.tolist() == [[0.0, 0.0, 0.0]]
    assert kernels.spread_activation_many(g, []).shape == (0, 5000)
    ids, vals = kernels.spread_activation_many(g, [], top_k=3)
    assert ids.shape == vals.shape == (0, 3)
    empty = (np.array([0]), np.array([], np.int32), np.array([], np.float32))
    assert kernels.spread_activation_many(empty, [[], []]).shape == (2, 0)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bad_seed_names_its_set_and_position(engine: str) -> None:
    g = _graph(5000, 4, seed=6)
    msg = r"seed set 2: seeds\[1\] = 5000 is out of range for a graph of 5000 nodes"
    with pytest.raises(ValueError, match=msg):
        kernels.spread_activation_many(g, [[0], [1, 2], [3, 5000]], _engine=engine)
    with pytest.raises(ValueError, match=r"seed set 0: seeds\[0\] = -1 is out of range"):
        kernels.spread_activation_many(g, [[-1], [1]], top_k=2, _engine=engine)
    ptr = np.array([0, 1, 3])
    with pytest.raises(ValueError, match=r"seed set 1: seeds\[0\] = 9999"):
        kernels.spread_activation_many(g, np.array([0, 9999, 1]), set_indptr=ptr, _engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bad_edge_that_only_a_later_set_reaches_raises_as_the_single_call(engine: str) -> None:
    n = 6000
    for fault, msg in (("index", r"graph.indices\[\d+\] = 6000 is out of range"),
                       ("weight", r"graph.data\[\d+\] = nan is not finite")):
        indptr, indices, weights = _graph(n, 4, seed=13)
        edge = int(indptr[4321])  # node 4321's first edge
        if fault == "index":
            indices[edge] = n
        else:
            weights[edge] = np.nan
        g = (indptr, indices, weights)
        kernels.spread_activation_many(g, [[1], [2]], _engine=engine)  # 4321 not reached: no error
        with pytest.raises(ValueError, match=msg) as many:
            kernels.spread_activation_many(g, [[1], [2], [4321]], _engine=engine)
        with pytest.raises(ValueError) as single:
            kernels.spread_activation(g, [4321])
        assert str(many.value) == str(single.value)


def test_bad_arguments() -> None:
    g = _graph(100, 3, seed=7)
    msg = r"set_indptr must start at 0 and end at len\(seed_ids\) = 3"
    with pytest.raises(ValueError, match=msg):
        kernels.spread_activation_many(g, np.array([0, 1, 2]), set_indptr=np.array([0, 2]))
    msg = r"set_indptr must be non-decreasing: set_indptr\[1\] = 3 > set_indptr\[2\] = 1"
    with pytest.raises(ValueError, match=msg):
        kernels.spread_activation_many(g, np.array([0, 1, 2]), set_indptr=np.array([0, 3, 1, 3]))
    with pytest.raises(TypeError, match=r"seed_sets\[1\] must hold node ids"):
        kernels.spread_activation_many(g, [[0], [0.5]])
    with pytest.raises(TypeError, match="seed_sets must be a sequence of seed sets"):
        kernels.spread_activation_many(g, 3)
    msg = r"activation\[1\] must have one value per seed of seed_sets\[1\] \(2\)"
    with pytest.raises(ValueError, match=msg):
        kernels.spread_activation_many(g, [[0], [1, 2]], activation=[[1.0], [1.0]])
    msg = r"activation must be a number or one sequence per seed set \(2\), got 1"
    with pytest.raises(ValueError, match=msg):
        kernels.spread_activation_many(g, [[0], [1, 2]], activation=[[1.0]])
    with pytest.raises(ValueError, match=r"activation\[2\] = nan is not finite"):
        kernels.spread_activation_many(g, [[0], [1, 2]], activation=[[1.0], [1.0, np.nan]])
    with pytest.raises(ValueError, match="decay_rate must be finite and >= 0"):
        kernels.spread_activation_many(g, [[0]], decay_rate=-1.0)
    with pytest.raises(ValueError, match="_engine must be"):
        kernels.spread_activation_many(g, [[0]], _engine="fast")  # type: ignore[arg-type]
    bad = (np.array([0, 3, 2, 3]), np.array([1, 2, 0]), np.ones(3))  # row 1 out of order, reached from 2
    msg = r"graph.indptr is not a valid row pointer at row 1: indptr\[1\] = 3, indptr\[2\] = 2"
    with pytest.raises(ValueError, match=msg):
        kernels.spread_activation_many(bad, [[2], [0]])


@pytest.mark.parametrize("engine", ["sparse", "indexed"])
def test_the_gil_is_released(engine: str) -> None:
    # With a long switch interval the main thread only runs while the worker is
    # inside the call if the call releases the GIL.
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        pytest.skip("the GIL is disabled")
    n = 4000
    ring = (np.arange(n + 1), (np.arange(n) + 1) % n, np.ones(n))  # every node spreads every step
    seen = counts_during([lambda: kernels.spread_activation_many(
        ring, [np.arange(n)] * 4, decay_rate=0.0, threshold=0.0, max_depth=3000, _engine=engine)])
    assert seen and seen[0] > 0


def test_threads_share_a_graph() -> None:
    g = _graph(30_000, 6, seed=8)
    sets = _sets(30_000, seed=9)
    want = kernels.spread_activation_many(g, sets, top_k=7)
    for i, s in enumerate(sets[:4]):
        wi, wv = kernels.spread_activation(g, s, top_k=7)
        np.testing.assert_array_equal(want[0][i], wi)
        np.testing.assert_array_equal(want[1][i], wv)
    results: list[object] = [None] * 4

    def work(i: int) -> None:
        results[i] = kernels.spread_activation_many(g, sets, top_k=7)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert isinstance(r, tuple)
        np.testing.assert_array_equal(r[0], want[0])
        np.testing.assert_array_equal(r[1], want[1])


_SIGINT_CHILD = """
import os, signal, sys, threading
import numpy as np
from tlalloc import kernels
n = 2000
ring = (np.arange(n + 1), (np.arange(n) + 1) % n, np.ones(n))
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    kernels.spread_activation_many(ring, [np.arange(n)] * 8, decay_rate=0.0, threshold=0.0,
                                   max_depth=kernels.MAX_DEPTH, _engine=sys.argv[1])
except KeyboardInterrupt:
    print("interrupted")
else:
    print("finished")
"""


@pytest.mark.parametrize("engine", ["dense", "sparse", "indexed"])
def test_ctrl_c_stops_a_long_call(engine: str) -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-c", _SIGINT_CHILD, engine], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip() == "interrupted", (r.stdout, r.stderr[-2000:])


def test_a_signal_handler_that_returns_lets_the_call_finish() -> None:
    import os
    import signal

    n = 2000
    ring = (np.arange(n + 1), (np.arange(n) + 1) % n, np.ones(n))
    sets = [np.arange(n), [0], []]
    kw = dict(decay_rate=0.0, threshold=0.0, max_depth=20000)
    want = kernels.spread_activation_many(ring, sets, **kw)
    seen: list[int] = []
    old = signal.signal(signal.SIGINT, lambda sig, frame: seen.append(sig))
    try:
        t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
        t.start()
        got = kernels.spread_activation_many(ring, sets, **kw)
        t.join()
    finally:
        signal.signal(signal.SIGINT, old)
    assert seen == [signal.SIGINT]
    np.testing.assert_array_equal(got, want)
