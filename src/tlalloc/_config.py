"""Configuration: environment variables read once at import, and ``configure()``.

Every value is validated; a bad one raises ``ValueError`` naming the variable
(or argument), the value and what is accepted. It is never silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from tlalloc import _tlalloc

MIN_ARENA_SIZE = 4096
MAX_ARENA_SIZE = 1 << 40  # 1 TiB of address space
DEFAULT_ARENA_SIZE = 8 << 20  # TL_ARENA_DEFAULT_CAPACITY; chosen from the kernels' scratch (docs/kernels.md)

OVERFLOW_POLICIES = ("error", "fallback", "panic")
HUGE_PAGES = ("off", "thp", "hugetlb")
NUMA_POLICIES = ("off", "local", "interleave")

# The texts of sizes, delays and flags are read by the C library's parsers
# (csrc/env.c, through the extension), so that the Python package and
# libtlalloc.so, which reads its variables before any Python runs, accept and
# refuse exactly the same texts: ASCII digits, ASCII spaces, the units below.
_SPACES = " \t\n\r\f\v"  # what the C parsers skip around a value


def parse_size(value: str | int, name: str = "size") -> int:
    """Parse a byte count: an int, or a string with an optional unit.

    A string is a decimal number in ASCII digits (optionally with a point and
    more digits), then an optional unit, with optional ASCII spaces around
    either. Units: ``KiB``, ``MiB``, ``GiB``, ``TiB`` (powers of 1024) and
    ``KB``, ``MB``, ``GB``, ``TB`` (powers of 1000), case-insensitive; ``B``,
    ``K`` (KiB) or none for bytes. The result must be a whole number of bytes
    below 2**64. These are the rules of ``libtlalloc.so`` for its variables:
    the same parser reads both.

    Example:
        >>> parse_size("4MiB")
        4194304
        >>> parse_size("1.5KB")
        1500
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes or a string such as '4MiB', got {value!r}")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a number of bytes or a string such as '4MiB', got {value!r}")
    return _tlalloc._parse_size(value, name)


def parse_delay_ms(value: str | int, name: str = "delay") -> int:
    """Parse a delay in milliseconds: an int, or a string ``"250"``, ``"250ms"``, ``"1.5s"``.

    The number as for :func:`parse_size`; the unit ``ms`` or ``s`` (case
    counts), a whole number of milliseconds. The rules of ``libtlalloc.so``.

    Example:
        >>> parse_delay_ms("1.5s")
        1500
        >>> parse_delay_ms(" 250 ms ")
        250
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be an int (milliseconds) or a string such as '250ms' or "
                        f"'1s', got {value!r}")
    if isinstance(value, int):
        return value
    return _tlalloc._parse_delay_ms(value, name)


def _check_arena_size(nbytes: int, name: str, raw: object) -> int:
    if not MIN_ARENA_SIZE <= nbytes <= MAX_ARENA_SIZE:
        raise ValueError(
            f"{name}={raw!r} is out of range: an arena holds between 4KiB ({MIN_ARENA_SIZE} bytes) "
            f"and 1TiB ({MAX_ARENA_SIZE} bytes)"
        )
    return nbytes


# ---- one rule per kind of argument ----------------------------------------------------
# Every entry point (Arena(...), configure(), the pool's configure(), the
# environment) applies the same rule to the same kind of value:
#
# - a choice among names in Python (overflow policy, huge pages, NUMA): a str
#   equal to one of the names, exactly (case and spaces count); else TypeError
#   (not a str) or ValueError (another str), naming the argument, the value and
#   the names;
# - a flag in Python (zero_on_reset, prefault, cache, per_thread): True or False
#   (a bool or numpy.bool_); anything else is a TypeError;
# - a value in the environment is text typed by hand: surrounding ASCII spaces
#   and the case of a name are ignored (TLALLOC_ARENA_OVERFLOW=Fallback); a flag
#   there is "0" or "1" (the C library's tl_parse_flag);
# - a size: an int (operator.index, not bool) or a str with a unit (parse_size,
#   the C library's tl_parse_size); a delay likewise (parse_delay_ms);
# - an environment variable that is unset or set to "" is not configured: the
#   default applies (shells make "" easy to set by accident, as in VAR= cmd).
#
# The C binding applies the same rules to Arena()'s arguments (_ext/args.c).


def _choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """A choice among names: exact in Python, spaces and case ignored in the environment.

    Example:
        >>> _choice("fallback", "overflow", OVERFLOW_POLICIES)
        'fallback'
        >>> _choice(" Fallback", "TLALLOC_ARENA_OVERFLOW", OVERFLOW_POLICIES)
        'fallback'
    """
    if isinstance(value, str) and name.startswith("TLALLOC_"):
        text = value.strip(_SPACES)
        if text.isascii() and text.lower() in choices:
            return text.lower()
        raise ValueError(f"{name}={value!r} is not accepted; use one of: {', '.join(choices)}")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of: {', '.join(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not accepted; use one of: {', '.join(choices)}")
    return value


def check_flag(value: object, name: str) -> bool:
    """A flag given in Python: True or False.

    Example:
        >>> check_flag(True, "zero_on_reset")
        True
    """
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool" and type(value).__module__ == "numpy":  # numpy.bool_
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def env_flag(value: object, name: str) -> bool:
    """A flag from the environment ("0" or "1", ASCII spaces around it ignored:
    the rule of libtlalloc.so), or from Python (see check_flag).

    Example:
        >>> env_flag(" 1", "TLALLOC_ZERO_ON_RESET")
        True
    """
    if isinstance(value, str):
        return _tlalloc._parse_flag(value, name)
    return check_flag(value, name)


def env_value(environ: Mapping[str, str], var: str) -> str | None:
    """The value of an environment variable, or None when it is unset or empty.

    Example:
        >>> env_value({"TLALLOC_NUMA": ""}, "TLALLOC_NUMA") is None
        True
    """
    raw = environ.get(var)
    return raw if raw else None


@dataclass(frozen=True)
class Config:
    """Settings for arenas created from now on (see ``tlalloc.get_config()``).

    Example:
        >>> Config().arena_size
        8388608
    """

    arena_size: int = DEFAULT_ARENA_SIZE
    arena_overflow: str = "error"
    zero_on_reset: bool = False
    huge_pages: str = "off"
    numa: str = "off"
    prefault: bool = False
    track_allocations: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict.

        Example:
            >>> Config().as_dict()["arena_overflow"]
            'error'
        """
        return asdict(self)


