"""fork while other threads hold every lock of the core.

Other Python threads loop over every locked path (thread arenas created and
exited, statistics, configure, kernels on shared scratch, Huffman encodes with
``allocator="tlalloc"``, pool alloc/free across threads, NumPy arrays on the
pool) while the main thread forks children, with ``os.fork`` and with
``multiprocessing``'s ``"fork"`` context. Each child runs every locked path once
and checks what it inherited: the registry lists only the forking thread's arena
as alive (C-level ``thread_alive`` flags, with the child's thread id), and the
pool has only the forking thread's cache. The parent waits for each child with a
deadline and kills it if it hangs, so a deadlock fails the test instead of
stalling it. docs/threads.md says what holds across fork.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
import warnings

import numpy as np
import pytest

import tlalloc
from tlalloc import huffman, kernels, numpy_alloc, pool

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is not available")

# A child normally exits within a second; the deadline only turns a hang into a failure.
CHILD_DEADLINE_S = float(os.environ.get("TL_TEST_FORK_DEADLINE", "60"))
# Under the ASan-preloaded run (.ci/run) a child starts no thread: GCC's ASan
# allocator has no fork handlers, so a new thread in a child of a multi-threaded
# process can wait forever on an allocator lock a parent thread held at the fork.
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")

DATA = bytes(range(256)) * 64


def alive_arenas() -> list[tlalloc.ThreadStats]:
    return [t for t in tlalloc.stats(per_thread=True) if t.thread_alive]


def every_locked_path_once() -> None:
    """Every path of the core that takes a lock, once, from the calling thread."""
    cfg = tlalloc.get_config()
    tlalloc.configure(**cfg.as_dict())
    tlalloc.stats()
    tlalloc.stats(per_thread=True)
    with tlalloc.scratch() as a:
        a.zeros(100)[:] = 1
    with kernels.scratch_strategy("shared"):
        kernels.decay(np.ones(1000, np.float32), np.zeros(1000))
        kernels.cosine_similarity(np.ones(16, np.float32), np.ones((64, 16), np.float32))
    b = pool.alloc(1000)
    b.free()
    big = pool.alloc(3 << 20)
    big.free()
    with numpy_alloc.pool_allocator():
        x = np.zeros(5000)
        x += 1
        del x
    pool.configure(retain_bytes=pool.get_settings().retain_bytes)
    pool.collect()
    pool.pool_stats()
    if not SANITIZED:  # starts worker threads
        res = huffman.encode(DATA, threads=2, allocator="tlalloc")
        assert huffman.decode(res.data, threads=2) == DATA


def child_checks() -> None:
    """Run in a child: raises AssertionError on a wrong inherited state."""
    me = threading.get_native_id()
    alive = alive_arenas()
    assert [t.thread_id for t in alive] == [me], [(t.thread_name, t.thread_id) for t in alive]
    # The forking thread's pool cache is the only one; the others were torn down.
    assert pool.pool_stats()["num_heaps"] == 1, pool.pool_stats()
    every_locked_path_once()
    assert [t.thread_id for t in alive_arenas()] == [me]
    assert pool.pool_stats()["num_heaps"] == 1


def run_child_and_exit(checks=None) -> None:
    """The body of an os.fork child: runs ``checks`` (default child_checks), exits
    0 if they pass and 1 (with the traceback) if not; never returns."""
    code = 0
    try:
        (checks or child_checks)()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def show_hung_child(pid: int) -> None:
    """With TL_TEST_FORK_GDB=1, print where a child that missed its deadline waits."""
    if os.environ.get("TL_TEST_FORK_GDB"):
        import subprocess

        subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 25"], check=False)


def wait_pid(pid: int) -> int | None:
    """Exit status of pid, or None if it missed the deadline (then it is killed)."""
    deadline = time.monotonic() + CHILD_DEADLINE_S
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    show_hung_child(pid)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


class Hammers:
    """Threads that loop over every locked path until stopped."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.blocks: queue.Queue[pool.PoolBuffer] = queue.Queue(maxsize=256)
        self.threads = [
            threading.Thread(target=self._guard, args=(f,), name=f"hammer-{f.__name__}")
            for f in (
                self.arena_churn,
                self.stats,
                self.configure,
                self.shared_scratch,
                self.huffman,
                self.pool_producer,
                self.pool_consumer,
                self.numpy_on_pool,
            )
        ]

    def _guard(self, f) -> None:
        try:
            while not self.stop.is_set():
                f()
        except BaseException:
            self.errors.append(traceback.format_exc())

    def arena_churn(self) -> None:
        def short() -> None:
            with tlalloc.scratch() as a:
                a.empty(64)[:] = 0

        t = threading.Thread(target=short)
        t.start()
        t.join()

    def stats(self) -> None:
        tlalloc.stats()
        tlalloc.stats(per_thread=True)
        pool.pool_stats()

    def configure(self) -> None:
        tlalloc.configure(**tlalloc.get_config().as_dict())
        pool.configure(retain_bytes=pool.get_settings().retain_bytes)
        pool.collect()

    def shared_scratch(self) -> None:
        with kernels.scratch_strategy("shared"):
            kernels.decay(np.ones(4096, np.float32), np.zeros(4096))

    def huffman(self) -> None:
        huffman.encode(DATA, threads=3, block_size=2048, allocator="tlalloc")

    def pool_producer(self) -> None:
        try:
            self.blocks.put(pool.alloc(264), timeout=0.1)
        except queue.Full:
            pass

    def pool_consumer(self) -> None:
        try:
            self.blocks.get(timeout=0.1).free()  # a cross-thread free
        except queue.Empty:
            pass

    def numpy_on_pool(self) -> None:
        with numpy_alloc.pool_allocator():
            x = np.ones(3000)
            x *= 2

    def __enter__(self) -> Hammers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        while not self.blocks.empty():
            self.blocks.get().free()


