"""Arena semantics: alignment, scopes, reset, overflow policies, bad input."""

from __future__ import annotations

import gc
import threading
import warnings

import numpy as np
import pytest

import tlalloc
from conftest import settled_live_arenas, wait_for


@pytest.fixture
def arena():
    return tlalloc.Arena("1MiB")


def addr(x) -> int:
    if isinstance(x, memoryview):
        return np.frombuffer(x, dtype=np.uint8).ctypes.data
    return x.ctypes.data


@pytest.mark.parametrize("align", [1 << k for k in range(13)])
def test_alloc_alignment_every_power_of_two(arena, align):
    with arena.scope():
        arena.alloc(3, align=1)  # misalign the offset on purpose
        mv = arena.alloc(40, align=align)
        assert addr(mv) % align == 0
        assert len(mv) == 40 and not mv.readonly
        mv[:] = b"x" * 40
        assert bytes(mv) == b"x" * 40
        del mv


def test_arrays_are_aligned_writable_and_typed(arena):
    with arena.scope():
        for dtype in (np.float32, np.float64, np.int8, np.complex128, np.dtype("S7"), "u2"):
            x = arena.empty((3, 5), dtype)
            assert x.dtype == np.dtype(dtype)
            assert x.shape == (3, 5)
            assert x.flags.writeable and x.flags.c_contiguous
            assert x.ctypes.data % 64 == 0
            assert x.base is not None
            del x


def test_fortran_order(arena):
    with arena.scope():
        x = arena.empty((4, 6), np.float32, order="F")
        assert x.flags.f_contiguous and not x.flags.c_contiguous
        x[:] = np.arange(24, dtype=np.float32).reshape(4, 6)
        assert x[3, 5] == 23
        del x


def test_zeros_really_zero(arena):
    with arena.scope():
        junk = arena.empty(4096, np.uint8)
        junk[:] = 0xFF
        del junk
    with arena.scope():
        z = arena.zeros((64, 64), np.float64)  # reuses the dirty memory
        assert not z.any()
        del z


def test_empty_like(arena):
    proto = np.ones((3, 4), dtype=np.int16, order="F")
    with arena.scope():
        x = arena.empty_like(proto)
        assert x.shape == (3, 4) and x.dtype == np.int16 and x.flags.f_contiguous
        y = arena.empty_like(proto, dtype=np.float32, order="C", shape=(5,))
        assert y.shape == (5,) and y.dtype == np.float32
        del x, y


def test_zero_size_requests(arena):
    with arena.scope():
        used = arena.used
        x = arena.empty(0, np.float64)
        y = arena.empty((5, 0), np.float32)
        mv = arena.alloc(0)
        assert x.size == 0 and y.shape == (5, 0) and len(mv) == 0
        assert arena.used == used
        del x, y, mv


def test_scope_releases_and_changes_generation(arena):
    g0 = arena.generation
    with arena.scope() as a:
        assert a is arena
        x = a.empty(1000)
        assert arena.used >= 8000
        del x
    assert arena.used == 0
    assert arena.generation != g0


def test_nested_scopes_rewind_to_marks(arena):
    with arena.scope():
        a = arena.empty(10, np.uint8)
        u1 = arena.used
        with arena.scope():
            b = arena.empty(1000, np.uint8)
            u2 = arena.used
            with arena.scope():
                c = arena.empty(5000, np.uint8)
                assert arena.depth == 3
                del c
            assert arena.used == u2
            del b
        assert arena.used == u1
        del a
    assert arena.used == 0 and arena.depth == 0


def test_escaping_array_raises_buffererror_and_keeps_contents(arena):
    outer_used = arena.used
    with pytest.raises(BufferError, match="1 array"):
        with arena.scope():
            keep = arena.empty(1000, np.int64)
            keep[:] = np.arange(1000)
    # the memory went with the array: new allocations do not overlap it, and
    # the arena's own position is back where the scope began
    with arena.scope():
        other = arena.empty(1000, np.int64)
        other[:] = -1
        assert not np.shares_memory(other, keep)
        del other
    assert np.array_equal(keep, np.arange(1000))
    assert arena.used == outer_used
    assert arena.stats().escaped_bytes == 8000
    assert arena.live_arrays == 0  # open scopes only: the escaped array is on its own
    arena.reset()  # an escaped array does not block a reset, and survives it
    for _ in range(20):
        arena.empty(5000, np.int64)[:] = -1
    assert np.array_equal(keep, np.arange(1000))
    del keep
    gc.collect()
    assert arena.stats().escaped_bytes == 0


