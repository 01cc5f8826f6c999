/* pool_large.c: the pool's large blocks (above 1 MiB, or aligned beyond 4 KiB),
 * each a mapping of its own, and the cache that reuses them. The policy is
 * described in docs/pool.md ("Large blocks"); this file is how.
 *
 * Layout of a large block's mapping ("huge segment"): it starts on a 4 MiB
 * boundary, so tl_segment_of finds its header; the header (a tl_segment and the
 * descriptor of the 64 KiB slot the block starts in, whose owner is
 * tl_heap_huge so that the free fast path falls through to the slow path) fits
 * in the first 4 KiB; the block starts at huge_offset: 4 KiB, or the alignment
 * A for 4 KiB < A <= 4 MiB. For A > 4 MiB the mapping starts 4 MiB before an
 * A boundary and the block starts there (huge_offset = 4 MiB): tl_segment_of
 * masks p - 1, which finds the header 4 MiB below.
 *
 * The cache (large lock): every cached mapping is on the list of its size bin
 * (four bins per doubling of the mapping size, most recently freed first,
 * linked by next/prev) and on the age list (newest at the head, linked by
 * lru_next/lru_prev). A cached mapping is DIRTY (possibly resident), BUSY (being
 * purged by a thread outside the lock: no one takes it) or PURGED (given back
 * with MADV_DONTNEED, zero, still mapped). System calls (madvise, munmap) run
 * outside the lock: mappings to unmap are unlinked first, mappings to purge are
 * marked BUSY.
 *
 * The thread's large cache (tl_heap.lcache): a thread that frees a block of
 * up to TL_LCACHE_BYTES (1 MiB) mapping bytes aligned to at most 4 KiB keeps
 * it in one of TL_LCACHE_SLOTS slots of its heap (at most TL_LCACHE_BYTES in
 * all, the oldest going to the shared cache) and takes it back, newest first,
 * for a request of the shared cache's as-is fit (a request that fits none
 * moves them to the shared cache, and then only every 8th block is kept until
 * one fits again), with no lock and no shared cache line but one counter
 * (tl_tcache) and the peak estimate: NumPy's temporaries of 256 KiB from
 * two threads were 5% slower than glibc's per-thread arenas through the shared
 * cache (two lock round trips and about ten shared cache lines per
 * allocate/free pair, and each thread getting the block the other thread last
 * wrote, from the other core's cache). The blocks count as cached: tl_tcache
 * holds their count and bytes, and the shared cache's byte bound covers both
 * (a put reserves its bytes in tl_tcache first and backs out when the bound
 * would be passed; the shared cache evicts down to the bound less those
 * bytes). Their purge: each slot's put time; tl_purge_due steals the blocks
 * put a purge delay ago from every thread's cache into the shared cache
 * (which purges them at once, their age being the put time), all of them on
 * tl_pool_collect and on a change of settings; a thread's exit moves its
 * blocks to the shared cache. A purge delay of 0 or a bound of 0 turns the
 * thread caches off.
 *
 * Lazy purge: tl_large_due_ms is the earliest time at which a cached mapping
 * must be purged or unmapped (or the memory-pressure check run), UINT64_MAX if
 * none. Callers on the allocation paths load it (one relaxed load) and call
 * tl_large_tick, which reads the coarse clock and does what is due.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

#define TL_LARGE_HDR ((size_t)4096)
#define TL_LARGE_BINS 208u
#define TL_LARGE_SCAN 16 /* entries looked at per bin */
#define TL_PRESSURE_EVERY_MS 1000u

enum { TL_LARGE_DIRTY = 0, TL_LARGE_BUSY = 1, TL_LARGE_PURGED = 2 };

_Static_assert(TL_SEG_FIXED + sizeof(tl_page) <= TL_LARGE_HDR,
               "a large block's header (segment and one descriptor) fits in 4 KiB");

static pthread_mutex_t tl_large_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_segment *tl_bins[TL_LARGE_BINS];
static tl_segment *tl_lru_head, *tl_lru_tail; /* newest, oldest */
static size_t tl_cached_bytes;                /* (lock) */
static uint64_t tl_num_cached, tl_num_purged; /* (lock) */
static uint64_t tl_last_pressure_ms;          /* (lock) */
static _Atomic uint64_t tl_resident_cached;   /* DIRTY and BUSY bytes */
static uint64_t tl_live_peak, tl_live_peak_ms; /* (lock) tl_purge_excess's recent live bytes */
static _Atomic uint64_t tl_mapped;            /* every huge mapping, live or cached */
static _Atomic uint64_t tl_num_purges, tl_num_reuses;
static _Atomic size_t tl_cache_limit = TL_POOL_DEFAULT_LARGE_CACHE;
static _Atomic unsigned tl_purge_delay = TL_POOL_DEFAULT_PURGE_DELAY_MS;
_Atomic uint64_t tl_large_due_ms = UINT64_MAX;
#if defined(__GNUC__) || defined(__clang__)
_Thread_local unsigned tl_large_tick_calls __attribute__((tls_model("initial-exec")));
#else
_Thread_local unsigned tl_large_tick_calls;
#endif
/* The thread caches: blocks << 44 | mapping bytes, summed over threads. */
static _Atomic uint64_t tl_tcache;
#define TL_TC_ONE ((uint64_t)1 << 44)
#define TL_TC_BYTES(v) ((size_t)((v) & (TL_TC_ONE - 1)))
#define TL_TC_COUNT(v) ((v) >> 44)
/* tl_cached_bytes, readable without the lock (the bound check of a put). */
static _Atomic size_t tl_cached_mirror;
/* At most the earliest put time of a block in a thread cache (UINT64_MAX if
 * none was put since the last steal walk). */
static _Atomic uint64_t tl_tcache_next_ms = UINT64_MAX;

#define TL_ORPHAN(field) tl_orphan_counters[offsetof(tl_heap_counters, field) / 8]
#define TL_ORPHAN_ADD(field, n) atomic_fetch_add_explicit(&TL_ORPHAN(field), (n), memory_order_relaxed)

