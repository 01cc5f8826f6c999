"""32 threads calling all three kernels at once get exactly the single-thread results."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tlalloc
from tlalloc import kernels

THREADS = 32
ROUNDS = 6


def _inputs() -> dict[str, object]:
    rng = np.random.default_rng(42)
    n = 1000
    deg = 10
    graph = (
        np.arange(0, n * deg + 1, deg, dtype=np.int64),
        rng.integers(0, n, n * deg).astype(np.int32),
        rng.random(n * deg).astype(np.float32),
    )
    return {
        "q": rng.standard_normal(768).astype(np.float32),
        "c": rng.standard_normal((1000, 768)).astype(np.float32),
        "c16": rng.standard_normal((200, 96)).astype(np.float16)[:, ::2],  # converted in blocks
        "graph": graph,
        "s": rng.random(10_000).astype(np.float32),
        "a": (rng.random(10_000) * 1e6).astype(np.float32),
        "ai": rng.integers(0, 10**6, 10_000),
    }


def _run_all(x: dict, seed: int, strategy: str | None = None) -> list[object]:
    kw = {} if strategy is None else {"_scratch": strategy}
    q16 = np.asarray(x["q"])[:48].astype(np.float16)
    return [
        kernels.cosine_similarity(x["q"], x["c"], **kw),
        kernels.cosine_similarity(x["q"], x["c"], top_k=10, **kw),
        kernels.cosine_similarity(q16, x["c16"], top_k=5, **kw),
        kernels.spread_activation(x["graph"], [seed, seed + 1], **kw),
        kernels.spread_activation(x["graph"], seed, top_k=20, **kw),
        kernels.decay(x["s"], x["a"], **kw),
        kernels.decay(x["s"], x["ai"], model="power", **kw),
    ]


def _same(a: object, b: object) -> bool:
    if isinstance(a, tuple):
        return all(_same(u, v) for u, v in zip(a, b, strict=True))  # type: ignore[arg-type]
    return bool(np.array_equal(a, b))  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", [None, "shared", "malloc"])
def test_32_threads_get_single_thread_results(strategy: str | None) -> None:
    x = _inputs()
    want = {seed: _run_all(x, seed) for seed in range(THREADS)}
    before = tlalloc.stats().num_overflows
    barrier = threading.Barrier(THREADS)
    failures: list[str] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for r in range(ROUNDS):
                seed = (i + r) % THREADS
                got = _run_all(x, seed, strategy)
                for j, (g, w) in enumerate(zip(got, want[seed], strict=True)):
                    if not _same(g, w):
                        failures.append(f"thread {i} round {r} result {j} differs")
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(f"thread {i}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    if strategy is None:  # thread arenas at the default size: nothing overflowed
        assert tlalloc.stats().num_overflows == before
