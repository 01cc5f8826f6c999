"""Model-based test: random allocate / scope / reset sequences against a Python
model of the arena's offsets."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import tlalloc
from tlalloc import _tlalloc

CAPACITY = 64 * 1024


class ArenaModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.arena = tlalloc.Arena(CAPACITY)
        self.base, _ = _tlalloc._region_address(self.arena)  # page-aligned region start
        self.offset = 0
        self.marks: list[int] = []  # offsets at scope entry
        self.scopes: list = []
        self.generation = self.arena.generation
        self.resets = 0
        self.allocations = 0
        self.overflows = 0
        self.peak = 0

    def _expect(self, nbytes: int, align: int) -> int | None:
        """Model: the address the arena must return, or None for an overflow."""
        if nbytes == 0:
            return -1
        cur = self.base + self.offset
        pad = -cur % align
        if pad + nbytes > CAPACITY - self.offset:
            return None
        return cur + pad

    @rule(nbytes=st.integers(0, 20_000), align=st.sampled_from([1, 2, 8, 64, 256, 4096]))
    def alloc(self, nbytes: int, align: int) -> None:
        expected = self._expect(nbytes, align)
        if expected is None and not self.scopes:
            # The top level (no scope open) reuses its chunk once none of its
            # arrays is alive (every memoryview here is dropped at once).
            self.offset = 0
            self.resets += 1
            expected = self._expect(nbytes, align)
        if expected is None:
            try:
                self.arena.alloc(nbytes, align=align)
            except tlalloc.ArenaOverflowError:
                self.overflows += 1
                return
            raise AssertionError("expected an overflow")
        mv = self.arena.alloc(nbytes, align=align)
        self.allocations += 1
        addr = np.frombuffer(mv, np.uint8).ctypes.data if nbytes else None
        del mv
        if nbytes == 0:
            return
        assert addr % align == 0
        assert addr == expected
        self.offset = addr - self.base + nbytes
        self.peak = max(self.peak, self.offset)

    @rule()
    def enter(self) -> None:
        s = self.arena.scope()
        s.__enter__()
        self.scopes.append(s)
        self.marks.append(self.offset)

    @precondition(lambda self: self.scopes)
    @rule()
    def leave(self) -> None:
        self.scopes.pop().__exit__(None, None, None)
        self.offset = self.marks.pop()
        self.resets += 1
        assert self.arena.generation != self.generation
        self.generation = self.arena.generation

    @rule()
    def reset(self) -> None:
        self.arena.reset()
        self.offset = 0
        self.marks = [0 for _ in self.marks]
        self.resets += 1
        assert self.arena.generation != self.generation
        self.generation = self.arena.generation

    @invariant()
    def matches_model(self) -> None:
        s = self.arena.stats()
        assert s.used_bytes == self.offset == self.arena.used
        assert s.num_resets == self.resets
        assert s.num_allocations == self.allocations
        assert s.num_overflows == self.overflows
        assert s.peak_bytes == self.peak
        assert self.arena.depth == len(self.scopes)


TestArenaModel = ArenaModel.TestCase
TestArenaModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
