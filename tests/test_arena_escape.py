"""Escaped arena memory: handed to the arrays that outlive their scope, reused
once the last of them is gone, in any order and from any thread."""

from __future__ import annotations

import gc
import os
import queue
import random
import re
import sys
import threading
import time

import numpy as np
import pytest

import tlalloc
from conftest import wait_for

CAP = 256 << 10  # small arenas: every test goes through many chunks
SPARE = 2  # TL_ARENA_SPARE_CHUNKS


def escape_one(arena, n: int, value: int):
    """A scope that ends with its array alive (the BufferError is expected)."""
    try:
        with arena.scope():
            x = arena.empty(n, np.uint8)
            x[:] = value
            return x
    except BufferError:
        pass
    return x  # noqa: F821  (bound before the BufferError)


def escape(arena, n: int, value: int):
    holder = []
    try:
        with arena.scope():
            holder.append(arena.empty(n, np.uint8))
            holder[0][:] = value
    except BufferError:
        pass
    return holder[0]


def check_bound(arena, live_regions: int) -> None:
    """Bytes in use <= escaped + open scopes + one chunk per live escape and the
    current chunk (README, 'Escaped memory'); spare chunks kept for reuse apart."""
    s = arena.stats()
    in_use = (s.num_chunks - s.spare_chunks) * s.capacity_bytes
    assert in_use <= s.escaped_bytes + s.used_bytes + s.capacity_bytes * (live_regions + 1)
    assert s.num_chunks - s.spare_chunks <= live_regions + 1


@pytest.mark.parametrize("order", ["fifo", "lifo", "random"])
def test_escape_and_drop_in_every_order(order):
    arena = tlalloc.Arena(CAP)
    rng = random.Random(7)
    live: list[tuple[np.ndarray, int]] = []
    for it in range(3000):
        live.append((escape(arena, 64 << 10, it & 0xFF), it & 0xFF))  # 64 KiB: 1/4 arena
        if len(live) > 16:
            k = 0 if order == "fifo" else -1 if order == "lifo" else rng.randrange(len(live))
            y, v = live.pop(k)
            assert (y == v).all()
            del y
        check_bound(arena, len(live))
    s = arena.stats()
    assert s.num_overflows == 0 and s.num_escapes == 3000
    assert s.escaped_bytes == len(live) * (64 << 10)
    assert all((y == v).all() for y, v in live)
    live.clear()
    assert arena.stats().escaped_bytes == 0 and arena.stats().escaped_chunks == 0


def test_refused_escapes_from_a_scope_leave_used_bytes_flat():
    def f():
        with tlalloc.scratch() as a:
            out = a.empty(100_000, np.float32)
            return out

    used = []
    for _ in range(20):
        with pytest.raises(BufferError):
            f()
        gc.collect()
        s = tlalloc.thread_arena().stats()
        used.append(s.used_bytes)
        assert s.escaped_bytes == 0
    assert max(used) == used[0]


def test_top_level_allocations_reused_as_arrays_die():
    """No scope at all: the top of the arena reuses a chunk once its arrays are
    gone, and hands a full chunk to the arrays still alive in it."""
    arena = tlalloc.Arena(CAP)
    window: list[np.ndarray] = []
    for it in range(4000):
        x = arena.empty(48 << 10, np.uint8)
        x[:] = it & 0xFF
        window.append(x)
        if len(window) > 32:
            y = window.pop(0)
            assert y[0] == y[-1]
            del y
    s = arena.stats()
    assert s.num_overflows == 0
    assert s.num_chunks <= 32 + 2 + SPARE
    window.clear()
    x = arena.empty(100, np.uint8)  # the top level keeps working
    del x


