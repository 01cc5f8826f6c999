"""One rule per kind of argument, shared by every entry point, NumPy's where NumPy
has one. Each rule gets a test that runs it through every entry
point that takes that kind of argument."""

from __future__ import annotations

import numpy as np
import pytest

import tlalloc
from tlalloc import kernels

# ---- shape: NumPy's rule (operator.index, not bool; or a sequence of such) ------------

SHAPES = [
    3,
    np.int64(3),
    np.uint8(3),
    np.array(3),
    np.array([2, 3]),
    [np.int8(2), np.uint64(3)],
    (2, 3),
    [],
    True,
    (True, 2),
    3.0,
    (2.0, 3),
    "3",
    None,
    -1,
    (2, -1),
    2**63,
    [2**63],
]


def _outcome(fn):
    try:
        r = fn()
    except (TypeError, ValueError, MemoryError) as e:
        return type(e).__mro__[1] if isinstance(e, MemoryError) else type(e)
    return r.shape


@pytest.mark.parametrize("shape", SHAPES, ids=repr)
def test_shape_follows_numpy(shape: object) -> None:
    want = _outcome(lambda: np.empty(shape, dtype=np.uint8))
    if want is MemoryError or want is ValueError and shape in (2**63, [2**63]):
        want = ValueError  # NumPy: "Maximum allowed dimension exceeded"
    a = tlalloc.Arena(1 << 20)
    proto = np.zeros(1, np.uint8)
    for name, fn in [
        ("empty", lambda: a.empty(shape, dtype=np.uint8)),
        ("zeros", lambda: a.zeros(shape, dtype=np.uint8)),
        ("empty_like", lambda: a.empty_like(proto, shape=shape)),
    ]:
        if shape is None and name == "empty_like":
            continue  # shape=None there means the prototype's shape, as in NumPy
        got = _outcome(fn)
        assert got == want, (name, shape, got, want)
    a.reset(force=True)


# ---- order: NumPy's rule ---------------------------------------------------------------

ORDERS = ["C", "c", "F", "f", None, "A", "K", "k", "Fortran", "", 1, b"C"]


@pytest.mark.parametrize("order", ORDERS, ids=repr)
def test_order_follows_numpy(order: object) -> None:
    a = tlalloc.Arena(1 << 20)
    x = np.ones((2, 3), order="F")
    for ours, theirs in [
        (lambda: a.empty((2, 3), order=order), lambda: np.empty((2, 3), order=order)),
        (lambda: a.zeros((2, 3), order=order), lambda: np.zeros((2, 3), order=order)),
        (lambda: a.empty_like(x, order=order), lambda: np.empty_like(x, order=order)),
    ]:
        try:
            want = theirs()
        except (TypeError, ValueError) as e:
            with pytest.raises(type(e), match="order"):
                ours()
        else:
            got = ours()
            assert got.shape == want.shape
            assert got.flags.f_contiguous == want.flags.f_contiguous
            assert got.flags.c_contiguous == want.flags.c_contiguous
    a.reset(force=True)


# ---- byte counts and alignments: an int (not bool), in range, no clipping -------------


def test_alloc_nbytes_rule() -> None:
    a = tlalloc.Arena(1 << 20)
    assert len(a.alloc(np.int64(16))) == 16
    with pytest.raises(ValueError, match=r"nbytes=9223372036854775808 is out of range"):
        a.alloc(2**63)  # never clipped to 2**63 - 1 and reported as such a request
    with pytest.raises(tlalloc.ArenaOverflowError, match="request of 4611686018427387904 bytes"):
        a.alloc(2**62)
    a.reset(force=True)


# The same rule for a byte count and for an alignment at every entry point that
# takes one; only the largest alignment differs (the arena's, the pool's).
_ALLOCATORS = [
    ("Arena.alloc", lambda n, **kw: tlalloc.Arena(1 << 20).alloc(n, **kw), 4096),
    ("pool.alloc", lambda n, **kw: tlalloc.pool.alloc(n, **kw), 1 << 30),
]


