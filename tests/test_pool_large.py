"""The pool's large blocks from Python: settings (environment and configure,
validated), realloc growth and shrink keeping contents, alignments up to 64 MiB,
the lazy purge giving memory back (RSS from /proc/self/statm; large blocks, and depot
pages beyond the retain limit), and NumPy's
``a * b + c`` on 64 MiB arrays reusing memory instead of faulting it in."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tlalloc import _tlalloc, numpy_alloc, pool

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGESIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.fixture()
def restore_settings():
    old = pool.get_settings()
    yield
    pool.configure(large_cache_bytes=old.large_cache_bytes, purge_delay_ms=old.purge_delay_ms)
    pool.collect(release_all=True)


# ---- settings -------------------------------------------------------------------


def test_defaults_and_environment() -> None:
    s = pool.PoolSettings()
    assert s.large_cache_bytes == _tlalloc.POOL_DEFAULT_LARGE_CACHE == 1 << 30
    assert s.purge_delay_ms == _tlalloc.POOL_DEFAULT_PURGE_DELAY_MS
    env = {"TLALLOC_POOL_LARGE_CACHE": "256MiB", "TLALLOC_POOL_PURGE_DELAY": "2s"}
    s = pool.settings_from_environ(env)
    assert (s.large_cache_bytes, s.purge_delay_ms) == (256 * MIB, 2000)
    for raw, ms in [("0", 0), ("250", 250), ("250ms", 250), ("1.5s", 1500), (" 7 ms ", 7)]:
        assert pool.settings_from_environ({"TLALLOC_POOL_PURGE_DELAY": raw}).purge_delay_ms == ms
    assert pool.settings_from_environ({"TLALLOC_POOL_LARGE_CACHE": "0"}).large_cache_bytes == 0


@pytest.mark.parametrize(("env", "match"), [
    ({"TLALLOC_POOL_LARGE_CACHE": "lots"}, "TLALLOC_POOL_LARGE_CACHE.*'lots'"),
    ({"TLALLOC_POOL_LARGE_CACHE": "-1"}, "TLALLOC_POOL_LARGE_CACHE"),
    ({"TLALLOC_POOL_LARGE_CACHE": "2TiB"}, "TLALLOC_POOL_LARGE_CACHE='2TiB' is out of range"),
    ({"TLALLOC_POOL_PURGE_DELAY": "soon"}, "TLALLOC_POOL_PURGE_DELAY.*'soon'"),
    ({"TLALLOC_POOL_PURGE_DELAY": "-5"}, "TLALLOC_POOL_PURGE_DELAY"),
    ({"TLALLOC_POOL_PURGE_DELAY": "0.5ms"}, "not a whole number of milliseconds"),
    ({"TLALLOC_POOL_PURGE_DELAY": "2h"}, "TLALLOC_POOL_PURGE_DELAY"),
    ({"TLALLOC_POOL_PURGE_DELAY": "3600001"}, "TLALLOC_POOL_PURGE_DELAY='3600001' is out of range"),
])
def test_bad_environment_names_variable_and_value(env: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pool.settings_from_environ(env)


def test_bad_environment_at_import_fails_clearly() -> None:
    env = dict(os.environ, TLALLOC_POOL_PURGE_DELAY="later")
    r = subprocess.run([sys.executable, "-c", "import tlalloc.pool"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "TLALLOC_POOL_PURGE_DELAY" in r.stderr and "'later'" in r.stderr


def test_configure_validates(restore_settings) -> None:
    with pytest.raises(ValueError, match="large_cache_bytes"):
        pool.configure(large_cache_bytes=-1)
    with pytest.raises(ValueError, match="large_cache_bytes"):
        pool.configure(large_cache_bytes=(1 << 40) + 1)
    with pytest.raises(TypeError, match="large_cache_bytes"):
        pool.configure(large_cache_bytes=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="purge_delay_ms"):
        pool.configure(purge_delay_ms=-1)
    with pytest.raises(TypeError, match="purge_delay_ms"):
        pool.configure(purge_delay_ms=True)  # type: ignore[arg-type]
    s = pool.configure(large_cache_bytes="64MiB", purge_delay_ms="1s")
    assert (s.large_cache_bytes, s.purge_delay_ms) == (64 * MIB, 1000)


# ---- realloc and alignment ----------------------------------------------------------


def _fill(mv: memoryview, start: int, stop: int, seed: int) -> None:
    """Mark the bytes at multiples of 4 KiB in [start, stop)."""
    for i in range(-(-start // 4096) * 4096, stop, 4096):
        mv[i] = (seed + i // 4096) & 0xFF


def _check(mv: memoryview, stop: int, seed: int) -> bool:
    return all(mv[i] == (seed + i // 4096) & 0xFF for i in range(0, stop, 4096))


def test_realloc_growth_and_shrink_keep_contents() -> None:
    buf = pool.alloc(1000)
    n = 1000
    with memoryview(buf) as mv:
        _fill(mv, 0, n, 5)
    for m in [MIB - 1, MIB + 1, 3 * MIB, 40 * MIB, 2 * MIB, 70 * MIB + 3, 500_000, 9 * MIB]:
        buf.realloc(m)
        assert buf.usable_size >= m
        with memoryview(buf) as mv:
            assert _check(mv, min(n, m), 5)
            _fill(mv, min(n, m), m, 5)
        n = m
    buf.free()


def test_realloc_growth_is_linear_in_page_faults() -> None:
    """2,400 growths by 4,100 bytes: about one fault per page of the result."""
    buf = pool.alloc(0)
    f0 = _minflt()
    n = 0
    for _ in range(2400):
        buf.realloc(n + 4100)
        with memoryview(buf) as mv:
            mv[n] = 1
            mv[n + 4099] = 2
        n += 4100
    faults = _minflt() - f0
    buf.free()
    assert faults <= 4 * n // 4096 + 4096, faults  # quadratic: ~2.9 million


@pytest.mark.parametrize("align", [1 << k for k in range(13, 27)])  # 8 KiB .. 64 MiB
def test_alignments_up_to_64_mib(align: int) -> None:
    for size in (1, 5000, MIB + 1):
        before = _tlalloc._pool_large_cache_info()["mapped_bytes"]
        buf = pool.alloc(size, align=align)
        assert buf.address % align == 0
        assert buf.usable_size >= size
        grew = _tlalloc._pool_large_cache_info()["mapped_bytes"] - before
        if align <= MIB:  # the alignment plus the block, no oversized mapping
            assert grew <= align + size + size // 4 + 2 * PAGE
        with memoryview(buf) as mv:
            mv[0] = 1
            mv[size - 1] = 2
        buf.free()
    with pytest.raises(ValueError, match="align"):
        pool.alloc(10, align=2 << 30)


# ---- lazy purge ----------------------------------------------------------------------


def test_lazy_purge_gives_memory_back(restore_settings) -> None:
    pool.configure(purge_delay_ms=100)
    pool.collect(release_all=True)
    bufs = []
    for _ in range(6):
        b = pool.alloc(16 * MIB)
        with memoryview(b) as mv:
            _fill(mv, 0, 16 * MIB, 1)
        bufs.append(b)
    high = _rss()
    for b in bufs:
        b.free()
    assert _tlalloc._pool_large_cache_info()["resident_bytes"] >= 96 * MIB
    # Later ordinary allocations give the purge its chance; no collect().
    low = high
    deadline = time.monotonic() + 10
    while low > high - 72 * MIB and time.monotonic() < deadline:
        time.sleep(0.02)
        pool.alloc(5000).free()
        low = _rss()
    assert low <= high - 72 * MIB, (high >> 20, low >> 20)
    info = _tlalloc._pool_large_cache_info()
    assert info["resident_bytes"] == 0 and info["num_purged"] == 6


def test_depot_keeps_pages_for_the_delay_then_gives_them_back() -> None:
    """Pages that threads emptied stay in the depot beyond ``retain_bytes``
    while the purge delay runs (a burst from threads that then exit), and go
    back to the OS after it, through later allocations."""
    old = pool.get_settings()
    try:
        pool.collect(release_all=True)
        pool.configure(retain_bytes=MIB, purge_delay_ms=600_000)

        both = threading.Barrier(2)

        def burst() -> None:
            bufs = [pool.alloc(4096) for _ in range(2048)]  # 8 MiB, 128 small pages
            for b in bufs:
                with memoryview(b) as mv:
                    mv[::1024] = b"\x5a" * 4
            both.wait()  # 16 MiB live at once
            for b in bufs:
                b.free()

        threads = [threading.Thread(target=burst) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        high = _rss()
        assert pool.pool_stats()["retained_bytes"] >= 12 * MIB
        pool.configure(purge_delay_ms=50)
        low, retained = high, MIB + 1
        deadline = time.monotonic() + 10
        while (retained > MIB or low > high - 8 * MIB) and time.monotonic() < deadline:
            time.sleep(0.02)
            for _ in range(64):
                pool.alloc(5000).free()
            low, retained = _rss(), pool.pool_stats()["retained_bytes"]
        assert retained <= MIB, retained
        assert low <= high - 8 * MIB, (high >> 20, low >> 20)
    finally:
        pool.configure(retain_bytes=old.retain_bytes, purge_delay_ms=old.purge_delay_ms)


# ---- NumPy ---------------------------------------------------------------------------


def test_numpy_64_mib_arrays_reuse_memory(restore_settings) -> None:
    """``a * b + c`` on 64 MiB float64 arrays: the result's block comes from the
    cache, not from fresh pages (16,387 faults per operation before the cache
    kept blocks of this size)."""
    n = 64 * MIB // 8
    with numpy_alloc.pool_allocator():
        a = np.full(n, 1.5)
        b = np.full(n, 2.0)
        c = np.full(n, 0.5)
        r = a * b + c  # warm the cache
        del r
        f0 = _minflt()
        for _ in range(4):
            r = a * b + c
            del r
        per_op = (_minflt() - f0) / 4
        r = a * b + c
        assert float(r[0]) == 3.5 and float(r[-1]) == 3.5
    assert per_op < 1024, per_op