def prepare_forking_thread() -> None:
    """The forking thread has a thread arena and a pool cache of its own."""
    with tlalloc.scratch() as a:
        a.empty(8)
    pool.alloc(16).free()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork of a threaded process
def test_os_fork_while_threads_hold_every_lock():
    prepare_forking_thread()
    results: list[int | None] = []
    with Hammers() as h:
        for i in range(40):
            time.sleep(0.002 * (1 + i % 3))  # let the hammers get into their locks
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                run_child_and_exit()
            results.append(wait_pid(pid))
    assert not h.errors, h.errors[0]
    assert results.count(None) == 0, f"{results.count(None)} of {len(results)} children hung"
    assert all(r == 0 for r in results), results


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_multiprocessing_fork_while_threads_hold_every_lock():
    import multiprocessing

    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        pytest.skip("multiprocessing has no 'fork' start method here")
    prepare_forking_thread()
    codes: list[int | None] = []
    with Hammers() as h, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for i in range(10):
            time.sleep(0.002 * (1 + i % 3))
            p = ctx.Process(target=child_checks)
            p.start()
            p.join(CHILD_DEADLINE_S)
            if p.is_alive():
                show_hung_child(p.pid)
                p.kill()
                p.join()
                codes.append(None)
            else:
                codes.append(p.exitcode)
    assert not h.errors, h.errors[0]
    assert codes.count(None) == 0, f"{codes.count(None)} of {len(codes)} children hung"
    assert all(c == 0 for c in codes), codes


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_child_sees_dead_threads_arena_as_exited_and_their_pool_pages_reclaimed():
    """A parked thread with a thread arena and pool blocks: in the child its arena
    is not alive and its pool cache is gone; its blocks, freed in the child, are
    adopted (local frees, not pushes onto a page whose owner does not exist)."""
    prepare_forking_thread()
    ready, release = threading.Event(), threading.Event()
    held: list[pool.PoolBuffer] = []

    def parked() -> None:
        tlalloc.thread_arena()
        held.extend(pool.alloc(64) for _ in range(50))
        ready.set()
        release.wait()

    t = threading.Thread(target=parked, name="parked")
    t.start()
    ready.wait()
    try:
        assert len(alive_arenas()) >= 2
        before = pool.pool_stats()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:

            def checks() -> None:
                assert [a.thread_id for a in alive_arenas()] == [threading.get_native_id()]
                after = pool.pool_stats()
                assert after["num_heaps"] == 1, after
                assert after["num_abandoned_pages"] > before["num_abandoned_pages"]
                for b in held:
                    b.free()
                freed = pool.pool_stats()
                assert freed["num_cross_thread_frees"] == after["num_cross_thread_frees"], freed
                assert freed["num_reclaimed_pages"] > after["num_reclaimed_pages"], freed

            run_child_and_exit(checks)
        assert wait_pid(pid) == 0
    finally:
        release.set()
        t.join()
        for b in held:
            b.free()
