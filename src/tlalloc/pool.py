"""The size-class pool: blocks freed one by one, by any thread.

Arenas serve scratch that dies all at once; the pool serves blocks with their
own lifetimes, such as NumPy array data (see :mod:`tlalloc.numpy_alloc`). Each
thread allocates from pages it owns, without a lock; a block freed by another
thread goes back to its owner's page; pages of exited threads are adopted by
the next thread that frees into them. Only page refills from the shared depot
and returns to it take a lock.

Size classes (:func:`size_classes`): 8, 16, 32, 48, 64 bytes, then four per
doubling (80, 96, 112, 128, 160, ...) up to 1 MiB. The worst-case internal waste
is 15 bytes for requests up to 64 bytes and below 20% of the block above that.
Larger requests are mapped on their own; up to 8 recently freed ones (64 MiB)
are kept for reuse. Blocks of 16 bytes or more are 16-byte aligned.

Settings, read once at import (a bad value raises ``ValueError`` naming the
variable, the value and what is accepted):

=======================  ==============================================  =========
variable                 values                                          default
=======================  ==============================================  =========
``TLALLOC_POOL_CACHE``   ``1``: per-thread caches; ``0``: one locked     ``1``
                         heap for all threads (to measure the caches)
``TLALLOC_POOL_RETAIN``  free resident bytes the depot keeps for reuse   ``8MiB``
                         before giving memory back to the OS (bytes, or
                         with a unit: ``512KiB``, ``64MiB``, ``1GiB``)
=======================  ==============================================  =========

Example:
    >>> from tlalloc import pool
    >>> buf = pool.alloc(100)
    >>> buf.usable_size >= 100
    True
    >>> buf.free()
    >>> pool.pool_stats()["num_allocations"] >= 1
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tlalloc import _tlalloc
from tlalloc._config import _flag, check_flag, env_value, parse_size

PoolBuffer = _tlalloc.PoolBuffer

MAX_RETAIN = 1 << 40
ENV_CACHE = "TLALLOC_POOL_CACHE"
ENV_RETAIN = "TLALLOC_POOL_RETAIN"


@dataclass(frozen=True)
class PoolSettings:
    """The pool's settings (see :func:`get_settings`).

    Example:
        >>> PoolSettings().cache
        True
    """

    cache: bool = True
    retain_bytes: int = int(_tlalloc.POOL_DEFAULT_RETAIN)


def _check_retain(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be an int (bytes) or a string such as '64MiB', got {value!r}")
    nbytes = parse_size(value, name)
    if not 0 <= nbytes <= MAX_RETAIN:
        raise ValueError(f"{name}={value!r} is out of range: use 0 to 1TiB ({MAX_RETAIN} bytes)")
    return nbytes


def settings_from_environ(environ: Mapping[str, str] | None = None) -> PoolSettings:
    """Read and validate ``TLALLOC_POOL_CACHE`` and ``TLALLOC_POOL_RETAIN``.

    Example:
        >>> settings_from_environ({"TLALLOC_POOL_CACHE": "0"}).cache
        False
        >>> settings_from_environ({"TLALLOC_POOL_RETAIN": "1MiB"}).retain_bytes
        1048576
    """
    env = os.environ if environ is None else environ
    s = PoolSettings()
    cache, retain = s.cache, s.retain_bytes
    raw_cache, raw_retain = env_value(env, ENV_CACHE), env_value(env, ENV_RETAIN)
    if raw_cache is not None:  # unset or empty: the default
        cache = _flag(raw_cache, ENV_CACHE)
    if raw_retain is not None:
        retain = _check_retain(raw_retain, ENV_RETAIN)
    return PoolSettings(cache=cache, retain_bytes=retain)


def configure(*, cache: bool | None = None, retain_bytes: int | str | None = None) -> PoolSettings:
    """Change the pool's settings; returns the settings now in force.

    ``cache`` applies to threads that have not used the pool yet (set it early);
    ``retain_bytes`` applies at once.

    Example:
        >>> old = get_settings()
        >>> configure(retain_bytes="16MiB").retain_bytes
        16777216
        >>> _ = configure(retain_bytes=old.retain_bytes)
    """
    cur = get_settings()
    if cache is None:
        new_cache = cur.cache
    else:
        new_cache = check_flag(cache, "cache")
    new_retain = cur.retain_bytes if retain_bytes is None else _check_retain(retain_bytes,
                                                                             "retain_bytes")
    _tlalloc._pool_configure(new_cache, new_retain)
    return get_settings()


def get_settings() -> PoolSettings:
    """The pool's settings in force.

    Example:
        >>> isinstance(get_settings().retain_bytes, int)
        True
    """
    o = _tlalloc._pool_get_options()
    return PoolSettings(cache=bool(o["cache"]), retain_bytes=int(o["retain_bytes"]))


def pool_stats() -> dict[str, Any]:
    """Statistics of the pool, summed over every thread (exited ones included).

    ``in_use_bytes`` (block sizes handed out, not freed), ``peak_bytes`` (its
    high-water mark, folded in at page refills), ``reserved_bytes`` (mapped from
    the OS), ``retained_bytes`` (free memory the depot keeps), ``num_allocations``,
    ``num_frees``, ``num_cross_thread_frees``, ``num_cache_misses`` and
    ``cache_hit_rate`` (allocations served without the depot; 0.0 before any),
    ``num_depot_locks``, ``num_large_allocations`` (mapped on their own),
    ``num_abandoned_pages`` / ``num_reclaimed_pages`` (handed over at thread exit /
    adopted), ``num_segments``, ``num_heaps`` (live thread caches),
    ``num_threads`` (caches ever created), ``cache_enabled``.

    Example:
        >>> s = pool_stats()
        >>> 0.0 <= s["cache_hit_rate"] <= 1.0
        True
    """
    return dict(_tlalloc.pool_stats())


def alloc(nbytes: int, *, align: int = 16, zero: bool = False) -> PoolBuffer:
    """One block of ``nbytes`` from the pool as a writable buffer (``PoolBuffer``).

    The block goes back to the pool on ``free()`` or when the object is
    collected; ``realloc(n)`` resizes it. ``align`` is a power of two up to 1 MiB.

    Example:
        >>> b = alloc(64, align=64, zero=True)
        >>> b.address % 64, bytes(memoryview(b)[:4])
        (0, b'\\x00\\x00\\x00\\x00')
        >>> b.free()
    """
    return _tlalloc.pool_alloc(nbytes, align, zero=zero)


def collect(*, release_all: bool = False) -> None:
    """Return abandoned pages whose blocks were all freed, and give free memory
    above the retention limit (all of it with ``release_all``) back to the OS.

    Example:
        >>> collect()
    """
    _tlalloc.pool_collect(release_all=release_all)


def release_thread_cache() -> None:
    """Tear down the calling thread's cache now, as thread exit does.

    Example:
        >>> release_thread_cache()
    """
    _tlalloc._pool_thread_release()


def size_classes() -> tuple[int, ...]:
    """The pool's block sizes, 8 bytes to 1 MiB; larger requests are mapped.

    Example:
        >>> size_classes()[:5], size_classes()[-1]
        ((8, 16, 32, 48, 64), 1048576)
    """
    return tuple(_tlalloc.pool_size_classes())


def _load() -> None:
    s = settings_from_environ()
    _tlalloc._pool_configure(s.cache, s.retain_bytes)


_load()
