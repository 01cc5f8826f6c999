"""The CLI checks its output paths before the work, and `tlalloc stats` reports
once, for the original process, when the script forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tlalloc.cli import main, output_path_problem


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLALLOC_")}
    return subprocess.run([sys.executable, "-m", "tlalloc", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("suite", ["alloc", "kernels", "huffman", "mix"])
def test_bench_refuses_an_unwritable_json_path_before_running(suite: str, capsys) -> None:
    # Checked before the work, not found missing after minutes of it (then as a
    # traceback): the check comes first, so this returns at once even for the long suites.
    assert main(["bench", suite, "--json", "/no/such/dir/x.json"]) == 2
    err = capsys.readouterr().err
    assert "cannot write --json '/no/such/dir/x.json'" in err and "does not exist" in err
    assert "Traceback" not in err


def test_bench_refuses_a_folder_as_output(tmp_path, capsys) -> None:
    assert main(["bench", "alloc", "--json", str(tmp_path)]) == 2
    assert "it is a folder" in capsys.readouterr().err


def test_output_path_problem(tmp_path) -> None:
    assert output_path_problem(str(tmp_path / "new.json")) is None
    f = tmp_path / "old.json"
    f.write_text("{}")
    assert output_path_problem(str(f)) is None
    assert f.read_text() == "{}"  # nothing created or truncated by the check
    assert "does not exist" in (output_path_problem(str(tmp_path / "a" / "b.json")) or "")
    assert output_path_problem("") == "the path is empty"
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            assert "not writable" in (output_path_problem(str(ro / "x.json")) or "")
        finally:
            ro.chmod(0o700)


FORKING = """
import os, sys
import tlalloc
with tlalloc.scratch() as a:
    a.empty(100)
pid = os.fork()
if pid == 0:
    with tlalloc.scratch() as a:
        a.empty(10)
    sys.exit(0)  # returns through the script runner, as a plain script would
_, status = os.waitpid(pid, 0)
print("child status", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_stats_reports_once_when_the_script_forks(tmp_path) -> None:
    script = tmp_path / "forks.py"
    script.write_text(FORKING)
    r = _cli("stats", "--json", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["child status 0"]
    # 3.12+ may warn on stderr that the process forks with threads running (BLAS's):
    # the report is what starts at the first "{".
    data = json.loads(r.stderr[r.stderr.index("{"):])  # one report: two would not parse as one
    assert data["script"]["exit_status"] == 0
    out = tmp_path / "report.txt"
    r = _cli("stats", "-o", out, script)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert text.count("tlalloc memory summary") == 1
    assert text.count(f"script {str(script)!r} exited with status 0") == 1
