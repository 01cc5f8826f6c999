"""Kernel scratch: the formulas of docs/kernels.md against the measured need, the
spill path (forced with a small arena) giving the in-arena results bit for bit, and
the per-kernel statistics that advise() and ``tlalloc stats`` report."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import tlalloc
from tlalloc import _tlalloc, kernels
from tlalloc.advise import Kind, advise, format_size, kernel_fit_size

MiB = 1 << 20


# ---------------------------------------------------------------- the formulas
# Written from csrc/kernels/kernel_*.c, as docs/kernels.md states them: each kernel's
# scratch is a list of buffers (bytes, alignment) taken in this order; the arena
# places each at the next multiple of its alignment.


def _bump(buffers: list[tuple[int, int]], start: int = 0) -> int:
    off = start
    for size, align in buffers:
        off = -(-off // align) * align + size
    return off - start


def _pow2_at_least(x: int) -> int:
    p = 1
    while p < x:
        p *= 2
    return p


def cosine_buffers(n: int, d: int, m: int, *, k: int | None = None, dtype: Any = np.float32,
                   norms: bool = False, direct: bool = True) -> list[tuple[int, int]]:
    """Scratch of cosine_similarity: m queries of d elements against n rows.

    ``direct``: the rows are read in place (contiguous float32, or float16/bfloat16 with
    AVX2); else each block of rows is converted to float32 first. ``norms``: the caller
    gave candidate_norms. Leaves out the range-edge buffer (16 d + 1 bytes, taken only
    when a norm is zero, subnormal or beyond float32's range)."""
    bufs: list[tuple[int, int]] = []
    if k is not None:
        bufs += [(16 * m * min(k, n), 64), (8 * m, 64)]  # the top-k heaps and their sizes
    if np.dtype(dtype) == np.float64:
        b = max(1, min(256, (64 << 10) // (8 * d), n))
        return bufs + [(8 * m * d + 1, 64), (8 * m + 1, 64), (m + 1, 1),
                       (24 * b, 64), (8 * b * d + 1, 64), (4 * b, 64)]
    qrow = (4 * d + 127) // 64 * 64  # a query row, padded so rows can share the candidates' misalignment
    bufs += [(m * qrow + 64, 64), (8 * m + 1, 64), (m + 1, 1)]
    if direct:
        es = np.dtype(dtype).itemsize
        cap = 256 if m == 1 else (256 << 10) // (d * es + 1)
        b = min(n, cap)
        if b < 2:
            b = max(n, 1) if n < 2 else 2
        b = min(b, 256)
    else:
        b = max(1, min(256, (64 << 10) // (4 * d), n))
    bufs.append(((m + 2) * b * 4, 64))
    if norms or m > 1:
        bufs.append((8 * b, 64))
    if not direct:
        bufs.append((4 * b * d + 1, 64))
    return bufs


def spread_buffers(graph: tuple[np.ndarray, np.ndarray, np.ndarray], seeds: list[int], *,
                   decay_rate: float = 0.7, threshold: float = 0.01, max_depth: int = 4,
                   top_k: int | None = None, engine: str = "auto") -> list[tuple[int, int]]:
    """Scratch of spread_activation. Dense engine (n <= 4096): 24 n. Sparse engine:
    per reserve of c slots 24 c + 4 c + 4 T(c) (T(c): the hash table, a power of two
    >= max(16, 2 c)); the frontier arrays (below). Reserves: c0 = min(n,
    max(64, seeds)); a step whose frontier has E edges, with R nodes reached so far,
    reserves c' = min(n, max(2 c, R + E)) when R + E > c. The frontier arrays (32 bytes
    per entry) are kept from step to step and grown to max(F, 2 f) when a frontier of F
    does not fit the f entries they hold. Top-k: 16 min(k, n).

    R, F and E come from running the spreading itself (the same order of additions as
    the kernel, so the same frontier)."""
    indptr, indices, weights = graph
    n = len(indptr) - 1
    k_bufs = [(16 * min(top_k, n), 64)] if top_k else []
    if engine == "dense" or (engine == "auto" and n <= 4096):
        return [(24 * n, 64), *k_bufs]
    bufs: list[tuple[int, int]] = []
    cap = 0

    def reserve(need: int) -> None:
        nonlocal cap
        c = min(n, max(2 * cap, need))
        bufs.extend([(24 * c, 64), (4 * c, 64), (4 * max(16, _pow2_at_least(2 * c)), 64)])
        cap = c

    reserve(min(max(len(seeds), 64), n))
    f = np.exp(-decay_rate)
    cur = np.zeros(n)
    reached = np.zeros(n, bool)
    for s in seeds:
        cur[s] += 1.0
        reached[s] = True
    deg = np.diff(indptr)
    w64 = weights.astype(np.float64)
    fcap = 0
    for _ in range(max_depth):
        front = np.flatnonzero((cur >= threshold) & (cur != 0.0))
        if len(front) == 0:
            break
        if len(front) > fcap:
            fcap = max(len(front), 2 * fcap)
            bufs += [(16 * fcap, 64), (16 * fcap, 64)]
        need = min(n, int(reached.sum()) + int(deg[front].sum()))
        if need > cap:
            reserve(need)
        rows = np.concatenate([np.arange(indptr[u], indptr[u + 1]) for u in front])
        src = np.repeat(front, deg[front])
        nxt = np.zeros(n)
        np.add.at(nxt, indices[rows], cur[src] * w64[rows] * f)  # in order, as the kernel adds
        reached[indices[rows]] = True
        cur = nxt
    return bufs + k_bufs


def decay_buffers(*, float32_fast: bool, converted: bool) -> list[tuple[int, int]]:
    """Scratch of decay, independent of n: none when strengths, ages and out are all
    contiguous float32; 3 x 1024 float32 (12 KiB) when something is converted on the
    float32 path; 2 x 1024 float64 (16 KiB) on the float64 path."""
    if not float32_fast:
        return [(16384, 64)]
    return [(12288, 64)] if converted else []


# ---------------------------------------------------------------- measuring


def _in_fresh_thread(fn: Callable[[], Any]) -> Any:
    """fn() on a new thread (a new thread arena, empty when the kernel starts)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["r"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            out["e"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["r"]


def _measured_need(kernel: str, fn: Callable[[], Any]) -> int:
    _tlalloc._kernel_scratch_reset()
    _in_fresh_thread(fn)
    st = kernels.scratch_stats()[kernel]
    assert st["num_spilled_calls"] == 0
    return st["peak_need_bytes"]


@pytest.fixture
def arena_size() -> Iterator[Callable[[int | str], None]]:
    old = tlalloc.get_config()

    def set_size(size: int | str) -> None:
        tlalloc.configure(arena_size=size)

    set_size(64 * MiB)
    try:
        yield set_size
    finally:
        tlalloc.configure(**old.as_dict())
        _tlalloc._kernel_scratch_reset()


def _graph(n: int, deg: int, unit: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n * deg + 1, deg, dtype=np.int64)
    indices = rng.integers(0, n, n * deg).astype(np.int32)
    weights = np.ones(n * deg, np.float32) if unit else rng.random(n * deg).astype(np.float32)
    return indptr, indices, weights


# ---------------------------------------------------------------- formulas = measurement


@pytest.mark.parametrize(("n", "d", "m", "k", "dtype"), [
    (1000, 768, 1, None, np.float32), (100_000, 768, 1, 10, np.float32), (5000, 768, 16, None, np.float32),
    (5000, 768, 64, 10, np.float32), (300, 100, 3, 5, np.float32), (2000, 300, 4, None, np.float64),
    (1, 7, 1, 1, np.float32), (3000, 1536, 8, None, np.float32),
])
def test_cosine_formula_matches_measured(arena_size, n, d, m, k, dtype) -> None:
    rng = np.random.default_rng(n + d + m)
    c = rng.standard_normal((n, d)).astype(dtype)
    q = rng.standard_normal((m, d) if m > 1 else d).astype(dtype)
    kw = {} if k is None else {"top_k": k}
    got = _measured_need("cosine", lambda: kernels.cosine_similarity(q, c, **kw))
    assert got == _bump(cosine_buffers(n, d, m, k=k, dtype=dtype))


def test_cosine_formula_converted_rows(arena_size) -> None:
    rng = np.random.default_rng(1)
    c = rng.standard_normal((700, 2 * 200)).astype(np.float32)[:, ::2]  # strided rows: converted
    q = rng.standard_normal(200).astype(np.float32)
    got = _measured_need("cosine", lambda: kernels.cosine_similarity(q, c))
    assert got == _bump(cosine_buffers(700, 200, 1, direct=False))


@pytest.mark.parametrize(("n", "deg", "seeds", "unit", "depth", "top_k", "engine"), [
    (100_000, 10, 10, True, 4, 10, "auto"),
    (100_000, 10, 10, False, 4, None, "auto"),
    (20_000, 6, 3, True, 6, 50, "auto"),
    (50_000, 10, 200, False, 3, None, "auto"),
    (3000, 10, 2, False, 4, 10, "auto"),      # dense engine
    (3000, 10, 2, False, 4, None, "sparse"),
])
def test_spread_formula_matches_measured(arena_size, n, deg, seeds, unit, depth, top_k, engine) -> None:
    g = _graph(n, deg, unit, seed=n + seeds)
    s = [int(x) for x in np.random.default_rng(seeds).integers(0, n, seeds)]
    kw: dict[str, Any] = {"max_depth": depth, "_engine": engine}
    if top_k is not None:
        kw["top_k"] = top_k
    got = _measured_need("spread", lambda: kernels.spread_activation(g, s, **kw))
    assert got == _bump(spread_buffers(g, s, max_depth=depth, top_k=top_k, engine=engine))


@pytest.mark.parametrize(("strengths", "ages", "out", "fast", "converted"), [
    (np.float32, np.float32, np.float32, True, False),
    (np.float16, np.float32, np.float32, True, True),
    (np.float32, np.int64, np.float32, True, True),
    (np.float64, np.float32, np.float64, False, False),
])
def test_decay_formula_matches_measured(arena_size, strengths, ages, out, fast, converted) -> None:
    n = 100_000
    s = np.ones(n, strengths)
    a = np.arange(n).astype(ages)
    o = np.empty(n, out)
    need = _measured_need("decay", lambda: kernels.decay(s, a, out=o))
    assert need == _bump(decay_buffers(float32_fast=fast, converted=converted))


# ---------------------------------------------------------------- spill path


def _workloads() -> dict[str, Callable[[], Any]]:
    rng = np.random.default_rng(7)
    c = rng.standard_normal((4000, 384)).astype(np.float32)
    q = rng.standard_normal((16, 384)).astype(np.float32)
    c64 = c[:500].astype(np.float64)
    g = _graph(30_000, 8, unit=True)
    seeds = [3, 29_000, 17, 3]
    s16 = rng.random(50_000).astype(np.float16)
    ages = rng.random(100_000)[::2] * 1000
    return {
        "cosine": lambda: (kernels.cosine_similarity(q, c), kernels.cosine_similarity(q, c, top_k=9),
                           kernels.cosine_similarity(q[0], c64)),
        "spread": lambda: (kernels.spread_activation(g, seeds, max_depth=5),
                           kernels.spread_activation(g, seeds, max_depth=5, top_k=40)),
        "decay": lambda: (kernels.decay(s16, ages), kernels.decay(s16.astype(np.float64), ages)),
    }


def _flat(x: Any) -> list[np.ndarray]:
    return [a for y in x for a in _flat(y)] if isinstance(x, tuple) else [x]


@pytest.mark.parametrize("kernel", ["cosine", "spread", "decay"])
def test_spill_gives_the_in_arena_results_bit_for_bit(arena_size, kernel) -> None:
    work = _workloads()[kernel]
    _tlalloc._kernel_scratch_reset()
    want = _in_fresh_thread(work)
    big = kernels.scratch_stats()[kernel]
    assert big["num_spilled_calls"] == 0 and big["peak_need_bytes"] > 8192
    arena_size("8KiB")
    _tlalloc._kernel_scratch_reset()
    got = _in_fresh_thread(work)
    for w, g in zip(_flat(want), _flat(got), strict=True):
        assert w.dtype == g.dtype and w.shape == g.shape
        assert w.tobytes() == g.tobytes()  # bit for bit
    st = kernels.scratch_stats()
    assert st[kernel]["num_spilled_calls"] > 0 and st[kernel]["num_spills"] > 0
    assert st[kernel]["spilled_bytes"] > 0 and st[kernel]["spill_capacity_bytes"] == 8192
    assert st[kernel]["fit_capacity_bytes"] >= big["peak_need_bytes"]
    assert all(v["num_spilled_calls"] == 0 for name, v in st.items() if name != kernel)


def test_advise_names_the_kernel_and_the_size_that_fits(arena_size) -> None:
    """One recommendation, computed from the recorded need: following it stops the spills."""
    g = _graph(100_000, 10, unit=True)
    seeds = [int(x) for x in np.random.default_rng(0).integers(0, 100_000, 10)]

    def work() -> None:
        for _ in range(3):
            kernels.spread_activation(g, seeds, top_k=10)

    arena_size("2MiB")
    _tlalloc._kernel_scratch_reset()
    _in_fresh_thread(work)
    st = kernels.scratch_stats()["spread"]
    assert st["num_spilled_calls"] == 3
    a = advise(per_thread=[], kernels=kernels.scratch_stats())
    (rec,) = a.kernels
    assert rec.kind is Kind.GROW and rec.kernel == "spread" and rec.where == "kernel 'spread'"
    fit = kernel_fit_size(st["fit_capacity_bytes"])
    assert rec.suggested_bytes == fit and a.env == {"TLALLOC_ARENA_SIZE": format_size(fit, exact=True)}
    assert "'spread'" in str(a) and "2MiB" in str(rec)
    # The live form reads the same counters.
    assert any(r.kernel == "spread" and r.kind is Kind.GROW for r in advise().kernels)
    # Following the advice: no spill, no further growth (no 4 MiB, then 8 MiB ratchet).
    arena_size(fit)
    _tlalloc._kernel_scratch_reset()
    _in_fresh_thread(work)
    assert kernels.scratch_stats()["spread"]["num_spilled_calls"] == 0
    assert not [r for r in advise().kernels if r.needs_action]


def test_thread_arena_overflow_grows_to_the_kernel_fit_not_the_next_power_of_two() -> None:
    k = {"num_spilled_calls": 4, "num_spills": 8, "spilled_bytes": 7 * MiB, "peak_need_bytes": 4_700_000,
         "fit_capacity_bytes": 4_700_000, "spill_capacity_bytes": 2 * MiB}
    t = {"thread_name": "w", "capacity_bytes": 2 * MiB, "peak_bytes": 2 * MiB - 4096, "num_allocations": 100,
         "num_overflows": 8, "num_resets": 50}
    a = advise(per_thread=[t], kernels={"spread": k})
    assert a.env == {"TLALLOC_ARENA_SIZE": "5MiB"}
    assert a.threads[0].kind is Kind.GROW and a.threads[0].suggested_bytes == 5 * MiB
    # Without the kernel figures, the old rule: the next power of two above the capacity.
    assert advise(per_thread=[t]).env == {"TLALLOC_ARENA_SIZE": "4MiB"}


def test_kernel_verdict_ok_when_the_current_size_holds_it(arena_size) -> None:
    arena_size("8MiB")
    k = {"num_spilled_calls": 1, "num_spills": 1, "spilled_bytes": MiB, "peak_need_bytes": 3 * MiB,
         "fit_capacity_bytes": 3 * MiB, "spill_capacity_bytes": 2 * MiB}
    a = advise(per_thread=[], kernels={"cosine": k, "decay": dict(k, num_spilled_calls=0)})
    (rec,) = a.kernels
    assert rec.kind is Kind.OK and "already holds it" in rec.message and a.env == {}


@pytest.mark.parametrize(("kernels_arg", "exc", "match"), [
    ([1], TypeError, "kernels must be a mapping"),
    ({"spread": 3}, TypeError, r"kernels\['spread'\] must be a mapping"),
    ({"spread": {"num_spills": 1}}, ValueError, r"kernels\['spread'\] is missing 'num_spilled_calls'"),
    ({"spread": dict.fromkeys(("num_spilled_calls", "num_spills", "spilled_bytes", "peak_need_bytes",
                                "fit_capacity_bytes", "spill_capacity_bytes"), -1)},
     ValueError, "must be >= 0"),
])
def test_advise_rejects_bad_kernel_figures(kernels_arg, exc, match) -> None:
    with pytest.raises(exc, match=match):
        advise(per_thread=[], kernels=kernels_arg)


def test_summary_reports_kernel_spills(arena_size) -> None:
    from tlalloc.summary import summary, summary_data

    arena_size("8KiB")
    _tlalloc._kernel_scratch_reset()
    _in_fresh_thread(_workloads()["decay"])
    text = summary()
    assert "kernel scratch" in text and "decay" in text
    assert "kernel 'decay'" in text  # the advice names it
    data = summary_data()
    assert data["kernels"]["decay"]["num_spilled_calls"] > 0


def test_spills_from_many_threads_add_up(arena_size) -> None:
    arena_size("8KiB")
    _tlalloc._kernel_scratch_reset()
    rng = np.random.default_rng(3)
    c = rng.standard_normal((2000, 128)).astype(np.float32)
    q = rng.standard_normal((8, 128)).astype(np.float32)
    want = _in_fresh_thread(lambda: kernels.cosine_similarity(q, c))  # spills too: same bits either way
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                assert kernels.cosine_similarity(q, c).tobytes() == want.tobytes()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert kernels.scratch_stats()["cosine"]["num_spilled_calls"] >= 8 * 20


def test_stats_command_names_the_spilling_kernel(tmp_path) -> None:
    """`tlalloc stats SCRIPT` with a small arena: the report names the kernel and the size."""
    import os
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import numpy as np\n"
        "from tlalloc import kernels\n"
        "rng = np.random.default_rng(0)\n"
        "n = 50_000\n"
        "g = (np.arange(0, 10 * n + 1, 10), rng.integers(0, n, 10 * n), np.ones(10 * n))\n"
        "kernels.spread_activation(g, list(range(0, n, n // 10)), top_k=10)\n"
    )
    env = dict(os.environ, TLALLOC_ARENA_SIZE="64KiB")
    r = subprocess.run([sys.executable, "-m", "tlalloc", "stats", str(script)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "kernel scratch" in r.stderr
    line = next(x for x in r.stderr.splitlines() if "kernel 'spread'" in x)
    assert "[grow]" in line and "TLALLOC_ARENA_SIZE=" in line