def test_producer_never_overflows_with_consumers_keeping_up():
    """64 KiB arrays through a queue: the arena is 4 x smaller than what is alive."""
    arena_box: dict[str, object] = {}
    q: queue.Queue = queue.Queue(maxsize=64)
    errors: list[BaseException] = []
    n = 4000

    def producer():
        try:
            a = tlalloc.Arena(CAP)
            arena_box["a"] = a
            for it in range(n):
                q.put((escape(a, 64 << 10, it & 0xFF), it & 0xFF))
            q.put(None)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            q.put(None)

    def consumer():
        while True:
            item = q.get()
            if item is None:
                q.put(None)
                return
            x, v = item
            if not (x == v).all():
                errors.append(AssertionError("contents changed"))
            del x, item

    threads = [threading.Thread(target=producer)] + [
        threading.Thread(target=consumer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    s = arena_box["a"].stats()
    assert s.num_overflows == 0 and s.num_escapes == n
    assert s.num_chunks <= 64 + 3 + 2 + SPARE + 1  # queue + in hand + current
    del arena_box["a"]


def _fail_in_scope(arena, it):
    with arena.scope():
        x = arena.empty(60 << 10, np.uint8)  # noqa: F841 (held by the traceback's frame)
        raise ValueError(it)


def test_escape_under_exception():
    arena = tlalloc.Arena(CAP)
    for it in range(2000):
        try:
            _fail_in_scope(arena, it)
        except ValueError as exc:
            saved = exc  # keeps the frame, so x, alive for a while
        if it % 7 == 0:
            del saved
    del saved
    gc.collect()
    s = arena.stats()
    assert s.num_overflows == 0 and s.escaped_bytes == 0
    assert s.num_chunks <= 1 + SPARE + 1


def test_nested_scopes_escaping_at_several_depths():
    arena = tlalloc.Arena(CAP)
    kept = []
    for rnd in range(200):
        with arena.scope():
            base = arena.empty(1000, np.uint8)
            base[:] = 1
            for depth in range(1, 5):
                scopes = [arena.scope() for _ in range(depth)]
                for s in scopes:
                    s.__enter__()
                x = arena.empty(3000 * depth, np.uint8)
                x[:] = depth
                kept.append((x, depth))
                del x
                with pytest.raises(BufferError):
                    scopes[-1].__exit__(None, None, None)
                for s in reversed(scopes[:-1]):
                    s.__exit__(None, None, None)  # the escaped array does not block them
                assert (base == 1).all()
            del base
        assert arena.depth == 0 and arena.used == 0
        if rnd % 3 == 0:
            random.Random(rnd).shuffle(kept)
            del kept[: len(kept) // 2]
    assert all((x == d).all() for x, d in kept)
    kept.clear()
    s = arena.stats()
    assert s.escaped_bytes == 0 and s.num_overflows == 0
    assert s.num_chunks - s.spare_chunks == 1  # only the current chunk is in use
    escape(arena, 100, 0)  # the owner's next escape takes back what came back
    assert arena.stats().num_chunks <= 1 + SPARE + 1


def test_escaped_array_outlives_arena_object_and_thread():
    out: list[np.ndarray] = []

    def worker():
        a = tlalloc.Arena(CAP)
        out.append(escape(a, 10000, 5))
        t_arr = escape(tlalloc.thread_arena(), 20000, 6)
        out.append(t_arr)
        del a

    before = tlalloc._tlalloc._region_count()
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    gc.collect()
    assert (out[0] == 5).all() and (out[1] == 6).all()
    out[0][:] = 50  # still writable, still ours
    assert (out[0] == 50).all()
    out.clear()

    def settled():
        tlalloc.stats()  # drops the arena objects of exited threads
        return tlalloc._tlalloc._region_count() <= before

    assert wait_for(settled)


def test_escaped_array_dropped_in_other_threads():
    arena = tlalloc.Arena(CAP)
    arrays = [escape(arena, 30000, k) for k in range(64)]
    barrier = threading.Barrier(4)

    def drop(part):
        barrier.wait()
        for x in part:
            x.sum()
        part.clear()

    parts = [arrays[k::4] for k in range(4)]
    del arrays
    threads = [threading.Thread(target=drop, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    del parts, threads
    s = arena.stats()
    assert s.escaped_bytes == 0 and s.escaped_chunks == 0
    for k in range(100):  # the chunks that came back are used again
        escape(arena, 30000, k)
    assert arena.stats().num_chunks <= 1 + SPARE + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_while_escaped_chunks_alive():
    arena = tlalloc.thread_arena()
    kept = [escape(arena, 40000, k) for k in range(8)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: read, drop, reuse
        ok = all((x == k).all() for k, x in enumerate(kept))
        kept.clear()
        try:
            for k in range(200):
                escape(arena, 40000, k)
            ok = ok and arena.stats().escaped_bytes == 0
        except BaseException:  # noqa: BLE001
            ok = False
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"1"
    assert all((x == k).all() for k, x in enumerate(kept))
    kept.clear()
    assert arena.stats().escaped_bytes == 0


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_resident_memory_flat_over_many_escapes():
    """200,000 escapes with a consumer keeping up to 64 arrays alive: the chunks
    the arena maps stay within the bound all along, and so does its resident
    set (not under AddressSanitizer, whose quarantine keeps the interpreter's
    freed objects resident by design)."""
    arena = tlalloc.Arena("1MiB")
    window: list[np.ndarray] = []
    rss = []
    most_chunks = 0
    for it in range(200_000):
        window.append(escape(arena, 16 << 10, it & 0xFF))
        if len(window) > 64:
            window.pop(0)
        if it % 1000 == 999:
            most_chunks = max(most_chunks, arena.stats().num_chunks)
        if it % 20_000 == 19_999:
            rss.append(_rss_kib())
    assert most_chunks <= 64 + 1 + SPARE
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        # after the first sample (warm), no growth beyond noise (4 MiB)
        assert max(rss[1:]) - rss[1] < 4096, rss


# ---------------------------------------------------------------- messages


def test_error_names_live_arrays_without_tracking():
    arena = tlalloc.Arena(CAP)
    with pytest.raises(BufferError) as info:
        with arena.scope():
            kept = arena.empty((100, 25), np.float32)  # noqa: F841
            other = [arena.zeros(7, np.int16)]  # noqa: F841
    msg = str(info.value)
    assert "2 array(s)" in msg
    assert "float32 array of shape (100, 25), 10000 bytes" in msg
    assert "held by local 'kept' in test_error_names_live_arrays_without_tracking()" in msg
    assert "int16 array of shape (7,), 14 bytes" in msg
    assert "an item of local 'other'" in msg
    assert "goes back to the arena when the last of them is gone" in msg
    assert "track_allocations=True" in msg


def test_error_counts_arrays_held_elsewhere():
    arena = tlalloc.Arena(CAP)
    box = queue.Queue()

    def hand_off(a):
        box.put(a.empty(10))

    with pytest.raises(BufferError) as info:
        with arena.scope():
            hand_off(arena)
    assert "none of them in a variable of this thread's frames" in str(info.value)
    box.get()


def test_error_with_tracking_names_the_allocating_line():
    old = tlalloc.get_config().track_allocations
    tlalloc.configure(track_allocations=True)
    try:
        arena = tlalloc.Arena(CAP)
        box = queue.Queue()
        with pytest.raises(BufferError) as info:
            with arena.scope():
                box.put(arena.empty((3, 4), np.float64)); line = sys._getframe().f_lineno  # noqa: E702
                mv = arena.alloc(100)  # noqa: F841
    finally:
        tlalloc.configure(track_allocations=old)
    msg = str(info.value)
    assert f"float64 array of shape (3, 4), 96 bytes, allocated at {__file__}:{line}" in msg
    assert re.search(r"memoryview of 100 bytes, allocated at .*test_arena_escape.py:\d+", msg)
    assert "track_allocations=True" not in msg
    box.get()


def test_error_names_at_most_five():
    arena = tlalloc.Arena(CAP)
    with pytest.raises(BufferError) as info:
        with arena.scope():
            many = [arena.empty(k + 1) for k in range(9)]  # noqa: F841
    msg = str(info.value)
    assert "9 array(s)" in msg and msg.count("  - float64") == 5
    assert "and 4 more" in msg


def test_track_allocations_from_environment():
    from tlalloc import _config

    assert _config.from_environ({"TLALLOC_TRACK_ALLOCATIONS": "1"}).track_allocations is True
    assert _config.from_environ({}).track_allocations is False
    with pytest.raises(ValueError, match="TLALLOC_TRACK_ALLOCATIONS"):
        _config.from_environ({"TLALLOC_TRACK_ALLOCATIONS": "yes"})
    with pytest.raises(TypeError, match="track_allocations"):
        tlalloc.configure(track_allocations="on")


def test_process_statistics_count_escaped_memory():
    before = tlalloc.stats()
    kept = escape(tlalloc.thread_arena(), 50_000, 1)
    s = tlalloc.stats()
    assert s.escaped_bytes >= before.escaped_bytes + 50_000
    assert s.num_escapes == before.num_escapes + 1 and s.num_chunks >= 2
    mine = [t for t in tlalloc.stats(per_thread=True) if t.thread_id == threading.get_native_id()]
    assert mine and mine[0].escaped_bytes >= 50_000
    del kept
    assert tlalloc.stats().escaped_bytes == before.escaped_bytes


@pytest.mark.skipif(
    not (hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled()),
    reason="the wait for a running collection is for builds without the GIL")
def test_release_waits_for_a_slow_collection_that_frees_the_array():
    """A collection in another thread that takes longer than 2 s (here: a gc
    callback that sleeps) frees the cycle holding the array; the release must
    wait for it instead of raising a false BufferError."""
    arena = tlalloc.Arena(CAP)
    started = threading.Event()

    def slow(phase, info):
        if phase == "start" and threading.current_thread().name == "slow-gc":
            started.set()
            time.sleep(3)

    gc.callbacks.append(slow)
    try:
        gc.disable()  # only the slow collection below may free the cycle
        with arena.scope():
            x = arena.empty(10)
            cycle: list = [x]
            cycle.append(cycle)
            del x, cycle
            t = threading.Thread(target=gc.collect, name="slow-gc")
            t.start()
            assert started.wait(10)
        t.join()
    finally:
        gc.enable()
        gc.callbacks.remove(slow)
    assert arena.stats().escaped_bytes == 0