def test_escaped_array_does_not_block_enclosing_scope(arena):
    s_outer = arena.scope()
    s_outer.__enter__()
    with pytest.raises(BufferError):
        with arena.scope():
            keep = arena.empty(10)
            keep[:] = 7
    s_outer.__exit__(None, None, None)  # the escaped array holds its own memory
    assert arena.depth == 0 and arena.used == 0
    assert keep.shape == (10,) and (keep == 7).all()
    del keep
    assert arena.stats().escaped_bytes == 0


def test_memoryview_and_views_count_as_alive(arena):
    with pytest.raises(BufferError):
        with arena.scope():
            mv = arena.alloc(64)
    del mv
    with pytest.raises(BufferError):
        with arena.scope():
            x = arena.empty(100)
            view = x[10:20]
            del x
    del view
    arena.reset()


def test_exception_in_block_is_not_masked(arena):
    with pytest.raises(KeyError):
        with arena.scope():
            x = arena.empty(10)  # noqa: F841  (alive in the traceback's frame)
            raise KeyError("boom")
    # memory kept while the frame may hold x; releasing later works
    gc.collect()
    arena.reset(force=True)


def test_force_reset_releases(arena):
    x = arena.empty(100)
    x[:] = 3.0
    with pytest.raises(BufferError):
        arena.reset()
    arena.reset(force=True)
    assert arena.used == 0
    assert arena.live_arrays == 0  # no longer counted: x holds its memory itself
    y = arena.empty(100)
    y[:] = -1.0
    assert not np.shares_memory(x, y) and (x == 3.0).all()
    del x, y


def test_reset_inside_scope(arena):
    with arena.scope():
        x = arena.empty(100)
        del x
        arena.reset()
        y = arena.empty(100)
        del y
    assert arena.used == 0


def test_scopes_must_close_innermost_first(arena):
    s1, s2 = arena.scope(), arena.scope()
    s1.__enter__()
    s2.__enter__()
    with pytest.raises(RuntimeError, match="innermost first"):
        s1.__exit__(None, None, None)
    s2.__exit__(None, None, None)
    s1.__exit__(None, None, None)
    with pytest.raises(RuntimeError, match="not open"):
        s1.__exit__(None, None, None)


def test_stats_fields_and_repr(arena):
    with arena.scope():
        x = arena.empty(1000, np.uint8)
        s = arena.stats()
        assert s.used_bytes == 1000 and s.capacity_bytes == 1 << 20
        del x
    s = arena.stats()
    assert s.used_bytes == 0 and s.peak_bytes == 1000
    assert s.num_allocations == 1 and s.num_resets == 1 and s.num_overflows == 0
    assert s.utilization == pytest.approx(1000 / (1 << 20))
    assert s.overflow_rate == 0.0
    d = dict(s)
    assert d["peak_bytes"] == 1000 and "utilization" in d
    assert s.to_dict() == d
    assert "peak_bytes=1000" in repr(s)
    with pytest.raises(AttributeError):
        s.peak_bytes = 3


# ---- overflow policies -------------------------------------------------------


def test_overflow_error_names_sizes():
    a = tlalloc.Arena("64KiB")
    with pytest.raises(tlalloc.ArenaOverflowError) as info:
        a.empty(100_000, np.uint8)
    assert isinstance(info.value, MemoryError)
    msg = str(info.value)
    assert "100000 bytes" in msg and "65536" in msg and "0 bytes in use" in msg
    assert a.stats().num_overflows == 1


def test_overflow_huge_request_is_overflow_not_wrap():
    a = tlalloc.Arena("64KiB")
    with pytest.raises(tlalloc.ArenaOverflowError):
        a.alloc(2**62)
    with pytest.raises(ValueError, match="too big"):
        a.empty((2**32, 2**32), np.float64)


