"""tlalloc.metrics: the Prometheus collector, scraped over real HTTP while threads allocate."""

from __future__ import annotations

import sys
import threading
import types
import urllib.request

import numpy as np
import pytest

import tlalloc
from tlalloc import metrics

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ARENA_FIELDS = [(k, s, t) for k, s, t, _ in metrics.ARENA_FIELDS]


def parse(text: str) -> tuple[dict[tuple[str, tuple], float], dict[str, str]]:
    """Exposition text -> ({(sample name, sorted labels): value}, {family name: type})."""
    values, types_ = {}, {}
    for fam in text_string_to_metric_families(text):
        types_[fam.name] = fam.type
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values, types_


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        assert r.status == 200
        return r.read().decode()


def sample_name(suffix: str, kind: str, prefix: str) -> str:
    return f"{prefix}{suffix}" + ("_total" if kind == "counter" else "")


@pytest.fixture
def server():
    reg = CollectorRegistry()
    srv, thread = metrics.start_http_server(0, registry=reg)
    assert srv.server_address[0] == "127.0.0.1"
    yield srv.server_port
    srv.shutdown()
    srv.server_close()
    thread.join(10)


def snapshot():
    return tlalloc.stats().to_dict(), {t.thread_id: t.to_dict() for t in tlalloc.stats(per_thread=True)}


def test_scrape_while_allocating_then_exact(server):
    stop, parked = threading.Event(), threading.Event()
    started = threading.Barrier(4)
    finished = [threading.Event() for _ in range(3)]
    tids: list[int] = []

    def work(i: int) -> None:
        tids.append(threading.get_native_id())
        started.wait()
        arena = tlalloc.thread_arena()
        n = 0
        while not stop.is_set() or n < 50:
            with arena.scope():
                x = arena.empty(1000 + 100 * i, np.float32)
                x[:] = i
                del x
            n += 1
        finished[i].set()
        parked.wait()  # stay alive, so the figures hold still for the exact check

    ts = [threading.Thread(target=work, args=(i,), name=f"metrics-w{i}") for i in range(3)]
    for t in ts:
        t.start()
    try:
        started.wait()
        # While the threads allocate: every scrape parses, types are right, counters never go back.
        last = {}
        for _ in range(5):
            values, kinds = parse(scrape(server))
            for _, suffix, kind in ARENA_FIELDS:
                assert kinds[f"tlalloc_arena_{suffix}"] == kind
                assert kinds[f"tlalloc_thread_arena_{suffix}"] == kind
            assert kinds["tlalloc_arenas"] == "gauge" and kinds["tlalloc_threads"] == "counter"
            for key in ("tlalloc_arena_allocations_total", "tlalloc_arena_resets_total"):
                v = values[(key, ())]
                assert v >= last.get(key, 0)
                last[key] = v
        assert last["tlalloc_arena_allocations_total"] >= 1
        stop.set()
        for ev in finished:
            assert ev.wait(60)
        # Allocation has stopped; the figures hold still unless another thread's arena
        # is released meanwhile (threads of earlier tests finishing): retry on that.
        for _ in range(50):
            before = snapshot()
            values, _ = parse(scrape(server))
            if snapshot() == before:
                break
        else:
            pytest.fail("statistics never held still around a scrape")
        overall, per_thread = before
        for key, suffix, kind in ARENA_FIELDS:
            assert values[(sample_name(suffix, kind, "tlalloc_arena_"), ())] == overall[key], key
        assert values[("tlalloc_arenas", ())] == overall["num_arenas"]
        assert values[("tlalloc_threads_total", ())] == overall["num_threads"]
        assert set(tids) <= set(per_thread)
        for tid, t in per_thread.items():
            labels = (("thread", t["thread_name"]), ("thread_id", str(tid)))
            for key, suffix, kind in ARENA_FIELDS:
                got = values[(sample_name(suffix, kind, "tlalloc_thread_arena_"), labels)]
                assert got == t[key], (tid, key)
            info = dict(labels) | {k: str(t[k]) for k in metrics.INFO_LABELS}
            assert values[("tlalloc_thread_arena_info", tuple(sorted(info.items())))] == 1.0
        for tid in tids:
            assert per_thread[tid]["num_allocations"] >= 50
            assert per_thread[tid]["num_resets"] >= 50
    finally:
        stop.set()
        parked.set()
        for t in ts:
            t.join()


