"""`tlalloc bench larson`: result parsing, allocator detection, and one short end-to-end
run when the C toolchain is available."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from tlalloc.bench import larson

REPO = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    larson.add_arguments(p)
    return p.parse_args(list(argv))


def test_parse_line() -> None:
    out = ("noise\nlarson allocator=tlalloc threads=4 seconds=1.002 ops_per_sec=123.5 "
           "cache=1 cache_hit_rate=0.9990 num_depot_locks=17\n")
    r = larson.parse_line(out)
    assert r == {"allocator": "tlalloc", "threads": 4, "seconds": 1.002, "ops_per_sec": 123.5,
                 "cache": 1, "cache_hit_rate": 0.999, "num_depot_locks": 17}
    with pytest.raises(ValueError, match="no result line"):
        larson.parse_line("larson: out of memory\n")


def test_find_repo() -> None:
    assert larson.find_repo(str(REPO)) == REPO
    assert larson.find_repo(str(REPO / "tests")) is None  # an explicit path must be the root


def test_detect_allocators_reports_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(larson, "find_library", lambda soname: None)
    found = larson.detect_allocators(["glibc", "jemalloc", "mimalloc", "tlalloc"], install=False)
    assert found["glibc"]["available"] and found["tlalloc"]["available"]
    assert not found["jemalloc"]["available"]
    assert "libjemalloc.so.2 not found" in found["jemalloc"]["how"]
    assert "apt-get install libmimalloc2.0" in found["mimalloc"]["how"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="--allocators: unknown tcmalloc"):
        larson.larson_table(_args("--allocators", "glibc,tcmalloc"))
    with pytest.raises(SystemExit, match="argument --threads: .* got '0'"):
        larson.larson_table(_args("--threads", "0"))
    with pytest.raises(ValueError, match="--repeat=0"):
        larson.run(_args("--repeat", "0"))


def test_without_checkout_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert larson.run(_args("--repo", "/", "--skip-numpy")) == 2
    assert "built from a source checkout" in capsys.readouterr().err


def test_numpy_temporaries_runs() -> None:
    assert larson._temporaries(2, 50, 100, use_pool=True) > 0
    assert larson._temporaries(2, 50, 100, use_pool=False) > 0


@pytest.mark.skipif(not (shutil.which("make") and shutil.which("cc")), reason="needs make and cc")
def test_end_to_end_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "larson.json"
    rc = larson.run(_args("--repo", str(REPO), "--build-dir", str(tmp_path / "build"),
                          "--seconds", "0.2", "--threads", "1,2", "--skip-numpy",
                          "--allocators", "glibc,tlalloc,tlalloc-nocache", "--json", str(out)))
    assert rc == 0
    text = capsys.readouterr().out
    assert "vs glibc" in text and "tlalloc-nocache" in text
    data = json.loads(out.read_text())
    rows = {(r["allocator"], r["threads"]): r for r in data["larson"]}
    assert set(rows) == {(a, t) for a in ("glibc", "tlalloc", "tlalloc-nocache") for t in (1, 2)}
    for t in (1, 2):
        assert rows[("glibc", t)]["vs_glibc"] == 1.0
        assert rows[("tlalloc", t)]["ops_per_sec"] > 0
        # The pool's own statistics: the caches serve nearly everything; with the
        # switch off every allocation goes to the depot.
        assert rows[("tlalloc", t)]["cache_hit_rate"] > 0.9
        assert rows[("tlalloc-nocache", t)]["cache_hit_rate"] == 0.0
        assert rows[("tlalloc-nocache", t)]["num_depot_locks"] > rows[("tlalloc", t)]["num_depot_locks"]
