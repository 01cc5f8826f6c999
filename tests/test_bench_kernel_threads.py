"""Smoke tests of the short-calls-from-threads section of ``tlalloc bench kernels``
(tlalloc.bench.kernel_threads): its cells, its table, its verdicts and how the
suite composes it. No timing is asserted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from tlalloc import cli, kernels
from tlalloc.bench import kernel_threads


def test_the_kernels_suite_runs_the_section_after_the_cosine_peers() -> None:
    assert cli.SECTIONS["kernels"][-1] == "tlalloc.bench.kernel_threads"


def test_quick_measures_one_size_per_kernel_at_one_and_two_threads() -> None:
    r = kernel_threads.compare(rounds=2, duration=0.005, quick=True)
    assert [c["kernel"] for c in r["cells"]] == list(kernel_threads.SIZES)
    for c in r["cells"]:
        assert c["size"] == kernel_threads.SIZES[c["kernel"]][1][0]
        assert len(c["cpu_ns_1"]) == len(c["cpu_ns_2"]) == 2
        assert all(v > 0 for v in c["cpu_ns_1"] + c["cpu_ns_2"])
        assert c["ratio"] == pytest.approx(c["median_ns_2"] / c["median_ns_1"])
        assert c["interval"] is None  # 2 rounds: too few for an interval
    text = kernel_threads.report(r)
    assert "smoke run" in text and "met" not in text
    for kernel in kernel_threads.SIZES:
        assert kernel in text


def test_each_thread_gets_its_own_operation_over_shared_inputs() -> None:
    for kernel in kernel_threads.SIZES:
        make = kernel_threads.operation_maker(kernel, 20)
        a, b = make(), make()
        assert a is not b and a.__closure__ is not None and b.__closure__ is not None
        assert all(x is not y for x, y in zip(a.__closure__, b.__closure__, strict=True))
        ra, rb = a(3), b(3)  # the same inputs: the same result
        if isinstance(ra, tuple):
            assert all(np.array_equal(x, y) for x, y in zip(ra, rb, strict=True))
        else:
            assert np.array_equal(ra, rb)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_threads.operation_maker("sort", 10)


def test_verdicts_follow_the_interval() -> None:
    def cells(*intervals):  # type: ignore[no-untyped-def]
        return {"cells": [{"kernel": "decay", "size": 10, "unit": "values", "ratio": 1.0, "interval": iv}
                          for iv in intervals]}

    got = [ok for _, ok in kernel_threads.goals(cells((0.95, 1.08), (1.15, 1.4), (0.9, 1.3), None))]
    assert got == [True, False, None, None]
    r = dict(cells((0.95, 1.08), (1.15, 1.4)), rounds=7, duration_s=0.2, quick=False, keep_gil_bytes=None)
    for c in r["cells"]:
        c.update(median_ns_1=1000.0, median_ns_2=1000.0)
    text = kernel_threads.report(r)
    assert "  met: decay" in text and "  NOT met: decay" in text


def test_section_is_skipped_by_cosine_only_and_fills_the_payload(capsys: pytest.CaptureFixture[str]) -> None:
    payload: dict = {"targets": []}  # type: ignore[type-arg]
    kernel_threads.section(argparse.Namespace(quick=True, cosine_only=True), payload)
    assert "kernel_threads" not in payload and capsys.readouterr().out == ""
    kernel_threads.section(argparse.Namespace(quick=True, cosine_only=False), payload)
    assert "Short calls from many threads" in capsys.readouterr().out
    assert payload["kernel_threads"]["quick"] and payload["targets"] == []  # a smoke run draws no verdicts
    keep = payload["kernel_threads"]["keep_gil_bytes"]
    assert keep == kernels._tlalloc._kernels_keep_gil_bytes()


def test_main_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert kernel_threads.main(["--quick", "--rounds", "1", "--duration", "0.005", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "load average" in text and f"wrote {out}" in text
    data = json.loads(out.read_text())
    assert data["suite"] == "kernel_threads"
    assert len(data["kernel_threads"]["cells"]) == len(kernel_threads.SIZES)
    with pytest.raises(SystemExit):
        kernel_threads.main(["--rounds", "0"])


def test_keep_gil_bytes_runs_under_that_threshold_and_restores_it(tmp_path: Path) -> None:
    from tlalloc import _tlalloc

    before = _tlalloc._kernels_keep_gil_bytes()
    out = tmp_path / "t.json"
    args = ["--quick", "--rounds", "1", "--duration", "0.005", "--json", str(out)]
    assert kernel_threads.main([*args, "--keep-gil-bytes", "65536"]) == 0
    assert json.loads(out.read_text())["kernel_threads"]["keep_gil_bytes"] == 65536
    assert _tlalloc._kernels_keep_gil_bytes() == before
    with pytest.raises(SystemExit):
        kernel_threads.main([*args, "--keep-gil-bytes", "0"])
