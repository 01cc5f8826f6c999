"""NumPy's array data on the pool (NEP 49 handler): NumPy's own behaviour under
the handler, and arrays freed by other threads, after their thread exited, or
after the handler was uninstalled."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tlalloc import numpy_alloc, pool

ALL_DTYPES = [np.dtype(c) for c in "?bhilqpBHILQPefdgFDGOMm"] + [
    np.dtype("S7"), np.dtype("U5"), np.dtype("V12"), np.dtype("datetime64[s]"),
    np.dtype("timedelta64[ms]"), np.dtype([("x", "<i4"), ("y", "<f8")]),
]

# Made outside any test: a Generator keeps small arrays (its seed state) alive.
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _default_handler() -> None:
    numpy_alloc.uninstall()
    yield
    numpy_alloc.uninstall()


def _in_use() -> int:
    gc.collect()
    return int(pool.pool_stats()["in_use_bytes"])


def test_context_manager_sets_and_restores() -> None:
    assert numpy_alloc.handler_name() == "default_allocator"
    with numpy_alloc.pool_allocator():
        assert numpy_alloc.is_installed()
        a = np.ones(100)
        with numpy_alloc.pool_allocator():  # nesting restores the outer one
            pass
        assert numpy_alloc.is_installed()
    assert not numpy_alloc.is_installed()
    assert numpy_alloc.handler_name(a) == "tlalloc_pool"
    assert numpy_alloc.handler_name(np.ones(3)) == "default_allocator"


def test_install_uninstall_and_restore_on_error() -> None:
    numpy_alloc.install()
    assert numpy_alloc.handler_name(np.empty(5)) == "tlalloc_pool"
    numpy_alloc.uninstall()
    assert numpy_alloc.handler_name(np.empty(5)) == "default_allocator"
    with pytest.raises(RuntimeError), numpy_alloc.pool_allocator():
        raise RuntimeError("boom")
    assert not numpy_alloc.is_installed()


def test_handler_is_per_thread() -> None:
    seen: list[str | None] = []
    with numpy_alloc.pool_allocator():
        t = threading.Thread(target=lambda: seen.append(numpy_alloc.handler_name(np.ones(4))))
        t.start()
        t.join()
    assert seen == ["default_allocator"]


def test_allocations_come_from_the_pool() -> None:
    _in_use()
    before = pool.pool_stats()
    with numpy_alloc.pool_allocator():
        arrs = [np.empty(n) for n in (1, 10, 1000, 200_000)]
    mid = pool.pool_stats()
    assert mid["num_allocations"] - before["num_allocations"] >= len(arrs)
    assert mid["num_large_allocations"] > before["num_large_allocations"]  # the 1.6 MB one
    del arrs
    assert _in_use() == before["in_use_bytes"]


def test_numpy_behaviour_under_the_handler() -> None:
    base = _in_use()
    with numpy_alloc.pool_allocator():
        a = np.arange(24.0)
        v = a[::2]
        v[0] = 100.0
        assert a[0] == 100.0 and v.base is a
        m = a.reshape(4, 6)
        assert m.shape == (4, 6) and np.shares_memory(m, a)
        c = m.copy()
        assert numpy_alloc.handler_name(c) == "tlalloc_pool"
        c[0, 0] = -1
        assert a[0] == 100.0
        r = np.arange(10)
        r.resize(1000, refcheck=False)  # realloc on the pool
        assert r[:10].tolist() == list(range(10)) and r[10:].sum() == 0
        r.resize(3, refcheck=False)
        assert r.tolist() == [0, 1, 2]
        u = np.sqrt(m) + np.sin(m) * 2 - m.T.T
        assert u.shape == (4, 6) and np.isfinite(u).all()
        s = RNG.permutation(5000)
        s.sort()
        assert (s == np.arange(5000)).all()
        idx = np.argsort(-s)
        assert idx[0] == 4999
        z = np.zeros((300, 300))
        assert z.sum() == 0.0 and numpy_alloc.handler_name(z) == "tlalloc_pool"
        big = np.ones(3 << 20, dtype=np.uint8)
        assert big.sum() == 3 << 20
        p = pickle.loads(pickle.dumps(m, protocol=4))  # protocol 5 may view the bytes instead
        assert (p == m).all() and numpy_alloc.handler_name(p) == "tlalloc_pool"
        p5 = pickle.loads(pickle.dumps(m, protocol=5))
        assert (p5 == m).all()
        cat = np.concatenate([a, a, a])
        assert cat.size == 72
        del a, v, m, c, r, u, s, idx, z, big, p, p5, cat
    assert _in_use() == base


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype_including_zero_size(dtype: np.dtype) -> None:
    base = _in_use()
    with numpy_alloc.pool_allocator():
        for shape in ((0,), (1,), (7, 3), (0, 5), (1000,)):
            a = np.zeros(shape, dtype=dtype)
            assert numpy_alloc.handler_name(a) == "tlalloc_pool"
            b = np.empty_like(a)
            b[...] = a
            assert a.shape == shape and (a == b).all() if dtype.kind != "V" else True
            c = np.ascontiguousarray(a[::-1]) if a.ndim == 1 else a.T.copy()
            assert c.size == a.size
            d = pickle.loads(pickle.dumps(a))
            assert d.dtype == dtype and d.shape == shape
            del a, b, c, d
    assert _in_use() == base


def test_arrays_freed_by_another_thread() -> None:
    base = _in_use()
    made: list[np.ndarray] = []

    def work() -> None:
        with numpy_alloc.pool_allocator():
            made.extend(np.full(n, n, dtype=np.int64) for n in range(1, 400))

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()  # the creating threads are gone
    assert all(numpy_alloc.handler_name(a) == "tlalloc_pool" for a in made)
    assert all(int(a[0]) == a.size for a in made)
    before = pool.pool_stats()
    made.clear()  # freed here, after their owners exited
    after = pool.pool_stats()
    assert after["num_frees"] - before["num_frees"] >= 4 * 399
    assert _in_use() == base


def test_arrays_freed_while_their_thread_runs() -> None:
    base = _in_use()
    q: list[np.ndarray] = []
    ready, done = threading.Event(), threading.Event()

    def work() -> None:
        with numpy_alloc.pool_allocator():
            q.extend(np.ones(n) for n in range(1, 300))
            ready.set()
            done.wait()

    t = threading.Thread(target=work)
    t.start()
    ready.wait()
    before = pool.pool_stats()
    q.clear()  # cross-thread frees into a live thread's pages
    # On a free-threaded build CPython defers a drop made by another thread
    # until the creating thread merges it (it waits in done.wait() here) or a
    # collection does: collect, so that the frees happen now, in this thread.
    gc.collect()
    after = pool.pool_stats()
    done.set()
    t.join()
    assert after["num_cross_thread_frees"] - before["num_cross_thread_frees"] >= 299
    assert _in_use() == base


def test_arrays_outlive_the_handler() -> None:
    base = _in_use()
    with numpy_alloc.pool_allocator():
        a = np.arange(10_000.0)
    numpy_alloc.uninstall()
    b = a * 2  # made with the default handler
    assert numpy_alloc.handler_name(b) == "default_allocator"
    assert b[-1] == 19_998.0
    del a, b
    assert _in_use() == base


def test_thread_pool_initializer() -> None:
    base = _in_use()
    with ThreadPoolExecutor(max_workers=3, initializer=numpy_alloc.thread_initializer) as ex:
        results = list(ex.map(lambda n: np.arange(float(n)) * 2, range(1, 200)))
        names = set(ex.map(lambda _: numpy_alloc.handler_name(), range(20)))
    assert names == {"tlalloc_pool"}
    assert {numpy_alloc.handler_name(r) for r in results} == {"tlalloc_pool"}
    assert results[5].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    del results
    assert _in_use() == base


def test_set_handler_rejects_other_objects() -> None:
    from tlalloc import _tlalloc

    with pytest.raises(TypeError, match="handler must be a 'mem_handler' capsule or None, got 5"):
        _tlalloc._numpy_set_handler(5)


UNDER_LIMIT = r"""
import os, resource
import numpy as np
from tlalloc import numpy_alloc
with open("/proc/self/statm") as f:
    start = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
