"""The main job, `tlalloc bench`: the service answers equal across implementations,
a smoke run draws no verdict, verdicts come from intervals, and the timing harness
does not slow the threads it measures."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tlalloc import cli
from tlalloc.bench import _common, mix, service
from tlalloc.bench._common import ratio_interval

VERDICT_WORDS = ("equal to", "faster than", "slower than", "the throughput of", "no verdict")


# ---- the service scenario


@pytest.fixture(scope="module")
def small() -> service.ServiceData:
    return service.make_data(rows=3000, dim=48, batch=5, nodes=2000, degree=6, seed=3)


def test_service_answers_are_equal_across_implementations(small: service.ServiceData) -> None:
    impls = service.available()
    assert service.verify(small, impls, requests=4) == []
    tl = service.request(small, "tlalloc")(2)
    ids, scores, node_ids, act, decayed = tl
    assert ids.shape == (5, service.TOP_K) and scores.shape == (5, service.TOP_K)
    assert node_ids.shape == (service.TOP_K,) and decayed.shape == (small.nodes,)
    # Against a plain reference written here: full sort of every score row.
    q = small.batches[2]
    ref = (q.astype(np.float64) @ small.corpus.T.astype(np.float64)) / (
        np.linalg.norm(q.astype(np.float64), axis=1)[:, None] * np.linalg.norm(
            small.corpus.astype(np.float64), axis=1))
    want = np.argsort(-ref, axis=1, kind="stable")[:, : service.TOP_K]
    assert np.array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, want, axis=1), atol=2e-5)
    np.testing.assert_allclose(decayed, small.strengths * np.exp(-small.ages / service.TAU), rtol=2e-6)


def test_service_check_finds_a_wrong_answer(small: service.ServiceData) -> None:
    ids, scores, node_ids, act, decayed = service.request(small, "tlalloc")(0)
    wrong_ids = ids.copy()
    wrong_ids[0, 3] = (wrong_ids[0, 3] + 1) % small.corpus.shape[0]
    assert "top-k ids differ" in service.compare_answers(
        (wrong_ids, scores, node_ids, act, decayed), (ids, scores, node_ids, act, decayed))
    assert "decayed strengths differ beyond 2e-6" in service.compare_answers(
        (ids, scores, node_ids, act, decayed * 1.001), (ids, scores, node_ids, act, decayed))
    assert "activations differ beyond 1e-5" in service.compare_answers(
        (ids, scores, node_ids, act * 2, decayed), (ids, scores, node_ids, act, decayed))


def test_service_run_has_one_sample_per_round(small: service.ServiceData) -> None:
    r = service.run(small, ["tlalloc", "numpy"], [1, 2], 0.02, 5)
    assert {(c["impl"], c["threads"]) for c in r["cells"]} == {
        (i, t) for i in ("tlalloc", "numpy") for t in (1, 2)}
    for c in r["cells"]:
        assert len(c["cpu_ms"]) == 5 and all(x > 0 for x in c["cpu_ms"])
        lo, hi = c["cpu_ms_interval"]
        assert lo <= c["cpu_ms_median"] <= hi
    comps = service.comparisons(r)
    assert [(c["threads"], c["other"]) for c in comps] == [(1, "numpy"), (2, "numpy")]
    assert all(c["interval"] is not None for c in comps)
    text = "\n".join(service.report(r, smoke=False))
    assert "1 thread: tlalloc " in text and "2 threads: tlalloc " in text


# ---- the intervals and verdicts, on samples with known answers


def test_ratio_interval_known_answers() -> None:
    base = {r: 10.0 + (r % 3) for r in range(9)}
    # Exactly twice, round by round: the interval is the point 2.
    assert ratio_interval({r: 2 * v for r, v in base.items()}, base) == (2.0, 2.0)
    # Equal in median, noisy in pairs: the interval holds 1.
    noisy = {r: base[(r + 1) % 9] for r in range(9)}
    lo, hi = ratio_interval(noisy, base)
    assert lo < 1 < hi
    assert _common.verdict((lo, hi), 1.0, "faster than", "slower than", "x").startswith("equal to x")
    # Clearly apart, with noise: the interval excludes 1 on the right side.
    lo, hi = ratio_interval({r: 3 * base[(r + 1) % 9] for r in range(9)}, base)
    assert 2 < lo <= hi < 4
    assert _common.verdict((lo, hi), 3.0, "faster than", "slower than", "x").startswith("3.00x faster than x")
    assert _common.verdict((0.25, 0.4), 1 / 3, "faster than", "slower than", "x") == (
        "3.00x slower than x (95% interval 2.50-4.00)")
    # Too few rounds: no interval, no verdict.
    assert ratio_interval({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0}) is None
    assert _common.verdict(None, 2.0, "faster than", "slower than", "x").startswith("no verdict")


def test_median_interval_known_answers() -> None:
    assert _common.median_interval([5.0] * 7) == (5.0, 5.0)
    lo, hi = _common.median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert 1.0 <= lo <= 4.0 <= hi <= 7.0 and lo < hi
    assert _common.median_interval([1.0, 2.0, 3.0, 4.0]) is None


def test_margins_call_overlapping_strategies_equal() -> None:
    by = {("thread", 1): dict(enumerate([100.0, 104.0, 96.0, 101.0, 99.0, 102.0])),
          ("malloc", 1): dict(enumerate([102.0, 97.0, 100.0, 103.0, 98.0, 100.0]))}
    (m,) = mix.margins([1], ["thread", "malloc"], by)
    assert m["interval"][0] < 1 < m["interval"][1]
    findings = mix._findings([1], ["thread", "malloc"], by, [m], {"num_overflows": 0}, 2)
    assert "1 thread: thread arenas equal to malloc" in findings[0]


# ---- the main job end to end


def test_quick_is_a_smoke_run_without_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "quick.json"
    rc = cli.main(["bench", "--quick", "--threads", "1,2", "--corpus-rows", "2000", "--nodes", "1000",
                   "--no-progress", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "SMOKE RUN (--quick)" in text and "draws no verdicts" in text
    assert text.count("load average") == 2 and "(before the run)" in text and "(after the run)" in text
    assert "== The service" in text and "== Allocation strategies" in text
    assert text.index("== The service") < text.index("== Allocation strategies")
    verdict_lines = [ln for ln in text.splitlines() if ln.strip().startswith(("1 thread:", "2 threads:"))]
    assert verdict_lines == [], verdict_lines
    assert not any(w in text for w in ("equal to", "faster than", "slower than", "the throughput of"))
    data = json.loads(out.read_text())
    assert data["smoke"] is True and data["findings"] == [] and data["margins"] == []
    assert data["service"]["comparisons"] == []
    assert {c["impl"] for c in data["service"]["cells"]} >= {"tlalloc", "numpy"}


def test_full_run_draws_verdicts_with_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    rc = cli.main(["bench", "--threads", "1", "--strategies", "thread,malloc", "--kernel", "decay",
                   "--repeat", "5", "--duration", "0.02", "--service-seconds", "0.02",
                   "--corpus-rows", "2000", "--nodes", "1000", "--no-compare", "--no-progress",
                   "--json", str(out), "--plot", str(png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "SMOKE" not in text
    assert "1 thread: tlalloc " in text and "NumPy/SciPy (" in text
    assert "1 thread: thread arenas " in text and "95% interval" in text
    data = json.loads(out.read_text())
    (m,) = data["margins"]
    assert m["other"] == "malloc" and len(m["interval"]) == 2
    assert data["service"]["comparisons"][0]["interval"] is not None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "skipped the plot" in text
    else:
        assert png.stat().st_size > 0


# ---- the harness shares nothing between threads on the path of an operation


def _pure_python_op():  # each thread builds its own (the harness's `make`)
    def op(i: int) -> int:
        x = 0
        for j in range(4):
            x += j ^ i
        return x

    return op


def _plain_loop_cpu_ns(threads: int, seconds: float) -> float:
    """CPU ns per op of a loop that shares nothing: the machine's own scaling."""
    res = [0.0] * threads

    def work(k: int) -> None:
        op = _pure_python_op()
        c0, deadline, n = time.thread_time(), time.perf_counter() + seconds, 0
        while time.perf_counter() < deadline:
            for _ in range(200):
                op(n)
            n += 200
        res[k] = (time.thread_time() - c0) / n * 1e9

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(res) / threads


