"""Configuration: environment variables (read at import, in a subprocess) and configure()."""

from __future__ import annotations

import pytest

import tlalloc
from tlalloc._config import from_environ, parse_size

SHOW = (
    "import tlalloc; c = tlalloc.get_config(); a = tlalloc.thread_arena(); "
    "print(c.arena_size, c.arena_overflow, c.zero_on_reset, a.capacity, a.overflow, a.zero_on_reset)"
)


@pytest.mark.parametrize(
    "value, expected",
    [("4MiB", 4 << 20), ("512KiB", 512 << 10), ("1GiB", 1 << 30), ("4MB", 4_000_000),
     ("65536", 65536), ("2 mib", 2 << 20), ("10KB", 10_000)],
)
def test_arena_size_units(python_subprocess, value, expected):
    r = python_subprocess(SHOW, {"TLALLOC_ARENA_SIZE": value})
    assert r.returncode == 0, r.stderr
    fields = r.stdout.split()
    assert int(fields[0]) == expected and int(fields[3]) == expected


def test_defaults(python_subprocess):
    r = python_subprocess(SHOW)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(8 << 20), "error", "False", str(8 << 20), "error", "False"]


def test_overflow_and_zero_from_env(python_subprocess):
    r = python_subprocess(SHOW, {"TLALLOC_ARENA_OVERFLOW": "fallback", "TLALLOC_ZERO_ON_RESET": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[4:] == ["fallback", "True"]


@pytest.mark.parametrize(
    "var, value, accepted",
    [
        ("TLALLOC_ARENA_SIZE", "lots", "KiB"),
        ("TLALLOC_ARENA_SIZE", "-5", "KiB"),
        ("TLALLOC_ARENA_SIZE", "100", "4KiB"),
        ("TLALLOC_ARENA_SIZE", "5TiB", "1TiB"),
        ("TLALLOC_ARENA_SIZE", "1.5", "whole number"),
        ("TLALLOC_ARENA_OVERFLOW", "ignore", "error, fallback, panic"),
        ("TLALLOC_ZERO_ON_RESET", "yes", "0 or 1"),
        ("TLALLOC_ZERO_ON_RESET", "2", "0 or 1"),
        ("TLALLOC_HUGE_PAGES", "always", "off, thp, hugetlb"),
        ("TLALLOC_NUMA", "remote", "off, local, interleave"),
        ("TLALLOC_PREFAULT", "true", "0 or 1"),
    ],
)
def test_bad_environment_values_fail_at_import(python_subprocess, var, value, accepted):
    r = python_subprocess("import tlalloc", {var: value})
    assert r.returncode != 0
    assert "ValueError" in r.stderr
    assert var in r.stderr and repr(value) in r.stderr and accepted in r.stderr


def test_parse_size():
    assert parse_size("1.5KiB") == 1536
    assert parse_size(123) == 123
    with pytest.raises(ValueError, match="cannot read"):
        parse_size("4 MiBs")
    with pytest.raises(TypeError):
        parse_size(None)  # type: ignore[arg-type]


def test_from_environ_is_pure():
    cfg = from_environ({"TLALLOC_ARENA_SIZE": "8MiB", "TLALLOC_ARENA_OVERFLOW": "PANIC"})
    assert cfg.arena_size == 8 << 20 and cfg.arena_overflow == "panic"


def test_configure_changes_new_arenas_only():
    old = tlalloc.get_config()
    existing = tlalloc.Arena()
    try:
        cfg = tlalloc.configure(arena_size="256KiB", zero_on_reset=True)
        assert cfg == tlalloc.get_config()
        assert cfg.arena_size == 256 << 10 and cfg.zero_on_reset
        new = tlalloc.Arena()
        assert new.capacity == 256 << 10 and new.zero_on_reset
        assert existing.capacity == old.arena_size
    finally:
        tlalloc.configure(**old.as_dict())
    assert tlalloc.get_config() == old


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"arena_size": 10}, ValueError, "arena_size=10"),
        ({"arena_size": "big"}, ValueError, "arena_size"),
        ({"arena_size": 2.0}, TypeError, "arena_size"),
        ({"arena_overflow": "retry"}, ValueError, "error, fallback, panic"),
        ({"zero_on_reset": "maybe"}, TypeError, "zero_on_reset"),
        ({"colour": "red"}, TypeError, "unknown setting 'colour'"),
    ],
)
def test_configure_rejects_bad_values(kwargs, exc, match):
    old = tlalloc.get_config()
    with pytest.raises(exc, match=match):
        tlalloc.configure(**kwargs)
    assert tlalloc.get_config() == old
