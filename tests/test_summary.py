"""summary(), summary_data() and the `tlalloc stats SCRIPT` command (run in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tlalloc
from tlalloc._stats_cli import main
from tlalloc.summary import summary, summary_data

MiB = 1 << 20


def figures(**kw):
    d = {"capacity_bytes": 2 * MiB, "used_bytes": 0, "peak_bytes": MiB, "num_allocations": 100,
         "num_overflows": 0, "num_resets": 100, "fallback_bytes": 0}
    d.update(kw)
    return d


# ------------------------------------------------------------- summary()


def test_summary_sections_and_numbers():
    total = figures(capacity_bytes=4 * MiB, peak_bytes=3 * MiB, num_allocations=300, num_overflows=30,
                    num_arenas=2, num_threads=3)
    threads = [
        figures(thread_name="w0", thread_id=41, peak_bytes=2 * MiB, num_allocations=200, num_overflows=30,
                page_kind="thp", page_kind_requested="hugetlb", numa_policy="local", numa_node=0),
        figures(thread_name="w1", thread_id=42, thread_alive=False),
    ]
    text = summary(total, threads)
    lines = text.splitlines()
    assert lines[1].strip() == "tlalloc memory summary"
    assert "thread arenas: 2 live, 3 created" in text
    assert "config: arena_size=" in text
    row = next(line for line in lines if line.lstrip().startswith("w0"))
    for cell in ("41", "yes", "2MiB", "100.0%", "200", "30", "15.00%", "thp (asked hugetlb)", "local@0"):
        assert cell in row.split("  ") or cell in row, cell
    assert "no " in next(line for line in lines if line.lstrip().startswith("w1"))
    assert "set: TLALLOC_ARENA_SIZE=4MiB" in text and "[grow] thread 'w0' (tid 41)" in text
    assert "advice" not in summary(total, threads, advice=False)


def test_summary_data_is_json_ready():
    d = summary_data(figures(num_allocations=0, num_overflows=5), [])
    text = json.dumps(d, allow_nan=False)  # inf overflow rate became null
    back = json.loads(text)
    assert back["overall"]["num_overflows"] == 5
    (rec,) = back["advice"]["recommendations"]
    assert rec["kind"] == "grow" and rec["figures"]["overflow_rate"] is None
    assert back["pool"] is None and back["released_threads"] == []


def test_live_summary_lists_this_thread():
    with tlalloc.scratch() as a:
        n = a.empty(5000, np.float64).size
    assert n == 5000
    text = summary()
    assert "MainThread" in text and "per thread arena" in text
    mine = next(t for t in summary_data()["threads"] if t["thread_name"] == "MainThread")
    assert mine["peak_bytes"] >= 40000


def test_summary_bad_input():
    with pytest.raises(TypeError, match="advice must be a bool, got 'no'"):
        summary(advice="no")
    with pytest.raises(TypeError, match="stats must be a mapping"):
        summary([1, 2])
    with pytest.raises(ValueError, match="per_thread\\[0\\] is missing"):
        summary(None, [{"capacity_bytes": 1}])


# ------------------------------------------------------- tlalloc stats SCRIPT

WORKERS = 3
PER_WORKER = 40

JOB = textwrap.dedent(f"""
    import sys, threading
    import numpy as np
    import tlalloc
    from tlalloc.advise import advise
    import helper  # a module next to the script: sys.path[0] is the script's folder

    assert __name__ == "__main__", __name__
    print("argv", sys.argv[1:])
    done = threading.Barrier({WORKERS} + 1)
    go = threading.Event()

    def work(i):
        arena = tlalloc.thread_arena()
        for k in range({PER_WORKER}):
            with arena.scope():
                x = arena.empty(helper.N * (i + 1), np.float64)
                x[:] = k
                del x
        done.wait()
        go.wait()

    ts = [threading.Thread(target=work, args=(i,), name=f"job-{{i}}") for i in range({WORKERS})]
    for t in ts:
        t.start()
    done.wait()
    advise()  # every advise() is a sample: the report keeps these arenas after they go
    go.set()
    for t in ts:
        t.join()
    if sys.argv[1:2] == ["fail"]:
        raise RuntimeError("the job failed")
    if sys.argv[1:2] == ["exit"]:
        sys.exit(int(sys.argv[2]))
    if sys.argv[1:2] == ["exitmsg"]:
        sys.exit("stopping: " + sys.argv[2])
