"""`tlalloc bench huffman`: runs every allocator, checks round trips and identical
encodings, reports lock counts; the generated text is deterministic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tlalloc.bench import huffman as bench
from tlalloc.cli import main


def test_make_text_is_deterministic_and_text_like() -> None:
    a = bench.make_text(100_000)
    assert a == bench.make_text(100_000) and len(a) == 100_000
    assert a != bench.make_text(100_000, seed=1)
    assert bench.make_text(5000) == a[:5000]  # a prefix, not a different text
    symbols = set(a[:1024])
    assert 30 <= len(symbols) <= 100  # codes are not trivial
    assert a.decode("ascii").count("\n") > 1000
    with pytest.raises(ValueError, match="nbytes=0"):
        bench.make_text(0)


def test_cli_run_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h.json"
    rc = main(
        ["bench", "huffman", "--sizes", "64KiB,20000", "--repeat", "1", "--no-progress", "--json", str(out)]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "global-lock" in printed and "pooled" in printed and "tlalloc" in printed
    assert "identical encodings across allocators: yes" in printed
    data = json.loads(out.read_text())
    assert data["suite"] == "huffman" and data["ok"] is True
    assert [r["input"] for r in data["results"]] == ["text 64 KiB", "text 20,000 B"]
    first = data["results"][0]
    assert first["bytes"] == 65536 and first["round_trip_ok"] and first["identical"]
    rows = {r["allocator"]: r for r in first["rows"]}
    assert list(rows) == ["global-lock", "pooled", "tlalloc"]
    assert rows["global-lock"]["speedup"] == 1.0
    assert rows["global-lock"]["lock_acquisitions"] == 2 * rows["global-lock"]["num_allocations"]
    assert rows["pooled"]["locks_per_block"] <= 2
    assert rows["pooled"]["lock_reduction"] >= 0.99
    assert rows["tlalloc"]["lock_acquisitions"] == 0
    assert rows["tlalloc"]["lock_reduction"] == 1.0
    assert all(r["num_blocks"] == 64 for r in rows.values())
    assert "cpu_count" in data["machine"]


def test_cli_input_file_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "sample.bin"
    f.write_bytes(bytes(range(256)) * 40 + b"tail")
    rc = main(
        [
            "bench",
            "huffman",
            "--input",
            str(f),
            "--block-size",
            "512",
            "--threads",
            "3",
            "--allocators",
            "tlalloc,pooled",
            "--pool-bytes",
            "4KiB",
            "--repeat",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sample.bin on " in printed and ": 10,244 bytes, 21 blocks" in printed
    assert "global-lock" not in printed


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--allocators", "malloc"], "--allocators"),
        (["--allocators", "pooled,pooled"], "--allocators"),
        (["--sizes", "lots"], "--sizes"),
        (["--sizes", "0"], "argument --sizes: must be comma-separated sizes of at least 1 byte"),
        (["--repeat", "0"], "--repeat"),
        (["--heap-bytes", "1KiB", "--sizes", "4KiB"], "heap_bytes=1024"),
        (["--block-size", "0", "--sizes", "4KiB"], "argument --block-size: must be a whole number >= 1"),
        (["--input", "/nonexistent/file"], "--input /nonexistent/file"),
        (["--cpus", "0"], "--cpus"),
        (["--cpus", "4096"], "--cpus"),
    ],
)
def test_cli_bad_options(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "huffman", "--no-progress", "--repeat", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_measure_checks_identity_and_round_trip() -> None:
    r = bench.measure(bench.make_text(8192), ["pooled", "global-lock"], repeat=2, threads=4)
    assert r["baseline"] == "global-lock" and r["identical"] and r["round_trip_ok"]
    rows = {x["allocator"]: x for x in r["rows"]}
    assert rows["global-lock"]["speedup"] == 1.0
    assert rows["pooled"]["lock_acquisitions"] == 2 * 4  # one pool carved and freed per worker


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_cli_cpus_pins_and_restores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = os.sched_getaffinity(0)
    out = tmp_path / "c.json"
    rc = main(
        [
            "bench",
            "huffman",
            "--sizes",
            "8KiB",
            "--cpus",
            "1",
            "--repeat",
            "1",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    assert os.sched_getaffinity(0) == before
    assert "text 8 KiB on 1 CPU:" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["cpus"] for r in data["results"]] == [1]
    assert data["config"]["cpus"] == [1]
