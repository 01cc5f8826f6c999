"""Each rule for a value given as text is written once, in C (csrc/env.c): a
table of hostile texts (digits and spaces outside ASCII, float notations,
signs, hexadecimal, empty, spaces, values beyond 64 bits) gets the same answer
from every entry point that reads that kind of value:

- Python arguments: ``tlalloc.parse_size``, ``configure(arena_size=)``,
  ``Arena(capacity=)``, ``pool.configure(retain_bytes=, large_cache_bytes=,
  purge_delay_ms=)``;
- environment variables read by Python (``TLALLOC_ARENA_SIZE``,
  ``TLALLOC_POOL_*``, ``TLALLOC_ZERO_ON_RESET``), in a child process;
- the same variables read by ``libtlalloc.so`` (LD_PRELOAD), which has no
  Python.

Each text is accepted with the same value everywhere, or refused everywhere,
for the same reason, with a message naming the argument or variable and the
value. The expected answers are the specification (env.c's comment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import tlalloc
from tlalloc import pool
from tlalloc._config import MAX_ARENA_SIZE, MIN_ARENA_SIZE, parse_delay_ms, parse_size
from tlalloc.pool import MAX_LARGE_CACHE, MAX_PURGE_DELAY_MS, MAX_RETAIN, preload_path

KiB, MiB = 1 << 10, 1 << 20

# text -> bytes, or the reason it is refused (a phrase of the message).
UNREADABLE, FRACTION, TOO_BIG = "cannot read", "not a whole number", "out of range"
SIZES: dict[str, int | str] = {
    "4MiB": 4 * MiB,
    " 4MiB ": 4 * MiB,
    "  4MiB ": 4 * MiB,
    "4 MiB": 4 * MiB,
    "4\tMiB\n": 4 * MiB,
    "4MB": 4_000_000,
    "4mib": 4 * MiB,
    "4K": 4 * KiB,
    "1.5KiB": 1536,
    "1.5KB": 1500,
    "2.50KiB": 2560,
    "0.5KiB": 512,
    "0.001KB": 1,
    "1TiB": 1 << 40,
    "1tb": 10**12,
    "0": 0,
    "8192": 8192,
    "18446744073709551615": 2**64 - 1,
    "1.5B": FRACTION,
    "1.5": FRACTION,
    "0.0001KB": FRACTION,
    "18446744073709551616": TOO_BIG,
    "99999999999999999999999KiB": TOO_BIG,
    "16777216TiB": TOO_BIG,
    "-0": UNREADABLE,
    "-4": UNREADABLE,
    "+4": UNREADABLE,
    "0x10": UNREADABLE,
    "1e3": UNREADABLE,
    "1e309": UNREADABLE,
    "nan": UNREADABLE,
    "inf": UNREADABLE,
    " ": UNREADABLE,
    "\uff14MiB": UNREADABLE,  # fullwidth 4
    "\u0664": UNREADABLE,  # Arabic-Indic 4
    "\u30004MiB": UNREADABLE,  # ideographic space
    "4MiB\xa0": UNREADABLE,  # no-break space
    "1_000": UNREADABLE,
    ".5KiB": UNREADABLE,
    "4.": UNREADABLE,
    "4KiBB": UNREADABLE,
    "4 K i B": UNREADABLE,
    "4EiB": UNREADABLE,
    "4MiB;": UNREADABLE,
}

DELAYS: dict[str, int | str] = {
    "250": 250,
    "250ms": 250,
    " 250 ms ": 250,
    "1.5s": 1500,
    "0": 0,
    "3600s": 3_600_000,
    "3601s": TOO_BIG,
    "0.5ms": FRACTION,
    "250MS": UNREADABLE,
    "2h": UNREADABLE,
    "\uff12\uff15\uff10": UNREADABLE,
    "1e3": UNREADABLE,
    "nan": UNREADABLE,
    "-0": UNREADABLE,
    "0x10": UNREADABLE,
    " ": UNREADABLE,
    "250ms\u3000": UNREADABLE,
}

REFUSED = "use 0 or 1"
FLAGS: dict[str, bool | str] = {
    "0": False,
    "1": True,
    " 1 ": True,
    "\t0\n": False,
    "01": REFUSED,
    "true": REFUSED,
    "yes": REFUSED,
    "-0": REFUSED,
    "0x1": REFUSED,
    "nan": REFUSED,
    " ": REFUSED,
    "\uff11": REFUSED,
    "1\u3000": REFUSED,
    "\xa01": REFUSED,
}


def _within(want: int | str, lo: int, hi: int) -> int | str:
    """The answer of an entry point accepting lo .. hi: `want`, or out of range."""
    return want if not isinstance(want, int) or lo <= want <= hi else TOO_BIG


def _answer(fn) -> int | str:
    """fn()'s value, or the message of its ValueError."""
    try:
        return fn()
    except ValueError as e:
        return "refused: " + str(e)


