"""`tlalloc bench mimalloc-bench`: bench.sh's arguments, the interleaved runner, output
checks and the goal summary, run against stand-in programs (shell scripts named like
mimalloc-bench's, in a temporary folder laid out like its checkout)."""

from __future__ import annotations

import argparse
import json
import os
import stat
import time
from pathlib import Path

import pytest

from tlalloc.bench import _common, _preload
from tlalloc.bench import mimalloc_bench as mb

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="needs /bin/sh")

# The stand-ins print what the real programs print; under a preload whose path
# contains "fast" they report half the time, so the subject's ratios are known.
SCRIPTS = {
    "larson": """case "$LD_PRELOAD" in *fast*) t=1.000;; *) t=2.000;; esac
echo "Throughput =  2149656 operations per second, relative time: ${t}s."
echo "args $*" >&2""",
    "xmalloc-test": 'echo "rtime: 4.000, free/sec: 1.0 M"',
    "cfrac": """echo "$1 = 856070387728264 * 20495027946319472471219512627"
case "$LD_PRELOAD" in *fast*) echo "one more line";; esac""",
    "mstress": """case "$LD_PRELOAD" in *crash*) kill -SEGV $$;; esac
echo "start with $1 threads with a 50% load-per-thread and 25 iterations" """,
    "mleak": """case "$LD_PRELOAD" in *fast*) echo "oops";;
*) echo "Using 10 threads with 100*$1 iterations";; esac""",
    "glibc-thread": 'echo "1000 iterations"',
    "cache-thrash": "sleep 30",
}


def _bench_dir(tmp_path: Path) -> Path:
    bins = tmp_path / "mb" / "out" / "bench"
    bins.mkdir(parents=True)
    (tmp_path / "mb" / "bench" / "espresso").mkdir(parents=True)
    (tmp_path / "mb" / "bench" / "espresso" / "largest.espresso").write_text("x\n")
    for name, body in SCRIPTS.items():
        p = bins / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return tmp_path / "mb"


def _lib(tmp_path: Path, name: str) -> str:
    p = tmp_path / f"lib{name}.so"
    p.write_bytes(b"")  # the loader ignores it (with a message); the scripts read LD_PRELOAD
    return str(p)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    mb.add_arguments(p)
    return p.parse_args(list(argv))


def test_configs_use_bench_sh_arguments() -> None:
    cfgs = {c.label: c.args for c in mb.make_configs(list(mb.BENCH_NAMES), [1, 16], False, False)}
    assert cfgs["larson x16"] == ("5", "8", "1000", "5000", "100", "4141", "16")
    assert cfgs["xmalloc-test x1"] == ("-w", "1", "-t", "5", "-s", "64")
    assert cfgs["rptest x16"] == ("16", "0", "1", "2", "500", "1000", "100", "8", "16000")
    assert cfgs["cache-scratch x16"] == ("16", "1000", "1", "2000000", "16")
    assert cfgs["mstress x1"] == ("1", "50", "25")
    assert cfgs["mleak10"] == ("5",) and cfgs["mleak100"] == ("50",)
    assert "cfrac x1" not in cfgs and "cfrac" in cfgs  # single-threaded: one run
    assert "alloc-test x16" in cfgs


def test_short_changes_are_applied_and_noted() -> None:
    cfgs = {c.label: c for c in mb.make_configs(["larson", "alloc-test", "cfrac"], [1, 2, 4], True, False)}
    assert cfgs["larson x4"].args[0] == "2" and "instead of 5" in cfgs["larson x4"].note
    assert "alloc-test x4" not in cfgs and "alloc-test x2" in cfgs
    assert cfgs["cfrac"].args == (mb.CFRAC_NUMBER,) and cfgs["cfrac"].note == ""


def test_output_checks() -> None:
    cfrac = mb.BENCHES[0]
    assert cfrac.metric(f"{mb.CFRAC_NUMBER} = 856070387728264 * 20495027946319472471219512627",
                        3.0, 1) == 3.0
    with pytest.raises(ValueError, match="wrong factorisation"):
        cfrac.metric(f"{mb.CFRAC_NUMBER} = 3 * 5", 3.0, 1)
    rptest = next(b for b in mb.BENCHES if b.name == "rptest")
    assert rptest.metric("crt 2 threads ........1000000 memory ops/CPU second", 9.0, 2) == 2.0
    with pytest.raises(ValueError):
        rptest.metric("Segmentation fault", 9.0, 2)
    alloc = next(b for b in mb.BENCHES if b.name == "alloc-test")
    assert alloc.metric("2 threads made 200000000 alloc/dealloc operations in 5 ms", 1.5, 2) == 1.5
    with pytest.raises(ValueError):
        alloc.metric("2 threads made 100 alloc/dealloc operations in 5 ms", 1.5, 2)


