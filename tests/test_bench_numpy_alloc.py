"""`tlalloc bench numpy-alloc`: size parsing, the interleaved a * b + c cells, the churn
in its own process, and a quick end-to-end run (no timing is asserted)."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tlalloc import numpy_alloc
from tlalloc.bench import numpy_alloc as bench


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


def test_sizes_follow_the_library_rule() -> None:
    from tlalloc.bench._common import size_list

    assert size_list(bench.DEFAULT_SIZES) == [8 << 10, 256 << 10, 4 << 20, 64 << 20, 256 << 20]
    assert size_list("1.5MiB, 2MB") == [3 << 19, 2_000_000]
    for bad in ("", "0", "-5", "4XB", "1e3", "0x10"):
        with pytest.raises(SystemExit, match="--sizes: must be comma-separated sizes"):
            size_list(bad)


def test_handler_is_the_pool_in_worker_threads() -> None:
    names: dict[str, str | None] = {}

    def work(alloc: str) -> None:
        with bench._handler(alloc):
            names[alloc] = numpy_alloc.handler_name(np.ones(100) * 2)

    for alloc in bench.ALLOCATORS:
        t = threading.Thread(target=work, args=(alloc,))
        t.start()
        t.join()
    assert names == {"numpy": "default_allocator", "tlalloc": "tlalloc_pool"}


def test_time_expression_counts_work_and_faults() -> None:
    x = np.ones(1 << 20)  # 8 MiB: each result is a fresh large block
    for alloc in bench.ALLOCATORS:
        r = bench.time_expression((x, x, x), 2, 3, alloc)
        assert r["cpu_per_op"] > 0 and r["wall_per_op"] > 0 and r["faults_per_op"] >= 0


def test_time_expression_reports_a_failing_thread() -> None:
    a = np.ones(10)
    with pytest.raises(RuntimeError, match="a \\* b \\+ c under numpy failed"):
        bench.time_expression((a, a, np.ones(3)), 2, 1, "numpy")  # shapes do not broadcast


def test_ops_table_interleaves_both_allocators() -> None:
    rows = bench.ops_table([8192, 1 << 20], [1, 2], 2, 0.001, log=lambda *a: None)
    assert [(r["size_bytes"], r["threads"]) for r in rows] == [
        (8192, 1), (8192, 2), (1 << 20, 1), (1 << 20, 2)]
    for r in rows:
        assert all(len(r["runs"][a]) == 2 for a in bench.ALLOCATORS)
        assert len(r["speed_rounds"]) == 2 and r["iters"] >= 3
        assert r["speed"] == pytest.approx(r["cpu_per_op"]["numpy"] / r["cpu_per_op"]["tlalloc"])
    assert "256 KiB" in bench.format_ops([{**rows[0], "size_bytes": 256 << 10}])


def test_churn_subprocess_reports_rate_and_rss() -> None:
    for alloc in bench.ALLOCATORS:
        r = bench.churn_in_subprocess(alloc, 0.3, 2)
        assert r["allocator"] == alloc and r["threads"] == 2 and r["allocations"] > 0
        assert r["rss_peak_bytes"] >= r["rss_mean_bytes"] > 0 and r["rss_samples"] >= 1


def test_churn_child_failure_is_reported() -> None:
    with pytest.raises(RuntimeError, match="churn child \\(nosuch\\) exited"):
        bench.churn_in_subprocess("nosuch", -1.0, 0)


def test_bad_arguments() -> None:
    with pytest.raises(SystemExit, match="--sizes: must be comma-separated sizes .* got '8KiB,lots'"):
        bench.run(_args("--sizes", "8KiB,lots"))
    with pytest.raises(ValueError, match="--churn-threads=0 must be at least 1"):
        bench.run(_args("--churn-threads", "0"))
    with pytest.raises(ValueError, match="--churn-seconds=nan must be a positive"):
        bench.run(_args("--churn-seconds", "nan"))
    for sizes in (",", "8KiB,,4MiB", "\uff14MiB", "0"):  # the library's size rule
        with pytest.raises(SystemExit, match="--sizes: must be comma-separated sizes"):
            bench.run(_args("--sizes", sizes))


def test_quick_run_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "n.json"
    assert bench.run(_args("--quick", "--sizes", "8KiB,4MiB", "--churn-seconds", "0.3",
                           "--markdown", "--json", str(out))) == 0
    text = capsys.readouterr().out
    assert "tlalloc faults/op" in text and "tlalloc / numpy" in text
    assert "| 4 MiB | 2 |" in text and "| tlalloc / numpy |" in text
    data = json.loads(out.read_text())
    assert [(r["size_bytes"], r["threads"]) for r in data["ops"]] == [
        (8192, 1), (8192, 2), (4 << 20, 1), (4 << 20, 2)]
    assert set(data["churn"]["median"]) == {"numpy", "tlalloc"}
    assert data["churn"]["seconds"] == 0.3


def test_cli_refuses_an_unwritable_json_path_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    from tlalloc.cli import main

    assert main(["bench", "numpy-alloc", "--json", "/no/such/dir/x.json"]) == 2
    assert "cannot write --json" in capsys.readouterr().err
    assert main(["bench", "mimalloc-bench", "--bench-dir", "/nonexistent", "--json",
                 "/no/such/dir/x.json"]) == 2
