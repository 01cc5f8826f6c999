"""advise(): every branch on synthetic statistics, the time base, live use and bad input."""

from __future__ import annotations

import importlib
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tlalloc
from tlalloc.advise import Advice, Kind, Recommendation, advise, format_size

advise_mod = importlib.import_module("tlalloc.advise")  # the module, even once tlalloc re-exports advise()

MiB = 1 << 20


def arena(cap=2 * MiB, peak=MiB, allocs=1000, overflows=0, resets=1000, **extra):
    d = {"capacity_bytes": cap, "peak_bytes": peak, "num_allocations": allocs,
         "num_overflows": overflows, "num_resets": resets}
    d.update(extra)
    return d


def one(stats=None, **kw):
    """The single sizing verdict for one thread arena with these figures."""
    a = advise(per_thread=[arena(**kw) if stats is None else stats])
    sized = [r for r in a.threads if r.kind is not Kind.RARE_RESETS]
    assert len(sized) == 1
    return sized[0]


# ----------------------------------------------------------------- grow


def test_grow_when_overflow_rate_above_one_percent():
    r = one(cap=2 * MiB, peak=2 * MiB - 100, allocs=1000, overflows=11)
    assert r.kind is Kind.GROW and r.needs_action
    # The peak fits in 2 MiB, but overflowed requests are not in it: at least double.
    assert r.suggested_bytes == 4 * MiB
    assert r.env == "TLALLOC_ARENA_SIZE=4MiB"
    assert r.figures["overflow_rate"] == pytest.approx(0.011)
    assert r.figures["num_overflows"] == 11 and r.figures["capacity_bytes"] == 2 * MiB


def test_exactly_one_percent_is_not_grow():
    r = one(cap=2 * MiB, peak=int(1.5 * MiB), allocs=1000, overflows=10)
    assert r.kind is Kind.HEALTHY


def test_grow_covers_heap_fallback_demand():
    # Under the fallback policy, bytes in use plus live heap fallback show the demand.
    r = one(cap=2 * MiB, peak=2 * MiB, allocs=100, overflows=10, used_bytes=2 * MiB,
            fallback_live_bytes=5 * MiB)
    assert r.kind is Kind.GROW and r.suggested_bytes == 8 * MiB


def test_grow_when_every_request_overflowed():
    r = one(cap=64 << 10, peak=0, allocs=0, overflows=3)
    assert r.kind is Kind.GROW and r.suggested_bytes == 128 << 10
    assert math.isinf(r.figures["overflow_rate"])
    assert "every request" in r.message


def test_grow_is_clamped_to_the_largest_arena():
    r = one(cap=1 << 40, peak=1 << 40, allocs=10, overflows=5)
    assert r.kind is Kind.GROW and r.suggested_bytes == 1 << 40


# ---------------------------------------------------- shrink / ok / healthy / tight / idle


def test_shrink_when_utilization_below_thirty_percent():
    r = one(cap=64 * MiB, peak=3 * MiB)
    assert r.kind is Kind.SHRINK and r.needs_action
    assert r.suggested_bytes == 4 * MiB  # smallest power of two with the peak <= 80%
    assert r.env == "TLALLOC_ARENA_SIZE=4MiB"
    assert in_healthy_range(3 * MiB / r.suggested_bytes)
    assert r.figures["utilization"] == pytest.approx(3 / 64)


def in_healthy_range(u: float) -> bool:
    return 0.4 < u <= 0.8


