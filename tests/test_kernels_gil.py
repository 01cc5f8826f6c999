"""The kernels' GIL policy: calls whose estimated work is below a threshold
(``_kernels_keep_gil_bytes``) keep the GIL, larger ones release it; either way
the results are the same, from one thread or many, and the arguments' reference
counts are what they were (the binding borrows the arrays it is given)."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from conftest import counts_during
from tlalloc import _tlalloc, kernels

GIL_DISABLED = not getattr(sys, "_is_gil_enabled", lambda: True)()
KEEP_DEFAULT = _tlalloc._kernels_keep_gil_bytes()


@pytest.fixture
def keep_gil_bytes() -> Iterator[Callable[[int], None]]:
    """Set the threshold for the test; the previous one comes back after it."""
    prev = _tlalloc._kernels_keep_gil_bytes()
    try:
        yield lambda n: _tlalloc._kernels_keep_gil_bytes(n)
    finally:
        _tlalloc._kernels_keep_gil_bytes(prev)


def _graph(n: int, degree: int, seed: int) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n * degree + 1, degree, dtype=np.int64)
    return indptr, rng.integers(0, n, n * degree, dtype=np.int32), rng.random(n * degree, dtype=np.float32)


def _calls(size: str) -> dict[str, Callable[[], Any]]:
    """One call of every kernel, each below ("small") or far above ("large")
    the default threshold, with fixed inputs."""
    rng = np.random.default_rng(3)
    rows, nodes, n = (8, 10, 500) if size == "small" else (2_000, 5_000, 100_000)
    c = rng.standard_normal((rows, 64), dtype=np.float32)
    q = rng.standard_normal((3, 64), dtype=np.float32)
    corpus = kernels.quantize(c)
    g = _graph(nodes, 3, seed=4)
    s = rng.random(n, dtype=np.float32)
    a = (rng.random(n) * 1e5).astype(np.float32)
    ids = np.arange(0, rows, 2)
    return {
        "cosine": lambda: kernels.cosine_similarity(q, c),
        "cosine top_k": lambda: kernels.cosine_similarity(q[0], c, top_k=5),
        "cosine l2 allow": lambda: kernels.cosine_similarity(q, c, metric="l2", allow=ids, top_k=3),
        "int8": lambda: kernels.cosine_similarity(q, corpus),
        "int8 top_k": lambda: kernels.cosine_similarity(q[1], corpus, top_k=4),
        "quantize": lambda: kernels.quantize(c).data,
        "spread": lambda: kernels.spread_activation(g, [0, 3], decay_rate=0.3),
        "spread top_k": lambda: kernels.spread_activation(g, 1, top_k=5),
        "spread_many": lambda: kernels.spread_activation_many(g, [[0], [1, 2], []], top_k=4),
        "decay": lambda: kernels.decay(s, a, half_life=3600),
        "decay broadcast": lambda: kernels.decay(s[:, None][:50], a[None, :50], tau=100.0),
    }


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, tuple):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y, strict=True))
    return bool(np.array_equal(x, y, equal_nan=True)) and np.asarray(x).dtype == np.asarray(y).dtype


def test_the_threshold_is_read_and_set(keep_gil_bytes: Callable[[int], None]) -> None:
    assert isinstance(KEEP_DEFAULT, int) and KEEP_DEFAULT > 0
    assert _tlalloc._kernels_keep_gil_bytes(123) == KEEP_DEFAULT
    assert _tlalloc._kernels_keep_gil_bytes() == 123
    assert _tlalloc._kernels_keep_gil_bytes(None) == 123
    with pytest.raises(ValueError, match="n"):
        _tlalloc._kernels_keep_gil_bytes(-1)
    with pytest.raises(TypeError, match="n"):
        _tlalloc._kernels_keep_gil_bytes("big")
    assert _tlalloc._kernels_keep_gil_bytes() == 123


@pytest.mark.parametrize("size", ["small", "large"])
def test_results_are_the_same_with_the_gil_kept_or_released(size: str,
                                                            keep_gil_bytes: Callable[[int], None]) -> None:
    calls = _calls(size)
    keep_gil_bytes(0)  # every call releases the GIL
    released = {name: call() for name, call in calls.items()}
    keep_gil_bytes(2**62)  # every call keeps it
    kept = {name: call() for name, call in calls.items()}
    for name in calls:
        assert _same(kept[name], released[name]), name


def test_cosine_just_below_and_above_the_threshold() -> None:
    # float32 rows of d = 64 are 256 bytes: one row fewer than the threshold
    # allows keeps the GIL, one more releases it; the scores are those of a
    # float64 reference either way.
    rng = np.random.default_rng(5)
    d = 64
    edge = KEEP_DEFAULT // (4 * d)
    for rows in (edge - 1, edge, edge + 1):
        c = rng.standard_normal((rows, d), dtype=np.float32)
        q = rng.standard_normal(d, dtype=np.float32)
        c64, q64 = c.astype(np.float64), q.astype(np.float64)
        want = c64 @ q64 / (np.linalg.norm(c64, axis=1) * np.linalg.norm(q64))
        np.testing.assert_allclose(kernels.cosine_similarity(q, c), want, atol=1e-5)
        idx, scores = kernels.cosine_similarity(q, c, top_k=5)
        assert idx.tolist() == np.argsort(-want, kind="stable")[:5].tolist()


def _large_call(kernel: str) -> Callable[[], Any]:
    rng = np.random.default_rng(6)
    c = rng.standard_normal((20_000, 256), dtype=np.float32)
    q = rng.standard_normal((8, 256), dtype=np.float32)
    if kernel == "cosine":
        return lambda: kernels.cosine_similarity(q, c, top_k=10)
    if kernel == "int8":
        corpus = kernels.quantize(c)
        return lambda: kernels.cosine_similarity(q, corpus, top_k=10)
    if kernel == "spread_many":
        g = _graph(20_000, 8, seed=7)
        return lambda: kernels.spread_activation_many(g, [[i] for i in range(16)], top_k=10)
    if kernel == "spread, small graph, long walk":
        # 20 nodes, but a cycle walked for 200,000 steps: the estimate counts
        # the steps, so this call releases the GIL too
        n = 20
        ring = (np.arange(n + 1), (np.arange(n) + 1) % n, np.ones(n))
        return lambda: kernels.spread_activation(ring, 0, decay_rate=0.0, threshold=0.0, max_depth=200_000)
    s = rng.random(2_000_000, dtype=np.float32)
    a = rng.random(2_000_000, dtype=np.float32)
    return lambda: kernels.decay(s, a)


LARGE = ["cosine", "int8", "spread_many", "spread, small graph, long walk", "decay"]


@pytest.mark.skipif(GIL_DISABLED, reason="free-threaded CPython without a GIL: there is none to release")
@pytest.mark.parametrize("kernel", LARGE)
def test_a_large_call_releases_the_gil(kernel: str) -> None:
    # counts_during: with a long switch interval the main thread only counts
    # while a call has released the GIL (tried until the OS ran it meanwhile)
    seen = counts_during([_large_call(kernel)] * 50, until_nonzero=True)
    assert seen and seen[-1] > 0


@pytest.mark.skipif(GIL_DISABLED, reason="free-threaded CPython without a GIL: there is none to keep")
@pytest.mark.parametrize("kernel", LARGE)
def test_a_call_below_the_threshold_keeps_the_gil(kernel: str, keep_gil_bytes: Callable[[int], None]) -> None:
    # The same large calls with the threshold above them hold the GIL
    # throughout: the count stands still during each, exactly.
    keep_gil_bytes(2**62)
    assert counts_during([_large_call(kernel)] * 3, switch_interval=10.0) == [0, 0, 0]


@pytest.mark.skipif(GIL_DISABLED, reason="free-threaded CPython without a GIL: there is none to keep")
def test_small_calls_keep_the_gil_by_default() -> None:
    small = list(_calls("small").values())
    gc.collect()
    gc.disable()  # a collection could run a finalizer that waits on a lock (and lets the GIL go)
    try:
        assert counts_during(small * 5, switch_interval=10.0) == [0] * (5 * len(small))
    finally:
        gc.enable()


@pytest.mark.parametrize("size", ["small", "large"])
def test_many_threads_get_the_results_of_one(size: str) -> None:
    # Eight threads call every kernel on shared inputs (without the GIL on a
    # free-threaded build, for the small calls too): each result is that of a
    # lone call.
    calls = _calls(size)
    want = {name: call() for name, call in calls.items()}
    rounds = 40 if size == "small" else 2
    bad: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                for name, call in calls.items():
                    if not _same(call(), want[name]):
                        bad.append(name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not bad, sorted(set(bad))


def test_arguments_keep_their_reference_counts() -> None:
    # The binding borrows the arrays it is given and releases only the copies
    # it makes: after a call, good or refused, every argument's count is what
    # it was (no leak, no reference dropped that was not taken).
    rng = np.random.default_rng(8)
    c = rng.standard_normal((50, 16), dtype=np.float32)
    c64 = c.astype(np.float64)[:, ::1]
    q = rng.standard_normal(16, dtype=np.float32)
    norms = np.linalg.norm(c, axis=1)
    out = np.empty(50, np.float32)
    corpus = kernels.quantize(c)
    ip, ix, w = _graph(30, 3, seed=9)
    s = rng.random(30, dtype=np.float32)
    a = rng.random(30, dtype=np.float32)
    dout = np.empty(30, np.float32)
    bf = np.zeros(30, np.float64)  # wrong dtype for out
    arrays = [c, c64, q, norms, out, ip, ix, w, s, a, dout, bf]
    calls: list[Callable[[], Any]] = [
        lambda: kernels.cosine_similarity(q, c, candidate_norms=norms, out=out),
        lambda: kernels.cosine_similarity(q, c64, top_k=3),
        lambda: kernels.cosine_similarity(q, corpus, out=out),
        lambda: kernels.quantize(c),
        lambda: kernels.spread_activation((ip, ix, w), [0, 1], top_k=2),
        lambda: kernels.spread_activation_many((ip, ix, w), [[0], [2]]),
        lambda: kernels.decay(s, a, out=dout),
        lambda: kernels.decay(s, a[::-1]),
        lambda: kernels.decay(s[:, None], a),
    ]
    refused: list[Callable[[], Any]] = [
        lambda: kernels.cosine_similarity(q, c, out=bf),
        lambda: kernels.cosine_similarity(q[:8], c),
        lambda: kernels.cosine_similarity(q, c, candidate_norms=-norms),
        lambda: kernels.cosine_similarity(q, corpus, out=bf),
        lambda: kernels.spread_activation((ip, ix, w[:5]), 0),
        lambda: kernels.spread_activation((ip, ix.astype(np.float32), w), 0),
        lambda: kernels.spread_activation_many((ip, ix, w), [[0], [99]]),
        lambda: kernels.decay(s, a, out=bf[:30]),
        lambda: kernels.decay(s, -a),
        lambda: kernels.decay(s[:7], a),
    ]
    for call in calls + refused:  # warm-up: first-use state is made once
        try:
            call()
        except (TypeError, ValueError):
            pass
    before = [sys.getrefcount(x) for x in arrays]
    for _ in range(3):
        for call in calls:
            call()
        for call in refused:
            with pytest.raises((TypeError, ValueError)):
                call()
    assert [sys.getrefcount(x) for x in arrays] == before
