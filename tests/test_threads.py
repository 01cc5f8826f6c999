"""Thread arenas under load: isolation, statistics, release at thread exit."""

from __future__ import annotations

import threading

import numpy as np

import tlalloc
from conftest import settled_live_arenas, wait_for


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def test_32_threads_no_corruption_and_stats_add_up():
    nthreads, iters = 32, 1000
    errors: list[str] = []
    arenas: dict[int, int] = {}
    barrier = threading.Barrier(nthreads)
    keep: list[np.ndarray] = []
    lock = threading.Lock()
    before = tlalloc.stats()

    def work(tid: int) -> None:
        arena = tlalloc.thread_arena()
        arenas[tid] = id(arena)
        barrier.wait()
        for it in range(iters):
            pattern = (tid * 1000 + it) & 0x7FFFFFFF
            with tlalloc.scratch() as a:
                x = a.empty(64, np.int32)
                y = a.zeros((8, 8), np.int64)
                x[:] = pattern
                y[:] = -pattern
                if it % 16 == 0:
                    threading.Event().wait(0)  # yield to the others
                if not (np.all(x == pattern) and np.all(y == -pattern)):
                    errors.append(f"thread {tid} iteration {it}: corrupted")
                del x, y
        tail = arena.empty(1)  # keeps this arena alive (and listed) after the thread ends
        with lock:
            keep.append(tail)

    threads = [threading.Thread(target=work, args=(i,), name=f"w{i}") for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(arenas.values())) == nthreads  # every thread got its own arena
    # summed statistics equal the sum of the per-thread ones
    per = tlalloc.stats(per_thread=True)
    total = tlalloc.stats()
    for field in ("capacity_bytes", "used_bytes", "peak_bytes"):
        assert total[field] == sum(s[field] for s in per)
    mine = [s for s in per if s.thread_name.startswith("w")]
    assert len(mine) == nthreads
    assert all(s.num_allocations == iters * 2 + 1 for s in mine)
    assert total.num_allocations - before.num_allocations == nthreads * (iters * 2 + 1)
    assert total.num_threads - before.num_threads == nthreads
    keep.clear()


def test_global_counters_equal_sum_of_per_thread_when_quiescent():
    # Hold every worker's arena alive (one array each), then compare exactly.
    keep: list[np.ndarray] = []
    lock = threading.Lock()
    before = tlalloc.stats()
    before_per = {s.thread_id: s for s in tlalloc.stats(per_thread=True)}

    def work(n: int) -> None:
        a = tlalloc.thread_arena()
        for _ in range(n):
            with a.scope():
                a.empty(10)
        arr = a.empty(5)
        with lock:
            keep.append(arr)

    threads = [threading.Thread(target=work, args=(10 * (i + 1),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = tlalloc.stats()
    per = tlalloc.stats(per_thread=True)
    new = [s for s in per if s.thread_id not in before_per]
    assert len(new) == 8
    assert sorted(s.num_allocations for s in new) == [10 * (i + 1) + 1 for i in range(8)]
    grown = after.num_allocations - before.num_allocations
    assert grown == sum(s.num_allocations for s in new)
    keep.clear()


def test_1000_short_lived_threads_release_their_arenas():
    baseline = settled_live_arenas()
    rss0 = rss_bytes()

    def work() -> None:
        with tlalloc.scratch() as a:
            x = a.empty(10_000, np.float64)  # touches ~80 KB of the 2 MiB region
            x[:] = 1.0
            del x

    for _ in range(10):
        batch = [threading.Thread(target=work) for _ in range(100)]
        for t in batch:
            t.start()
        for t in batch:
            t.join()
    assert wait_for(lambda: tlalloc.stats().num_arenas == baseline)
    grown = rss_bytes() - rss0
    assert grown < 64 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB"
