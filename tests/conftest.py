"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tlalloc import _tlalloc

# Every vectorised path this CPU can run, the portable one first.
ISAS = [
    isa
    for isa in ("portable", "avx2", "avx512")
    if ("portable", "avx2", "avx512").index(isa)
    <= ("portable", "avx2", "avx512").index(_tlalloc._kernels_best_isa())
]


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest):
    """Force one kernel path (``_kernels_set_isa``) for the test, then restore the previous one."""
    prev = _tlalloc._kernels_set_isa(request.param)
    try:
        yield request.param
    finally:
        _tlalloc._kernels_set_isa(prev)


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 60):
    """Run ``code`` in a fresh interpreter with extra environment variables."""
    full = dict(os.environ)
    for k in list(full):
        if k.startswith("TLALLOC_"):
            del full[k]
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def python_subprocess():
    return run_python


def counts_during(calls, *, until_nonzero: bool = False, switch_interval: float = 0.5) -> list[int]:
    """Run ``calls`` one after another in a worker thread while this thread
    counts, and return how far the count advanced during each call. With a long
    switch interval no thread is made to give up the GIL, so a call that holds
    it sees 0 exactly, and one that releases it lets the count run (if the OS
    schedules this thread meanwhile: ``until_nonzero`` stops at the first call
    that saw it run, for tests that try several calls on a busy machine).
    The caller skips on a free-threaded build without the GIL: there is none."""
    import threading
    import time

    count = [0]
    seen: list[int] = []
    done = threading.Event()

    def work() -> None:
        try:
            for call in calls:
                before = count[0]
                call()
                seen.append(count[0] - before)
                if until_nonzero and seen[-1]:
                    break
        finally:
            done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)
    try:
        th = threading.Thread(target=work)
        th.start()
        while not done.is_set():
            count[0] += 1
            if count[0] % 256 == 0:
                time.sleep(0)  # let the worker have the GIL back between its calls
        th.join()
    finally:
        sys.setswitchinterval(old)
    return seen


def wait_for(cond, timeout: float = 10.0) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass (threads finish
    their OS-level exit, and so release their arenas, a little after ``join()``)."""
    import gc
    import time

    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def live_arenas() -> int:
    import tlalloc

    return tlalloc.stats().num_arenas


def settled_live_arenas() -> int:
    """The live thread-arena count once exiting threads have released theirs."""
    import time

    last = live_arenas()
    stable_since = time.monotonic()
    deadline = stable_since + 10
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = live_arenas()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 0.1:
            break
    return last