def test_harness_counts_every_operation_of_every_thread() -> None:
    seen: list[list[int]] = []

    def make():
        mine: list[int] = []
        seen.append(mine)
        return mine.append

    r = _common.measure(None, 3, 0.05, make=make)
    assert len(seen) == 3  # one operation per thread, built by that thread
    assert r["ops"] + 3 == sum(len(s) for s in seen)  # + one warm-up call each
    for s in seen:  # thread k does operations k, k + 3, k + 6, ... after its warm-up call k
        k = s[0]
        assert s[1:] == list(range(k, k + 3 * (len(s) - 1), 3))
    assert sorted(s[0] for s in seen) == [0, 1, 2]


def _calls_beside_the_operation(measure_op) -> list[tuple[int, int]]:
    """Profile the harness's threads (``threading.setprofile``: threads started
    after it) and count, per thread, the operations and the calls the harness
    makes beside them. Each thread writes only its own counters."""
    op_code = _pure_python_op().__code__
    counts: dict[int, list[int]] = {}

    def hook(frame, event: str, arg: object) -> None:
        if event not in ("call", "c_call"):
            return
        mine = counts.get(threading.get_ident())
        if mine is None:
            mine = counts[threading.get_ident()] = [0, 0]
        if frame.f_code is op_code:  # the operation, or a call from inside it
            if event == "call":
                mine[0] += 1
            return
        mine[1] += 1

    threading.setprofile(hook)
    try:
        measure_op()
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    return [(ops, other) for ops, other in counts.values() if ops]