static void tl_large_lock_counted(void) {
    pthread_mutex_lock(&tl_large_lock);
    TL_ORPHAN_ADD(num_depot_locks, 1);
}

static size_t tl_page_round(size_t n) {
    size_t page = tl_os_page_size();
    return (n + page - 1) & ~(page - 1);
}

/* Four bins per doubling of the mapping size. */
static unsigned tl_bin(size_t h) {
    unsigned w = 63u - (unsigned)__builtin_clzll((unsigned long long)h);
    if (w < 12) return 0;
    unsigned b = (w - 12u) * 4u + (unsigned)((h >> (w - 2u)) & 3u);
    return b < TL_LARGE_BINS ? b : TL_LARGE_BINS - 1;
}

/* ---- cache lists (large lock) ------------------------------------------------ */

static void tl_cache_link(tl_segment *s, uint64_t when) {
    unsigned b = tl_bin(s->region.size);
    s->prev = NULL;
    s->next = tl_bins[b];
    if (s->next) s->next->prev = s;
    tl_bins[b] = s;
    s->lru_prev = NULL;
    s->lru_next = tl_lru_head;
    if (tl_lru_head) tl_lru_head->lru_prev = s;
    else tl_lru_tail = s;
    tl_lru_head = s;
    s->cached_ms = when;
    s->cache_state = TL_LARGE_DIRTY;
    tl_cached_bytes += s->region.size;
    atomic_store(&tl_cached_mirror, tl_cached_bytes); /* seq_cst: see tl_tcache_put */
    tl_num_cached++;
    atomic_fetch_add_explicit(&tl_resident_cached, s->region.size, memory_order_relaxed);
}

static void tl_cache_unlink(tl_segment *s) {
    tl_assert(s->cache_state != TL_LARGE_BUSY);
    unsigned b = tl_bin(s->region.size);
    if (s->prev) s->prev->next = s->next;
    else tl_bins[b] = s->next;
    if (s->next) s->next->prev = s->prev;
    if (s->lru_prev) s->lru_prev->lru_next = s->lru_next;
    else tl_lru_head = s->lru_next;
    if (s->lru_next) s->lru_next->lru_prev = s->lru_prev;
    else tl_lru_tail = s->lru_prev;
    s->next = s->prev = s->lru_next = s->lru_prev = NULL;
    tl_cached_bytes -= s->region.size;
    atomic_store_explicit(&tl_cached_mirror, tl_cached_bytes, memory_order_relaxed);
    tl_num_cached--;
    if (s->cache_state == TL_LARGE_PURGED) {
        tl_num_purged--;
    } else {
        atomic_fetch_sub_explicit(&tl_resident_cached, s->region.size, memory_order_relaxed);
    }
}

/* Unlink the oldest mappings (not BUSY) until the cache holds at most `limit`
 * bytes; returns them chained by `next`, to be unmapped after unlocking. */
static tl_segment *tl_cache_evict(size_t limit, tl_segment *out) {
    tl_segment *s = tl_lru_tail, *prev;
    for (; s && tl_cached_bytes > limit; s = prev) {
        prev = s->lru_prev;
        if (s->cache_state == TL_LARGE_BUSY) continue;
        tl_cache_unlink(s);
        s->next = out;
        out = s;
    }
    return out;
}

static void tl_unmap_chain(tl_segment *s) {
    while (s) {
        tl_segment *next = s->next;
        atomic_fetch_sub_explicit(&tl_mapped, s->region.size, memory_order_relaxed);
        tl_os_unmap_range(s->region.base, s->region.size);
        s = next;
    }
}

/* How long a purged mapping stays cached: 8 times the purge delay, at least
 * a second (a purged mapping costs address space only). */
static uint64_t tl_unmap_delay(uint64_t delay) {
    uint64_t t = delay * TL_POOL_UNMAP_DELAY_FACTOR;
    return t < TL_POOL_MIN_UNMAP_DELAY_MS ? TL_POOL_MIN_UNMAP_DELAY_MS : t;
}

/* The earliest time something is due (large lock held). */
static void tl_update_due(void) {
    uint64_t delay = atomic_load_explicit(&tl_purge_delay, memory_order_relaxed);
    uint64_t due = UINT64_MAX;
    for (tl_segment *s = tl_lru_head; s; s = s->lru_next) {
        uint64_t t = s->cache_state == TL_LARGE_PURGED ? s->cached_ms + tl_unmap_delay(delay)
                     : s->cache_state == TL_LARGE_DIRTY ? s->cached_ms + delay
                                                         : UINT64_MAX;
        if (t < due) due = t;
    }
    if (atomic_load_explicit(&tl_resident_cached, memory_order_relaxed) != 0) {
        uint64_t t = tl_last_pressure_ms + TL_PRESSURE_EVERY_MS;
        if (t < due) due = t;
    }
    if (TL_TC_COUNT(atomic_load(&tl_tcache)) != 0) {
        uint64_t put = atomic_load(&tl_tcache_next_ms);
        uint64_t t = put <= UINT64_MAX - delay ? put + delay : UINT64_MAX;
        if (t < due) due = t;
    }
    atomic_store_explicit(&tl_large_due_ms, due, memory_order_relaxed);
}

/* ---- purge ---------------------------------------------------------------------- */

/* Give back the pages of a BUSY mapping (outside the lock): everything after
 * the header page, which stays (the cache's links live there). */
static void tl_purge_pages(tl_segment *s) {
    tl_os_discard((char *)s + TL_LARGE_HDR, s->region.size - TL_LARGE_HDR);
}

/* Mark n mappings purged outside the lock (tl_purge_pages) as PURGED at `now`:
 * they stop counting as resident. Takes the large lock. */