def _check(got: int | str, want: int | str, name: str, value: str, where: str) -> None:
    if isinstance(want, str):
        assert isinstance(got, str), (where, name, value, got)
        assert want in got and name in got and repr(value) in got, (where, got)
    else:
        assert got == want, (where, name, value, got)


# ---- Python arguments ----------------------------------------------------------------------


@pytest.mark.parametrize("value,want", SIZES.items(), ids=repr)
def test_sizes_as_python_arguments(value: str, want: int | str) -> None:
    _check(_answer(lambda: parse_size(value, "size")), want, "size", value, "parse_size")
    old, old_pool = tlalloc.get_config(), pool.get_settings()
    try:
        arena_want = _within(want, MIN_ARENA_SIZE, MAX_ARENA_SIZE)
        got = _answer(lambda: tlalloc.configure(arena_size=value).arena_size)
        _check(got, arena_want, "arena_size", value, "configure")
        got = _answer(lambda: tlalloc.Arena(value).capacity)
        _check(got, arena_want, "capacity", value, "Arena")
        got = _answer(lambda: pool.configure(retain_bytes=value).retain_bytes)
        _check(got, _within(want, 0, MAX_RETAIN), "retain_bytes", value, "pool.configure")
        got = _answer(lambda: pool.configure(large_cache_bytes=value).large_cache_bytes)
        _check(got, _within(want, 0, MAX_LARGE_CACHE), "large_cache_bytes", value, "pool.configure")
    finally:
        tlalloc.configure(**old.as_dict())
        pool.configure(retain_bytes=old_pool.retain_bytes,
                       large_cache_bytes=old_pool.large_cache_bytes)


@pytest.mark.parametrize("value,want", DELAYS.items(), ids=repr)
def test_delays_as_python_arguments(value: str, want: int | str) -> None:
    if want != TOO_BIG:
        _check(_answer(lambda: parse_delay_ms(value, "delay")), want, "delay", value,
               "parse_delay_ms")
    old = pool.get_settings()
    try:
        got = _answer(lambda: pool.configure(purge_delay_ms=value).purge_delay_ms)
        _check(got, _within(want, 0, MAX_PURGE_DELAY_MS), "purge_delay_ms", value, "pool.configure")
    finally:
        pool.configure(purge_delay_ms=old.purge_delay_ms)


def test_text_the_c_parsers_cannot_see_is_refused() -> None:
    # An embedded NUL would end the text in C: refused, not cut short.
    for value in ("4\x00MiB", "4MiB\x00", "\udc80"):
        with pytest.raises(ValueError, match="size: cannot read"):
            parse_size(value, "size")
        with pytest.raises(ValueError, match="capacity: cannot read"):
            tlalloc.Arena(value)


# ---- environment variables: Python and libtlalloc.so ------------------------------------

# (variable, table, the answer's range, read by libtlalloc.so too)
VARIABLES = [
    ("TLALLOC_ARENA_SIZE", SIZES, (MIN_ARENA_SIZE, MAX_ARENA_SIZE), False),
    ("TLALLOC_POOL_RETAIN", SIZES, (0, MAX_RETAIN), True),
    ("TLALLOC_POOL_LARGE_CACHE", SIZES, (0, MAX_LARGE_CACHE), True),
    ("TLALLOC_POOL_PURGE_DELAY", DELAYS, (0, MAX_PURGE_DELAY_MS), True),
    ("TLALLOC_ZERO_ON_RESET", FLAGS, None, False),
    ("TLALLOC_POOL_CACHE", FLAGS, None, True),
    ("TLALLOC_POOL_PURGE_THREAD", FLAGS, None, True),
]