""")


@pytest.fixture
def job(tmp_path):
    (tmp_path / "helper.py").write_text("N = 1000\n")
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLALLOC_")}
    return subprocess.run([sys.executable, "-m", "tlalloc", "stats", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def job_threads(data: dict) -> dict[str, dict]:
    rows = data["threads"] + data["released_threads"]
    return {t["thread_name"]: t for t in rows if t["thread_name"].startswith("job-")}


def test_cli_json_report(job):
    r = run_cli("--json", job, "x", "--json", "-v")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["argv ['x', '--json', '-v']"]  # stdout is the script's
    data = json.loads(r.stderr)
    assert data["script"] == {"path": str(job), "args": ["x", "--json", "-v"], "exit_status": 0}
    workers = job_threads(data)
    assert sorted(workers) == [f"job-{i}" for i in range(WORKERS)]
    for i in range(WORKERS):
        w = workers[f"job-{i}"]
        assert w["num_allocations"] == PER_WORKER and w["num_resets"] == PER_WORKER
        assert w["peak_bytes"] >= 8000 * (i + 1)
    assert data["overall"]["num_allocations"] >= WORKERS * PER_WORKER
    assert data["overall"]["num_threads"] >= WORKERS
    kinds = {(r["scope"], r["thread_name"]): r["kind"] for r in data["advice"]["recommendations"]}
    assert kinds[("thread", "job-0")] == "shrink"  # 8 KB out of 2 MiB
    assert data["advice"]["env"]["TLALLOC_ARENA_SIZE"] == "32KiB"  # job-2: 24 KB <= 80% of 32 KiB


def test_cli_text_report_to_file(job, tmp_path):
    out = tmp_path / "report.txt"
    r = run_cli("-o", out, job)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    text = out.read_text()
    assert "tlalloc memory summary" in text and "job-2" in text and "advice" in text
    assert f"script {str(job)!r} exited with status 0" in text


def test_cli_exception_is_reported_with_nonzero_status(job):
    r = run_cli(job, "fail")
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "RuntimeError: the job failed" in r.stderr
    assert "tlalloc memory summary" in r.stderr  # the report still comes
    assert r.stderr.index("RuntimeError") < r.stderr.index("tlalloc memory summary")


@pytest.mark.parametrize("args, status, words", [
    (["exit", "0"], 0, None), (["exit", "7"], 7, None), (["exitmsg", "now"], 1, "stopping: now")])
def test_cli_sys_exit(job, args, status, words):
    r = run_cli("--json", job, *args)
    assert r.returncode == status, r.stderr
    err = r.stderr
    if words:
        assert err.startswith(words)
        err = err[len(words):]
    assert json.loads(err)["script"]["exit_status"] == status


def test_cli_usage_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing.py")]) == 2
    assert "can't open file" in capsys.readouterr().err
    assert main([]) == 2
    assert "SCRIPT" in capsys.readouterr().err
    script = tmp_path / "ok.py"
    script.write_text("pass\n")
    assert main(["-o", str(tmp_path / "no" / "dir" / "r.txt"), str(script)]) == 2
    assert "cannot write the report" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "--json" in capsys.readouterr().out


def test_cli_in_process_restores_argv_and_path(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("import sys; print(sys.argv, __name__)\n")
    argv, path = sys.argv[:], sys.path[:]
    assert main([str(script), "a"]) == 0
    assert sys.argv == argv and sys.path == path
    cap = capsys.readouterr()
    assert cap.out == f"[{str(script)!r}, 'a'] __main__\n"
    assert "tlalloc memory summary" in cap.err
