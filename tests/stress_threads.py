"""A stress of the whole Python API from many threads (run by test_stress.py in
its own interpreter, so that a crash fails the test instead of the test run).

    python tests/stress_threads.py [seconds] [threads]

Threads start and exit all the time; each is an owner (scopes, hand-offs of
arrays through queues to other threads, kernels, NumPy's allocator on the pool,
pool buffers), an intruder (uses other threads' arenas, which must raise
RuntimeError), or an observer (statistics, advice, summaries, metrics). Checks:
no corruption (every array keeps its pattern), no false BufferError (a scope
whose arrays were all handed off and dropped must release), no refused
release left over, and at the end every thread arena and region is gone.
Prints one line "ok ..." and exits 0, or prints the failures and exits 1.
"""

from __future__ import annotations

import gc
import queue
import random
import sys
import threading
import time
from functools import partial

import numpy as np

import tlalloc
from tlalloc import kernels, numpy_alloc, pool


def main(seconds: float, nthreads: int) -> int:
    failures: list[str] = []
    flock = threading.Lock()
    counts = {"owner": 0, "intruder": 0, "observer": 0, "handoffs": 0, "rounds": 0}

    def fail(msg: str) -> None:
        with flock:
            if len(failures) < 20:
                failures.append(msg)

    baseline_arenas = tlalloc.stats().num_arenas
    baseline_regions = tlalloc._tlalloc._region_count()
    deadline = time.monotonic() + seconds
    handoff: queue.Queue = queue.Queue(maxsize=64)
    arenas_seen: list[tlalloc.Arena] = []  # other threads' arenas, for intruders
    alock = threading.Lock()
    indptr = np.array([0, 2, 3, 4, 4], dtype=np.int64)
    indices = np.array([1, 2, 3, 0], dtype=np.int64)
    weights = np.ones(4, dtype=np.float32)
    cand = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)

    def consumer() -> None:
        # Takes arrays from other threads' scopes, checks them, drops them and
        # acknowledges; the owner then closes its scope, which must succeed.
        while True:
            item = handoff.get()
            if item is None:
                return
            arr, pattern, ack = item
            if not np.all(arr == pattern):
                fail(f"hand-off corrupted: expected {pattern}")
            view = arr[::2]  # a view made (and dropped) in this thread
            del view, arr, item
            ack.set()

    def owner(seed: int) -> None:
        rng = random.Random(seed)
        a = tlalloc.thread_arena()
        with alock:
            arenas_seen.append(a)
            if len(arenas_seen) > 64:
                del arenas_seen[:32]
        if rng.random() < 0.5:
            numpy_alloc.install()
        for r in range(rng.randint(5, 40)):
            pattern = (seed * 131 + r) % 127
            try:
                with tlalloc.scratch() as s:
                    x = s.empty(rng.randint(1, 512), np.int32)
                    x[:] = pattern
                    with s.scope():
                        y = s.zeros((4, 4), np.float64)
                        y += pattern
                        del y
                    if rng.random() < 0.3:
                        ack = threading.Event()
                        handoff.put((x, pattern, ack))
                        del x
                        if not ack.wait(30):
                            fail("consumer did not acknowledge")
                        counts["handoffs"] += 1
                    else:
                        if not np.all(x == pattern):
                            fail(f"owner {seed}: corrupted")
                        del x
                    mv = s.alloc(64)
                    mv[:4] = b"abcd"
                    del mv
            except BufferError as exc:
                fail(f"false BufferError: {exc}")
            if rng.random() < 0.3:
                k = kernels.cosine_similarity(cand[0], cand, top_k=5)
                if int(k[0][0]) != 0:
                    fail("cosine: a vector is not its own best match")
                act = kernels.spread_activation((indptr, indices, weights), [0], max_depth=3)
                if not act[0] >= 1.0:
                    fail("spread: seed lost its activation")
                d = kernels.decay(np.ones(100, np.float32), np.zeros(100, np.float32))
                if not np.all(d == 1.0):
                    fail("decay at age 0 is not the identity")
            if rng.random() < 0.3:
                b = pool.alloc(rng.randint(1, 4096))
                mv = memoryview(b)
                mv[:1] = b"z"
                del mv
                b.free()
                z = np.arange(rng.randint(1, 2000), dtype=np.float64)  # pool, if installed
                if z[-1] != len(z) - 1:
                    fail("numpy allocator: wrong contents")
                del z
            counts["rounds"] += 1
        keep = a.empty(8, np.int64)  # alive after the thread exits
        keep[:] = seed
        with alock:
            tails.append((keep, seed))
        counts["owner"] += 1

    def intruder() -> None:
        with alock:
            victims = list(arenas_seen[-8:])
        for v in victims:
            if v is tlalloc.thread_arena():
                continue
            for op in (partial(v.empty, 4), v.scope, v.reset, partial(v.alloc, 8)):
                try:
                    op()
                    fail("an intruder used another thread's arena")
                except RuntimeError:
                    pass
            v.stats()
            _ = v.used, v.depth, repr(v)
        counts["intruder"] += 1

    def observer() -> None:
        tlalloc.stats()
        tlalloc.stats(per_thread=True)
        tlalloc.pool_stats()
        tlalloc.advise()
        tlalloc.summary()
        counts["observer"] += 1

    tails: list[tuple[np.ndarray, int]] = []
    consumers = [threading.Thread(target=consumer, name=f"consumer{i}") for i in range(2)]
    for t in consumers:
        t.start()
    seed = 0
    live: list[threading.Thread] = []
    while time.monotonic() < deadline and not failures:
        live = [t for t in live if t.is_alive()]
        while len(live) < nthreads:
            seed += 1
            kind = (owner, owner, owner, intruder, observer)[seed % 5]
            args = (seed,) if kind is owner else ()
            t = threading.Thread(target=kind, args=args, name=f"{kind.__name__}{seed}")
            t.start()
            live.append(t)
        time.sleep(0.005)
    for t in live:
        t.join(60)
        if t.is_alive():
            fail(f"{t.name} did not finish")
    for _ in consumers:
        handoff.put(None)
    for t in consumers:
        t.join(60)
    tail = None
    for tail in tails:
        if not np.all(tail[0] == tail[1]):
            fail("an array outliving its thread was corrupted")
    del tail
    tails.clear()
    arenas_seen.clear()
    # Every thread has exited and every array is gone: so are their arenas and regions.
    end = time.monotonic() + 20
    while time.monotonic() < end:
        gc.collect()
        if (tlalloc.stats().num_arenas == baseline_arenas
                and tlalloc._tlalloc._region_count() == baseline_regions):
            break
        time.sleep(0.02)
    else:
        names = [(t.thread_name, t.thread_alive, t.used_bytes) for t in tlalloc.stats(per_thread=True)]
        fail(f"leaked ({names}): {tlalloc.stats().num_arenas - baseline_arenas} arena(s), "
             f"{tlalloc._tlalloc._region_count() - baseline_regions} region(s)")
    if failures:
        print("\n".join(failures))
        return 1
    gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
    print(f"ok seconds={seconds} threads={nthreads} gil={gil} threads_started={seed} {counts}")
    return 0


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    sys.exit(main(secs, n))
