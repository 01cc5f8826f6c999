"""tlalloc.dask on real clusters: LocalCluster(processes=True), and a scheduler and
workers started as separate processes with the ``dask scheduler`` / ``dask worker``
commands on loopback.

Every cluster is started by these tests and closed by them; each test has a timeout.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("distributed")
pytest.importorskip("prometheus_client")

from distributed import Client, LocalCluster, secede  # noqa: E402

import tlalloc  # noqa: E402
import tlalloc.dask as td  # noqa: E402

# Generous for a loaded machine; the module takes under a minute on an idle 2-core one.
pytestmark = pytest.mark.timeout(180)

# The functions below run on the workers, which import this module by name to unpickle
# them: the worker processes get this folder on their path (LocalCluster's spawned
# workers inherit sys.path; the dask commands get PYTHONPATH).
HERE = os.path.dirname(os.path.abspath(__file__))

PLUGIN_SETTINGS = {"arena_size": "4MiB", "arena_overflow": "fallback"}


@pytest.fixture(scope="module", autouse=True)
def _no_profiler_on_free_threaded():
    """Dask's statistical profiler crashes a free-threaded CPython (tlalloc.dask.PROFILER_OFF):
    off for this module's clusters there, in this process (the scheduler's loop, and the
    config LocalCluster's nannies hand their workers) and for ``dask worker`` processes."""
    if not td.profiler_is_unsafe():
        yield
        return
    import dask

    with pytest.MonkeyPatch.context() as mp, dask.config.set(td.PROFILER_OFF):
        for k, v in td.PROFILER_OFF_ENV.items():
            mp.setenv(k, v)
        yield


def test_profiler_is_unsafe_exactly_on_free_threaded_builds():
    import sysconfig

    assert td.profiler_is_unsafe() == bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert td.PROFILER_OFF == {"distributed.worker.profile.enabled": False}
    # the environment variable is the same setting, as dask reads it
    import dask.config

    assert dask.config.collect_env(td.PROFILER_OFF_ENV) == \
        {"distributed": {"worker": {"profile": {"enabled": False}}}}


def test_workers_run_without_the_profiler_on_free_threaded(local):
    client, _ = local
    enabled = client.run(lambda: __import__("dask").config.get("distributed.worker.profile.enabled"))
    assert set(enabled.values()) == {not td.profiler_is_unsafe()}