@pytest.mark.parametrize("entry,alloc,max_align", _ALLOCATORS, ids=[e[0] for e in _ALLOCATORS])
def test_nbytes_and_align_rules_are_the_same_everywhere(entry, alloc, max_align) -> None:
    for nbytes, exc, msg in [
        (-1, ValueError, "nbytes must be >= 0, got -1"),
        (2**63, ValueError, "nbytes=9223372036854775808 is out of range"),
        (2**64, ValueError, "nbytes=18446744073709551616 is out of range"),
        (True, TypeError, "nbytes must be an int, got True"),
        (1.0, TypeError, "nbytes must be an int, got 1.0"),
        ("16", TypeError, "nbytes must be an int, got '16'"),
    ]:
        with pytest.raises(exc, match=msg):
            alloc(nbytes)
    for align, exc in [(3, ValueError), (0, ValueError), (-8, ValueError),
                       (2 * max_align, ValueError), (2**64, ValueError),
                       (True, TypeError), (2.0, TypeError), ("8", TypeError)]:
        with pytest.raises(exc, match="align must be"):
            alloc(8, align=align)
    for align in (1, np.int64(64), max_align // 1024):
        buf = alloc(8, align=align)
        addr = buf.address if hasattr(buf, "address") else np.frombuffer(buf, np.uint8).ctypes.data
        assert addr % int(align) == 0
        if hasattr(buf, "free"):
            buf.free()


# ---- flags in Python: True or False --------------------------------------------------


@pytest.mark.parametrize("value", [2, 1, 0, "1", "yes", None.__class__])
def test_flag_rule_is_the_same_everywhere(value: object) -> None:
    with pytest.raises(TypeError, match="zero_on_reset must be True or False"):
        tlalloc.Arena(zero_on_reset=value)
    with pytest.raises(TypeError, match="zero_on_reset must be True or False"):
        tlalloc.configure(zero_on_reset=value)
    with pytest.raises(TypeError, match="prefault must be True or False"):
        tlalloc.configure(prefault=value)
    with pytest.raises(TypeError, match="prefault must be True or False"):
        tlalloc.Arena(1 << 16, prefault=value)
    with pytest.raises(TypeError, match="cache must be True or False"):
        tlalloc.pool.configure(cache=value)


def test_flags_accept_bools_and_numpy_bools() -> None:
    old = tlalloc.get_config()
    try:
        for v in (True, False, np.True_, np.False_):
            assert tlalloc.Arena(1 << 16, zero_on_reset=v).zero_on_reset is bool(v)
            assert tlalloc.configure(zero_on_reset=v).zero_on_reset is bool(v)
            assert tlalloc.configure(prefault=v).prefault is bool(v)
            tlalloc.Arena(1 << 16, prefault=v)  # accepted as configure() accepts it
    finally:
        tlalloc.configure(**old.as_dict())


# ---- choices among names: a str, exactly ------------------------------------------------


@pytest.mark.parametrize("value", ["FALLBACK", " fallback ", "Fallback", "fall"])
def test_choice_rule_is_the_same_everywhere(value: str) -> None:
    with pytest.raises(ValueError, match="overflow"):
        tlalloc.Arena(1 << 16, overflow=value)
    with pytest.raises(ValueError, match="arena_overflow"):
        tlalloc.configure(arena_overflow=value)


def test_choice_of_another_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="overflow"):
        tlalloc.Arena(1 << 16, overflow=1)
    with pytest.raises(TypeError, match="arena_overflow"):
        tlalloc.configure(arena_overflow=1)
    with pytest.raises(TypeError, match="huge_pages"):
        tlalloc.Arena(1 << 16, huge_pages=b"off")
    with pytest.raises(TypeError, match="huge_pages"):
        tlalloc.configure(huge_pages=b"off")


# ---- environment: unset or empty means the default; flags are "0" / "1" ----------------

_SHOW = ("import tlalloc, tlalloc.pool; c = tlalloc.get_config(); "
         "print(c.zero_on_reset, c.arena_overflow, tlalloc.pool.get_settings().cache)")


def test_empty_environment_variables_mean_unset(python_subprocess) -> None:
    env = {"TLALLOC_ZERO_ON_RESET": "", "TLALLOC_POOL_CACHE": "", "TLALLOC_ARENA_OVERFLOW": "",
           "TLALLOC_POOL_RETAIN": ""}
    r = python_subprocess(_SHOW, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "error", "True"]