static void tl_purge_finish(tl_segment *const *batch, int n, uint64_t now) {
    tl_large_lock_counted();
    for (int i = 0; i < n; i++) {
        tl_segment *s = batch[i];
        tl_assert(s->cache_state == TL_LARGE_BUSY);
        s->cache_state = TL_LARGE_PURGED;
        s->cached_ms = now;
        tl_num_purged++;
        atomic_fetch_sub_explicit(&tl_resident_cached, s->region.size, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&tl_num_purges, (uint64_t)n, memory_order_relaxed);
    tl_update_due();
    pthread_mutex_unlock(&tl_large_lock);
}

/* Do what is due at `now`. force 1 (tl_pool_collect): purge every DIRTY
 * mapping and unmap every PURGED one; force 2: unmap every cached mapping.
 * Takes the large lock twice per batch of purges. */
static void tl_tcache_steal(uint64_t now, int force);

static void tl_purge_due(uint64_t now, int force) {
    enum { MAX_BATCH = 64 };
    tl_tcache_steal(now, force);
    tl_segment *batch[MAX_BATCH];
    tl_segment *unmap = NULL;
    for (;;) {
        int n = 0, more = 0;
        tl_large_lock_counted();
        uint64_t delay = atomic_load_explicit(&tl_purge_delay, memory_order_relaxed);
        int pressure = force != 0;
        if (!pressure && atomic_load_explicit(&tl_resident_cached, memory_order_relaxed) != 0 &&
            now >= tl_last_pressure_ms + TL_PRESSURE_EVERY_MS) {
            tl_last_pressure_ms = now;
            uint64_t avail, total;
            if (tl_os_meminfo(&avail, &total) == 0 && avail < total / 8) pressure = 1;
        }
        tl_segment *prev;
        for (tl_segment *s = tl_lru_tail; s; s = prev) {
            prev = s->lru_prev;
            if (force > 1 && s->cache_state != TL_LARGE_BUSY) {
                tl_cache_unlink(s);
                s->next = unmap;
                unmap = s;
            } else if (s->cache_state == TL_LARGE_DIRTY && (pressure || now >= s->cached_ms + delay)) {
                if (n == MAX_BATCH) {
                    more = 1;
                    break;
                }
                s->cache_state = TL_LARGE_BUSY;
                batch[n++] = s;
            } else if (s->cache_state == TL_LARGE_PURGED &&
                       (force || now >= s->cached_ms + tl_unmap_delay(delay))) {
                tl_cache_unlink(s);
                s->next = unmap;
                unmap = s;
            }
        }
        if (!more) tl_update_due();
        pthread_mutex_unlock(&tl_large_lock);
        tl_unmap_chain(unmap);
        unmap = NULL;
        if (n == 0) return;
        for (int i = 0; i < n; i++) tl_purge_pages(batch[i]);
        tl_purge_finish(batch, n, now);
        if (!more) return;
    }
}

/* Resident cached mappings (of every size) are purged at once, oldest first,
 * without waiting for the delay, beyond retain_bytes plus what the live large
 * blocks lack of the most live large bytes seen in the last purge delay: the
 * large blocks, live and cached, stay within that most plus retain_bytes.
 * - A churn of many sizes otherwise keeps a mapping of each size it used in
 *   the last delay resident (4 threads dropping NumPy arrays of 64 KiB to
 *   2 MB: 30 MiB cached for 12 MiB live, `tlalloc bench numpy-alloc`, churn).
 * - The recent most, not the live bytes now: threads that free their large
 *   blocks before they exit, and whose successors allocate as much again
 *   (mstress: 25 rounds of 4 threads), had every round's blocks purged and
 *   faulted in again: 2x mimalloc's page faults, 0.73x its speed at 4
 *   threads (docs/benchmark-log/mimalloc-bench.md, "mstress: the large
 *   cache's bound follows the recent most").
 * - Bounding the cached bytes alone by the most plus retain_bytes, instead of
 *   the sum, raised the churn's peak RSS to 1.12x NumPy's default in a
 *   60-second run (1.06x with the bound at the live bytes now, 1.00x with
 *   this one).
 * - Mappings above 4 MiB too (they were left to the delay alone): a pandas
 *   script whose temporaries reach 8 MB peaked at 206 MB against glibc's
 *   179 MB so, 188 MB with them bounded (footprint's numpy workload, 3
 *   rounds each). A program that frees and reallocates a 64 MiB buffer still
 *   keeps it resident (its live bytes fell by what the cache holds).
 * - The slack beyond that most: a 32nd of it, at least TL_LARGE_MIN_SLACK,
 *   at most retain_bytes. With retain_bytes (8 MiB) itself, the pandas
 *   script peaked 8.6 MiB (1.05x) above glibc's 174.8 MiB, the slack's worth
 *   of cached temporaries kept resident beside the live ones; with 2 MiB,
 *   1.00x (footprint's numpy workload).
 * The most is sampled here, at frees (the live bytes with the blocks just
 * freed, `freed` bytes of mappings: so a program that frees and allocates
 * again one buffer keeps it resident whatever the slack), and forgotten a
 * purge delay after it was last reached. Called after a free; takes the
 * large lock twice when it purges. */
#define TL_LARGE_MIN_SLACK ((size_t)1 << 20)
static void tl_purge_excess(uint64_t freed) {
    enum { MAX_BATCH = 16 };
    tl_segment *batch[MAX_BATCH];
    int n = 0;
    size_t retain = tl_depot_get_retain();
    uint64_t now = tl_os_coarse_ms();
    uint64_t delay = atomic_load_explicit(&tl_purge_delay, memory_order_relaxed);
    tl_large_lock_counted();
    uint64_t mapped = atomic_load_explicit(&tl_mapped, memory_order_relaxed);
    /* Blocks in thread caches are cached and resident too (all of them small). */
    uint64_t tc = TL_TC_BYTES(atomic_load_explicit(&tl_tcache, memory_order_relaxed));
    uint64_t live = mapped > tl_cached_bytes + tc ? mapped - tl_cached_bytes - tc : 0;
    if (live + freed >= tl_live_peak || now >= tl_live_peak_ms + delay) {
        tl_live_peak = live + freed;
        tl_live_peak_ms = now;
    }
    /* live <= tl_live_peak here: the cached part may hold what the live part
     * does not of the recent most. */
    uint64_t resident = atomic_load_explicit(&tl_resident_cached, memory_order_relaxed) + tc;
    uint64_t slack = tl_live_peak / 32;
    if (slack < TL_LARGE_MIN_SLACK) slack = TL_LARGE_MIN_SLACK;
    if (slack > retain) slack = retain;
    uint64_t cap = tl_live_peak - live + slack;
    for (tl_segment *s = tl_lru_tail; s && resident > cap && n < MAX_BATCH; s = s->lru_prev) {
        if (s->cache_state != TL_LARGE_DIRTY) continue;
        s->cache_state = TL_LARGE_BUSY;
        batch[n++] = s;
        resident -= s->region.size;
    }
    pthread_mutex_unlock(&tl_large_lock);
    if (n == 0) return;
    for (int i = 0; i < n; i++) tl_purge_pages(batch[i]);
    tl_purge_finish(batch, n, tl_os_coarse_ms());
}

/* ---- the shared cache's free path, and the thread caches ------------------------ */

/* The shared cache's bound less what the thread caches hold. */
static size_t tl_shared_limit(size_t limit) {
    size_t tc = TL_TC_BYTES(atomic_load(&tl_tcache));
    return limit > tc ? limit - tc : 0;
}

/* Freed (already counted) blocks, chained by `next`, go to the shared cache,
 * each cached at its cached_ms, or are unmapped when they do not fit the
 * bound. Takes the large lock once. */
static void tl_cache_shared_chain(tl_segment *s) {
    if (!s) return; /* nothing stolen: no lock */
    size_t limit = atomic_load_explicit(&tl_cache_limit, memory_order_relaxed);
    uint64_t delay = atomic_load_explicit(&tl_purge_delay, memory_order_relaxed);
    int small = 0;
    uint64_t freed = 0;
    tl_segment *unmap = NULL;
    tl_large_lock_counted();
    while (s) {
        tl_segment *next = s->next;
        freed += s->region.size;
        if (s->region.size <= limit) {
            small |= s->region.size <= TL_SEG_SIZE;
            tl_cache_link(s, s->cached_ms);
            uint64_t due = s->cached_ms + delay;
            if (due < atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed))
                atomic_store_explicit(&tl_large_due_ms, due, memory_order_relaxed);
        } else {
            s->next = unmap;
            unmap = s;
        }
        s = next;
    }
    unmap = tl_cache_evict(tl_shared_limit(limit), unmap);
    pthread_mutex_unlock(&tl_large_lock);
    tl_unmap_chain(unmap);
    /* Over the resident bound (tl_purge_excess): one relaxed load each, and
     * the bound computed under the lock only when the cache holds more
     * resident bytes than the least slack (or the retain limit, if lower).
     * Checked when a mapping of up to 4 MiB comes in (the bound then covers
     * every cached mapping): a program that frees and reallocates one big
     * buffer alone keeps it resident. */
    size_t least = tl_depot_get_retain();
    if (least > TL_LARGE_MIN_SLACK) least = TL_LARGE_MIN_SLACK;
    if (small && atomic_load_explicit(&tl_resident_cached, memory_order_relaxed) > least)
        tl_purge_excess(freed);
}