def test_run_once_reports_status_rss_and_timeout(tmp_path: Path) -> None:
    timer = _preload.gnu_time()
    r = _preload.run_once(["sh", "-c", "echo hi; echo err >&2"], dict(os.environ), None, 10, timer)
    assert (r["status"], r["stdout"], r["stderr"], r["timed_out"]) == (0, "hi\n", "err\n", False)
    assert r["maxrss_bytes"] > 0 and r["wall_s"] > 0
    # A program that sleeps waits: voluntary context switches are counted.
    assert _preload.run_once(["sleep", "0.05"], dict(os.environ), None, 10, timer)["nvcsw"] >= 1
    assert _preload.run_once(["sh", "-c", "exit 3"], dict(os.environ), None, 10, timer)["status"] == 3
    assert _preload.run_once(["sh", "-c", "kill -ABRT $$"], dict(os.environ), None, 10, timer)["status"] == -6
    r = _preload.run_once(["sleep", "30"], dict(os.environ), None, 0.3, timer)
    assert r["timed_out"] and r["wall_s"] < 20


def test_matrix_interleaves_and_computes_ratios(tmp_path: Path) -> None:
    root = _bench_dir(tmp_path)
    allocs = {"glibc": {"lib": None, "how": "-"}, "fast": {"lib": _lib(tmp_path, "fast"), "how": "-"},
              "other": {"lib": _lib(tmp_path, "other"), "how": "-"}}
    cfgs = mb.make_configs(["larson", "cfrac"], [1, 2], False, True)
    order: list[tuple[int, str, str]] = []

    def log(msg: str) -> None:
        parts = msg.split()
        order.append((int(parts[1]), parts[2] + (parts[3] if parts[3].startswith("x") else ""),
                      parts[4] if parts[3].startswith("x") else parts[3]))
    done = mb.run_matrix(cfgs, allocs, root / "out" / "bench", root / "bench", 2, 30, None, log)
    assert done == 2 and len(order) == 2 * 3 * 3
    firsts = [o[2] for o in order[::3]]
    assert len(set(firsts)) == 3  # the allocator that goes first rotates
    s = mb.summarize(cfgs, "fast")
    larson = [r for r in s["rows"] if r["benchmark"] == "larson"]
    assert [r["speed"]["glibc"] for r in larson] == [2.0, 2.0]
    assert all(r["speed_rounds"]["other"] == [2.0, 2.0] for r in larson)
    cfrac = next(r for r in s["rows"] if r["benchmark"] == "cfrac")
    assert cfrac["failures"] == {"fast": ["output differs from glibc's"] * 2}
    assert cfrac["peak_rss_bytes"]["other"] > 0


def test_failures_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench_dir(tmp_path)
    out = tmp_path / "r.json"
    rc = mb.run(_args("--bench-dir", str(root), "--benchmarks", "mstress,mleak10,cfrac,cache-thrash",
                      "--threads", "2", "--rounds", "1", "--allocators", "glibc,fast,crash",
                      "--preload", f"fast={_lib(tmp_path, 'fast')}", "--preload",
                      f"crash={_lib(tmp_path, 'crash')}", "--subject", "fast", "--timeout", "1",
                      "--json", str(out)))
    text = capsys.readouterr().out
    assert rc == 1
    assert "FAILED mstress x2 under crash: 1 run(s): killed by signal SIGSEGV" in text
    assert "FAILED mleak10 under fast: 1 run(s): bad output" in text
    assert "FAILED cfrac under fast: 1 run(s): output differs from glibc's" in text
    assert "FAILED cache-thrash x2 under glibc: 1 run(s): timed out" in text
    assert "goal NOT MET no failed run" in text
    data = json.loads(out.read_text())
    assert data["rounds"] == 1 and data["summary"]["subject"] == "fast"
    assert {r["benchmark"] for r in data["runs"]} == {"mstress", "mleak10", "cfrac", "cache-thrash"}