def test_harness_calls_nothing_per_operation_but_the_operation() -> None:
    # Every call a thread makes between its operations is on the per-operation
    # path: a shared `Event.is_set()` or clock read per operation doubles the
    # count; a deadline read once per block of operations stays near the number
    # of blocks (about duration / 1 ms), however many operations ran.
    duration = 0.3
    per_thread = _calls_beside_the_operation(
        lambda: _common.measure(None, 2, duration, make=_pure_python_op))
    assert len(per_thread) == 2, per_thread
    blocks = duration / 1e-3 + 64  # blocks of about a millisecond, and the doublings
    for ops, other in per_thread:
        assert other <= 2 * blocks + 300, (ops, other)  # a clock read and a range() a block
        assert other < ops / 4, (ops, other)


def test_a_plain_operation_is_copied_for_each_thread() -> None:
    # A closure shared by every thread would have every call write the same
    # function's and cells' reference counts; each thread gets a copy.
    box = [0]

    def op(i: int) -> int:
        return box[0] + i

    copy = _common._own_copy(op)
    assert copy is not op and copy.__code__ is op.__code__
    assert copy.__closure__ is not None and op.__closure__ is not None
    assert copy.__closure__[0] is not op.__closure__[0]
    assert copy.__closure__[0].cell_contents is box
    assert copy(5) == op(5) == 5
    builtin = len
    assert _common._own_copy(builtin) is builtin


def test_harness_reports_an_error_of_the_operation() -> None:
    def boom(i: int) -> None:
        raise RuntimeError("kaput")

    with pytest.raises(RuntimeError, match="kaput"):
        _common.measure(boom, 2, 0.05)
    with pytest.raises(ValueError, match="duration"):
        _common.measure(lambda i: None, 1, float("nan"))


def _free_threaded() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return check is not None and not check()


@pytest.mark.skipif(not _free_threaded(), reason="needs a free-threaded CPython without the GIL")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable CPUs")
def test_harness_cpu_per_op_does_not_grow_with_threads() -> None:
    # Best of 3 per thread count: the least disturbed sample of each.
    def best(fn, threads: int) -> float:
        return min(fn(threads) for _ in range(3))

    ref1 = best(lambda t: _plain_loop_cpu_ns(t, 0.3), 1)
    ref2 = best(lambda t: _plain_loop_cpu_ns(t, 0.3), 2)
    if ref2 / ref1 > 1.3:
        pytest.skip(f"this machine does not run 2 threads at full speed now (a share-nothing loop: "
                    f"{ref2 / ref1:.2f}x CPU per op at 2 threads): nothing to compare with")
    h1 = best(lambda t: _common.measure(None, t, 0.3, make=_pure_python_op)["cpu_ns_per_op"], 1)
    h2 = best(lambda t: _common.measure(None, t, 0.3, make=_pure_python_op)["cpu_ns_per_op"], 2)
    # The same with a plain function: the harness gives each thread its own copy.
    op = _pure_python_op()
    f1 = best(lambda t: _common.measure(op, t, 0.3)["cpu_ns_per_op"], 1)
    f2 = best(lambda t: _common.measure(op, t, 0.3)["cpu_ns_per_op"], 2)
    assert h2 / h1 < 1.5, (h1, h2, ref1, ref2)
    assert f2 / f1 < 1.5, (f1, f2, ref1, ref2)