/* One freed (already counted) block to the shared cache, cached at `when`. */
static void tl_huge_cache_shared(tl_segment *s, uint64_t when) {
    s->cached_ms = when;
    s->next = NULL;
    tl_cache_shared_chain(s);
}

/* A thread cache slot given up (stolen, or taken by its owner): no longer
 * counted as thread-cached. */
static void tl_tcache_uncount(const tl_segment *s) {
    atomic_fetch_sub(&tl_tcache, TL_TC_ONE + s->region.size);
}

tl_segment *tl_large_steal_heap(tl_heap *h, uint64_t older_than_ms, tl_segment *out, uint64_t *next_ms) {
    for (unsigned i = 0; i < TL_LCACHE_SLOTS; i++) {
        if (!atomic_load(&h->lcache[i])) continue;
        uint64_t ms = atomic_load_explicit(&h->lcache_ms[i], memory_order_relaxed);
        if (ms > older_than_ms) {
            if (ms < *next_ms) *next_ms = ms;
            continue;
        }
        tl_segment *s = atomic_exchange_explicit(&h->lcache[i], NULL, memory_order_acquire);
        if (!s) continue; /* its owner took it meanwhile */
        tl_tcache_uncount(s);
        s->next = out;
        out = s;
    }
    return out;
}

int tl_large_heap_flush(tl_heap *h) {
    uint64_t left = UINT64_MAX;
    tl_segment *mine = tl_large_steal_heap(h, UINT64_MAX, NULL, &left);
    tl_cache_shared_chain(mine);
    return mine != NULL;
}

/* Lower tl_tcache_next_ms to `ms` (compare-and-swap: never raises it). */
static void tl_tcache_lower_next(uint64_t ms) {
    uint64_t n = atomic_load(&tl_tcache_next_ms);
    while (ms < n && !atomic_compare_exchange_weak(&tl_tcache_next_ms, &n, ms)) {
    }
}

/* Steal the blocks put a purge delay ago (all of them when forced) from every
 * thread's cache into the shared cache. A walk of the live heaps, at most once
 * per purge delay while thread caches hold blocks. The walk resets
 * tl_tcache_next_ms before it reads the slots and a put lowers it after
 * storing its slot (both sequentially consistent), so a block put meanwhile
 * is seen by one of them. */
static void tl_tcache_steal(uint64_t now, int force) {
    if (TL_TC_COUNT(atomic_load(&tl_tcache)) == 0) return;
    uint64_t delay = atomic_load_explicit(&tl_purge_delay, memory_order_relaxed);
    uint64_t next = atomic_load(&tl_tcache_next_ms);
    if (!force && (next > now || now - next < delay)) return;
    atomic_store(&tl_tcache_next_ms, UINT64_MAX);
    uint64_t left = UINT64_MAX;
    tl_segment *chain = tl_pool_large_steal_all(force || delay == 0 ? UINT64_MAX : now - delay, &left);
    tl_tcache_lower_next(left);
    tl_cache_shared_chain(chain);
}

