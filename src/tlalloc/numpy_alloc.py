"""NumPy's array data on the tlalloc pool (a NEP 49 data-memory handler).

NumPy keeps one data-memory handler per context, that is per thread. Inside
``with pool_allocator():`` (or after :func:`install`) every array the thread
creates takes its data from the pool; arrays keep a reference to the handler
they were made with, so they may be freed by any thread, after their creating
thread has exited, or after the handler was uninstalled.

For a thread pool, install the handler in every worker::

    ThreadPoolExecutor(max_workers=8, initializer=tlalloc.numpy_alloc.install)

Example:
    >>> import numpy as np
    >>> from tlalloc import numpy_alloc
    >>> with numpy_alloc.pool_allocator():
    ...     a = np.arange(1000.0)
    ...     numpy_alloc.handler_name()
    'tlalloc_pool'
    >>> numpy_alloc.handler_name(a)
    'tlalloc_pool'
    >>> numpy_alloc.is_installed()
    False
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tlalloc import _tlalloc
from tlalloc import pool as _pool  # noqa: F401  (reads the pool settings at import)

HANDLER_NAME = "tlalloc_pool"


def _multiarray() -> Any:
    core = getattr(np, "_core", None) or np.core
    return core.multiarray


def handler_name(arr: np.ndarray | None = None) -> str | None:
    """Name of the handler of the current context, or the one ``arr`` was made with.

    Example:
        >>> handler_name()
        'default_allocator'
    """
    return _multiarray().get_handler_name(arr) if arr is not None else _multiarray().get_handler_name()


def is_installed() -> bool:
    """True if the pool is the current context's handler.

    Example:
        >>> is_installed()
        False
    """
    return handler_name() == HANDLER_NAME


def install() -> None:
    """Make NumPy allocate array data from the pool in the current context
    (thread). Takes no arguments, so it serves as a ``ThreadPoolExecutor``
    initializer.

    Example:
        >>> install(); is_installed()
        True
        >>> uninstall(); is_installed()
        False
    """
    _tlalloc._numpy_set_handler(_tlalloc._numpy_pool_handler)


def uninstall() -> None:
    """Restore NumPy's default handler in the current context. Arrays already
    made on the pool stay valid and go back to the pool when freed.

    Example:
        >>> uninstall(); handler_name()
        'default_allocator'
    """
    _tlalloc._numpy_set_handler(None)


# The one-liner for thread pools: ThreadPoolExecutor(initializer=thread_initializer).
thread_initializer = install


@contextmanager
def pool_allocator() -> Iterator[None]:
    """Context manager: arrays created inside take their data from the pool;
    the previous handler is restored on exit.

    Example:
        >>> import numpy as np
        >>> with pool_allocator():
        ...     handler_name(np.zeros(10))
        'tlalloc_pool'
    """
    prev = _tlalloc._numpy_set_handler(_tlalloc._numpy_pool_handler)
    try:
        yield
    finally:
        _tlalloc._numpy_set_handler(prev)
