"""liblivecount.so (bench/c/lib/livecount.c) and ``tlalloc bench mimalloc-bench --live``:
the peak live bytes of a program under the C library's malloc and under libtlalloc.so,
from threads and across fork, and the summary's RSS per live byte."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tlalloc.bench import mimalloc_bench as mb
from tlalloc.pool import preload_path

MIB = 1 << 20

# Holds known amounts at known times and prints the peak the library wrote after
# each: 64 MiB alone, 4 threads x 32 MiB at once, a forked child's 192 MiB. The
# blocks come from the C library's malloc through ctypes (the interposed one):
# free-threaded CPython serves its own objects from its built-in mimalloc.
CHILD = r"""
import ctypes, os, sys, threading
path = os.environ["TLALLOC_LIVE_FILE"]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def hold_bytes(n):
    p = libc.malloc(n)
    assert p
    ctypes.memset(p, 1, n)
    return p
def peak():
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8), sys.byteorder)
libc.free(hold_bytes(64 << 20))
print(peak())
barrier = threading.Barrier(5)
def hold():
    y = hold_bytes(32 << 20)
    barrier.wait(); barrier.wait()
    libc.free(y)
ts = [threading.Thread(target=hold) for _ in range(4)]
for t in ts: t.start()
barrier.wait(); barrier.wait()
for t in ts: t.join()
print(peak())
pid = os.fork()
if pid == 0:
    libc.free(hold_bytes(192 << 20))
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
print(peak())
"""


@pytest.mark.parametrize("under", ["glibc", "tlalloc"])
def test_peaks_of_a_threaded_forking_python_program(tmp_path: Path, under: str) -> None:
    live = mb.livecount_path()
    peak_file = tmp_path / "peak"
    peak_file.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["LD_PRELOAD"] = live + (" " + preload_path() if under == "tlalloc" else "")
    env["TLALLOC_LIVE_FILE"] = str(peak_file)
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    peaks = [int(x) for x in r.stdout.split()]
    # Each phase's blocks, plus what the interpreter holds in malloc'd memory
    # (objects above 512 bytes, its own tables, ctypes): a few MiB.
    for got, want in zip(peaks, (64, 4 * 32, 192), strict=True):
        assert want * MIB <= got < (want + 16) * MIB, (peaks, under)
    assert mb.read_live_peak(str(peak_file)) == peaks[-1]


def test_without_the_variable_it_only_counts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TLALLOC_LIVE_FILE")}
    env["LD_PRELOAD"] = mb.livecount_path()
    code = ("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; "
            "libc.free.argtypes = [ctypes.c_void_p]; libc.free(libc.malloc(1 << 20)); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60, check=False)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


def test_live_path_rules(tmp_path: Path) -> None:
    assert mb.livecount_path().endswith("liblivecount.so")
    with pytest.raises(ValueError, match="--live '/nonexistent.so': not a file"):
        mb.livecount_path("/nonexistent.so")
    p = argparse.ArgumentParser()
    mb.add_arguments(p)
    base = ["--bench-dir", str(tmp_path), "--benchmarks", "larson", "--allocators", "glibc",
            "--subject", "glibc"]
    with pytest.raises(ValueError, match="--live '': not a file"):
        mb.run(p.parse_args([*base, "--live", ""]))
    assert p.parse_args(base).live is None and p.parse_args([*base, "--live"]).live is True
    f = tmp_path / "x"
    assert mb.read_live_peak(str(f)) is None  # no file
    f.write_bytes(b"\0" * 8)
    assert mb.read_live_peak(str(f)) is None  # nothing written
    f.write_bytes((3 * MIB).to_bytes(8, sys.byteorder))
    assert mb.read_live_peak(str(f)) == 3 * MIB


def test_summary_gives_rss_per_live_byte() -> None:
    b = next(x for x in mb.BENCHES if x.name == "rptest")
    # mimalloc: 10 MiB RSS for 5 MiB live; tlalloc: 20 MiB for 10 MiB live, then
    # 30 for 10: twice mimalloc's RSS, the same and 1.5x its RSS per live byte.
    cfgs = []
    for rt in (20, 30):
        runs = {"mimalloc": [{"time_s": 1.0, "maxrss_bytes": 10 * MIB, "live_peak_bytes": 5 * MIB,
                              "error": None, "round": 0}],
                "tlalloc": [{"time_s": 1.0, "maxrss_bytes": rt * MIB, "live_peak_bytes": 10 * MIB,
                             "error": None, "round": 0}]}
        cfgs.append(mb.Config(b, 2, b.args, runs=runs))
    s = mb.summarize(cfgs, "tlalloc")
    assert [r["rss_ratio"]["mimalloc"] for r in s["rows"]] == [2.0, 3.0]
    assert [r["rss_per_live_ratio"]["mimalloc"] for r in s["rows"]] == [1.0, 1.5]
    assert s["rows"][0]["live_peak_bytes"] == {"mimalloc": 5 * MIB, "tlalloc": 10 * MIB}
    g = s["goals"]["(--live) peak RSS per live byte <= 1.2x mimalloc's everywhere"]
    assert g == {"met": False, "over": ["rptest x2"], "within noise": []}
    text = mb.format_summary(s, ["mimalloc", "tlalloc"])
    assert "tlalloc live MiB" in text and "RSS/live /mimalloc" in text
    md = mb.format_markdown(s, ["mimalloc", "tlalloc"]).splitlines()
    assert md[0].endswith("| tlalloc peak live MiB | RSS per live byte vs mimalloc | runs |")
    assert md[2] == "| rptest | 2 | 1.000 | 1.00 | 20.0 | **2.00** | 10.0 | 1.00 | 1 |"
    assert md[3] == "| rptest | 2 | 1.000 | 1.00 | 30.0 | **3.00** | 10.0 | **1.50** | 1 |"
    # Without --live: no such columns.
    for c in cfgs:
        for es in c.runs.values():
            for e in es:
                del e["live_peak_bytes"]
    s = mb.summarize(cfgs, "tlalloc")
    assert "live" not in mb.format_markdown(s, ["mimalloc", "tlalloc"])
    assert not any("live" in goal for goal in s["goals"])


def test_live_option_records_each_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bins = tmp_path / "mb" / "out" / "bench"
    bins.mkdir(parents=True)
    (tmp_path / "mb" / "bench").mkdir()
    # A stand-in larson that holds 8 MiB of the C library's malloc.
    prog = bins / "larson"
    prog.write_text(f"#!{sys.executable}\nimport ctypes\nlibc = ctypes.CDLL(None)\n"
                    "libc.malloc.restype = ctypes.c_void_p\n"
                    "p = libc.malloc(8 << 20); ctypes.memset(p, 1, 8 << 20)\n"
                    "print('Throughput = 1 operations per second, relative time: 1.000s.')\n")
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    p = argparse.ArgumentParser()
    mb.add_arguments(p)
    out = tmp_path / "r.json"
    rc = mb.run(p.parse_args(["--bench-dir", str(tmp_path / "mb"), "--benchmarks", "larson",
                              "--threads", "1", "--rounds", "2", "--allocators", "glibc,tlalloc",
                              "--tlalloc", preload_path(), "--live", "--json", str(out)]))
    assert rc == 0
    text = capsys.readouterr().out
    assert "peak live bytes: " in text and "liblivecount.so" in text
    data = json.loads(out.read_text())
    assert data["livecount"] == mb.livecount_path()
    for runs in data["runs"][0]["runs"].values():
        assert len(runs) == 2
        assert all(8 * MIB <= e["live_peak_bytes"] < 24 * MIB for e in runs), runs
    row = data["summary"]["rows"][0]
    assert set(row["rss_per_live"]) == {"glibc", "tlalloc"}
    assert row["rss_per_live_ratio"]["glibc"] > 0