# What each variable set in Python: printed by the child as JSON.
SHOW_PYTHON = """
import json, os, tlalloc, tlalloc.pool as pool
def purge_thread_runs():  # the pool's background thread, by the name it gives itself
    tasks = "/proc/self/task"
    return any(open(f"{tasks}/{t}/comm").read().strip() == "tlalloc-purge" for t in os.listdir(tasks))
c, p = tlalloc.get_config(), pool.get_settings()
print(json.dumps({"TLALLOC_ARENA_SIZE": c.arena_size, "TLALLOC_ZERO_ON_RESET": c.zero_on_reset,
    "TLALLOC_POOL_RETAIN": p.retain_bytes, "TLALLOC_POOL_LARGE_CACHE": p.large_cache_bytes,
    "TLALLOC_POOL_PURGE_DELAY": p.purge_delay_ms, "TLALLOC_POOL_CACHE": p.cache,
    "TLALLOC_POOL_PURGE_THREAD": purge_thread_runs()}))
"""

# The same, read from libtlalloc.so in a Python that does not import tlalloc.
SHOW_PRELOADED = """
import ctypes, json, os
class Options(ctypes.Structure):  # tl_pool_options
    _fields_ = [("cache", ctypes.c_int), ("retain_bytes", ctypes.c_size_t),
                ("large_cache_bytes", ctypes.c_size_t), ("purge_delay_ms", ctypes.c_uint),
                ("room", ctypes.c_char * 256)]  # for fields added later
lib = ctypes.CDLL(os.environ["LD_PRELOAD"])
o = Options()
lib.tl_pool_get_options(ctypes.byref(o))
print(json.dumps({"TLALLOC_POOL_RETAIN": o.retain_bytes,
    "TLALLOC_POOL_LARGE_CACHE": o.large_cache_bytes, "TLALLOC_POOL_PURGE_DELAY": o.purge_delay_ms,
    "TLALLOC_POOL_CACHE": bool(o.cache),
    "TLALLOC_POOL_PURGE_THREAD": bool(lib.tl_pool_purge_thread_running())}))
"""


def _run(code: str, var: str, value: str, preload: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLALLOC_")}
    if preload:  # instead of the sanitized run's libasan: this child imports no extension
        env["LD_PRELOAD"] = preload_path()
    env[var] = value
    cmd = [sys.executable] + (["-S"] if preload else []) + ["-c", code]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _defaults(preload: bool) -> dict:
    out = _run(SHOW_PRELOADED if preload else SHOW_PYTHON, "TLALLOC_UNUSED", "", preload)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _env_cases(preload: bool):
    for var, table, bounds, in_c in VARIABLES:
        if preload and not in_c:
            continue
        for value, want in table.items():
            if bounds is not None:
                want = _within(want, *bounds)
            yield var, value, want


@pytest.mark.parametrize("preload", [False, True], ids=["python", "libtlalloc.so"])
def test_environment_variables(preload: bool) -> None:
    cases = list(_env_cases(preload))
    code = SHOW_PRELOADED if preload else SHOW_PYTHON
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda c: _run(code, c[0], c[1], preload), cases))
    failures = []
    for (var, value, want), out in zip(cases, outs, strict=True):
        if isinstance(want, str):
            # Refused before anything runs: the variable, the value and why.
            ok = (out.returncode != 0 and var in out.stderr and want in out.stderr
                  and out.stdout == "")
            if ok and value.isascii() and value.isprintable():
                ok = repr(value) in out.stderr
            if ok and preload:
                ok = out.returncode == 2 and out.stderr.startswith("libtlalloc.so: ")
        else:
            ok = out.returncode == 0 and json.loads(out.stdout)[var] == want
        if not ok:
            failures.append((var, value, want, out.returncode, out.stdout, out.stderr[-300:]))
    assert not failures, failures


def test_empty_variables_are_unset_for_python_and_libtlalloc_so() -> None:
    for preload in (False, True):
        base = _defaults(preload)
        for var, _, _, in_c in VARIABLES:
            if preload and not in_c:
                continue
            out = _run(SHOW_PRELOADED if preload else SHOW_PYTHON, var, "", preload)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout) == base, (var, preload)