def test_per_thread_series_can_be_left_out():
    reg = CollectorRegistry()
    metrics.register(reg, per_thread=False)
    with tlalloc.scratch() as a:
        del a
    text = generate_latest(reg).decode()
    assert "tlalloc_arena_used_bytes" in text and "tlalloc_thread_arena" not in text


def test_register_once_per_registry():
    reg = CollectorRegistry()
    assert metrics.register(reg) is metrics.register(reg)
    assert metrics.register() is metrics.register()  # prometheus_client.REGISTRY
    assert b"tlalloc_arenas" in generate_latest(prometheus_client.REGISTRY)


def test_max_peak_bytes_is_exported():
    reg = CollectorRegistry()
    metrics.register(reg)
    values, kinds = parse(generate_latest(reg).decode())
    assert kinds["tlalloc_arena_max_peak_bytes"] == "gauge"
    assert values[("tlalloc_arena_max_peak_bytes", ())] == tlalloc.stats().max_peak_bytes


def test_pool_statistics_when_the_pool_is_built(monkeypatch):
    fake = types.ModuleType("tlalloc.pool")
    fake.pool_stats = lambda: {"in_use_bytes": 4096, "peak_bytes": 8192, "num_frees": 7,
                               "num_heaps": 2, "num_segments": 1, "name": "x", "flag": True}
    monkeypatch.setitem(sys.modules, "tlalloc.pool", fake)
    reg = CollectorRegistry()
    metrics.register(reg)
    values, kinds = parse(generate_latest(reg).decode())
    assert kinds["tlalloc_pool_in_use_bytes"] == "gauge" and values[("tlalloc_pool_in_use_bytes", ())] == 4096
    assert kinds["tlalloc_pool_peak_bytes"] == "gauge"
    assert kinds["tlalloc_pool_frees"] == "counter" and values[("tlalloc_pool_frees_total", ())] == 7
    assert kinds["tlalloc_pool_heaps"] == "gauge" and values[("tlalloc_pool_heaps", ())] == 2
    assert kinds["tlalloc_pool_segments"] == "gauge"
    assert not any(k.startswith("tlalloc_pool_name") or k.startswith("tlalloc_pool_flag") for k in kinds)


def test_real_pool_statistics_match():
    pool = pytest.importorskip("tlalloc.pool")
    if not hasattr(pool, "pool_stats"):
        pytest.skip("tlalloc.pool has no pool_stats()")
    reg = CollectorRegistry()
    metrics.register(reg)
    for _ in range(50):
        before = dict(pool.pool_stats())
        values, _ = parse(generate_latest(reg).decode())
        if dict(pool.pool_stats()) == before:
            break
    for key, value in before.items():
        m = metrics.pool_metric(key)
        if m and isinstance(value, (int, float)) and not isinstance(value, bool):
            assert values[(m[0], ())] == value, key


def test_missing_prometheus_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"tlalloc\[prometheus\]"):
        metrics.Collector()
    with pytest.raises(ImportError, match=r"tlalloc\[prometheus\]"):
        metrics.start_http_server(0)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: metrics.start_http_server("9100"), TypeError, "port must be an int, got '9100'"),
        (lambda: metrics.start_http_server(True), TypeError, "port must be an int, got True"),
        (lambda: metrics.start_http_server(-1), ValueError, "port must be between 0 and 65535, got -1"),
        (lambda: metrics.start_http_server(70000), ValueError, "got 70000"),
        (lambda: metrics.start_http_server(0, addr=None), TypeError, "addr must be"),
        (lambda: metrics.start_http_server(0, addr=""), TypeError, "addr must be"),
        (lambda: metrics.Collector(per_thread="yes"), TypeError, "per_thread must be a bool, got 'yes'"),
        (lambda: metrics.register(object()), TypeError, "registry must be a prometheus_client"),
    ],
)
def test_bad_input(call, exc, words):
    with pytest.raises(exc) as e:
        call()
    assert words in str(e.value)