def numpy_handler() -> str:
    """The data-memory handler NumPy uses in the calling context, asked of NumPy itself."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return core.multiarray.get_handler_name()  # type: ignore[no-any-return]


def probe(_i: int = 0) -> dict:
    """Run inside a task: where it ran and what it sees."""
    import threading

    import numpy as np

    import tlalloc
    from tlalloc import kernels

    q = np.ones(32, np.float32)
    c = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    kernels.cosine_similarity(q, c, top_k=4)  # scratch from this thread's arena
    core = getattr(np, "_core", None) or np.core
    time.sleep(0.01)  # lets the other executor threads take tasks too
    return {
        "thread": threading.current_thread().name,
        "handler": numpy_handler(),
        "array_handler": core.multiarray.get_handler_name(np.zeros(1000)),
        "arena_capacity": tlalloc.thread_arena().capacity,
        "pid": os.getpid(),
    }


def seceding_probe(_i: int) -> str:
    """Leave the executor's pool, so that it starts a new thread in this one's place."""
    secede()
    return numpy_handler()


def poll(cond, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def run_everywhere(client: Client, fn, n: int = 24) -> list[dict]:
    return client.gather(client.map(fn, range(n), pure=False))


def worker_pids(client: Client) -> dict[str, int]:
    return client.run(os.getpid)


# ------------------------------------------------------------ LocalCluster


@pytest.fixture(scope="module")
def local():
    """LocalCluster, 2 worker processes x 2 threads; tasks run once before the plugin."""
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None, worker_dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        before = client.gather(client.map(lambda i: (__import__("threading").current_thread().name,
                                                     numpy_handler()), range(16), pure=False))
        client.register_plugin(td.TlallocPlugin(**PLUGIN_SETTINGS, numpy_allocator=True))
        yield client, before


def test_settings_applied_on_every_worker(local):
    client, _ = local
    configs = client.run(lambda: tlalloc.get_config().as_dict())
    assert len(configs) == 2
    for cfg in configs.values():
        assert cfg["arena_size"] == 4 << 20 and cfg["arena_overflow"] == "fallback"
    rows = run_everywhere(client, probe)
    assert {r["arena_capacity"] for r in rows} == {4 << 20}
    assert len({r["pid"] for r in rows}) == 2


def test_numpy_allocator_in_threads_started_before_the_plugin(local):
    client, before = local
    assert {h for _, h in before} == {"default_allocator"}  # tasks before registration
    rows = run_everywhere(client, probe, 24)
    assert {r["handler"] for r in rows} == {"tlalloc_pool"}
    assert {r["array_handler"] for r in rows} == {"tlalloc_pool"}
    # the executor threads that ran the tasks before the plugin now run them on the pool
    assert {t for t, _ in before} & {r["thread"] for r in rows}


def test_numpy_allocator_in_threads_started_after_the_plugin(local):
    client, before = local
    addr = sorted(client.scheduler_info()["workers"])[0]
    # Two tasks that secede make that worker's executor start two new threads.
    seceded = client.gather(client.map(seceding_probe, range(2), workers=[addr], pure=False))
    assert seceded == ["tlalloc_pool", "tlalloc_pool"]
    rows = client.gather(client.map(probe, range(8), workers=[addr], pure=False))
    new_threads = {r["thread"] for r in rows} - {t for t, _ in before}
    assert new_threads, "the tasks ran on no thread started after the plugin"
    assert {r["handler"] for r in rows} == {"tlalloc_pool"}


def test_metrics_scraped_over_http_from_each_worker(local):
    client, _ = local
    run_everywhere(client, probe, 8)
    counted = {a: w.overall.num_allocations for a, w in td.stats(client).workers.items()}
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    for addr, info in workers.items():
        port = info["services"]["dashboard"]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        values = {line.split()[0]: float(line.split()[1]) for line in body.splitlines()
                  if line and not line.startswith("#")}
        assert "dask_worker_threads" in values  # the worker's own endpoint
        assert values["tlalloc_arenas"] >= 1
        # counters only grow: the scrape came after stats() read them
        assert values["tlalloc_arena_allocations_total"] >= counted[addr] > 0
        assert "tlalloc_pool_in_use_bytes" in values


def test_stats_advise_summary_on_a_healthy_cluster(local):
    client, _ = local
    run_everywhere(client, probe, 16)
    cs = td.stats(client)
    assert cs.complete and len(cs.workers) == 2
    assert cs.totals.num_allocations == sum(w.overall.num_allocations for w in cs.workers.values())
    assert cs.totals.num_workers == 2
    for w in cs.workers.values():
        assert w.plugin is not None and w.plugin["numpy_allocator"] is True
        assert w.config["arena_size"] == 4 << 20
        assert w.threads and all(t.capacity_bytes == 4 << 20 for t in w.threads)
        assert w.peak_rss_bytes >= w.rss_bytes > 0
    json.dumps(cs.to_dict())
    a = td.advise(client)
    assert a.driver in cs.workers and not a.missing
    # The probes peak far below 4MiB: the cluster is told to shrink, by the plugin's argument.
    assert a.env and a.plugin.startswith("TlallocPlugin(arena_size=")
    out = io.StringIO()
    text = td.summary(client, per_thread=True, file=out)  # returns the text, as tlalloc.summary()
    assert out.getvalue() == text + "\n"
    assert "2 worker(s) answered, 0 missing" in text
    assert all(addr in text for addr in cs.workers)
    assert "sizing advice" in text and "per thread arena" in text


def test_bad_plugin_arguments_rejected_at_registration(local):
    client, _ = local
    for kwargs in ({"arena_size": "lots"}, {"arena_size": 100}, {"arena_size": 2.5},
                   {"arena_overflow": "ignore"}, {"huge_pages": "yes"}, {"numa": 3},
                   {"zero_on_reset": "maybe"}):
        with pytest.raises((TypeError, ValueError)) as expected:
            tlalloc.configure(**kwargs)
        with pytest.raises(type(expected.value)) as got:
            client.register_plugin(td.TlallocPlugin(**kwargs))
        assert str(got.value) == str(expected.value)
    for kwargs, name in (({"numpy_allocator": "yes"}, "numpy_allocator"), ({"metrics": 1}, "metrics")):
        with pytest.raises(TypeError, match=name):
            client.register_plugin(td.TlallocPlugin(**kwargs))
    # nothing reached the workers: they keep the registered plugin's settings
    assert {c["arena_size"] for c in client.run(lambda: tlalloc.get_config().as_dict()).values()} \
        == {4 << 20}
    for bad in ({"timeout": 0}, {"timeout": "1s"}, {"workers": "tcp://127.0.0.1:1"}):
        with pytest.raises((TypeError, ValueError)):
            td.stats(client, **bad)


def test_unregister_restores_the_worker(local):
    client, _ = local
    try:
        client.unregister_worker_plugin(td.PLUGIN_NAME)
        rows = run_everywhere(client, probe, 16)
        assert {r["handler"] for r in rows} == {"default_allocator"}
        assert {c["arena_size"] for c in client.run(lambda: tlalloc.get_config().as_dict()).values()} \
            == {tlalloc.get_config().arena_size}
        assert all(w.plugin is None for w in td.stats(client).workers.values())
    finally:
        client.register_plugin(td.TlallocPlugin(**PLUGIN_SETTINGS, numpy_allocator=True))
    assert {r["handler"] for r in run_everywhere(client, probe, 16)} == {"tlalloc_pool"}


def test_killed_worker_restarts_with_the_plugin(local):
    client, _ = local
    pids = worker_pids(client)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    # the nanny starts a new worker process, which registers with the scheduler again
    assert poll(lambda: set(client.scheduler_info()["workers"]) - set(pids), timeout=90), \
        "the killed worker was not restarted"
    new = sorted(set(client.scheduler_info()["workers"]) - set(pids))
    assert worker_pids(client)[new[0]] not in pids.values()
    rows = client.gather(client.map(probe, range(6), workers=new, pure=False))
    assert {r["handler"] for r in rows} == {"tlalloc_pool"}
    assert {r["arena_capacity"] for r in rows} == {4 << 20}
    assert td.stats(client).workers[new[0]].plugin is not None


# ---------------------------------------------- dask scheduler / dask worker


def _dask(*args: str, **kw) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
    return subprocess.Popen([sys.executable, "-m", "dask", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


@contextlib.contextmanager
def dask_processes(tmp_path, workers: list[list[str]]):
    """A scheduler and workers started with ``dask scheduler`` / ``dask worker``."""
    sched_file = str(tmp_path / "scheduler.json")
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", sched_file)]
    try:
        assert poll(lambda: os.path.exists(sched_file), timeout=90), "no scheduler"
        for extra in workers:
            procs.append(_dask("worker", "--scheduler-file", sched_file, "--host", "127.0.0.1",
                               "--nthreads", "2", "--dashboard-address", "127.0.0.1:0",
                               "--death-timeout", "60", *extra))
        with Client(scheduler_file=sched_file, timeout=90) as client:
            client.wait_for_workers(len(workers), timeout=90)
            yield client
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    workers = [["--name", "cli-0", "--no-nanny"], ["--name", "cli-1", "--no-nanny"]]
    with dask_processes(tmp_path_factory.mktemp("cli"), workers) as client:
        client.register_plugin(td.TlallocPlugin(arena_size="1MiB", numpy_allocator=True))
        yield client


def test_cli_cluster_settings_and_allocator(cli):
    configs = cli.run(lambda: tlalloc.get_config().arena_size)
    assert list(configs.values()) == [1 << 20, 1 << 20]
    rows = run_everywhere(cli, probe, 16)
    assert {r["handler"] for r in rows} == {"tlalloc_pool"}
    assert {r["arena_capacity"] for r in rows} == {1 << 20}
    assert len({r["pid"] for r in rows}) == 2


def test_cli_cluster_stats_advise_summary_with_a_worker_gone(cli):
    run_everywhere(cli, probe, 8)
    pids = worker_pids(cli)
    stopped, alive = sorted(pids)
    os.kill(pids[stopped], signal.SIGSTOP)  # still listed by the scheduler, but mute
    try:
        t0 = time.monotonic()
        cs = td.stats(cli, timeout=2)
        assert time.monotonic() - t0 < 30  # bounded by the timeout, not by Dask's comm timeouts
        assert list(cs.workers) == [alive]
        assert "no answer within 2s" in cs.missing[stopped]
        assert cs.totals.num_workers == 1 and not cs.complete
        a = td.advise(cli, timeout=2)
        assert stopped in a.missing and a.driver in (alive, None)
        out = io.StringIO()
        td.summary(cli, timeout=2, file=out)
        assert "1 worker(s) answered, 1 missing" in out.getvalue()
        assert stopped in out.getvalue()
    finally:
        os.kill(pids[stopped], signal.SIGCONT)
    # A worker that has died: its address is asked, and reported missing.
    os.kill(pids[stopped], signal.SIGKILL)
    cs = td.stats(cli, workers=[stopped, alive], timeout=3)
    assert list(cs.workers) == [alive] and stopped in cs.missing


def test_worker_without_tlalloc_fails_registration(tmp_path):
    block = tmp_path / "no_tlalloc.py"
    block.write_text("import sys\nsys.modules['tlalloc'] = None  # as if tlalloc were not installed\n")
    with dask_processes(tmp_path, [["--preload", str(block), "--no-nanny"]]) as client:
        # Dask hands the worker's ImportError to the client (as an ImportError or, through
        # the scheduler, as an Exception carrying its text)
        with pytest.raises(Exception, match="tlalloc is not importable there") as info:
            client.register_plugin(td.TlallocPlugin(arena_size="1MiB"))
        assert "pip install" in str(info.value)
        cs = td.stats(client, timeout=10)
        assert not cs.workers
        assert "tlalloc is not installed on this worker" in next(iter(cs.missing.values()))


# ------------------------------------------------------------- no cluster


def test_cluster_advice_names_the_worker_with_the_largest_need():
    def thread(name, peak, overflows):
        return {"thread_name": name, "thread_id": 1, "capacity_bytes": 1 << 20, "peak_bytes": peak,
                "num_allocations": 100, "num_overflows": overflows, "num_resets": 100}

    cs = td.ClusterStats.from_reports({
        "tcp://h:1": {"name": "a", "threads": [thread("t", 100 << 10, 0)]},
        "tcp://h:2": {"name": "b", "threads": [thread("t", 1 << 20, 50)]},  # overflowing
        "tcp://h:3": {"name": "c", "threads": [thread("t", 600 << 10, 0)]},
    }, {"tcp://h:4": "no answer within 10s"})
    a = td.cluster_advice(cs)
    assert a.driver == "tcp://h:2"
    assert a.env == {"TLALLOC_ARENA_SIZE": "2MiB"} and a.arena_size == 2 << 20
    assert a.plugin == "TlallocPlugin(arena_size='2MiB')"
    assert a.missing == {"tcp://h:4": "no answer within 10s"}
    text = str(a)
    assert "driven by worker tcp://h:2" in text and "tcp://h:4" in text


def test_plugin_pickles_to_a_loader_sent_by_value():
    from distributed.protocol.pickle import dumps, loads

    payload = dumps(td.TlallocPlugin(arena_size="2MiB", numpy_allocator=True))
    assert b"load_tlalloc_plugin" in payload  # the loader travels by value
    plugin = loads(payload)
    assert isinstance(plugin, td.TlallocPlugin)
    assert plugin.settings == {"arena_size": 2 << 20} and plugin.numpy_allocator
    assert plugin.metrics