@pytest.mark.parametrize("peak", [1, 1000, 3 * MiB + 1, 100 * MiB])
def test_shrink_target_lands_at_or_under_eighty_percent(peak):
    r = one(cap=1 << 30, peak=peak)
    assert r.kind is Kind.SHRINK
    t = r.suggested_bytes
    assert t & (t - 1) == 0 and t >= 4096
    assert peak / t <= 0.8 and (t == 4096 or peak / (t // 2) > 0.8)


def test_small_arena_at_minimum_is_not_shrunk():
    r = one(cap=4096, peak=100)
    assert r.kind is Kind.OK and r.env is None


@pytest.mark.parametrize("util", [0.30, 0.40, 0.4999])
def test_between_thirty_and_fifty_percent_is_ok(util):
    r = one(cap=MiB, peak=int(util * MiB) + 1)
    assert r.kind is Kind.OK and not r.needs_action and r.env is None


@pytest.mark.parametrize("util", [0.50, 0.65, 0.80])
def test_fifty_to_eighty_percent_is_healthy(util):
    r = one(cap=MiB, peak=int(util * MiB))
    assert r.kind is Kind.HEALTHY and r.env is None and "healthy" in r.message


def test_above_eighty_percent_is_tight():
    r = one(cap=MiB, peak=int(0.95 * MiB), allocs=1000, overflows=5)
    assert r.kind is Kind.TIGHT and not r.needs_action and r.env is None
    assert "2MiB" in r.message and "5 overflow(s)" in r.message


def test_idle_arena():
    r = one(cap=2 * MiB, peak=0, allocs=0, overflows=0, resets=0)
    assert r.kind is Kind.IDLE and r.env is None


# ------------------------------------------------------------------ resets


def resets_of(**kw):
    a = advise(per_thread=[arena(**kw)])
    return [r for r in a.threads if r.kind is Kind.RARE_RESETS]


def test_rare_resets():
    (r,) = resets_of(resets=5, allocs=400, window_seconds=10.0)
    assert r.needs_action and r.env is None
    assert r.figures["resets_per_second"] == pytest.approx(0.5)
    assert r.figures["window_resets"] == 5 and r.figures["window_allocations"] == 400


def test_rare_resets_uses_window_counts_not_lifetime():
    # 5000 resets over the arena's life, but only 3 in the last 10 s.
    (r,) = resets_of(resets=5000, allocs=9000, window_seconds=10.0, window_resets=3,
                     window_allocations=50)
    assert r.figures["resets_per_second"] == pytest.approx(0.3)
    assert resets_of(resets=5000, allocs=9000, window_seconds=10.0, window_resets=30,
                     window_allocations=50) == []


def test_age_seconds_is_a_whole_life_window():
    (r,) = resets_of(resets=1, allocs=10, age_seconds=100.0)
    assert r.figures["window_seconds"] == 100.0


@pytest.mark.parametrize(
    "kw",
    [
        {"resets": 20, "window_seconds": 10.0},  # 2/s: frequent enough
        {"resets": 10, "window_seconds": 10.0},  # exactly 1/s
        {"resets": 0, "window_seconds": 1.0},  # window too short to tell
        {"resets": 0, "allocs": 50, "window_seconds": 10.0, "window_allocations": 0},  # idle
        {"resets": 0},  # no time base
    ],
)
def test_no_reset_verdict(kw):
    assert resets_of(**kw) == []


def test_overall_reset_rate_is_process_wide():
    a = advise(arena(resets=4, allocs=100, window_seconds=8.0))
    kinds = [r.kind for r in a.overall]
    assert kinds == [Kind.HEALTHY, Kind.RARE_RESETS]
    assert "process-wide" in a.overall[1].message


# ----------------------------------------------------------------- overall


def test_overall_uses_per_arena_averages():
    a = advise(arena(cap=4 * 2 * MiB, peak=4 * int(0.1 * MiB), num_arenas=4))
    (r,) = a.overall
    assert r.kind is Kind.SHRINK
    assert r.figures["capacity_bytes"] == 2 * MiB and "averaged over 4 live arenas" in r.message
    assert a.env == {"TLALLOC_ARENA_SIZE": "128KiB"}
    assert a.threads == ()


def test_overall_with_no_live_arena():
    # Overflows but no live arena to measure: grow says to what (twice the
    # configured size), and the advice sets it (it once said "grow to at
    # least twice its value" with an empty env).
    twice = 2 * tlalloc.get_config().arena_size
    a = advise(arena(cap=0, peak=0, allocs=100, overflows=20, num_arenas=0))
    assert [r.kind for r in a.overall] == [Kind.GROW]
    assert a.overall[0].suggested_bytes == twice
    assert a.env == {"TLALLOC_ARENA_SIZE": format_size(twice, exact=True)}
    a = advise(arena(cap=0, peak=0, allocs=100, overflows=0, num_arenas=0))
    assert [r.kind for r in a.overall] == [Kind.OK]


def test_no_live_arena_grow_covers_known_overflowed_requests():
    a = advise(arena(cap=0, peak=0, allocs=0, overflows=4, num_arenas=0, fallback_bytes=40 * MiB))
    assert a.overall[0].kind is Kind.GROW and a.overall[0].suggested_bytes == 16 * MiB


def test_live_advice_after_a_thread_whose_requests_all_overflowed(python_subprocess):
    code = """
import threading, tlalloc
tlalloc.configure(arena_size="64KiB")
def work():
    a = tlalloc.thread_arena()
    for _ in range(10):
        try:
            a.empty(1 << 20, dtype="u1")
        except MemoryError:
            pass
t = threading.Thread(target=work); t.start(); t.join()
import gc, time
for _ in range(100):
    gc.collect()
    if tlalloc.stats().num_arenas == 0:
        break
    time.sleep(0.01)
adv = tlalloc.advise()
print(adv)
grows = [r for r in (*adv.overall, *adv.threads) if r.kind.value == "grow"]
assert grows and all(r.suggested_bytes and r.env for r in grows), adv
assert adv.env == {"TLALLOC_ARENA_SIZE": "128KiB"}, adv.env
assert "no change" not in str(adv), adv
"""
    r = python_subprocess(code)
    assert r.returncode == 0, r.stdout + r.stderr


def test_one_size_for_all_threads_is_the_largest_need():
    threads = [
        arena(cap=2 * MiB, peak=2 * MiB, allocs=100, overflows=10, thread_name="big", thread_id=11),
        arena(cap=2 * MiB, peak=100, allocs=100, thread_name="small", thread_id=12),
        arena(cap=2 * MiB, peak=0, allocs=0, resets=0, thread_name="idle", thread_id=13),
    ]
    total = arena(cap=6 * MiB, peak=2 * MiB + 100, allocs=200, overflows=10, num_arenas=3)
    a = advise(total, threads)
    assert a.env == {"TLALLOC_ARENA_SIZE": "4MiB"}
    (o,) = a.overall
    assert o.kind is Kind.GROW and o.suggested_bytes == 4 * MiB
    assert "thread 'big' (tid 11)" in o.message
    assert o.figures["recommended_arena_size_bytes"] == 4 * MiB
    assert [(r.thread_name, r.kind) for r in a.threads] == [
        ("big", Kind.GROW), ("small", Kind.SHRINK), ("idle", Kind.IDLE)]
    assert a.threads[1].suggested_bytes == 4096  # what that thread alone would need


def test_all_threads_small_means_shrink_to_the_largest_fit():
    threads = [arena(cap=16 * MiB, peak=MiB, thread_name="a"),
               arena(cap=16 * MiB, peak=3 * MiB, thread_name="b")]
    a = advise(per_thread=threads)
    assert a.env == {"TLALLOC_ARENA_SIZE": "4MiB"}
    (o,) = a.overall
    assert o.kind is Kind.SHRINK and o.scope == "overall" and o.suggested_bytes == 4 * MiB


def test_averages_cannot_shrink_below_a_busy_thread():
    threads = [arena(cap=8 * MiB, peak=7 * MiB, thread_name="busy"),
               arena(cap=8 * MiB, peak=0, allocs=0, resets=0, thread_name="idle"),
               arena(cap=8 * MiB, peak=0, allocs=0, resets=0, thread_name="idle2"),
               arena(cap=8 * MiB, peak=0, allocs=0, resets=0, thread_name="idle3")]
    total = arena(cap=32 * MiB, peak=7 * MiB, num_arenas=4)
    a = advise(total, threads)
    assert a.env == {}
    (o,) = a.overall
    assert o.kind is Kind.OK and "busy" in o.message and not o.needs_action


def test_healthy_everywhere_means_no_env():
    a = advise(arena(num_arenas=1), [arena(thread_name="w")])
    assert a.env == {} and a.actions == ()
    assert [r.kind for r in a] == [Kind.HEALTHY, Kind.HEALTHY]


def test_shrink_says_how_many_released_arenas_it_could_not_see():
    total = arena(cap=2 * MiB, peak=10_000, num_arenas=1, num_threads=5)
    seen_released = arena(cap=2 * MiB, peak=20_000, thread_name="gone", released=True, thread_alive=False)
    a = advise(total, [arena(cap=2 * MiB, peak=10_000, thread_name="main"), seen_released])
    (o,) = a.overall
    assert o.kind is Kind.SHRINK
    assert o.figures["released_arenas_not_included"] == 3  # 5 created - 1 live - 1 seen released
    assert "3 thread arena(s) released before a sample saw them" in o.message
    assert a.threads[1].released and "released" in a.threads[1].where
    # Everything seen: no caveat.
    a = advise(arena(cap=2 * MiB, peak=10_000, num_arenas=1, num_threads=1),
               [arena(cap=2 * MiB, peak=10_000)])
    assert "released_arenas_not_included" not in a.overall[0].figures


def test_max_peak_sets_a_floor():
    threads = [arena(cap=8 * MiB, peak=MiB, thread_name="a")]
    # A released arena once peaked at 6 MiB (75% of 8 MiB): keep 8 MiB.
    a = advise(arena(cap=8 * MiB, peak=MiB, num_arenas=1, num_threads=4, max_peak_bytes=6 * MiB), threads)
    assert a.env == {} and a.overall[0].kind is Kind.OK and "largest peak" in a.overall[0].message
    # It peaked at 1.5 MiB: shrink, but only to 2 MiB (1.5 MiB <= 80%), though the live
    # arena alone would go down to 512 KiB.
    a = advise(arena(cap=8 * MiB, peak=MiB // 4, num_arenas=1, num_threads=4,
                     max_peak_bytes=3 * MiB // 2), [arena(cap=8 * MiB, peak=MiB // 4)])
    assert a.env == {"TLALLOC_ARENA_SIZE": "2MiB"}
    assert "released_arenas_not_included" not in a.overall[0].figures


# ------------------------------------------------------------ objects


def test_readable_str_and_repr():
    a = advise(per_thread=[arena(cap=2 * MiB, peak=2 * MiB, allocs=100, overflows=10,
                                 thread_name="w0", thread_id=7)])
    text = str(a)
    assert text.startswith("tlalloc sizing advice")
    assert "set: TLALLOC_ARENA_SIZE=4MiB" in text
    assert "[grow] thread 'w0' (tid 7)" in text and "overflow_rate=10.0%" in text
    assert "num_overflows=10" in text and "capacity_bytes=2097152 (2MiB)" in text
    assert "Recommendation(kind=<Kind.GROW: 'grow'>" in repr(a.threads[0])
    assert isinstance(a, Advice) and len(a) == 2 and all(isinstance(r, Recommendation) for r in a)
    assert a.actions == tuple(a)


def test_format_size():
    assert [format_size(x) for x in (0, 4096, 3 * MiB, 1 << 40, 1536)] == [
        "0B", "4KiB", "3MiB", "1TiB", "1.50KiB"]
    for x in (4096, 64 << 10, 4 * MiB, 1 << 30):
        assert tlalloc.parse_size(format_size(x)) == x


# ------------------------------------------------------------ time base


def test_tracker_windows(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(advise_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(advise_mod._tlalloc, "_registry_stats",
                        lambda: {"num_resets": 10, "num_allocations": 20})
    tr = advise_mod._Tracker()

    def t(resets, allocs, tid=1, name="w"):
        return {"thread_id": tid, "thread_name": name, "num_resets": resets, "num_allocations": allocs}

    clock[0] = 103.0
    o, ts = tr.observe({"num_resets": 16, "num_allocations": 50}, [t(5, 7)])
    assert (o["window_seconds"], o["window_resets"], o["window_allocations"]) == (3.0, 6, 30)
    assert (ts[0]["window_seconds"], ts[0]["window_resets"]) == (0.0, 0)  # first sighting
    clock[0] = 110.0
    _, ts = tr.observe(None, [t(9, 17), t(1, 1, tid=2)])
    assert (ts[0]["window_seconds"], ts[0]["window_resets"], ts[0]["window_allocations"]) == (7.0, 4, 10)
    assert ts[1]["window_seconds"] == 0.0
    # Counters going down: a new arena on a reused thread id starts over.
    clock[0] = 120.0
    _, ts = tr.observe(None, [t(2, 3)])
    assert (ts[0]["window_seconds"], ts[0]["window_resets"]) == (0.0, 0)
    # An arena no longer listed is forgotten, its last figures kept as released.
    clock[0] = 121.0
    _, ts = tr.observe(None, [t(0, 0, tid=2)])
    assert ts[0]["window_seconds"] == 0.0
    gone = [(d["thread_id"], d["num_resets"], d["released"], d["thread_alive"]) for d in tr.released]
    # tid 1 with 9 resets (counters went down: a new arena), tid 2 (not listed at 120), tid 1 again.
    assert gone == [(1, 9, True, False), (2, 1, True, False), (1, 2, True, False)]
    assert tr.num_released == 3


def test_live_advice_covers_each_live_thread():
    ready, done = threading.Barrier(3), threading.Event()

    def work():
        with tlalloc.scratch() as a:
            x = a.empty(1000, np.float64)
            x[:] = 1
            del x
        ready.wait()
        done.wait()

    ts = [threading.Thread(target=work, name=f"advise-w{i}") for i in range(2)]
    for t in ts:
        t.start()
    try:
        ready.wait()
        a = advise()
        names = {r.thread_name for r in a.threads}
        assert {"advise-w0", "advise-w1"} <= names
        for r in a.threads:
            if r.thread_name.startswith("advise-w"):
                assert r.kind is Kind.SHRINK  # 8 KB out of a 2 MiB default arena
                assert r.figures["peak_bytes"] >= 8000
        assert a.overall and a.overall[0].scope == "overall"
        cur = tlalloc.get_config().arena_size
        if a.env:
            assert tlalloc.parse_size(a.env["TLALLOC_ARENA_SIZE"]) != cur
    finally:
        done.set()
        for t in ts:
            t.join()


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "stats, exc, words",
    [
        ([1, 2], TypeError, "stats must be a mapping"),
        ("capacity", TypeError, "stats must be a mapping"),
        ({"capacity_bytes": 1}, ValueError, "missing 'peak_bytes'"),
        (arena(peak=-1), ValueError, "stats['peak_bytes'] must be >= 0, got -1"),
        (arena(allocs=1.5), TypeError, "stats['num_allocations'] must be an int, got 1.5"),
        (arena(overflows=True), TypeError, "stats['num_overflows'] must be an int, got True"),
        (arena(num_arenas=-2), ValueError, "stats['num_arenas'] must be >= 0"),
        (arena(window_seconds=-1.0), ValueError, "stats['window_seconds']"),
        (arena(window_seconds=float("nan")), ValueError, "stats['window_seconds']"),
        (arena(window_seconds="10s"), TypeError, "stats['window_seconds'] must be a number"),
        (arena(age_seconds=float("inf")), ValueError, "stats['age_seconds']"),
        (arena(resets=3, window_seconds=5.0, window_resets=4), ValueError, "window counts exceed"),
    ],
)
def test_bad_stats(stats, exc, words):
    with pytest.raises(exc) as e:
        advise(stats)
    assert words in str(e.value)


@pytest.mark.parametrize(
    "per_thread, exc, words",
    [
        (arena(), TypeError, "per_thread must be a sequence"),
        ("abc", TypeError, "per_thread must be a sequence"),
        (5, TypeError, "per_thread must be a sequence"),
        ([arena(), 3], TypeError, "per_thread[1] must be a mapping"),
        ([arena(cap="2MiB")], TypeError, "per_thread[0]['capacity_bytes'] must be an int"),
    ],
)
def test_bad_per_thread(per_thread, exc, words):
    with pytest.raises(exc) as e:
        advise(per_thread=per_thread)
    assert words in str(e.value)


# ------------------------------------------------------------ properties

@st.composite
def thread_figures(draw):
    cap = draw(st.integers(4096, 1 << 34))
    peak = draw(st.integers(0, cap))
    allocs = draw(st.integers(0, 10**6))
    overflows = draw(st.integers(0, allocs + 5))
    return arena(cap=cap, peak=peak, allocs=allocs, overflows=overflows,
                 resets=draw(st.integers(0, 10**6)))


@settings(max_examples=300, deadline=None)
@given(st.lists(thread_figures(), min_size=1, max_size=6))
def test_recommendations_are_consistent(threads):
    a = advise(per_thread=threads)
    sizes = []
    for r, t in zip(a.threads, threads, strict=True):
        cap, peak = t["capacity_bytes"], t["peak_bytes"]
        if r.suggested_bytes is not None:
            s = r.suggested_bytes
            assert s & (s - 1) == 0 and 4096 <= s <= 1 << 40
            assert r.env == f"TLALLOC_ARENA_SIZE={format_size(s)}"
            assert tlalloc.parse_size(format_size(s)) == s
        if r.kind is Kind.GROW:
            assert r.suggested_bytes > cap and r.figures["overflow_rate"] > 0.01
        elif r.kind is Kind.SHRINK:
            assert r.suggested_bytes < cap and peak / r.suggested_bytes <= 0.8 and peak / cap < 0.3
        elif r.kind is Kind.IDLE:
            assert t["num_allocations"] == t["num_overflows"] == 0
        else:
            assert r.suggested_bytes is None
        if r.kind is not Kind.IDLE:
            sizes.append(r.suggested_bytes or cap)
    current = max(t["capacity_bytes"] for t in threads)
    if not sizes or max(sizes) == current:
        assert a.env == {}
    else:
        need = tlalloc.parse_size(a.env["TLALLOC_ARENA_SIZE"])
        assert need == max(sizes)
        (o,) = a.overall
        assert o.kind is (Kind.GROW if need > current else Kind.SHRINK) and o.suggested_bytes == need