# environment variable -> (field, parser)
ENV_VARS: dict[str, str] = {
    "TLALLOC_ARENA_SIZE": "arena_size",
    "TLALLOC_ARENA_OVERFLOW": "arena_overflow",
    "TLALLOC_ZERO_ON_RESET": "zero_on_reset",
    "TLALLOC_HUGE_PAGES": "huge_pages",
    "TLALLOC_NUMA": "numa",
    "TLALLOC_PREFAULT": "prefault",
    "TLALLOC_TRACK_ALLOCATIONS": "track_allocations",
}


def validate_setting(field: str, value: object, name: str) -> Any:
    """One setting of Config checked (``field``), named ``name`` in errors."""
    if field == "arena_size":
        if isinstance(value, str):
            return _check_arena_size(parse_size(value, name), name, value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int (bytes) or a string such as '4MiB', got {value!r}")
        return _check_arena_size(value, name, value)
    if field == "arena_overflow":
        return _choice(value, name, OVERFLOW_POLICIES)
    if field == "huge_pages":
        return _choice(value, name, HUGE_PAGES)
    if field == "numa":
        return _choice(value, name, NUMA_POLICIES)
    if field in ("zero_on_reset", "prefault", "track_allocations"):
        return env_flag(value, name) if name in ENV_VARS else check_flag(value, name)
    raise TypeError(f"unknown setting {name!r}")  # pragma: no cover


def from_environ(environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate every ``TLALLOC_*`` arena variable.

    Example:
        >>> from_environ({"TLALLOC_ARENA_SIZE": "4MiB"}).arena_size
        4194304
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var, field in ENV_VARS.items():
        raw = env_value(env, var)
        if raw is None:
            continue
        try:
            values[field] = validate_setting(field, raw, var)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad environment variable: {exc}") from None
    return Config(**values)


_current = Config()


def _push(cfg: Config) -> None:
    _tlalloc._set_defaults(
        cfg.arena_size,
        OVERFLOW_POLICIES.index(cfg.arena_overflow),
        int(cfg.zero_on_reset),
        HUGE_PAGES.index(cfg.huge_pages),
        NUMA_POLICIES.index(cfg.numa),
        int(cfg.prefault),
    )
    _tlalloc._set_track_allocations(cfg.track_allocations)


def load() -> None:
    """Read the environment (once, at import) and apply it."""
    global _current
    _current = from_environ()
    _push(_current)


def configure(**settings: Any) -> Config:
    """Change the settings for arenas created from now on; returns the new settings.

    Accepted keywords: ``arena_size`` (int bytes or ``"4MiB"``), ``arena_overflow``
    (``"error"``, ``"fallback"``, ``"panic"``), ``zero_on_reset`` (bool),
    ``huge_pages`` (``"off"``, ``"thp"``, ``"hugetlb"``), ``numa`` (``"off"``,
    ``"local"``, ``"interleave"``), ``prefault`` (bool). Existing arenas, including
    thread arenas already created, keep their settings. ``track_allocations``
    (bool, also ``TLALLOC_TRACK_ALLOCATIONS=1``) applies at once to every arena:
    each allocation then remembers the file and line that made it, and a
    ``BufferError`` names them for the arrays still alive (as ``tracemalloc``
    does; it costs a weak reference and a frame lookup per allocation, and
    nothing but a flag test when off).

    Example:
        >>> import tlalloc
        >>> old = tlalloc.get_config()
        >>> tlalloc.configure(arena_size="8MiB").arena_size
        8388608
        >>> _ = tlalloc.configure(**old.as_dict())
    """
    global _current
    fields = Config.__dataclass_fields__
    changes: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in fields:
            raise TypeError(
                f"configure() got an unknown setting {key!r}; accepted: {', '.join(fields)}"
            )
        changes[key] = validate_setting(key, value, key)
    new = replace(_current, **changes)
    _push(new)
    _current = new
    return new


def get_config() -> Config:
    """The settings that arenas created now would get.

    Example:
        >>> import tlalloc
        >>> tlalloc.get_config().arena_overflow in ("error", "fallback", "panic")
        True
    """
    return _current