def test_overflow_fallback_serves_from_heap_and_frees_at_reset():
    a = tlalloc.Arena("64KiB", overflow="fallback")
    with pytest.warns(tlalloc.ArenaFallbackWarning, match="heap"):
        with a.scope():
            big = a.empty(100_000, np.float64)
            big[:] = 7.0
            assert big.sum() == 700_000.0
            s = a.stats()
            assert s.num_overflows == 1
            assert s.fallback_bytes == 800_000 and s.fallback_live_bytes == 800_000
            del big
    s = a.stats()
    assert s.fallback_live_bytes == 0 and s.fallback_bytes == 800_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per arena: no second warning
        x = a.empty(100_000)
        del x
    a.reset()
    assert a.stats().fallback_live_bytes == 0


def test_overflow_panic_aborts_with_diagnostic(python_subprocess):
    r = python_subprocess(
        "import tlalloc\n"
        "a = tlalloc.Arena('64KiB', overflow='panic')\n"
        "a.alloc(1 << 20)\n"
        "print('not reached')\n"
    )
    assert r.returncode != 0
    assert "not reached" not in r.stdout
    assert "tlalloc: arena overflow" in r.stderr
    assert "1048576 bytes" in r.stderr and "capacity 65536" in r.stderr and "thread" in r.stderr


def test_default_policy_from_config_applies_to_new_arenas():
    old = tlalloc.get_config()
    try:
        tlalloc.configure(arena_overflow="fallback", arena_size="128KiB")
        a = tlalloc.Arena()
        assert a.capacity == 128 * 1024 and a.overflow == "fallback"
    finally:
        tlalloc.configure(**old.as_dict())
    assert tlalloc.Arena().capacity == old.arena_size


def test_zero_on_reset():
    a = tlalloc.Arena("64KiB", zero_on_reset=True)
    assert a.zero_on_reset
    with a.scope():
        x = a.empty(1000, np.uint8)
        x[:] = 255
        del x
    with a.scope():
        y = a.empty(1000, np.uint8)
        assert not y.any()
        del y


# ---- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, exc, match",
    [
        (-1, ValueError, "negative"),
        ((3, -2), ValueError, "negative"),
        (2.5, TypeError, "shape"),
        ((2, 2.0), TypeError, "shape"),
        ("10", TypeError, "shape"),
        (None, TypeError, "shape"),
        ((2**40, 2**40), ValueError, "too big"),
        (2**70, ValueError, "too large"),
        (tuple([1] * 65), ValueError, "dimensions"),
    ],
)
def test_bad_shapes(arena, shape, exc, match):
    with pytest.raises(exc, match=match):
        arena.empty(shape)
    assert arena.used == 0


@pytest.mark.parametrize(
    "dtype, exc, match",
    [
        ("not-a-dtype", TypeError, "not understood"),
        (object, TypeError, "object"),
        (np.dtype([("a", "f8"), ("b", "O")]), TypeError, "object"),
        ("S", TypeError, "no size"),
        (3, TypeError, "dtype 3"),
    ],
)
def test_bad_dtypes(arena, dtype, exc, match):
    with pytest.raises(exc, match=match):
        arena.empty(4, dtype)
    assert arena.used == 0


def test_bad_order(arena):
    with pytest.raises(ValueError, match="order must be"):
        arena.empty(4, np.float32, order="X")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"nbytes": -1}, ValueError, "nbytes must be >= 0"),
        ({"nbytes": 1.5}, TypeError, "nbytes must be an int"),
        ({"nbytes": 8, "align": 3}, ValueError, "power of two"),
        ({"nbytes": 8, "align": 0}, ValueError, "power of two"),
        ({"nbytes": 8, "align": 8192}, ValueError, "power of two"),
        ({"nbytes": 8, "align": 2.0}, TypeError, "align must be an int"),
    ],
)
def test_bad_alloc_arguments(arena, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        arena.alloc(**kwargs)
    assert arena.used == 0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"capacity": -5}, ValueError, "capacity"),
        ({"capacity": 100}, ValueError, "capacity"),
        ({"capacity": 2**50}, ValueError, "capacity"),
        ({"capacity": "12 parsecs"}, ValueError, "capacity"),
        ({"capacity": 1.5}, TypeError, "capacity"),
        ({"capacity": True}, TypeError, "capacity"),
        ({"overflow": "ignore"}, ValueError, "overflow must be"),
        ({"overflow": 1}, TypeError, "overflow must be"),
        ({"zero_on_reset": "yes"}, TypeError, "zero_on_reset"),
    ],
)
def test_bad_arena_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tlalloc.Arena(**kwargs)