/* Keep a freed (already counted) block in the thread's cache: 0 when it does
 * not qualify (too big, aligned beyond 4 KiB, caches off, the bound reached).
 * Makes room by moving the oldest blocks to the shared cache. Cost when the
 * slots have room: a scan of 4 slots, one atomic add on tl_tcache, a load of
 * tl_cached_mirror, a store in the slot. */
static int tl_tcache_put(tl_heap *h, tl_segment *s, uint64_t now) {
    size_t size = s->region.size;
    uint64_t delay = atomic_load_explicit(&tl_purge_delay, memory_order_relaxed);
    size_t limit = atomic_load_explicit(&tl_cache_limit, memory_order_relaxed);
    if (size > TL_LCACHE_BYTES || s->huge_offset != TL_LARGE_HDR || delay == 0 || size > limit) return 0;
    /* While the thread's requests do not fit what it keeps (a churn of many
     * sizes), keep only every 8th block, to notice when they fit again. */
    if (h->lcache_missed && (++h->lcache_probes & 7u) != 0) return 0;
    unsigned slot;
    for (;;) {
        size_t held = 0;
        unsigned free_i = TL_LCACHE_SLOTS, old_i = TL_LCACHE_SLOTS;
        uint64_t old_ms = UINT64_MAX;
        for (unsigned i = 0; i < TL_LCACHE_SLOTS; i++) {
            if (!atomic_load_explicit(&h->lcache[i], memory_order_relaxed)) {
                if (free_i == TL_LCACHE_SLOTS) free_i = i;
                continue;
            }
            held += h->lcache_size[i];
            uint64_t ms = atomic_load_explicit(&h->lcache_ms[i], memory_order_relaxed);
            if (ms <= old_ms) {
                old_ms = ms;
                old_i = i;
            }
        }
        if (free_i < TL_LCACHE_SLOTS && held + size <= TL_LCACHE_BYTES) {
            slot = free_i;
            break;
        }
        tl_assert(old_i < TL_LCACHE_SLOTS);
        tl_segment *v = atomic_exchange_explicit(&h->lcache[old_i], NULL, memory_order_acquire);
        if (v) {
            tl_tcache_uncount(v);
            tl_huge_cache_shared(v, v->cached_ms);
        }
    }
    /* Reserve the bytes, then check the bound against the shared cache's
     * (sequentially consistent on both sides: either this sees the shared
     * cache's growth, or its eviction sees this reservation). */
    uint64_t v = atomic_fetch_add(&tl_tcache, TL_TC_ONE + size);
    if (TL_TC_BYTES(v) + size + atomic_load(&tl_cached_mirror) > limit) {
        atomic_fetch_sub(&tl_tcache, TL_TC_ONE + size);
        return 0;
    }
    s->cached_ms = now;
    s->cache_state = TL_LARGE_DIRTY;
    h->lcache_size[slot] = size;
    atomic_store_explicit(&h->lcache_ms[slot], now, memory_order_relaxed);
    atomic_store(&h->lcache[slot], s);
    /* Due for the steal walk a delay from now (a load each while one is due;
     * a recomputation racing with this store may lose it: the block then waits
     * for the next large-block operation of any thread, or tl_pool_collect). */
    tl_tcache_lower_next(now);
    uint64_t due = now + delay;
    if (due < atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed))
        atomic_store_explicit(&tl_large_due_ms, due, memory_order_relaxed);
    return 1;
}

/* The largest cached mapping a request of `need` mapping bytes takes as it is:
 * a quarter more, and three quarters more above 4 MiB. A trimmed tail is
 * memory the next larger request faults in again, and above 4 MiB that is a
 * huge-page fault: the kernel clears 2 MiB (out of the CPU's caches) that the
 * program then writes again. malloc-large (20 live blocks of 5-25 MiB, a
 * random one replaced 2,000 times) spent a fifth of its time in the kernel's
 * clear_page_rep with a quarter, 0.90-0.98x glibc's speed, and 1.17-1.19x
 * with three quarters at about the same peak RSS
 * (docs/benchmark-log/mimalloc-bench.md, "malloc-large: a looser fit above
 * 4 MiB"); a half, in a scratch build, was in between.
 * Up to 4 MiB the quarter stays: NumPy's churn of arrays up to 2 MB keeps its
 * RSS within 1.1x of NumPy's default. Cost: the slack of a live block stays
 * resident. */
static size_t tl_asis_most(size_t need) {
    return need > TL_SEG_SIZE ? need + need / 4 * 3 : need + need / 4;
}

/* The newest block of the thread's cache that a request of `need` mapping
 * bytes takes as it is (tl_asis_most: a quarter more, its blocks being at
 * most 1 MiB), removed; NULL if none. */
static tl_segment *tl_tcache_take(tl_heap *h, size_t need) {
    unsigned best = TL_LCACHE_SLOTS;
    uint64_t best_ms = 0;
    size_t most = tl_asis_most(need);
    for (unsigned i = 0; i < TL_LCACHE_SLOTS; i++) {
        size_t have = h->lcache_size[i];
        if (have < need || have > most) continue;
        if (!atomic_load_explicit(&h->lcache[i], memory_order_relaxed)) continue;
        uint64_t ms = atomic_load_explicit(&h->lcache_ms[i], memory_order_relaxed);
        if (best == TL_LCACHE_SLOTS || ms >= best_ms) {
            best = i;
            best_ms = ms;
        }
    }
    if (best == TL_LCACHE_SLOTS) return NULL;
    tl_segment *s = atomic_exchange_explicit(&h->lcache[best], NULL, memory_order_acquire);
    if (s) tl_tcache_uncount(s); /* NULL: stolen meanwhile */
    return s;
}

