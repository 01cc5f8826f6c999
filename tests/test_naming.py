"""Every statistics key follows the naming rules of docs/naming.md.

The dicts are the ones the package returns, after use (so that every field the
code can add is there): process-wide and per-thread arena statistics, an
Arena's, the pool's, each kernel's scratch statistics and the shared scratch
arena's. A key that fits no rule fails with its name and value.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

import tlalloc
from tlalloc import _tlalloc, kernels

BOOL_STATE = re.compile(r"^[a-z_]*(_alive|_enabled|ed)$")
IDENTIFIER = re.compile(r"^[a-z_]+_(id|node)$")
RATIO = re.compile(r"^([a-z_]+_rate|utilization)$")
DESCRIPTION = re.compile(r"^[a-z]+(_[a-z]+)*$")


def rule_of(key: str, value: Any) -> str | None:
    """The docs/naming.md row a key and its value follow, or None.

    Example:
        >>> rule_of("num_allocations", 3), rule_of("allocations", 3)
        ('count', None)
    """
    if "peak" in key and not (key.startswith("peak_") or key.startswith("max_peak_")):
        return None
    if key.startswith("num_") and key.endswith("_bytes"):
        return None
    if isinstance(value, bool):
        return "state" if BOOL_STATE.match(key) else None
    if isinstance(value, int):
        if key.endswith("_bytes"):
            return "bytes" if value >= 0 else None
        if key.startswith("num_"):
            return "count" if value >= 0 and key.endswith("s") else None
        if key.endswith("_chunks"):
            return "chunks" if value >= 0 else None
        if IDENTIFIER.match(key):
            return "identifier"
        return None
    if isinstance(value, float):
        return "ratio" if RATIO.match(key) and (0.0 <= value <= 1.0 or math.isnan(value)) else None
    if isinstance(value, str):
        unit_like = key.startswith("num_") or key.endswith(("_bytes", "_chunks", "_rate"))
        return "description" if DESCRIPTION.match(key) and not unit_like else None
    return None


def _misnamed(d: Mapping[str, Any]) -> list[str]:
    return [f"{k}={v!r}" for k, v in d.items() if rule_of(k, v) is None]


@pytest.fixture(scope="module")
def used() -> None:
    """Use every part once: a scope, an overflow into the heap, a thread that
    exits, the kernels on thread and on shared scratch, the pool."""
    with tlalloc.scratch() as a:
        a.empty(1000)
    arena = tlalloc.Arena("64KiB", overflow="fallback")
    with pytest.warns(tlalloc.ArenaFallbackWarning), arena.scope() as s:
        s.empty(100_000)
    t = threading.Thread(target=lambda: tlalloc.thread_arena().empty(10))
    t.start()
    t.join()
    q, corpus = np.ones(16, np.float32), np.ones((64, 16), np.float32)
    kernels.cosine_similarity(q, corpus, top_k=5)
    kernels.decay(np.ones(100, np.float32), np.ones(100, np.float32), tau=10.0)
    with kernels.scratch_strategy("shared"):
        kernels.cosine_similarity(q, corpus)
    buf = tlalloc.pool.alloc(1000)
    del buf


def test_the_rules_refuse_names_that_break_them() -> None:
    assert rule_of("capacity_bytes", 1) == "bytes" and rule_of("capacity", 1) is None
    assert rule_of("num_resets", 2) == "count" and rule_of("resets", 2) is None
    assert rule_of("bytes_peak", 3) is None and rule_of("peak_bytes", 3) == "bytes"
    assert rule_of("num_bytes", 4) is None and rule_of("spare_chunks", 1) == "chunks"
    assert rule_of("hit_ratio", 0.5) is None and rule_of("cache_hit_rate", 1.5) is None
    assert rule_of("alive", True) is None and rule_of("thread_alive", True) == "state"
    assert rule_of("thread_id", 7) == "identifier" and rule_of("page_kind", "thp") == "description"
    assert rule_of("num_policy", "x") is None


def test_arena_statistics_follow_the_rules(used: None) -> None:
    assert _misnamed(tlalloc.stats()) == []
    per_thread = tlalloc.stats(per_thread=True)
    assert per_thread and all(_misnamed(t) == [] for t in per_thread)
    assert _misnamed(tlalloc.thread_arena().stats()) == []
    assert _misnamed(tlalloc.Arena("64KiB").stats()) == []


def test_pool_statistics_follow_the_rules(used: None) -> None:
    assert _misnamed(tlalloc.pool_stats()) == []


def test_kernel_and_shared_scratch_statistics_follow_the_rules(used: None) -> None:
    per_kernel = kernels.scratch_stats()
    assert set(per_kernel) == {"cosine", "spread", "decay"}
    for name, d in per_kernel.items():
        assert _misnamed(d) == [], name
    assert _misnamed(_tlalloc._shared_scratch_stats()) == []