def test_capacity_units():
    assert tlalloc.Arena("64KiB").capacity == 65536
    assert tlalloc.Arena("1MB").capacity == 1_000_000
    assert tlalloc.Arena(8192).capacity == 8192


# ---- threads -----------------------------------------------------------------


def test_wrong_thread_raises_runtimeerror():
    a = tlalloc.Arena("64KiB")
    errors = []

    def use():
        for op in (lambda: a.empty(4), lambda: a.alloc(4), a.scope, a.reset):
            try:
                op()
            except RuntimeError as exc:
                errors.append(str(exc))

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert len(errors) == 4 and all("another thread" in e for e in errors)
    assert a.used == 0
    # statistics may be read from anywhere
    out = []
    t = threading.Thread(target=lambda: out.append(a.stats().capacity_bytes))
    t.start()
    t.join()
    assert out == [65536]


def test_thread_arena_is_per_thread():
    mine = tlalloc.thread_arena()
    assert mine is tlalloc.thread_arena() and mine.is_thread_arena
    other = []
    t = threading.Thread(target=lambda: other.append(tlalloc.thread_arena()))
    t.start()
    t.join()
    assert other[0] is not mine
    with pytest.raises(RuntimeError):
        other[0].empty(3)


def test_array_outlives_its_thread():
    box = []

    def work():
        a = tlalloc.thread_arena()
        x = a.empty(1000, np.int32)  # allocated outside any scope
        x[:] = np.arange(1000)
        box.append(x)

    before = settled_live_arenas()
    t = threading.Thread(target=work, name="short-lived")
    t.start()
    t.join()
    # the arena is alive while the array is (the thread has ended)
    assert wait_for(lambda: not [
        s for s in tlalloc.stats(per_thread=True) if s.thread_name == "short-lived" and s.thread_alive
    ])
    assert tlalloc.stats().num_arenas == before + 1
    names = [s.thread_name for s in tlalloc.stats(per_thread=True)]
    assert "short-lived" in names
    dead = [s for s in tlalloc.stats(per_thread=True) if s.thread_name == "short-lived"]
    assert not dead[0].thread_alive
    assert np.array_equal(box[0], np.arange(1000))
    box.clear()
    assert wait_for(lambda: tlalloc.stats().num_arenas == before)


def test_scope_objects_are_single_use(arena):
    s = arena.scope()
    with s:
        pass
    with pytest.raises(RuntimeError, match="already used"):
        s.__enter__()
    # nested scopes get distinct objects even though unused ones are recycled
    with arena.scope() as a1:
        inner = arena.scope()
        with inner:
            assert arena.depth == 2
        assert a1 is arena


def test_unentered_scope_does_not_leak_the_thread_arena():
    baseline = settled_live_arenas()

    def work() -> None:
        tlalloc.scratch()  # created, never entered
        s = tlalloc.thread_arena().scope()
        del s

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for(lambda: tlalloc.stats().num_arenas == baseline)


def test_dtype_given_again_and_changed(arena):
    spec = [("a", "f4")]
    with arena.scope():
        x = arena.empty(3, spec)
        spec.append(("b", "i8"))  # a mutable specification may change between calls
        y = arena.empty(3, spec)
        assert x.dtype.names == ("a",) and y.dtype.names == ("a", "b")
        for dt in (np.float32, np.float32, "i2", np.dtype("u1"), np.float64):
            assert arena.empty(2, dt).dtype == np.dtype(dt)
        del x, y