void tl_large_tick(void) {
    uint64_t now = tl_os_coarse_ms();
    if (now < atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed)) return;
    tl_purge_due(now, 0);
}

/* ---- allocation ------------------------------------------------------------------ */

/* The best cached mapping of `need` to `most` bytes that puts a block at `off`
 * aligned to `align`: resident ones first, then the smallest; NULL if none. */
static tl_segment *tl_cache_best(size_t need, size_t most, size_t off, size_t align) {
    tl_segment *best = NULL;
    for (unsigned b = tl_bin(need); b <= tl_bin(most) && b < TL_LARGE_BINS; b++) {
        int k = 0;
        for (tl_segment *s = tl_bins[b]; s && k < TL_LARGE_SCAN; s = s->next, k++) {
            size_t h = s->region.size;
            if (h < need || h > most || s->cache_state == TL_LARGE_BUSY) continue;
            if (((uintptr_t)s + off) % align != 0) continue;
            int dirty = s->cache_state == TL_LARGE_DIRTY;
            int best_dirty = best && best->cache_state == TL_LARGE_DIRTY;
            if (!best || dirty > best_dirty || (dirty == best_dirty && h < best->region.size))
                best = s;
        }
    }
    return best;
}

/* The largest cached mapping of `least` to need - 1 bytes (resident ones
 * first), for a block at `off` of a mapping on a 4 MiB boundary. */
static tl_segment *tl_cache_below(size_t least, size_t need, size_t off) {
    tl_segment *best = NULL;
    for (unsigned b = tl_bin(need) + 1; b-- > tl_bin(least);) {
        int k = 0;
        for (tl_segment *s = tl_bins[b]; s && k < TL_LARGE_SCAN; s = s->next, k++) {
            size_t h = s->region.size;
            if (h < least || h >= need || h <= off || s->cache_state == TL_LARGE_BUSY) continue;
            int dirty = s->cache_state == TL_LARGE_DIRTY;
            int best_dirty = best && best->cache_state == TL_LARGE_DIRTY;
            if (!best || dirty > best_dirty || (dirty == best_dirty && h > best->region.size))
                best = s;
        }
        if (best) break;
    }
    return best;
}

enum { TL_TAKE_AS_IS = 0, TL_TAKE_TRIM = 1, TL_TAKE_GROW = 2 };

/* A cached mapping for a request of `need` bytes, unlinked, so that the cache
 * does not hold on to blocks no request fits: one at most tl_asis_most(need),
 * taken as it is; else one at most twice as large, whose tail the caller
 * unmaps (TL_TAKE_TRIM); else (alignments up to 4 MiB) one at least half as
 * large, which the caller grows with mremap (TL_TAKE_GROW: its pages stay,
 * only the rest is new). NULL if none. */
static tl_segment *tl_cache_take(size_t need, size_t off, size_t align, int *how) {
    size_t most = tl_asis_most(need); /* no overflow: need < PTRDIFF_MAX */
    tl_segment *s = tl_cache_best(need, most, off, align);
    *how = TL_TAKE_AS_IS;
    if (!s && need <= SIZE_MAX / 2) {
        s = tl_cache_best(most + 1, 2 * need, off, align);
        if (s) *how = TL_TAKE_TRIM;
    }
    if (!s && align <= TL_SEG_SIZE) {
        s = tl_cache_below(need / 2, need, off);
        if (s) *how = TL_TAKE_GROW;
    }
    if (s) tl_cache_unlink(s);
    return s;
}

/* Where a block aligned to `align` starts in its mapping, and what the mapping
 * must be aligned to: (base + off) % align == 0 with base on a 4 MiB boundary. */
static size_t tl_block_offset(size_t align) {
    if (align <= TL_LARGE_HDR) return TL_LARGE_HDR;
    return align <= TL_SEG_SIZE ? align : TL_SEG_SIZE;
}

static void tl_init_header(tl_segment *s, size_t size, int thp) {
    memset(s, 0, TL_SEG_FIXED);
    s->region.base = s;
    s->region.size = size;
    s->region.pages = thp ? TL_PAGES_THP : TL_PAGES_DEFAULT;
    s->region.numa_node = -1;
    s->kind = TL_KIND_HUGE;
    s->page_shift = TL_SEG_SHIFT;
    s->num_pages = 1;
    s->thp = (uint8_t)thp;
}

/* Count a block handed out (or grown by `usable` bytes). */
static void tl_count_alloc(size_t usable) {
    TL_ORPHAN_ADD(alloc_bytes, usable);
    tl_peak_add((int64_t)usable);
}

/* Count a block handed out to (hc != NULL: on the thread's own heap, no
 * shared cache line but when the peak estimate moves) or freed by a thread. */
static void tl_count_huge(tl_heap *hc, size_t usable, int reused) {
    if (hc) {
        TL_COUNTER_ADD(hc->c.num_allocations, 1);
        TL_COUNTER_ADD(hc->c.num_large_allocations, 1);
        TL_COUNTER_ADD(hc->c.num_large_reuses, (uint64_t)reused);
        TL_COUNTER_ADD(hc->c.alloc_bytes, usable);
        tl_heap_maybe_flush(hc);
    } else {
        TL_ORPHAN_ADD(num_allocations, 1);
        TL_ORPHAN_ADD(num_large_allocations, 1);
        tl_count_alloc(usable);
    }
}

static void tl_count_huge_free(tl_heap *hc, size_t usable) {
    if (hc) {
        TL_COUNTER_ADD(hc->c.num_frees, 1);
        TL_COUNTER_ADD(hc->c.free_bytes, usable);
        tl_heap_maybe_flush(hc);
    } else {
        TL_ORPHAN_ADD(num_frees, 1);
        TL_ORPHAN_ADD(free_bytes, usable);
        tl_peak_add(-(int64_t)usable);
    }
}