def test_goals() -> None:
    # Build the summary's goal part from synthetic rows through summarize's logic.
    b = mb.BENCHES[0]
    cfgs = []
    for tg, tm, tt, rm, rt in ((2.0, 1.0, 1.0, 100, 100), (0.9, 0.7, 1.0, 100, 130)):
        runs = {"glibc": [{"time_s": tg, "maxrss_bytes": 100, "error": None, "round": 0}],
                "mimalloc": [{"time_s": tm, "maxrss_bytes": rm, "error": None, "round": 0}],
                "tlalloc": [{"time_s": tt, "maxrss_bytes": rt, "error": None, "round": 0}]}
        cfgs.append(mb.Config(b, 1, b.args, runs=runs))
    s = mb.summarize(cfgs, "tlalloc")
    g = s["goals"]
    assert not g["at least glibc's speed everywhere"]["met"]
    assert g["at least glibc's speed everywhere"]["below"] == ["cfrac"]
    assert not g["no benchmark below 0.8x mimalloc's speed"]["met"]
    assert not g["peak RSS <= 1.2x mimalloc's everywhere"]["met"]
    assert g["geomean speed >= mimalloc's"]["value"] == pytest.approx((1.0 * 0.7) ** 0.5)
    assert g["no failed run"]["met"]
    assert "goal NOT MET peak RSS" in mb.format_summary(s, ["glibc", "mimalloc", "tlalloc"])
    md = mb.format_markdown(s, ["glibc", "mimalloc", "tlalloc"]).splitlines()
    assert md[0] == ("| benchmark | threads | tlalloc s | vs glibc | vs mimalloc | tlalloc peak RSS MiB "
                     "| RSS vs mimalloc | runs |")
    assert md[2] == "| cfrac | - | 1.000 | 2.00 | 1.00 | 0.0 | 1.00 | 1 |"
    assert md[3] == "| cfrac | - | 1.000 | **0.90** | **0.70** | 0.0 | **1.30** | 1 |"
    assert md[4].startswith("| **geometric mean** |")


def _rounds(times: list[float], rss: list[int]) -> list[dict[str, object]]:
    return [{"time_s": t, "maxrss_bytes": m, "error": None, "round": i}
            for i, (t, m) in enumerate(zip(times, rss, strict=True))]


def test_intervals_and_within_noise() -> None:
    b = mb.BENCHES[0]
    # A cell 3% slower than glibc by the medians, whose runs spread by 10%
    # either way: a miss, but within noise. A cell 2x slower in every round
    # is a miss outside it; a cell with 4 rounds gets no interval.
    noisy = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.1, 0.9]
    cfgs = [
        mb.Config(b, 1, b.args, runs={
            "glibc": _rounds(noisy, [100] * 8),
            "tlalloc": _rounds([t * 1.03 for t in reversed(noisy)], [100] * 8)}),
        mb.Config(b, 2, b.args, runs={
            "glibc": _rounds(noisy, [100] * 8),
            "tlalloc": _rounds([2 * t for t in noisy], [300 + i for i in range(8)])}),
        mb.Config(b, 4, b.args, runs={
            "glibc": _rounds([1.0] * 4, [100] * 4),
            "tlalloc": _rounds([2.0] * 4, [100] * 4)}),
    ]
    for c in cfgs:
        c.bench = mb.BENCHES[mb.BENCH_NAMES.index("larson")]
    s = mb.summarize(cfgs, "tlalloc")
    r0, r1, r2 = s["rows"]
    lo, hi = r0["speed_ci"]["glibc"]
    assert lo <= r0["speed"]["glibc"] <= hi and lo < 1.0 < hi
    assert r1["speed_ci"]["glibc"] == pytest.approx((0.5, 0.5))
    lo, hi = r1["rss_ratio_ci"]["glibc"]
    assert 3.0 <= lo <= hi <= 3.08
    assert "speed_ci" not in r2 and "rss_ratio_ci" not in r2
    g = s["goals"]["at least glibc's speed everywhere"]
    assert not g["met"]
    assert g["below"] == ["larson x1", "larson x2", "larson x4"]
    assert g["within noise"] == ["larson x1"]
    # The same runs give the same interval (the bootstrap's seed is fixed).
    assert mb.summarize(cfgs, "tlalloc")["rows"][0]["speed_ci"] == r0["speed_ci"]
    text = mb.format_summary(s, ["glibc", "tlalloc"])
    assert f"{r0['speed']['glibc']:.2f} ({r0['speed_ci']['glibc'][0]:.2f}-" in text
    assert "within noise: larson x1)" in text and "95% interval" in text
    md = mb.format_markdown(s, ["glibc", "tlalloc"]).splitlines()
    assert md[3].startswith("| larson | 2 | 2.000 | **0.50** (0.50-0.50) |")
    assert md[4].startswith("| larson | 4 | 2.000 | **0.50** |")
    assert "95% interval" in md[-1]


