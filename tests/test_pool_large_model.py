"""The pool's large-block cache against a model (hypothesis).

Random allocate / free / realloc / free-and-allocate-again / reconfigure /
collect sequences with sizes around every boundary the large path has (the
1 MiB class limit, page multiples around the 4 KiB header, the 4 MiB
huge-page threshold, which is also where the reuse tolerance widens from a
quarter to three quarters) and alignments from
16 bytes to 64 MiB. What must hold after every step:

- contents preserved (marks at both ends), alignment, ``usable_size >= size``;
- the cache never holds more bytes than its bound, resident cached bytes are
  part of the cached bytes, and with a purge delay of 0 none stay resident;
- the mapping bytes of all large blocks are exactly those of the live large
  blocks (block offset plus usable size) plus the cached ones;
- a block freed and asked for again (same size and alignment) while the cache
  keeps it is served from the cache, with a mapping at most a quarter larger
  than needed (three quarters above 4 MiB);
- in-use bytes match the model (every live block at its usable size).
"""

from __future__ import annotations

import gc

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from tlalloc import _tlalloc, pool

KIB = 1 << 10
MIB = 1 << 20
PAGE = 4096
HEADER = 4096  # a large block starts 4 KiB into its mapping (or at its alignment)
LONG_DELAY = 60_000  # ms: nothing is purged while the test runs

# The 1 MiB class limit, page multiples around the header, the 4 MiB huge-page
# threshold and 2 MiB multiples, each +/- 1.
_edges = [MIB, 2 * MIB, 4 * MIB - HEADER, 4 * MIB, 6 * MIB, 8 * MIB - HEADER, 10 * MIB]
BOUNDARY_SIZES = sorted({e + d for e in _edges for d in (-1, 0, 1)} | {0, 1, 100, 70_000})
large_sizes = st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(MIB - 10, 12 * MIB))
aligns = st.sampled_from([16, 4096, 8 * KIB, 64 * KIB, MIB, 4 * MIB, 8 * MIB, 64 * MIB])
bounds = st.sampled_from([0, 4 * MIB, 16 * MIB, 64 * MIB, int(_tlalloc.POOL_DEFAULT_LARGE_CACHE)])
delays = st.sampled_from([0, LONG_DELAY])


def _info() -> dict[str, int]:
    return _tlalloc._pool_large_cache_info()


def _offset(align: int) -> int:
    """Where a large block starts in its mapping."""
    return HEADER if align <= HEADER else min(align, 4 * MIB)


def _is_large(buf: pool.PoolBuffer, align: int) -> bool:
    return buf.usable_size > pool.size_classes()[-1] or align > HEADER


def _need(size: int, align: int) -> int:
    """The mapping bytes a large request needs."""
    n = _offset(align) + max(size, 1)
    return (n + PAGE - 1) // PAGE * PAGE


def _asis_most(need: int) -> int:
    """The largest cached mapping a request of `need` mapping bytes takes as it
    is (csrc/pool/pool_large.c, tl_asis_most)."""
    return need + need // 4 * 3 if need > 4 * MIB else need + need // 4


def _mark(buf: pool.PoolBuffer, seed: int) -> None:
    n = buf.nbytes
    if n == 0:
        return
    mv = memoryview(buf)
    k = min(n, 32)
    mv[:k] = bytes((seed + i) & 0xFF for i in range(k))
    if n >= 2 * k:
        mv[n - k:n] = bytes((seed * 7 + i) & 0xFF for i in range(k))
    mv.release()


def _check(buf: pool.PoolBuffer, seed: int, n: int, tail: bool = True) -> bool:
    if n == 0:
        return True
    mv = memoryview(buf)
    k = min(n, 32)
    ok = bytes(mv[:k]) == bytes((seed + i) & 0xFF for i in range(k))
    if tail and n >= 2 * k:
        ok = ok and bytes(mv[n - k:n]) == bytes((seed * 7 + i) & 0xFF for i in range(k))
    mv.release()
    return ok


