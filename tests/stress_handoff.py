"""Hand-offs under load: no false BufferError (run by test_stress.py in its own
interpreter; CI runs it with PYTHON_GIL=0 on the free-threaded build).

    python tests/stress_handoff.py [seconds] [threads]

`threads` producers (128 by default) each loop over scopes: an array is made,
then offered to the consumers through a small bounded queue with put_nowait.
When the queue is full, put_nowait raises queue.Full with the (array, ...)
tuple in its traceback's frames, the producer drops its array, and the scope
must release; when the hand-off succeeds, a consumer thread checks the array,
drops it (and the tuple the producer made) and acknowledges, and the scope must
release too. Meanwhile one thread runs gc.collect() in a loop, half the
producers have NumPy's allocator on the pool (tlalloc.numpy_alloc), and
producers start and exit all the time. Every BufferError is a false one here.
Checks also: contents intact, nothing left escaped, no region leaked.
Prints one line "ok ..." and exits 0, or prints the failures and exits 1.
"""

from __future__ import annotations

import gc
import queue
import random
import sys
import threading
import time

import numpy as np

import tlalloc
from tlalloc import numpy_alloc


def main(seconds: float, nthreads: int) -> int:
    failures: list[str] = []
    flock = threading.Lock()
    counts = {"scopes": 0, "handoffs": 0, "full": 0, "collections": 0}
    clock = threading.Lock()

    def fail(msg: str) -> None:
        with flock:
            if len(failures) < 10:
                failures.append(msg)

    def count(key: str, n: int = 1) -> None:
        with clock:
            counts[key] += n

    baseline_regions = tlalloc._tlalloc._region_count()
    handoff: queue.Queue = queue.Queue(maxsize=16)
    stop = threading.Event()
    deadline = time.monotonic() + seconds

    def consumer() -> None:
        while True:
            item = handoff.get()
            if item is None:
                return
            arr, pattern, ack = item
            if not (arr == pattern).all():
                fail("hand-off corrupted")
            del arr, item  # the array, and the tuple its producer made
            ack.set()

    def collector() -> None:
        while not stop.is_set():
            gc.collect()
            count("collections")
            time.sleep(0.001)

    def producer(seed: int) -> None:
        rng = random.Random(seed)
        if seed % 2:
            numpy_alloc.install()
        s = tlalloc.thread_arena()
        scopes = handoffs = full = 0
        for r in range(rng.randint(20, 200)):
            pattern = (seed * 131 + r) % 127
            try:
                with s.scope():
                    x = s.empty(rng.randint(1, 256), np.int32)
                    x[:] = pattern
                    ack = threading.Event()
                    try:
                        handoff.put_nowait((x, pattern, ack))
                        handed = True
                    except queue.Full:
                        handed = False
                    del x
                    if handed:
                        if not ack.wait(60):
                            fail("consumer did not acknowledge")
                        handoffs += 1
                    else:
                        full += 1
                    tmp = np.arange(rng.randint(1, 64))  # NumPy's allocator (pool when on)
                    del tmp
                scopes += 1
            except BufferError as exc:
                fail(f"false BufferError (handed={handed}): {exc}")
        if seed % 2:
            numpy_alloc.uninstall()
        count("scopes", scopes)
        count("handoffs", handoffs)
        count("full", full)

    consumers = [threading.Thread(target=consumer) for _ in range(8)]
    gcthread = threading.Thread(target=collector)
    for t in consumers + [gcthread]:
        t.start()
    seed = 0
    live: list[threading.Thread] = []
    while time.monotonic() < deadline and not failures:
        live = [t for t in live if t.is_alive()]
        while len(live) < nthreads:
            seed += 1
            t = threading.Thread(target=producer, args=(seed,))
            t.start()
            live.append(t)
        time.sleep(0.01)
    for t in live:
        t.join(120)
        if t.is_alive():
            fail("a producer did not finish")
    for _ in consumers:
        handoff.put(None)
    for t in consumers:
        t.join(60)
    stop.set()
    gcthread.join(60)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        gc.collect()
        tlalloc.stats()  # drops the arena objects of exited threads
        if tlalloc._tlalloc._region_count() == baseline_regions:
            break
        time.sleep(0.02)
    else:
        fail(f"leaked {tlalloc._tlalloc._region_count() - baseline_regions} region(s)")
    if failures:
        print("\n".join(failures))
        return 1
    gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
    print(f"ok seconds={seconds} threads={nthreads} gil={gil} producers={seed} {counts}")
    return 0


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    sys.exit(main(secs, n))
