"""The whole Python API from 32 threads at once, for a bounded time, in a
separate interpreter (see stress_threads.py for what it does and checks).

``TLALLOC_STRESS_SECONDS`` sets the duration (default 8 s); CI runs it on the
default build, on the free-threaded build with ``PYTHON_GIL=0`` and against the
sanitized extension.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("stress_threads.py")


def test_stress_32_threads_no_crash_no_corruption_no_leak_no_false_buffererror():
    seconds = float(os.environ.get("TLALLOC_STRESS_SECONDS", "8"))
    r = subprocess.run(
        [sys.executable, str(SCRIPT), str(seconds), "32"],
        capture_output=True,
        text=True,
        timeout=seconds + 240,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}"
    assert r.stdout.startswith("ok "), r.stdout
    assert "Exception in thread" not in r.stderr, r.stderr[-4000:]


HANDOFF = Path(__file__).with_name("stress_handoff.py")


def test_stress_handoffs_128_threads_with_collector_no_false_buffererror():
    """128 producers hand arrays to consumers through a bounded queue whose
    put_nowait fails often (queue.Full, the array in its traceback), a thread
    collects all the time, half the producers have NumPy's allocator on the pool:
    every scope must release (see stress_handoff.py)."""
    seconds = float(os.environ.get("TLALLOC_STRESS_SECONDS", "8"))
    r = subprocess.run(
        [sys.executable, str(HANDOFF), str(seconds), "128"],
        capture_output=True,
        text=True,
        timeout=seconds + 240,
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}"
    assert r.stdout.startswith("ok "), r.stdout
    assert "Exception in thread" not in r.stderr, r.stderr[-4000:]