def test_ratio_interval_needs_rounds_in_common() -> None:
    a = {r: 1.0 for r in range(10)}
    assert _common.ratio_interval(a, {r: 2.0 for r in range(6, 10)}) is None  # 4 in common
    assert _common.ratio_interval(a, {r: 2.0 for r in range(5, 10)}) == (0.5, 0.5)
    assert _common.ratio_interval(a, {r: 0.0 for r in range(10)}) is None  # no finite ratio


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mb, "installed_preload", lambda: None)
    root = _bench_dir(tmp_path)
    with pytest.raises(ValueError, match="--preload 'x': expected NAME=PATH"):
        mb.run(_args("--bench-dir", str(root), "--preload", "x"))
    with pytest.raises(ValueError, match="is not a file"):
        mb.run(_args("--bench-dir", str(root), "--tlalloc", str(tmp_path / "none.so")))
    with pytest.raises(ValueError, match="--benchmarks 'nope': unknown nope"):
        mb.run(_args("--bench-dir", str(root), "--benchmarks", "nope"))
    with pytest.raises(ValueError, match="--deadline '25:00'"):
        mb.run(_args("--bench-dir", str(root), "--deadline", "25:00"))
    with pytest.raises(ValueError, match="--rounds=0"):
        mb.run(_args("--bench-dir", str(root), "--rounds", "0"))
    with pytest.raises(ValueError, match="--allocators: nosuch not found"):
        mb.run(_args("--bench-dir", str(root), "--benchmarks", "larson", "--allocators", "glibc,nosuch"))
    assert mb.run(_args("--bench-dir", str(root), "--benchmarks", "barnes")) == 2
    assert "lacks barnes" in capsys.readouterr().err
    assert mb.run(_args("--bench-dir", str(root), "--benchmarks", "larson", "--allocators", "glibc")) == 2
    assert "--subject 'tlalloc' is not among" in capsys.readouterr().err


def test_cli_lists_the_suite() -> None:
    from tlalloc.cli import SUITES

    assert SUITES["mimalloc-bench"] == "tlalloc.bench.mimalloc_bench"
    assert SUITES["numpy-alloc"] == "tlalloc.bench.numpy_alloc"


def test_deadline_cuts_later_rounds_only(tmp_path: Path) -> None:
    root = _bench_dir(tmp_path)
    allocs = {"glibc": {"lib": None, "how": "-"}, "fast": {"lib": _lib(tmp_path, "fast"), "how": "-"}}
    cfgs = mb.make_configs(["larson", "mstress"], [1], False, True)
    msgs: list[str] = []
    # A deadline already past: the first round still runs whole, the second not at all.
    begun = mb.run_matrix(cfgs, allocs, root / "out" / "bench", root / "bench", 3, 30,
                          time.time() - 1, msgs.append)
    assert begun == 1
    assert all(len(runs) == 1 for c in cfgs for runs in c.runs.values())
    assert any("stopping in round 2 before" in m for m in msgs)
    s = mb.summarize(cfgs, "fast")
    assert s["rows"][0]["speed"]["glibc"] == 2.0


def test_interrupt_reports_the_finished_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench_dir(tmp_path)
    real = mb.run_once
    calls = []

    def run_once(*a: object, **k: object) -> dict[str, object]:
        calls.append(1)
        if len(calls) == 5:  # Ctrl-C during the 5th run: round 2's first
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]
    monkeypatch.setattr(mb, "run_once", run_once)
    out = tmp_path / "r.json"
    rc = mb.run(_args("--bench-dir", str(root), "--benchmarks", "larson", "--threads", "1,2",
                      "--allocators", "glibc,fast", "--preload", f"fast={_lib(tmp_path, 'fast')}",
                      "--subject", "fast", "--rounds", "2", "--json", str(out)))
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["interrupted"] and data["rounds"] == 1
    assert [r["speed"]["glibc"] for r in data["summary"]["rows"]] == [2.0, 2.0]
    assert "2 interleaved round(s)" not in capsys.readouterr().out