# 2.5 GiB above what is mapped now (free-threaded CPython maps about 1 GiB of
# its own): room for the 2 GiB array, not for it and 1 GiB of cached arrays.
resource.setrlimit(resource.RLIMIT_AS, (start + (2560 << 20), resource.RLIM_INFINITY))
with numpy_alloc.pool_allocator():
    arrays = []
    for i in range(58):  # 58 arrays of 50 MiB, at most 20 live at a time
        arrays.append(np.full(50 << 20, i, np.uint8))
        if len(arrays) == 20:
            arrays.clear()
    arrays.clear()
    try:
        a = np.ones(2 << 30, np.uint8)
        print("2 GiB:", int(a[0] + a[-1]))
    except MemoryError:
        print("2 GiB: MemoryError")
"""


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="libasan needs far more address space than the limit")
def test_freed_arrays_make_room_under_an_address_space_limit() -> None:
    """RLIMIT_AS 2.5 GiB above the process's mapped bytes at the start: after
    58 arrays of 50 MiB were freed (the large cache keeps up to 1 GiB of them),
    a 2 GiB array is served: the pool gives its cache back when the OS refuses
    the mapping, and tries again."""
    ran = subprocess.run([sys.executable, "-c", UNDER_LIMIT], capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout == "2 GiB: 2\n"