void *tl_huge_alloc(tl_heap *h, size_t size, size_t align, int zero) {
    size_t off = tl_block_offset(align);
    if (size > (size_t)PTRDIFF_MAX - off - TL_SEG_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t need = tl_page_round(off + (size ? size : 1));
    if (TL_UNLIKELY(need > ((size_t)1 << 30)) && !tl_os_size_possible(need)) {
        errno = ENOMEM; /* one the kernel's overcommit policy refuses (os.h) */
        return NULL;
    }
    tl_heap *hc = h->kind == TL_HEAP_THREAD ? h : NULL;
    if (hc && off == TL_LARGE_HDR && need <= TL_LCACHE_BYTES) {
        /* The thread's cache: no lock, no system call (the block is resident). */
        tl_segment *t = tl_tcache_take(hc, need);
        if (t) {
            hc->lcache_missed = 0;
            /* The clock every 64th hit (the free that put it read it). */
            tl_large_maybe_tick_sampled();
            if (zero) memset((char *)t + off, 0, size);
            t->next = t->prev = NULL;
#ifdef TLALLOC_DEBUG
            atomic_store_explicit(&t->dbg_huge_live, 1, memory_order_relaxed);
#endif
            tl_count_huge(hc, tl_huge_usable(t), 1);
            return (char *)t + off;
        }
    }
    if (hc) {
        /* A miss: the thread's cached blocks go to the shared cache first, where
         * this request may trim or grow one (a churn of many sizes otherwise
         * maps and faults in more: 4 threads of NumPy arrays of 1 B to 2 MB made
         * 10-25% more page faults with them kept). A scan of 4 slots if empty. */
        if (tl_large_heap_flush(hc)) hc->lcache_missed = 1; /* it held blocks, none fit */
    }
    /* The mapping's own alignment: 4 MiB; beyond, base + 4 MiB on an A boundary. */
    size_t map_align = align > TL_SEG_SIZE ? align : TL_SEG_SIZE;
    size_t map_off = align > TL_SEG_SIZE ? TL_SEG_SIZE : 0;
    tl_large_maybe_tick();
    tl_segment *s = NULL;
    int how = TL_TAKE_AS_IS;
    if (atomic_load_explicit(&tl_cache_limit, memory_order_relaxed) != 0) {
        tl_large_lock_counted();
        s = tl_cache_take(need, off, align > TL_LARGE_HDR ? align : TL_LARGE_HDR, &how);
        pthread_mutex_unlock(&tl_large_lock);
    }
    if (s) {
        if (how == TL_TAKE_TRIM) { /* give the tail back: it may be resident */
            tl_os_unmap_range((char *)s + need, s->region.size - need);
            atomic_fetch_sub_explicit(&tl_mapped, s->region.size - need, memory_order_relaxed);
            s->region.size = need;
        } else if (how == TL_TAKE_GROW) {
            size_t have = s->region.size;
            tl_segment *q = tl_os_remap(s, have, need, TL_SEG_SIZE, 0);
            if (q) {
                atomic_fetch_add_explicit(&tl_mapped, need - have, memory_order_relaxed);
                q->region.base = q;
                q->region.size = need;
                if (!q->thp && need >= ((size_t)4 << 20) && tl_os_advise_huge(q, need) == 0) {
                    q->thp = 1;
                    q->region.pages = TL_PAGES_THP;
                }
                /* The new part reads as zero, the old part as zero only if purged. */
                if (zero && q->cache_state != TL_LARGE_PURGED)
                    memset((char *)q + off, 0, have > off ? have - off : 0);
                zero = 0;
                s = q;
            } else {
                atomic_fetch_sub_explicit(&tl_mapped, have, memory_order_relaxed);
                tl_os_unmap_range(s, have);
                s = NULL;
            }
        }
    }
    if (s) {
        atomic_fetch_add_explicit(&tl_num_reuses, 1, memory_order_relaxed);
        /* A purged mapping reads as zero; a resident one holds old data. */
        if (zero && s->cache_state != TL_LARGE_PURGED) memset((char *)s + off, 0, size);
    } else {
        char *base = tl_os_map_anchored(need, map_align, map_off);
        if (TL_UNLIKELY(!base)) { /* the OS refused: give back what the pool holds, retry */
            tl_pool_release();
            base = tl_os_map_anchored(need, map_align, map_off);
        }
        if (!base) {
            errno = ENOMEM;
            return NULL;
        }
        /* Advise before the first touch (the header), so that its 2 MiB range
         * is a huge page too. */
        int thp = need >= ((size_t)4 << 20) && tl_os_advise_huge(base, need) == 0;
        s = (tl_segment *)base;
        tl_init_header(s, need, thp);
        atomic_fetch_add_explicit(&tl_mapped, need, memory_order_relaxed);
        TL_ORPHAN_ADD(num_cache_misses, 1);
    }
    s->cache_state = TL_LARGE_DIRTY;
    s->huge_offset = off;
    s->next = s->prev = NULL;
    /* The descriptor of the slot the block starts in: the free fast path reads
     * its owner (none for a 4 MiB-aligned block: the fast path skips those). */
    if (off < TL_SEG_SIZE)
        atomic_store_explicit(&tl_seg_pages(s)[off >> TL_SLOT_SHIFT].heap, &tl_heap_huge,
                              memory_order_relaxed);
#ifdef TLALLOC_DEBUG
    atomic_store_explicit(&s->dbg_huge_live, 1, memory_order_relaxed);
#endif
    tl_count_huge(hc, tl_huge_usable(s), 0);
    return (char *)s + off;
}

void tl_huge_free(tl_heap *h, tl_segment *s) {
#ifdef TLALLOC_DEBUG
    if (atomic_exchange_explicit(&s->dbg_huge_live, 0, memory_order_relaxed) == 0) {
        fprintf(stderr, "tlalloc: double free: %p passed to tl_pool_free\n",
                (void *)((char *)s + s->huge_offset));
        abort();
    }
#endif
    tl_heap *hc = h->kind == TL_HEAP_THREAD ? h : NULL;
    tl_count_huge_free(hc, tl_huge_usable(s));
    uint64_t now = tl_os_coarse_ms();
    if (!hc || !tl_tcache_put(hc, s, now)) tl_huge_cache_shared(s, now);
    if (TL_UNLIKELY(now >= atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed)))
        tl_purge_due(now, 0); /* lazy purge, with the clock read above */
}