def test_cpu_metric_per_kind_of_program() -> None:
    by_name = {b.name: b for b in mb.BENCHES}
    # A rate over a fixed wall time: scaled by the share of it spent on a CPU.
    assert mb.cpu_metric(by_name["larson"], 10.0, 4.0, 1.0) == 2.5
    assert mb.cpu_metric(by_name["xmalloc-test"], 6.0, 2.0, 2.0) == 6.0
    # A fixed amount of work: its CPU seconds, whatever the wall time.
    assert mb.cpu_metric(by_name["malloc-large"], 9.0, 9.0, 1.5) == 1.5
    assert mb.cpu_metric(by_name["mstress"], 9.0, 9.0, 3.0) == 3.0
    # Already per CPU second.
    assert mb.cpu_metric(by_name["rptest"], 7.0, 2.0, 1.0) == 7.0


def _waiting_runs() -> list[mb.Config]:
    """larson x2: "slow" reports twice fast's time but waited for a core half
    its wall time; malloc-large: slow takes 3x fast's wall time, 1x its CPU."""
    by_name = {b.name: b for b in mb.BENCHES}
    larson = mb.Config(by_name["larson"], 2, ("2",), runs={
        "fast": [{"round": 0, "time_s": 1.0, "wall_s": 2.0, "cpu_s": 2.0, "error": None,
                  "maxrss_bytes": 10}],
        "slow": [{"round": 0, "time_s": 2.0, "wall_s": 2.0, "cpu_s": 1.0, "error": None,
                  "maxrss_bytes": 10}]})
    large = mb.Config(by_name["malloc-large"], 1, (), runs={
        "fast": [{"round": 0, "time_s": 1.0, "wall_s": 1.0, "cpu_s": 1.0, "error": None,
                  "maxrss_bytes": 10}],
        "slow": [{"round": 0, "time_s": 3.0, "wall_s": 3.0, "cpu_s": 1.0, "error": None,
                  "maxrss_bytes": 10}]})
    return [larson, large]


def test_summarize_by_cpu_time() -> None:
    cfgs = mb.configs_from_json({"runs": [
        {"benchmark": c.bench.name, "threads": c.threads, "args": list(c.args), "runs": c.runs}
        for c in _waiting_runs()]})
    by_time = mb.summarize(cfgs, "fast")
    by_cpu = mb.summarize(cfgs, "fast", "cpu")
    assert [r["speed"]["slow"] for r in by_time["rows"]] == [2.0, 3.0]
    assert [r["speed"]["slow"] for r in by_cpu["rows"]] == [1.0, 1.0]
    assert by_cpu["metric"] == "cpu" and by_time["metric"] == "time"
    with pytest.raises(ValueError, match="metric='wall'"):
        mb.summarize(cfgs, "fast", "wall")


def test_from_json_prints_an_earlier_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench_dir(tmp_path)
    out = tmp_path / "r.json"
    assert mb.run(_args("--bench-dir", str(root), "--benchmarks", "larson", "--threads", "1",
                        "--rounds", "1", "--allocators", "glibc,fast", "--preload",
                        f"fast={_lib(tmp_path, 'fast')}", "--subject", "fast",
                        "--json", str(out))) == 0
    data = json.loads(out.read_text())
    entry = data["runs"][0]["runs"]["fast"][0]
    assert entry["cpu_time_s"] == pytest.approx(entry["time_s"] * entry["cpu_s"] / entry["wall_s"])
    capsys.readouterr()
    assert mb.run(_args("--from-json", str(out), "--subject", "fast", "--metric", "cpu",
                        "--markdown")) == 0
    text = capsys.readouterr().out
    assert "speed from CPU time" in text and "larson" in text and "| larson | 1 |" in text
    assert mb.run(_args("--from-json", str(out), "--subject", "nobody")) == 2
    assert "--subject 'nobody' is not among" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--bench-dir is required"):
        mb.run(_args("--rounds", "1"))
