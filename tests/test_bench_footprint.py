"""`tlalloc bench footprint`: the real-program footprint benchmark runs its programs
under glibc and under libtlalloc.so, reads their peak RSS and the RSS they report
once everything is freed, and refuses bad options with a message naming them."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from tlalloc.bench import footprint as fp
from tlalloc.cli import main


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    fp.add_arguments(p)
    return p.parse_args(list(argv))


def _preload() -> str:
    from tlalloc.bench._preload import installed_preload

    path = installed_preload()
    if path is None:
        pytest.skip("libtlalloc.so is not installed with the package")
    return path


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="the threads program needs a C compiler")
def test_smoke_runs_both_allocators(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _preload()
    out = tmp_path / "fp.json"
    rc = fp.run(_args("--workloads", "threads,sqlite", "--quick", "--rounds", "1",
                      "--idle", "0.1", "--json", str(out)))
    printed = capsys.readouterr().out
    assert rc == 0, printed
    data = json.loads(out.read_text())
    assert set(data["runs"]) == {"threads", "sqlite"}
    for name in ("threads", "sqlite"):
        for alloc in ("glibc", "tlalloc"):
            (run,) = data["runs"][name][alloc]
            assert run["ok"] and run["maxrss_bytes"] > 0 and run["wall_s"] > 0
    # the threads program reports its own RSS once everything is freed, after the idle sleep
    for alloc in ("glibc", "tlalloc"):
        (run,) = data["runs"]["threads"][alloc]
        assert run["rss_after_free_bytes"] > 0 and run["rss_after_idle_bytes"] > 0
    s = data["summary"]["threads"]["tlalloc"]
    assert s["peak_ratio"] > 0 and s["speed_ratio"] > 0
    assert s["rss_after_idle_minus_ref_bytes"] is not None
    assert "threads" in printed and "peak / glibc" in printed and "load average" in printed


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="the threads program needs a C compiler")
def test_purge_thread_variant_runs(tmp_path: Path) -> None:
    """--purge-thread adds libtlalloc.so with TLALLOC_POOL_PURGE_THREAD=1 as its own column."""
    _preload()
    out = tmp_path / "fp.json"
    rc = fp.run(_args("--workloads", "threads", "--quick", "--rounds", "1", "--idle", "0.1",
                      "--purge-thread", "--json", str(out)))
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["runs"]["threads"]) == {"glibc", "tlalloc", fp.PURGE_VARIANT}
    assert data["allocators"][fp.PURGE_VARIANT]["env"] == {fp.PURGE_ENV: "1"}
    assert "env" not in data["allocators"]["tlalloc"]
    (run,) = data["runs"]["threads"][fp.PURGE_VARIANT]
    assert run["ok"] and run["rss_after_idle_bytes"] > 0


def test_threads_program_frees_what_it_allocated(tmp_path: Path) -> None:
    """The program runs to the end under libtlalloc.so (cross-thread frees, thread
    exits) and its RSS after the frees is a number, not the -1 of a failed read."""
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler")
    src = tmp_path / "t.c"
    src.write_text(fp.THREADS_C)
    exe = tmp_path / "t"
    subprocess.run([cc, "-O2", "-pthread", str(src), "-o", str(exe)], check=True)
    from tlalloc.bench._preload import run_once

    r = run_once([str(exe), "40", "8", "100", "0"], {}, None, 60, None, preload=_preload())
    assert r["status"] == 0, r["stderr"]
    assert fp._reported(r["stdout"], "rss_after_free_kib") > 0
    assert fp._reported(r["stdout"], "rss_after_idle_kib") > 0


@pytest.mark.parametrize(("argv", "needle"), [
    (["--rounds", "0"], "argument --rounds: must be a whole number >= 1, got '0'"),
    (["--rounds", "-3"], "argument --rounds: must be a whole number >= 1, got '-3'"),
    (["--idle", "nan"], "argument --idle: must be a number of seconds from 0 to 3600, got 'nan'"),
    (["--idle", "inf"], "argument --idle: must be a number of seconds from 0 to 3600, got 'inf'"),
    (["--idle", "3601"], "argument --idle: must be a number of seconds from 0 to 3600, got '3601'"),
    (["--timeout", "0"], "argument --timeout: must be a finite number > 0, got '0'"),
    (["--workloads", "threads,,gcc"], "unknown workload ''"),
    (["--workloads", "git"], "unknown workload 'git'"),
    (["--tlalloc", "/nonexistent/libtlalloc.so"], "--tlalloc '/nonexistent/libtlalloc.so': not a file"),
    (["--allocators", "glibc,nosuch"], "--allocators: nosuch not found"),
    (["--allocators", "glibc", "--purge-thread"], "--purge-thread: tlalloc is not among --allocators"),
])
def test_bad_options_are_refused(argv: list[str], needle: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "footprint", *argv]) == 2
    assert needle in capsys.readouterr().err


def test_summary_compares_with_glibc() -> None:
    w = [fp.Workload("x", ["true"])]
    runs = {"x": {
        "glibc": [{"round": r, "ok": True, "wall_s": 2.0 + r / 100, "maxrss_bytes": 100 << 20,
                   "rss_after_free_bytes": 10 << 20, "rss_after_idle_bytes": 10 << 20}
                  for r in range(5)],
        "tlalloc": [{"round": r, "ok": True, "wall_s": 1.0 + r / 200, "maxrss_bytes": 90 << 20,
                     "rss_after_free_bytes": 30 << 20, "rss_after_idle_bytes": 12 << 20}
                    for r in range(5)],
    }}
    table, s = fp.summarize(w, runs, ["glibc", "tlalloc"])
    t = s["x"]["tlalloc"]
    assert t["peak_ratio"] == pytest.approx(0.9)
    assert t["speed_ratio"] == pytest.approx(2.0, rel=0.01)
    assert t["rss_after_idle_minus_ref_bytes"] == 2 << 20
    lo, hi = t["peak_ratio_interval"]
    assert lo == pytest.approx(0.9) and hi == pytest.approx(0.9)
    assert "0.90x (0.90-0.90)" in table and "10.0 / 12.0" in table


def test_failed_run_is_reported_not_counted(tmp_path: Path) -> None:
    w = [fp.Workload("x", ["true"])]
    runs = {"x": {
        "glibc": [{"round": 0, "ok": True, "wall_s": 1.0, "maxrss_bytes": 8 << 20,
                   "rss_after_free_bytes": None, "rss_after_idle_bytes": None}],
        "tlalloc": [{"round": 0, "ok": False, "wall_s": 0.1, "maxrss_bytes": 1 << 20,
                     "rss_after_free_bytes": None, "rss_after_idle_bytes": None}],
    }}
    _, s = fp.summarize(w, runs, ["glibc", "tlalloc"])
    assert s["x"]["tlalloc"]["peak_ratio"] != s["x"]["tlalloc"]["peak_ratio"]  # nan: no valid run
