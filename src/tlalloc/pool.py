"""The size-class pool: blocks freed one by one, by any thread.

Arenas serve scratch that dies all at once; the pool serves blocks with their
own lifetimes, such as NumPy array data (see :mod:`tlalloc.numpy_alloc`). Each
thread allocates from pages it owns, without a lock; a block freed by another
thread goes back to its owner's page; pages of exited threads are adopted by
the next thread that needs a page of their size class (or frees into them while
it has few pages of that class). Only page refills from the shared depot and
returns to it take a lock.

The depot keeps ``retain_bytes`` of emptied pages resident for reuse. Pages
beyond that go back to the OS once they stayed free for ``purge_delay_ms`` (a
program whose threads come and go takes them again without page faults), and
at once when either setting is 0 or on :func:`collect`. What waits for the
delay beyond ``retain_bytes`` is bounded: a free that finds more than 16 MiB
of it gives the oldest pages back at once, so a burst of frees leaves the
resident set as it happens even if the program never calls the pool again
(the bound grows for a program that keeps taking back what it freed within
the delay, and shrinks again when it stops).

Memory freed goes back without a later call: the background purge thread
(:func:`purge_thread`), on by default, starts itself at the first allocation
above 1 KiB (or refill) after something freed waited for the purge delay, and
from then on gives back what is due within ``purge_delay_ms`` plus at most a
second, with no further pool call. Fork stops it (it does not exist while the
process is copied, so Python's multi-threaded fork warning does not count it)
and the next such allocation starts it again, in the parent and in the child.
``TLALLOC_POOL_PURGE_THREAD=0`` or ``purge_thread(False)`` keeps it off (then
the lazy purge runs on later pool calls only). Either way, what only its owner
thread may touch (the thread's own empty pages and free blocks) waits for that
thread's next allocation above 1 KiB, its exit, or :func:`collect` from it.

When the OS refuses memory (``ulimit -v``/``RLIMIT_AS``, the strict overcommit
mode), the pool gives back what it holds unused (as ``collect(release_all=True)``
does, plus the calling thread's own free pages, and other threads' at their
next allocation above 1 KiB) and tries once more before it reports failure;
the NumPy allocator (:mod:`tlalloc.numpy_alloc`) and arenas' regions do the
same. A single request the kernel's overcommit policy refuses (above RAM plus
swap under the default heuristic mode) fails at once with ``MemoryError``.

Size classes (:func:`size_classes`): 8, 16, 32, 48, 64 bytes, then four per
doubling (80, 96, 112, 128, 160, ...) up to 64 KiB. The worst-case internal waste
is 15 bytes for requests up to 64 bytes and below 20% of the block above that.
Blocks of 16 bytes or more are 16-byte aligned.

Larger requests (and alignments above 4 KiB, up to 1 GiB) are *large blocks*,
each mapped on its own:

- a freed large block goes to the large cache, bounded in bytes
  (``large_cache_bytes``; the oldest blocks are unmapped beyond it); a request is
  served from a cached block at most a quarter larger than it needs, three
  quarters above 4 MiB (no system call, no page faults; the slack stays
  resident while the block lives), else from one up to twice as large (its tail unmapped)
  or at least half as large (grown with ``mremap``, its pages kept);
- a cached block not reused for ``purge_delay_ms`` is purged: its memory goes
  back to the OS (``madvise(MADV_DONTNEED)``, resident memory drops) while the
  mapping stays cached; a purged block unused for 8 times the delay (at least
  a second) is unmapped.
  The purge is lazy: large allocations and frees, allocations above 1 KiB
  and :func:`collect` do it once it is due, and so does the background
  purge thread (:func:`purge_thread`) while the program makes no call. When the
  system runs low on memory (``MemAvailable`` below 1/8 of ``MemTotal``, checked
  at most once a second) every cached block is purged at once;
- cached blocks are purged sooner, oldest first, once they and the live
  large blocks together hold more than the most live large bytes of the last
  purge delay (the blocks a free just cached counted as live) plus a 32nd of
  it (at least 1 MiB, at most ``retain_bytes``): a churn of many sizes
  does not keep a block of each size resident, while threads that free their
  blocks and are followed by threads that allocate as much again get them back
  without page faults;
- mappings of 4 MiB and more ask for transparent huge pages (as NumPy does);
- ``realloc`` shrinks a large block in place and grows it with ``mremap``: no
  copy, and only new pages are faulted in.

Settings, read once at import (a bad value raises ``ValueError`` naming the
variable, the value and what is accepted):

=======================  ==============================================  =========
variable                 values                                          default
=======================  ==============================================  =========
``TLALLOC_POOL_CACHE``   ``1``: per-thread caches; ``0``: one locked     ``1``
                         heap for all threads (to measure the caches)
``TLALLOC_POOL_RETAIN``  free resident bytes the depot keeps for reuse   ``8MiB``
                         (pages beyond it go back to the OS after the
                         purge delay; bytes, or with a unit: ``512KiB``,
                         ``64MiB``, ``1GiB``; ``0``: none, at once)
``TLALLOC_POOL_LARGE_``  bytes of freed large blocks kept mapped for     ``1GiB``
``CACHE``                reuse, 0 to 1TiB (``0``: no cache; a size as
                         for ``TLALLOC_POOL_RETAIN``)
``TLALLOC_POOL_PURGE_``  milliseconds a cached large block, or a depot   ``250``
``DELAY``                page beyond the retain limit, may stay resident
                         unused, 0 to 3600000 (``0``: purge at once);
                         ``250``, ``250ms`` or ``1.5s``
``TLALLOC_POOL_PURGE_``  unset: the background purge thread starts      unset
``THREAD``               itself when something is due; ``1``: start it
                         at import (:func:`purge_thread`); ``0``: none
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
from tlalloc._config import check_flag, env_flag, env_value, parse_delay_ms, parse_size

PoolBuffer = _tlalloc.PoolBuffer

MAX_RETAIN = 1 << 40
MAX_LARGE_CACHE = int(_tlalloc.POOL_MAX_LARGE_CACHE)
MAX_PURGE_DELAY_MS = int(_tlalloc.POOL_MAX_PURGE_DELAY_MS)
ENV_CACHE = "TLALLOC_POOL_CACHE"
ENV_RETAIN = "TLALLOC_POOL_RETAIN"
ENV_LARGE_CACHE = "TLALLOC_POOL_LARGE_CACHE"
ENV_PURGE_DELAY = "TLALLOC_POOL_PURGE_DELAY"
ENV_PURGE_THREAD = "TLALLOC_POOL_PURGE_THREAD"


@dataclass(frozen=True)
class PoolSettings:
    """The pool's settings (see :func:`get_settings`).

    Example:
        >>> PoolSettings().cache
        True
    """

    cache: bool = True
    retain_bytes: int = int(_tlalloc.POOL_DEFAULT_RETAIN)
    large_cache_bytes: int = int(_tlalloc.POOL_DEFAULT_LARGE_CACHE)
    purge_delay_ms: int = int(_tlalloc.POOL_DEFAULT_PURGE_DELAY_MS)


def _check_retain(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be an int (bytes) or a string such as '64MiB', got {value!r}")
    nbytes = parse_size(value, name)
    if not 0 <= nbytes <= MAX_RETAIN:
        raise ValueError(f"{name}={value!r} is out of range: use 0 to 1TiB ({MAX_RETAIN} bytes)")
    return nbytes


def _check_large_cache(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be an int (bytes) or a string such as '1GiB', got {value!r}")
    nbytes = parse_size(value, name)
    if not 0 <= nbytes <= MAX_LARGE_CACHE:
        raise ValueError(
            f"{name}={value!r} is out of range: use 0 (no cache) to 1TiB ({MAX_LARGE_CACHE} bytes)"
        )
    return nbytes


def _check_delay(value: object, name: str) -> int:
    """A delay in milliseconds: an int, or a string ``"250"``, ``"250ms"``, ``"1.5s"``."""
    ms = parse_delay_ms(value, name)  # type: ignore[arg-type]
    if not 0 <= ms <= MAX_PURGE_DELAY_MS:
        raise ValueError(
            f"{name}={value!r} is out of range: use 0 (purge at once) to {MAX_PURGE_DELAY_MS} ms"
        )
    return ms


def settings_from_environ(environ: Mapping[str, str] | None = None) -> PoolSettings:
    """Read and validate ``TLALLOC_POOL_CACHE``, ``TLALLOC_POOL_RETAIN``,
    ``TLALLOC_POOL_LARGE_CACHE`` and ``TLALLOC_POOL_PURGE_DELAY``.

    Example:
        >>> settings_from_environ({"TLALLOC_POOL_CACHE": "0"}).cache
        False
        >>> settings_from_environ({"TLALLOC_POOL_RETAIN": "1MiB"}).retain_bytes
        1048576
        >>> settings_from_environ({"TLALLOC_POOL_PURGE_DELAY": "1.5s"}).purge_delay_ms
        1500
    """
    env = os.environ if environ is None else environ
    s = PoolSettings()
    cache, retain = s.cache, s.retain_bytes
    large, delay = s.large_cache_bytes, s.purge_delay_ms
    raw_cache, raw_retain = env_value(env, ENV_CACHE), env_value(env, ENV_RETAIN)
    raw_large, raw_delay = env_value(env, ENV_LARGE_CACHE), env_value(env, ENV_PURGE_DELAY)
    if raw_cache is not None:  # unset or empty: the default
        cache = env_flag(raw_cache, ENV_CACHE)
    if raw_retain is not None:
        retain = _check_retain(raw_retain, ENV_RETAIN)
    if raw_large is not None:
        large = _check_large_cache(raw_large, ENV_LARGE_CACHE)
    if raw_delay is not None:
        delay = _check_delay(raw_delay, ENV_PURGE_DELAY)
    return PoolSettings(cache=cache, retain_bytes=retain, large_cache_bytes=large,
                        purge_delay_ms=delay)


def configure(
    *,
    cache: bool | None = None,
    retain_bytes: int | str | None = None,
    large_cache_bytes: int | str | None = None,
    purge_delay_ms: int | str | None = None,
) -> PoolSettings:
    """Change the pool's settings; returns the settings now in force.

    ``cache`` applies to threads that have not used the pool yet (set it early);
    the others apply at once (a smaller ``large_cache_bytes`` unmaps the oldest
    cached large blocks now). Each is validated as its environment variable is.

    Example:
        >>> old = get_settings()
        >>> configure(retain_bytes="16MiB").retain_bytes
        16777216
        >>> configure(large_cache_bytes="256MiB", purge_delay_ms="1s").purge_delay_ms
        1000
        >>> _ = configure(retain_bytes=old.retain_bytes,
        ...               large_cache_bytes=old.large_cache_bytes,
        ...               purge_delay_ms=old.purge_delay_ms)
    """
    cur = get_settings()
    if cache is None:
        new_cache = cur.cache
    else:
        new_cache = check_flag(cache, "cache")
    new_retain = cur.retain_bytes if retain_bytes is None else _check_retain(retain_bytes,
                                                                             "retain_bytes")
    new_large = (cur.large_cache_bytes if large_cache_bytes is None
                 else _check_large_cache(large_cache_bytes, "large_cache_bytes"))
    new_delay = (cur.purge_delay_ms if purge_delay_ms is None
                 else _check_delay(purge_delay_ms, "purge_delay_ms"))
    _tlalloc._pool_configure(new_cache, new_retain, new_large, new_delay)
    return get_settings()


def get_settings() -> PoolSettings:
    """The pool's settings in force.

    Example:
        >>> isinstance(get_settings().retain_bytes, int)
        True
    """
    o = _tlalloc._pool_get_options()
    return PoolSettings(
        cache=bool(o["cache"]),
        retain_bytes=int(o["retain_bytes"]),
        large_cache_bytes=int(o["large_cache_bytes"]),
        purge_delay_ms=int(o["purge_delay_ms"]),
    )


def pool_stats() -> dict[str, Any]:
    """Statistics of the pool, summed over every thread (exited ones included).

    ``in_use_bytes`` (block sizes handed out, not freed), ``peak_bytes`` (its
    high-water mark, folded in at page refills), ``reserved_bytes`` (mapped from
    the OS, large blocks' mappings included), ``retained_bytes`` (free resident
    memory the depot and the large cache keep), ``num_allocations``,
    ``num_frees``, ``num_cross_thread_frees``, ``num_cache_misses`` and
    ``cache_hit_rate`` (allocations served without the depot; 0.0 before any),
    ``num_depot_locks``, ``num_large_allocations`` (mapped on their own),
    ``num_abandoned_pages`` / ``num_reclaimed_pages`` (handed over at thread exit /
    adopted), ``num_segments``, ``num_heaps`` (live thread caches),
    ``num_threads`` (caches ever created), ``cache_enabled``. Names as in
    docs/naming.md.

    Example:
        >>> s = pool_stats()
        >>> 0.0 <= s["cache_hit_rate"] <= 1.0
        True
    """
    return dict(_tlalloc.pool_stats())


def alloc(nbytes: int, *, align: int = 16, zero: bool = False) -> PoolBuffer:
    """One block of ``nbytes`` from the pool as a writable buffer (``PoolBuffer``).

    The block goes back to the pool on ``free()`` or when the object is
    collected; ``realloc(n)`` resizes it. ``align`` is a power of two up to 1 GiB.

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

    The large cache: every cached block is purged now and blocks purged before
    are unmapped; with ``release_all`` every cached block is unmapped.

    Example:
        >>> collect()
    """
    _tlalloc.pool_collect(release_all=release_all)


def purge_thread(on: bool) -> bool:
    """Start (``True``) or stop (``False``) the background purge thread;
    returns whether it runs now.

    The thread sleeps until something freed is due to go back to the OS (the
    purge delay) and gives it back: the depot's pages beyond ``retain_bytes``
    and its segments left with no page in use, the large cache's blocks and
    then their mappings. So a program that frees memory and then only computes
    sees its resident set fall within ``purge_delay_ms`` plus at most a second,
    with no further call. On by default, started by the first allocation
    above 1 KiB (or refill) after something freed waited for the purge delay;
    ``fork`` stops it and the next such allocation, in the parent or the
    child, starts it again. ``False`` stops it and
    keeps it off (also ``TLALLOC_POOL_PURGE_THREAD=0``); ``True`` starts it
    now. Stopping waits for the thread to exit.

    Example:
        >>> purge_thread(True)
        True
        >>> purge_thread(False)
        False
    """
    return bool(_tlalloc._pool_purge_thread(check_flag(on, "on")))


def release_thread_cache() -> None:
    """Tear down the calling thread's cache now, as thread exit does.

    Example:
        >>> release_thread_cache()
    """
    _tlalloc._pool_thread_release()


def size_classes() -> tuple[int, ...]:
    """The pool's block sizes, 8 bytes to 64 KiB; larger requests are large blocks.

    Example:
        >>> size_classes()[:5], size_classes()[-1]
        ((8, 16, 32, 48, 64), 65536)
    """
    return tuple(_tlalloc.pool_size_classes())


PRELOAD_LIBRARY = "libtlalloc.so"


def preload_path() -> str:
    """Absolute path of ``libtlalloc.so``: the pool as a whole process's ``malloc``.

    Preload it to make every allocation of a program (``malloc``, ``free``,
    ``calloc``, ``realloc``, ``posix_memalign``, ``aligned_alloc``, ...) come
    from the pool, in C code and Python alike; ``tlalloc preload-path`` prints
    the same path for the shell. The library reads the ``TLALLOC_POOL_*``
    variables from the environment with the rules above, and stops the program
    (status 2, a message on stderr) on a bad value. It is a
    separate copy of the pool from the one this package uses in Python.

    Raises ``FileNotFoundError`` if the package was installed without it (it is
    built by ``pip install`` and by ``make preload``, for Linux).

    Example:
        >>> path = preload_path()  # doctest: +SKIP
        >>> # shell: LD_PRELOAD=$(tlalloc preload-path) python script.py
        >>> os.path.basename(path)  # doctest: +SKIP
        'libtlalloc.so'
    """
    return installed_library(PRELOAD_LIBRARY, "make preload")


def installed_library(name: str, make_target: str) -> str:
    """Absolute path of the plain shared library ``name`` installed with the
    package (``libtlalloc.so``, ``liblivecount.so``); ``FileNotFoundError``
    naming the path and how to build it when it is not there."""
    # In _lib/, a folder that is not a package, so that importlib never takes
    # the library for an extension module.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{name} is not installed at {path!r}: reinstall the package "
            f"(pip install .) to build it, or build it from a checkout with '{make_target}'"
        )
    return path


def _load() -> None:
    s = settings_from_environ()
    _tlalloc._pool_configure(s.cache, s.retain_bytes, s.large_cache_bytes, s.purge_delay_ms)
    raw = env_value(os.environ, ENV_PURGE_THREAD)
    if raw is not None:
        _tlalloc._pool_purge_thread(env_flag(raw, ENV_PURGE_THREAD))


_load()
