"""Every command-line argument is checked before any work: a bad value ends the
command with one line naming the option and the value, exit status 2, never a
traceback. One rule per kind of argument (tlalloc.bench._common), shared by the
suites."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tlalloc.bench import _common
from tlalloc.cli import main

# (argv after "tlalloc", what the one-line message must contain)
HOSTILE: list[tuple[list[str], str]] = [
    (["bench", "--duration", "nan"], "argument --duration: must be a finite number > 0, got 'nan'"),
    (["bench", "--duration", "inf"], "argument --duration: must be a finite number > 0, got 'inf'"),
    (["bench", "--duration", "1e309"], "argument --duration: must be a finite number > 0, got '1e309'"),
    (["bench", "--duration", "-1"], "argument --duration: must be a finite number > 0, got '-1'"),
    (["bench", "--duration", "0"], "argument --duration: must be a finite number > 0, got '0'"),
    (["bench", "--duration", "0x10"], "argument --duration: must be a finite number > 0, got '0x10'"),
    (["bench", "--duration", "\uff11"], "argument --duration: must be a finite number > 0"),
    (["bench", "--service-seconds=-inf"], "argument --service-seconds: must be a finite number > 0"),
    (["bench", "--repeat", "0"], "argument --repeat: must be a whole number >= 1, got '0'"),
    (["bench", "--repeat", "-5"], "argument --repeat: must be a whole number >= 1, got '-5'"),
    (["bench", "--repeat", "2.5"], "argument --repeat: must be a whole number in ASCII digits, got '2.5'"),
    (["bench", "--repeat", "1_000"], "argument --repeat: must be a whole number in ASCII digits"),
    (["bench", "--threads", "1,,2"], "argument --threads: must be comma-separated whole numbers"),
    (["bench", "--threads", "1,2,"], "argument --threads: must be comma-separated whole numbers"),
    (["bench", "--threads", "\uff14"], "argument --threads: must be comma-separated whole numbers"),
    (["bench", "--threads", "0"], "argument --threads: must be comma-separated whole numbers from 1 to 1024"),
    (["bench", "--threads", "2000"], "from 1 to 1024, got '2000'"),
    (["bench", "--threads", ""], "argument --threads: must be comma-separated whole numbers"),
    (["bench", "--numpy-blas-threads", "-1"], "argument --numpy-blas-threads: must be a whole number >= 0"),
    (["bench", "--corpus-rows", "0"], "argument --corpus-rows: must be a whole number >= 1"),
    (["bench", "--strategies", "thread,gpu"], "--strategies must be a comma-separated list of"),
    (["bench", "--json", "/proc/x.json"], "cannot write --json '/proc/x.json'"),
    (["bench", "--plot", "/no/such/dir/p.png"], "cannot write --plot '/no/such/dir/p.png'"),
    (["bench", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["bench", "alloc", "--threads", "1,,2"], "argument --threads: must be comma-separated"),
    (["bench", "alloc", "--allocs", "0"], "argument --allocs: must be a whole number >= 1"),
    (["bench", "alloc", "--size", "\uff14"], "argument --size: must be a whole number in ASCII digits"),
    (["bench", "larson", "--seconds", "nan"], "argument --seconds: must be a finite number > 0"),
    (["bench", "larson", "--repeat", "-5"], "argument --repeat: must be a whole number >= 1"),
    (["bench", "pages", "--repeat", "0"], "argument --repeat: must be a whole number >= 1"),
    (["bench", "pages", "--dim", "-3"], "argument --dim: must be a whole number >= 1"),
    (["bench", "dask", "--workers", "0"], "argument --workers: must be a whole number >= 1"),
    (["bench", "dask", "--rounds", "1e3"], "argument --rounds: must be a whole number in ASCII digits"),
    (["bench", "numpy-alloc", "--rounds", "0"], "argument --rounds: must be a whole number >= 1"),
    (["bench", "numpy-alloc", "--churn-seconds", "inf"], "argument --churn-seconds: must be a finite"),
    (["bench", "numpy-alloc", "--threads", "1,,2"], "argument --threads: must be comma-separated whole"),
    (["bench", "huffman", "--repeat", "0"], "argument --repeat: must be a whole number >= 1"),
    (["bench", "huffman", "--threads", "-2"], "argument --threads: must be a whole number >= 1"),
    (["bench", "huffman", "--cpus", "\uff11"], "--cpus must list counts between 1 and"),
    (["bench", "huffman", "--cpus", "1,,2"], "--cpus must list counts between 1 and"),
    (["bench", "scratch", "--duration", "nan"], "argument --duration: must be a finite number > 0"),
    (["bench", "scratch", "--repeat", "0"], "argument --repeat: must be a whole number >= 1"),
    (["bench", "kernels", "--json", "/proc/x.json"], "cannot write --json '/proc/x.json'"),
    (["bench", "mimalloc-bench", "--bench-dir", "/nonexistent", "--rounds", "0"],
     "argument --rounds: must be a whole number >= 1"),
    (["bench", "mimalloc-bench", "--bench-dir", "/nonexistent", "--timeout", "nan"],
     "argument --timeout: must be a finite number > 0"),
    (["bench", "no-such-suite"], "unknown suite 'no-such-suite'"),
    (["stats"], "tlalloc stats: missing SCRIPT, the Python script to run"),
    (["stats", "--json"], "tlalloc stats: missing SCRIPT"),
    (["stats", "/no/such/script.py"], "can't open file '/no/such/script.py'"),
    (["stats", "--bogus", "x.py"], "unrecognized arguments: --bogus"),
    (["stats", "-o", "/no/such/dir/r.txt", __file__], "cannot write the report to '/no/such/dir/r.txt'"),
    (["preload-path", "x"], "takes no arguments"),
]


@pytest.mark.parametrize("argv,needle", HOSTILE, ids=[" ".join(a) for a, _ in HOSTILE])
def test_hostile_argument_is_one_line_and_status_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - t0 < 20  # refused before the work, not after it
    out, err = capsys.readouterr()
    assert needle in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line: no usage block, no traceback
    assert "Traceback" not in err and "Traceback" not in out


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--duration", "nan"], "must be a finite number > 0, got 'nan'"),
    (["bench", "--threads", "\uff14"], "--threads"),
    (["stats"], "missing SCRIPT"),
])
def test_console_script_exits_2_with_one_line(argv: list[str], needle: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLALLOC_")}
    r = subprocess.run([sys.executable, "-m", "tlalloc", *argv], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stats_report_to_a_full_disk_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLALLOC_")}
    r = subprocess.run([sys.executable, "-m", "tlalloc", "stats", "-o", "/dev/full", str(script)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stdout == "ran\n"
    assert r.stderr.strip() == ("tlalloc stats: cannot write the report to '/dev/full': "
                                "No space left on device")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_json_to_a_full_disk_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(_common.BadArgument, match="cannot write '/dev/full': No space left on device"):
        _common.write_json("/dev/full", {"x": 1})


def test_output_path_is_tried_without_truncating(tmp_path: Path) -> None:
    f = tmp_path / "old.json"
    f.write_text("{}")
    assert _common.output_path_problem(str(f)) is None and f.read_text() == "{}"
    assert _common.output_path_problem(str(tmp_path / "new.json")) is None
    assert not (tmp_path / "new.json").exists()  # created to try, then removed
    problem = _common.output_path_problem("/proc/x.json")
    assert problem is not None  # root may write anywhere but in /proc


def test_rules_parse_what_they_accept() -> None:
    assert _common.positive_float(" 1e-3 ") == 0.001
    assert _common.positive_float("2") == 2.0 and _common.positive_float(".5") == 0.5
    assert _common.positive_int("+7") == 7 and _common.nonnegative_int("0") == 0
    assert _common.thread_counts("8, 1,2 ,2") == [1, 2, 8]
    assert _common.parse_threads([4, 1]) == [1, 4]
    with pytest.raises(_common.BadArgument, match="argument --threads: must be comma-separated"):
        _common.parse_threads("1,x")


def test_parser_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    p = _common.ArgumentParser(prog="tlalloc bench x")
    p.add_argument("--n", type=_common.positive_int)
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["--n", "nan"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "tlalloc bench x: argument --n: must be a whole number in ASCII digits, got 'nan' (see --help)\n")


def test_suites_bare_numbers_get_the_shared_rules() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int)
    p.add_argument("--s", type=float)
    _common.check_finite_numbers(p)
    assert p.parse_args(["--k", "3", "--s", "0.5"]) == argparse.Namespace(k=3, s=0.5)
