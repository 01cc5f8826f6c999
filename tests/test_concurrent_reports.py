"""advise(), summary() and the metrics collector called from many threads at once,
while other threads create and exit thread arenas (the clock was once read
before the tracker's lock, giving negative windows, and the released arenas'
deque was iterated without it)."""

from __future__ import annotations

import threading
import time

import pytest

import tlalloc
from tlalloc.advise import TRACKER, live_figures
from tlalloc.summary import summary, summary_data


def _churn(stop: threading.Event) -> None:
    """Threads that each use their arena once and exit (so arenas get released)."""
    def work() -> None:
        with tlalloc.scratch() as a:
            a.empty(64)

    while not stop.is_set():
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()


def _hammer(fn, stop: threading.Event, errors: list[BaseException]) -> None:
    while not stop.is_set():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - every failure is reported
            errors.append(e)
            return


def test_reports_from_many_threads_while_arenas_come_and_go() -> None:
    def sample_then_advise() -> None:
        TRACKER.sample()
        tlalloc.advise()

    fns = [tlalloc.advise, summary, summary_data, sample_then_advise, live_figures]
    try:
        from prometheus_client import CollectorRegistry

        from tlalloc.metrics import Collector

        coll = Collector(per_thread=True)
        fns.append(lambda: list(coll.collect()))
        reg = CollectorRegistry()
        from tlalloc import metrics

        fns.append(lambda: metrics.register(reg))
    except ImportError:
        pass
    stop = threading.Event()
    errors: list[BaseException] = []
    churners = [threading.Thread(target=_churn, args=(stop,)) for _ in range(2)]
    workers = [threading.Thread(target=_hammer, args=(fn, stop, errors)) for fn in fns for _ in range(2)]
    # A short switch interval makes the interleavings that hit the races common.
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in churners + workers:
            t.start()
        time.sleep(3.0)
    finally:
        stop.set()
        for t in churners + workers:
            t.join()
        sys.setswitchinterval(old)
    assert not errors, errors[:3]


def test_register_validates_per_thread_even_when_registered() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from tlalloc import metrics

    reg = CollectorRegistry()
    metrics.register(reg)
    with pytest.raises(TypeError, match="per_thread must be a bool, got 'no'"):
        metrics.register(reg, per_thread="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_thread=True is already registered"):
        metrics.register(reg, per_thread=False)