void *tl_huge_realloc(tl_segment *s, size_t size) {
    size_t off = s->huge_offset, have = s->region.size;
    if (size > (size_t)PTRDIFF_MAX - off - TL_SEG_SIZE) return NULL;
    size_t need = tl_page_round(off + (size ? size : 1));
    char *base = (char *)s;
    if (need <= have) {
        /* Shrink: keep the mapping unless more than a quarter would be idle. */
        if (need >= have - have / 4) return base + off;
        tl_os_unmap_range(base + need, have - need);
        s->region.size = need;
        atomic_fetch_sub_explicit(&tl_mapped, have - need, memory_order_relaxed);
        TL_ORPHAN_ADD(free_bytes, have - need);
        tl_peak_add(-(int64_t)(have - need));
        return base + off;
    }
    /* Grow by an eighth more than asked, so that a run of small growths takes a
     * few system calls; the reserve costs address space only until touched. */
    size_t want = need;
    if (need <= (size_t)PTRDIFF_MAX - need / 8) want = tl_page_round(need + need / 8);
    /* The mapping must stay on a 4 MiB boundary (its header is found by masking). */
    char *q = tl_os_remap(base, have, want, TL_SEG_SIZE, 0);
    if (!q && want != need) q = tl_os_remap(base, have, want = need, TL_SEG_SIZE, 0);
    if (!q && tl_os_size_possible(need)) { /* refused: release what the pool holds, retry */
        tl_pool_release();
        q = tl_os_remap(base, have, want = need, TL_SEG_SIZE, 0);
    }
    if (!q) return NULL;
    s = (tl_segment *)q;
    s->region.base = q;
    s->region.size = want;
    if (!s->thp && want >= ((size_t)4 << 20) && tl_os_advise_huge(q, want) == 0) {
        s->thp = 1;
        s->region.pages = TL_PAGES_THP;
    }
    atomic_fetch_add_explicit(&tl_mapped, want - have, memory_order_relaxed);
    tl_count_alloc(want - have);
    return q + off;
}

/* ---- settings, housekeeping, statistics ------------------------------------------ */

int tl_large_set_options(size_t cache_bytes, unsigned delay_ms) {
    if (cache_bytes > TL_POOL_MAX_LARGE_CACHE || delay_ms > TL_POOL_MAX_PURGE_DELAY_MS) {
        errno = EINVAL;
        return -1;
    }
    atomic_store_explicit(&tl_cache_limit, cache_bytes, memory_order_relaxed);
    atomic_store_explicit(&tl_purge_delay, delay_ms, memory_order_relaxed);
    tl_tcache_steal(tl_os_coarse_ms(), 1); /* the thread caches go by the new settings */
    tl_large_lock_counted();
    tl_segment *unmap = tl_cache_evict(tl_shared_limit(cache_bytes), NULL);
    tl_update_due();
    pthread_mutex_unlock(&tl_large_lock);
    tl_unmap_chain(unmap);
    tl_large_maybe_tick(); /* a shorter delay may make purges due now */
    return 0;
}

void tl_large_get_options(size_t *cache_bytes, unsigned *delay_ms) {
    *cache_bytes = atomic_load_explicit(&tl_cache_limit, memory_order_relaxed);
    *delay_ms = atomic_load_explicit(&tl_purge_delay, memory_order_relaxed);
}

unsigned tl_large_purge_delay(void) { return atomic_load_explicit(&tl_purge_delay, memory_order_relaxed); }

void tl_large_collect(int release_all) { tl_purge_due(tl_os_coarse_ms(), release_all ? 2 : 1); }

uint64_t tl_large_reserved(void) { return atomic_load_explicit(&tl_mapped, memory_order_relaxed); }

uint64_t tl_large_resident_cached(void) {
    return atomic_load_explicit(&tl_resident_cached, memory_order_relaxed);
}

/* The thread caches' blocks count as cached and resident. */
void tl_pool_large_cache_info(tl_pool_large_info *out) {
    uint64_t allocations, thread_reuses;
    tl_pool_large_counter_sums(&allocations, &thread_reuses);
    pthread_mutex_lock(&tl_large_lock);
    uint64_t tc = atomic_load(&tl_tcache);
    out->cached_bytes = tl_cached_bytes + TL_TC_BYTES(tc);
    out->num_cached = tl_num_cached + TL_TC_COUNT(tc);
    out->num_purged = tl_num_purged;
    out->resident_bytes = atomic_load_explicit(&tl_resident_cached, memory_order_relaxed) + TL_TC_BYTES(tc);
    pthread_mutex_unlock(&tl_large_lock);
    out->mapped_bytes = atomic_load_explicit(&tl_mapped, memory_order_relaxed);
    out->num_purges = atomic_load_explicit(&tl_num_purges, memory_order_relaxed);
    out->num_reuses = atomic_load_explicit(&tl_num_reuses, memory_order_relaxed) + thread_reuses;
}

/* ---- fork (order 6 in platform/fork.c's list: after the pool's depot lock) ------- */

void tl_large_fork_lock(void) { pthread_mutex_lock(&tl_large_lock); }
void tl_large_fork_unlock(void) { pthread_mutex_unlock(&tl_large_lock); }

/* In the child: a mapping that a thread missing here was purging stays BUSY
 * forever; it still holds its data, so it is simply DIRTY again. Mappings a
 * missing thread was unmapping are unlinked already: they stay mapped (leaked
 * address space; their bytes stay counted in the statistics). */
void tl_large_fork_child(void) {
    pthread_mutex_lock(&tl_large_lock);
    for (tl_segment *s = tl_lru_head; s; s = s->lru_next)
        if (s->cache_state == TL_LARGE_BUSY) s->cache_state = TL_LARGE_DIRTY;
    tl_update_due();
    pthread_mutex_unlock(&tl_large_lock);
}