class LargeCacheModel(RuleBasedStateMachine):
    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.saved = pool.get_settings()
        pool.configure(large_cache_bytes=int(_tlalloc.POOL_DEFAULT_LARGE_CACHE),
                       purge_delay_ms=LONG_DELAY)
        pool.collect(release_all=True)
        self.bound = int(_tlalloc.POOL_DEFAULT_LARGE_CACHE)
        self.delay = LONG_DELAY
        self.live: dict[int, tuple[pool.PoolBuffer, int, int, int]] = {}  # id -> buf, size, align, seed
        self.seed = 1
        gc.collect()  # blocks of earlier examples that an exception left to the collector
        info = _info()
        self.base_in_use = pool.pool_stats()["in_use_bytes"]
        self.base_other = info["mapped_bytes"] - info["cached_bytes"]  # live large blocks of others

    def _add(self, buf: pool.PoolBuffer, size: int, align: int) -> int:
        assert buf.address % align == 0
        assert buf.usable_size >= size
        self.seed += 3
        _mark(buf, self.seed)
        self.live[id(buf)] = (buf, size, align, self.seed)
        return id(buf)

    @rule(target=blocks, size=large_sizes, align=aligns)
    def allocate(self, size: int, align: int) -> int:
        return self._add(pool.alloc(size, align=align), size, align)

    @rule(key=consumes(blocks))
    def free(self, key: int) -> None:
        buf, size, _, seed = self.live.pop(key)
        assert _check(buf, seed, size)
        buf.free()

    @rule(target=blocks, key=consumes(blocks))
    def free_and_ask_again(self, key: int) -> int:
        """The block just freed is cached (it is the newest): the same request is
        served from the cache while the bound holds it."""
        buf, size, align, seed = self.live.pop(key)
        assert _check(buf, seed, size)
        large = _is_large(buf, align)
        mapping = buf.usable_size + _offset(align)
        buf.free()
        before = _info()["num_reuses"]
        new = pool.alloc(size, align=align)
        key = self._add(new, size, align)
        need = _need(size, align)
        if large and 0 < mapping <= self.bound and need <= mapping <= _asis_most(need) \
                and self.delay == LONG_DELAY:
            assert _info()["num_reuses"] == before + 1
        if _is_large(new, align):
            assert new.usable_size + _offset(align) <= _asis_most(need)
        return key

    @rule(key=blocks, size=large_sizes)
    def realloc(self, key: int, size: int) -> None:
        buf, old, align, seed = self.live[key]
        buf.realloc(size)
        assert buf.address % align == 0
        assert buf.usable_size >= size
        assert _check(buf, seed, min(old, size), tail=size >= old)
        self.seed += 3
        _mark(buf, self.seed)
        self.live[key] = (buf, size, align, self.seed)

    @rule(bound=bounds, delay=delays)
    def reconfigure(self, bound: int, delay: int) -> None:
        s = pool.configure(large_cache_bytes=bound, purge_delay_ms=delay)
        assert (s.large_cache_bytes, s.purge_delay_ms) == (bound, delay)
        self.bound, self.delay = bound, delay

    @rule(release_all=st.booleans())
    def collect(self, release_all: bool) -> None:
        pool.collect(release_all=release_all)
        info = _info()
        assert info["resident_bytes"] == 0
        if release_all:
            assert info["num_cached"] == 0 and info["cached_bytes"] == 0
        else:
            assert info["num_purged"] == info["num_cached"]

    @invariant()
    def cache_within_bounds(self) -> None:
        info = _info()
        assert info["cached_bytes"] <= self.bound
        assert info["resident_bytes"] <= info["cached_bytes"]
        assert info["num_purged"] <= info["num_cached"]
        if self.delay == 0:
            assert info["resident_bytes"] == 0
        live_large = sum(b.usable_size + _offset(a) for b, _, a, _ in self.live.values()
                         if _is_large(b, a))
        assert info["mapped_bytes"] - info["cached_bytes"] - self.base_other == live_large

    @invariant()
    def in_use_matches_model(self) -> None:
        expected = sum(b.usable_size for b, _, _, _ in self.live.values())
        assert pool.pool_stats()["in_use_bytes"] - self.base_in_use == expected

    def teardown(self) -> None:
        for buf, _, _, _ in self.live.values():
            buf.free()
        pool.configure(large_cache_bytes=self.saved.large_cache_bytes,
                       purge_delay_ms=self.saved.purge_delay_ms)
        pool.collect(release_all=True)
        assert pool.pool_stats()["in_use_bytes"] == self.base_in_use


TestLargeCacheModel = LargeCacheModel.TestCase
TestLargeCacheModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
