"""tlalloc bench scratch: Python-level scratch from several threads."""

from __future__ import annotations

import json
import sys
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
    assert "arena/numpy" in text and "goal 'at most 0.1x np.empty's time from 32 MiB up'" in text
    data = json.loads(out.read_text())
    cells = {(r["strategy"], r["threads"]) for r in data["rows"]}
    assert cells == {(s, t) for s in scratch.STRATEGIES for t in (1, 2)}
    assert all(r["ops_per_s"] > 0 for r in data["rows"])
    assert data["gil_enabled"] == scratch.gil_enabled()
    ladder = data["ladder"]
    assert [r["size_bytes"] for r in ladder["rows"]] == list(scratch.QUICK_LADDER)
    assert ladder["arena_size_bytes"] == 160 << 20
    for r in ladder["rows"]:
        assert r["arena_s"] > 0 and r["numpy_s"] > 0
        assert r["ratio"] == pytest.approx(r["arena_s"] / r["numpy_s"])
        assert len(r["samples_s"]["arena"]) == len(r["samples_s"]["numpy"]) == ladder["repeat"]
        assert r["arena_s"] == min(r["samples_s"]["arena"])  # best of the samples
        # The arena's pages stay resident between round trips: no fault per trip.
        assert r["arena_faults_per_op"] < 1


def _status(argv: list[str]) -> int:
    """cli.main's exit status; a SystemExit("message") the CLI lets through counts as 2."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise


def test_ladder_sizes_option_and_arena_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert _status(["bench", "scratch", "--part", "sizes", "--sizes", "64,4KiB", "--repeat", "1",
                    "--sample", "0.001", "--arena-size", "1MiB"]) == 0
    text = capsys.readouterr().out
    assert "64B" in text and "4KiB" in text and "vs shared" not in text
    assert _status(["bench", "scratch", "--part", "sizes", "--sizes", "2MiB", "--arena-size", "1MiB"]) == 2
    assert "smaller than the largest size" in capsys.readouterr().err
    assert _status(["bench", "scratch", "--part", "sizes", "--sizes", "64,lots"]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_round_trip_touches_each_page_once_and_releases_the_scope() -> None:
    import tlalloc

    before = tlalloc.thread_arena().stats()
    f = scratch.round_trip("arena", 3 << 20)
    assert f(4) >= 0.0
    after = tlalloc.thread_arena().stats()
    assert after.used_bytes == before.used_bytes  # every scope rewound
    assert after.num_allocations - before.num_allocations == 4
    with pytest.raises(ValueError, match="alternative"):
        scratch.round_trip("malloc", 64)


def test_measure_counts_whole_batches_per_thread() -> None:
    seen: set[int] = set()
    r = scratch.measure(seen.add, 2, 0.01)
    assert r["ops"] > 0 and r["ops"] % scratch.CHECK_EVERY == 0
    assert {0, 1} <= seen  # each thread runs its own indices (k, k + threads, ...)


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
