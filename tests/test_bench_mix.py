"""`tlalloc bench` (the kernel mix) and `tlalloc bench kernels`: they run, verify, and report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from tlalloc import cli
from tlalloc.bench import kernel_compare, mix


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mix.add_arguments(parser)
    ns = parser.parse_args([])
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_mix_runs_verifies_and_writes_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mix.json"
    png = tmp_path / "mix.png"
    args = _args(
        threads="1,2", duration=0.02, repeat=1, compare=False, progress=False, json=str(out), plot=str(png)
    )
    assert mix.run(args) == 0
    text = capsys.readouterr().out
    assert "verified: thread, shared and malloc agree bit for bit" in text
    assert "Thread-arena statistics" in text and "What thread arenas changed on this machine:" in text
    assert "NOT met" not in text
    data = json.loads(out.read_text())
    cells = {(r["strategy"], r["threads"]) for r in data["results"]}
    assert cells == {(s, t) for s in mix.STRATEGIES for t in (1, 2)}
    assert all(r["ops"] > 0 and r["ops_per_s"] > 0 for r in data["results"])
    assert data["machine"]["cpu_count"] >= 1
    assert data["arena_stats_delta"]["num_overflows"] == 0
    assert {m["threads"] for m in data["margins"]} == {1, 2}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "skipped the plot: matplotlib is not installed" in text
    else:
        assert png.stat().st_size > 0


@pytest.mark.parametrize("kernel", ["cosine", "spread", "decay"])
def test_each_kernel_runs_alone(kernel: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(
        kernel=kernel,
        threads="1",
        strategies="thread,numpy",
        duration=0.01,
        repeat=1,
        compare=False,
        progress=False,
    )
    assert mix.run(args) == 0
    words = {"cosine": "cosine similarity", "spread": "spreading activation", "decay": "decay of"}
    assert f"one op = {words[kernel]}" in capsys.readouterr().out


def test_mix_refuses_to_time_strategies_that_disagree(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = mix.operation

    def broken(w: mix.Workload, strategy: str, kernel: str):  # type: ignore[no-untyped-def]
        fn = real(w, strategy, kernel)
        if strategy == "malloc":
            return lambda i: [np.zeros(3)] * len(fn(i))
        return fn

    monkeypatch.setattr(mix, "operation", broken)
    assert mix.run(_args(threads="1", duration=0.01, compare=False, progress=False)) == 1
    assert "verification FAILED" in capsys.readouterr().out


def test_bad_options() -> None:
    with pytest.raises(SystemExit):
        mix.parse_threads("1,x")
    with pytest.raises(SystemExit):
        mix.parse_threads("0")
    with pytest.raises(SystemExit):
        mix.parse_list("thread,gpu", mix.STRATEGIES, "--strategies")
    with pytest.raises(SystemExit):
        mix.run(_args(duration=0.0, compare=False, progress=False))


def test_cli_quick_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        [
            "bench",
            "--quick",
            "--threads",
            "1",
            "--strategies",
            "thread,shared",
            "--no-compare",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "ops/s" in capsys.readouterr().out


def test_kernel_comparison_reports_every_goal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.json"
    assert cli.main(["bench", "kernels", "--quick", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "What the kernels changed" in text and "NOT met" not in text
    assert text.count("faster than") >= 3
    data = json.loads(out.read_text())
    c = data["comparison"]
    assert c["cosine"]["speedup_vs_numpy"] > 0 and c["decay"]["speedup_vs_numpy"] > 0
    assert c["spread"]["touched_1k"] > 0 and c["spread"]["big_nodes"] == 20_000


def test_blas_thread_limit_is_restored() -> None:
    with kernel_compare.blas_threads(None) as before:
        pass
    with kernel_compare.blas_threads(1) as inside:
        assert inside in (1, None)
    with kernel_compare.blas_threads(None) as after:
        assert after == before
