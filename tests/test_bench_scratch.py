"""tlalloc bench scratch: Python-level scratch from several threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tlalloc import cli
from tlalloc.bench import scratch


def test_scratch_suite_runs_every_cell_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.json"
    assert cli.main(["bench", "scratch", "--quick", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vs shared locked arena" in text and "NOT met" not in text
    data = json.loads(out.read_text())
    cells = {(r["strategy"], r["threads"]) for r in data["rows"]}
    assert cells == {(s, t) for s in scratch.STRATEGIES for t in (1, 2)}
    assert all(r["ops_per_s"] > 0 for r in data["rows"])
    assert data["gil_enabled"] == scratch.gil_enabled()


def test_shared_arena_hands_out_disjoint_aligned_memory_and_rewinds() -> None:
    s = scratch.SharedArena(1024)
    s.enter()
    x = s.empty(10, np.float64)
    y = s.empty(10, np.float64)
    assert not np.shares_memory(x, y)
    assert x.ctypes.data % 64 == 0 and y.ctypes.data % 64 == 0
    z = s.empty(1000, np.float64)  # does not fit: from the heap
    assert not np.shares_memory(z, s.buf)
    s.leave()
    assert s.offset == 0


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="strategy"):
        scratch.operation("nope", scratch.SharedArena(64))