@pytest.mark.parametrize(
    "var,value",
    [("TLALLOC_ZERO_ON_RESET", "2"), ("TLALLOC_ZERO_ON_RESET", "true"),
     ("TLALLOC_POOL_CACHE", "yes"), ("TLALLOC_ARENA_OVERFLOW", "fall back"),
     ("TLALLOC_HUGE_PAGES", "on")],
)
def test_bad_environment_values_are_errors(python_subprocess, var: str, value: str) -> None:
    r = python_subprocess("import tlalloc, tlalloc.pool; tlalloc.pool.get_settings()", {var: value})
    assert r.returncode != 0
    assert var in r.stderr and repr(value) in r.stderr


def test_environment_text_ignores_spaces_and_case(python_subprocess) -> None:
    env = {"TLALLOC_ZERO_ON_RESET": " 1 ", "TLALLOC_POOL_CACHE": " 0", "TLALLOC_ARENA_OVERFLOW": " Fallback "}
    r = python_subprocess(_SHOW, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "fallback", "False"]


# ---- node ids: reported as given ----------------------------------------------------------


def test_uint64_node_ids_are_reported_as_given() -> None:
    g = (np.array([0, 1]), np.array([0]), np.ones(1))
    big = 2**64 - 1
    for seeds in (np.array([big], np.uint64), np.uint64(big), np.array([0, big], np.uint64)[1:]):
        with pytest.raises(ValueError, match=rf"seeds\[0\] = {big} is out of range"):
            kernels.spread_activation(g, seeds)
    bad = (np.array([0, 1]), np.array([big], np.uint64), np.ones(1))
    with pytest.raises(ValueError, match=rf"graph.indices\[0\] = {big} is out of range"):
        kernels.spread_activation(bad, 0)


# ---- dtype: converted every time unless the specification cannot change ----------------


def test_dtype_of_an_object_whose_dtype_changes_is_read_again() -> None:
    class Spec:
        dtype = np.dtype(np.float32)

    a = tlalloc.Arena(1 << 20)
    assert a.empty(3, Spec).dtype == np.dtype(np.float32)
    Spec.dtype = np.dtype(np.int16)
    assert a.empty(3, Spec).dtype == np.dtype(np.int16)
    assert np.empty(3, Spec).dtype == np.dtype(np.int16)  # NumPy's reading of it
    inst = Spec()
    assert a.empty(3, inst).dtype == np.dtype(np.int16)
    inst.dtype = np.dtype(np.uint8)
    assert a.empty(3, inst).dtype == np.dtype(np.uint8)
    a.reset(force=True)


# ---- counts (top_k, max_depth): an int, not bool, >= 0 ------------------------------------


@pytest.mark.parametrize("value,exc", [(True, TypeError), (1.0, TypeError), (-1, ValueError),
                                       (2**64, ValueError)])
def test_count_rule(value: object, exc: type[Exception]) -> None:
    q = np.ones(2, np.float32)
    c = np.ones((3, 2), np.float32)
    g = (np.array([0, 1]), np.array([0]), np.ones(1))
    with pytest.raises(exc, match="top_k"):
        kernels.cosine_similarity(q, c, top_k=value)
    with pytest.raises(exc, match="top_k"):
        kernels.spread_activation(g, 0, top_k=value)
    with pytest.raises(exc, match="max_depth"):
        kernels.spread_activation(g, 0, max_depth=value)
    assert kernels.cosine_similarity(q, c, top_k=np.int64(2))[0].tolist() == [0, 1]


def test_empty_like_of_a_zero_dimensional_prototype() -> None:
    # Found by fuzz/fuzz_arena_args.py under UBSan: the prototype's (NULL) dims
    # array was passed to memcpy for a 0-d prototype.
    a = tlalloc.Arena(1 << 16)
    for proto in (np.array(1.5), np.float32(2.0), 3):
        x = a.empty_like(proto)
        want = np.empty_like(proto)
        assert x.shape == want.shape == () and x.dtype == want.dtype
    a.reset(force=True)
