/* pool_depot.c: where the pool's pages come from and go back to.
 *
 * The depot is the only shared, locked part of the pool (tl_depot_lock):
 *
 * - segments: 4 MiB regions from the OS layer, cut into pages of one kind;
 * - free pages, per kind, in two lists: "dirty" ones (possibly resident, handed
 *   out first, most recent first) and "clean" ones (given back to the OS with
 *   tl_os_discard, or never touched);
 * - abandoned pages, per size class: pages with live blocks whose owner exited,
 *   waiting for a thread to adopt them.
 *
 * Large blocks and their cache live in pool_large.c.
 *
 * Retention: the depot keeps `retain` bytes of dirty free pages. Beyond that
 * it discards the coldest dirty pages, and it unmaps segments whose pages are
 * all free once the free page space exceeds the limit: lazily, once those
 * pages stayed free for the purge delay (tl_depot_purge_locked), or at once
 * when the limit or the delay is 0, and on tl_pool_collect. What waits for
 * the delay is bounded (the eager bound beyond the limit, 16 MiB growing
 * with the program's churn: the oldest pages go at once past it), and a segment that such a purge leaves with no
 * page in use is unmapped by the same purge, so a burst of frees leaves the
 * resident set and the address space whether or not a later call comes. The
 * rest waits for a later call, or for the background purge thread (pool.c).
 * When the OS refuses a segment, the callers release and retry (pool.c,
 * tl_pool_release): tl_segment_map itself never calls the OS layer's hook.
 *
 * Why lazily: a program whose threads come and go, or whose live set swings,
 * returns pages and takes them again within a fraction of a second. Given
 * back at once, each such page is faulted in again (the kernel zeroes it):
 * mstress at 4 threads took 88,000 minor faults and 0.19 s of system time a
 * run so, against 13,000 and 0.03 s with a 64 MiB limit
 * (docs/benchmark-log/mimalloc-bench.md, "Lazy purge of the depot").
 *
 * No system call under the lock on the paths threads take on their own: a
 * thread heap maps a new segment with the lock released (tl_depot_take), and
 * the lazy purge queues its madvise and munmap calls for tl_depot_unlock,
 * which makes them after the release. A thread that waits on the lock sleeps,
 * and the scheduler wakes it on the waker's core; with two threads on two
 * cores, one then waits a 4 ms tick while the other core idles
 * (docs/benchmark-log/mimalloc-bench.md, "rptest x2: system calls under the
 * depot lock"). The paths a caller asks
 * for (tl_pool_collect, a limit or delay of 0) and the locked global heap
 * still make them under the lock.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

typedef struct tl_aqueue {
    tl_page *head, *tail;
} tl_aqueue;

/* The eager bound: dirty free bytes beyond the retain limit that wait for
 * the purge delay are at most tl_eager bytes; a return that finds more gives
 * the oldest back at once (down to half of it). So a burst of frees leaves
 * the resident set as it happens, as glibc's trim does, whether or not the
 * program calls the pool again. The bound adapts, as glibc's dynamic mmap
 * threshold does: when a page it gave back is taken again within the purge
 * delay (a churn that frees more than the bound and asks for it again: waves
 * of 16 threads of 4 MB each faulted 26x as many pages with a fixed 16 MiB
 * bound), it doubles, up to TL_DEPOT_EAGER_MAX; after 8 purge delays without
 * that it halves, down to TL_DEPOT_EAGER_BYTES again (checked at returns). */
#ifndef TL_DEPOT_EAGER_BYTES
#define TL_DEPOT_EAGER_BYTES ((size_t)16 << 20)
#endif
#define TL_DEPOT_EAGER_MAX ((size_t)1 << 30)
static size_t tl_eager = TL_DEPOT_EAGER_BYTES; /* (depot lock) */
static uint64_t tl_eager_changed_ms;           /* (depot lock) last doubling or halving */

static tl_segment *tl_segments;                 /* all pool segments (not huge) */
static tl_page_queue tl_dirty[TL_NUM_PAGE_KINDS]; /* free, possibly resident */
static tl_page_queue tl_clean[TL_NUM_PAGE_KINDS]; /* free, not resident */
static tl_aqueue tl_abandoned[TL_POOL_NUM_CLASSES];

static size_t tl_retained;   /* dirty bytes on the free page lists (depot lock) */
static size_t tl_free_space; /* bytes of all free pages (depot lock) */
static uint64_t tl_num_segments, tl_num_abandoned;
static _Atomic size_t tl_retain = TL_POOL_DEFAULT_RETAIN;
static _Atomic uint64_t tl_reserved;
_Atomic uint64_t tl_depot_due_ms = UINT64_MAX; /* written under the depot lock */
/* The lazy purge's system calls, queued under the lock and made by
 * tl_depot_unlock once it is released: dirty pages to give back (linked by
 * `next`, flagged `purging`, each pinning its segment) and unlinked segments
 * to unmap (linked by `next`). */
static tl_page *tl_purge_pages;
static tl_segment *tl_purge_segs;
_Atomic(void (*)(void)) tl_depot_purge_hook; /* tests (pool_internal.h) */

/* ---- abandoned lists ----------------------------------------------------------- */

static void tl_aqueue_push(tl_aqueue *q, tl_page *pg) {
    pg->aprev = q->tail;
    pg->anext = NULL;
    if (q->tail) q->tail->anext = pg;
    else q->head = pg;
    q->tail = pg;
    pg->in_abandoned = 1;
}

static void tl_aqueue_remove(tl_aqueue *q, tl_page *pg) {
    if (pg->aprev) pg->aprev->anext = pg->anext;
    else q->head = pg->anext;
    if (pg->anext) pg->anext->aprev = pg->aprev;
    else q->tail = pg->aprev;
    pg->anext = pg->aprev = NULL;
    pg->in_abandoned = 0;
}

/* ---- segments ------------------------------------------------------------------ */

/* Debug builds keep one bit per block of the smallest class a kind serves
 * (inside the segment header, so nothing else is allocated). */
static size_t tl_dbg_words(int kind, unsigned shift) {
#ifdef TLALLOC_DEBUG
    size_t min_block = kind == TL_KIND_SMALL    ? tl_pool_class_size(0)
                       : kind == TL_KIND_MEDIUM ? tl_pool_class_size(TL_LAST_SMALL_CLASS + 1)
                                                : tl_pool_class_size(TL_LAST_MEDIUM_CLASS + 1);
    return (((size_t)1 << shift) / min_block + 63) / 64;
#else
    (void)kind;
    (void)shift;
    return 0;
#endif
}

static size_t tl_header_size(uint32_t num_pages, size_t dbg_words) {
    size_t h = TL_SEG_DESC_END + (size_t)num_pages * dbg_words * 8;
    return (h + TL_POOL_PAGE_ALIGN - 1) & ~(size_t)(TL_POOL_PAGE_ALIGN - 1);
}

/* Map a segment of pages of one kind and fill in its descriptors. No lock:
 * the segment is nobody else's until tl_segment_link_locked. */
TL_NOINLINE TL_COLD static tl_segment *tl_segment_map(int kind) {
    tl_os_region r;
    /* Without the OS layer's release hook: the callers release and retry
     * (pool.c, tl_alloc_class_slow), some with the depot lock held. */
    if (tl_os_map_norelease(TL_SEG_SIZE, TL_SEG_SIZE, TL_PAGES_DEFAULT, TL_NUMA_OFF, 0, &r) != 0) return NULL;
    tl_segment *s = r.base;
    unsigned shift = kind == TL_KIND_SMALL    ? TL_SMALL_PAGE_SHIFT
                     : kind == TL_KIND_MEDIUM ? TL_MEDIUM_PAGE_SHIFT
                                              : TL_SEG_SHIFT;
    uint32_t n = (uint32_t)(TL_SEG_SIZE >> shift);
    size_t words = tl_dbg_words(kind, shift);
    size_t hdr = tl_header_size(n, words);
    s->region = r;
    s->kind = (uint8_t)kind;
    s->page_shift = (uint8_t)shift;
    s->num_pages = n;
    s->dbg = words ? (_Atomic uint64_t *)((char *)s + TL_SEG_DESC_END) : NULL;
    /* Slots that do not start a page redirect the free fast path. */
    uint32_t stride = 1u << (shift - TL_SLOT_SHIFT);
    for (uint32_t k = 0; k < TL_NUM_SLOTS; k++)
        if (k % stride)
            atomic_store_explicit(&tl_seg_pages(s)[k].heap, &tl_heap_redirect, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        tl_page *pg = tl_segment_page(s, i);
        size_t lo = (size_t)i << shift, hi = (size_t)(i + 1) << shift;
        if (lo < hdr) lo = hdr;
        pg->kind = (uint8_t)kind;
        pg->dbg_live = s->dbg ? s->dbg + (size_t)i * words : NULL;
        if (lo >= hi) continue; /* eaten by the header (debug bitmaps): never used */
        pg->start = (char *)s + lo;
        pg->bytes = hi - lo;
        pg->in_depot = 1;
    }
    return s;
}

/* Hand a mapped segment's pages to the depot: all on the clean list. */
static void tl_segment_link_locked(tl_segment *s) {
    for (uint32_t i = 0; i < s->num_pages; i++) {
        tl_page *pg = tl_segment_page(s, i);
        if (!pg->in_depot) continue; /* eaten by the header */
        tl_queue_push_back(&tl_clean[s->kind], pg);
        tl_free_space += pg->bytes;
    }
    s->next = tl_segments;
    s->prev = NULL;
    if (tl_segments) tl_segments->prev = s;
    tl_segments = s;
    tl_num_segments++;
    atomic_fetch_add_explicit(&tl_reserved, s->region.size, memory_order_relaxed);
}

/* Unlink a segment whose pages are all free from the depot; the caller unmaps it. */
static void tl_segment_unlink_locked(tl_segment *s) {
    tl_assert(s->kind != TL_KIND_HUGE);
    for (uint32_t i = 0; i < s->num_pages; i++) {
        tl_page *pg = tl_segment_page(s, i);
        if (!pg->in_depot) continue;
        tl_assert(!pg->purging); /* it pins the segment */
        tl_queue_remove(pg->touched ? &tl_dirty[s->kind] : &tl_clean[s->kind], pg);
        tl_retained -= pg->touched;
        tl_free_space -= pg->bytes;
    }
    if (s->prev) s->prev->next = s->next;
    else tl_segments = s->next;
    if (s->next) s->next->prev = s->prev;
    tl_num_segments--;
    atomic_fetch_sub_explicit(&tl_reserved, s->region.size, memory_order_relaxed);
}

/* Unmap a segment whose pages are all free, under the lock (the paths a caller
 * asked for: tl_pool_collect, a limit or delay of 0). */
static void tl_segment_free_locked(tl_segment *s) {
    tl_segment_unlink_locked(s);
    tl_os_region r = s->region;
    tl_os_unmap(&r);
}

static size_t tl_segment_free_space(const tl_segment *s) {
    size_t n = 0;
    for (uint32_t i = 0; i < s->num_pages; i++) n += tl_segment_page((tl_segment *)s, i)->bytes;
    return n;
}

/* A segment with no page in use, whose free page space the depot would
 * still hold beyond the limit without it: to be unmapped. */
static int tl_segment_beyond_limit_locked(const tl_segment *s, size_t limit) {
    return s->used_pages == 0 && tl_free_space - tl_segment_free_space(s) >= limit;
}

/* Give the dirty page pg of kind k back to the OS: it moves to the clean list. */
static void tl_page_discard_locked(int k, tl_page *pg) {
    tl_queue_remove(&tl_dirty[k], pg);
    tl_os_discard(pg->start, pg->touched);
    tl_retained -= pg->touched;
    pg->touched = 0;
    tl_queue_push_front(&tl_clean[k], pg);
}

/* The lazy purge's way to give a dirty page back: off its list at once (no
 * thread can take it), given back by tl_depot_unlock after the lock is
 * released, then on the clean list. Its segment stays mapped meanwhile. */
static void tl_page_purge_later_locked(int k, tl_page *pg) {
    tl_queue_remove(&tl_dirty[k], pg);
    tl_retained -= pg->touched;
    pg->purging = 1;
    tl_segment_of(pg->start)->used_pages++;
    pg->prev = NULL;
    pg->next = tl_purge_pages;
    tl_purge_pages = pg;
}

/* Queue the oldest dirty pages for tl_depot_unlock to give back until the
 * dirty bytes are at most `target` (the eager bound of tl_depot_return_locked);
 * each is marked eager, with the time, so that taking it again within the
 * delay raises the bound (tl_depot_eager_taken_locked). */
static void tl_depot_purge_oldest_locked(size_t target, uint64_t now) {
    while (tl_retained > target) {
        int k = -1;
        for (int j = 0; j < TL_NUM_PAGE_KINDS; j++) {
            tl_page *t = tl_dirty[j].tail;
            if (t && (k < 0 || t->freed_ms < tl_dirty[k].tail->freed_ms)) k = j;
        }
        tl_assert(k >= 0);
        tl_page *pg = tl_dirty[k].tail;
        tl_page_purge_later_locked(k, pg);
        pg->eager = 1;
        pg->freed_ms = now;
    }
}

/* A page the eager bound gave back is taken again: within the purge delay,
 * the bound was too small for this program's churn: double it (at most once
 * per coarse-clock millisecond, so that one refill burst doubles it once). */
TL_NOINLINE TL_COLD static void tl_depot_eager_taken_locked(tl_page *pg) {
    pg->eager = 0;
    uint64_t now = tl_os_coarse_ms();
    if (now >= pg->freed_ms + tl_large_purge_delay() || now == tl_eager_changed_ms) return;
    if (tl_eager < TL_DEPOT_EAGER_MAX) tl_eager *= 2;
    tl_eager_changed_ms = now;
}

/* Give back dirty pages above the limit (all of them for limit 0), coldest
 * first (the tail of each dirty list). */
static void tl_depot_trim_locked(size_t limit) {
    for (int k = TL_NUM_PAGE_KINDS - 1; k >= 0 && tl_retained > limit; k--) {
        tl_page *pg;
        while (tl_retained > limit && (pg = tl_dirty[k].tail) != NULL) tl_page_discard_locked(k, pg);
    }
}

/* Lazy purge: the depot gives back what is beyond the limit only once it
 * stayed free for the purge delay; with a limit or a delay of 0, at once. */
static int tl_depot_lazy(size_t limit, uint64_t delay) { return limit != 0 && delay != 0; }

static void tl_depot_lower_due_locked(uint64_t due) {
    if (due < atomic_load_explicit(&tl_depot_due_ms, memory_order_relaxed))
        atomic_store_explicit(&tl_depot_due_ms, due, memory_order_relaxed);
}

/* The newest time one of s's dirty free pages was freed (0 if none). */
static uint64_t tl_segment_dirty_ms(tl_segment *s) {
    uint64_t last = 0;
    for (uint32_t i = 0; i < s->num_pages; i++) {
        tl_page *pg = tl_segment_page(s, i);
        if (pg->in_depot && pg->touched && pg->freed_ms > last) last = pg->freed_ms;
    }
    return last;
}

/* What is due at `now` (depot lock): dirty pages beyond the limit that stayed
 * free for the delay are given back, oldest first (each dirty list is ordered,
 * newest at its head); then wholly free segments beyond the limit whose dirty
 * pages all stayed free that long are unmapped. Sets tl_depot_due_ms to when
 * the next one is due. Cost: the pages given back, plus one look at each
 * segment's descriptors, at most once per delay while something is pending. */
static void tl_depot_purge_locked(uint64_t now) {
    size_t limit = atomic_load_explicit(&tl_retain, memory_order_relaxed);
    uint64_t delay = tl_large_purge_delay();
    uint64_t due = UINT64_MAX;
    while (tl_retained > limit) {
        int k = -1;
        for (int j = 0; j < TL_NUM_PAGE_KINDS; j++) {
            tl_page *t = tl_dirty[j].tail;
            if (t && (k < 0 || t->freed_ms < tl_dirty[k].tail->freed_ms)) k = j;
        }
        tl_assert(k >= 0); /* tl_retained counts the dirty lists' bytes */
        tl_page *pg = tl_dirty[k].tail;
        if (pg->freed_ms + delay > now) {
            due = pg->freed_ms + delay;
            break;
        }
        tl_page_purge_later_locked(k, pg);
    }
    tl_segment *next;
    for (tl_segment *s = tl_segments; s; s = next) {
        next = s->next;
        if (!tl_segment_beyond_limit_locked(s, limit)) continue;
        uint64_t t = tl_segment_dirty_ms(s) + delay;
        if (t <= now) {
            tl_segment_unlink_locked(s);
            s->next = tl_purge_segs;
            tl_purge_segs = s;
        } else if (t < due) {
            due = t;
        }
    }
    atomic_store_explicit(&tl_depot_due_ms, due, memory_order_relaxed);
}

/* A page whose purge is done goes on the clean list; returns 1 if its
 * segment has no page in use left. */
static int tl_page_purged_locked(tl_page *pg) {
    tl_assert(pg->purging && pg->in_depot);
    pg->purging = 0;
    pg->touched = 0;
    tl_queue_push_front(&tl_clean[pg->kind], pg);
    return --tl_segment_of(pg->start)->used_pages == 0;
}

/* Unmap a list of unlinked segments (linked by `next`, which lives in each). */
static void tl_segments_unmap(tl_segment *segs) {
    while (segs) {
        tl_segment *next = segs->next;
        tl_os_region r = segs->region; /* the descriptor lives in the mapping */
        tl_os_unmap(&r);
        segs = next;
    }
}

/* The queued purge (tl_purge_pages, tl_purge_segs), with the lock released:
 * madvise and munmap, then the pages go on the clean lists under the lock
 * again. A segment that the pages leave wholly free, beyond the limit and
 * with no page freed within the delay, is unmapped here too (not left for a
 * later call: a program that freed a burst and makes no call sees its
 * mapped bytes fall too); another is left to a later purge (due at once). */
TL_NOINLINE TL_COLD static void tl_depot_purge_unlocked(tl_page *pages, tl_segment *segs) {
    void (*hook)(void) = atomic_load_explicit(&tl_depot_purge_hook, memory_order_acquire);
    if (hook) hook();
    for (tl_page *pg = pages; pg; pg = pg->next) tl_os_discard(pg->start, pg->touched);
    tl_segments_unmap(segs);
    if (!pages) return;
    pthread_mutex_lock(&tl_depot_lock);
    int emptied = 0;
    tl_page *next;
    tl_segment *unmap = NULL;
    size_t limit = atomic_load_explicit(&tl_retain, memory_order_relaxed);
    uint64_t delay = tl_large_purge_delay(), now = 0;
    for (tl_page *pg = pages; pg; pg = next) {
        next = pg->next;
        if (!tl_page_purged_locked(pg)) continue;
        tl_segment *s = tl_segment_of(pg->start);
        if (!tl_segment_beyond_limit_locked(s, limit)) {
            emptied = 1;
            continue;
        }
        if (!now) now = tl_os_coarse_ms();
        uint64_t last = tl_segment_dirty_ms(s);
        if (last && last + delay > now) {
            emptied = 1; /* a page of it was freed within the delay: later */
            continue;
        }
        /* Each segment once: its last page's purge is the one that empties it. */
        tl_segment_unlink_locked(s);
        s->next = unmap;
        unmap = s;
    }
    if (emptied) tl_depot_lower_due_locked(0);
    pthread_mutex_unlock(&tl_depot_lock); /* nothing new was queued */
    tl_segments_unmap(unmap);
}

/* Every release of the depot lock but fork's: the system calls of a lazy
 * purge are made here, after the release. A thread that waits on the lock
 * sleeps in the kernel, and the waker's wake-up moves it to the waker's core,
 * where it waits for the next tick (4 ms) while another core idles: with 2
 * threads, rptest's peak live bytes doubled so
 * (docs/benchmark-log/mimalloc-bench.md, "rptest x2: system calls under the
 * depot lock"). Cost when nothing is queued: two loads. */
void tl_depot_unlock(void) {
    tl_page *pages = tl_purge_pages;
    tl_segment *segs = tl_purge_segs;
    if (TL_LIKELY(!pages && !segs)) {
        pthread_mutex_unlock(&tl_depot_lock);
        return;
    }
    tl_purge_pages = NULL;
    tl_purge_segs = NULL;
    pthread_mutex_unlock(&tl_depot_lock);
    tl_depot_purge_unlocked(pages, segs);
}

void tl_depot_tick(uint64_t now) {
    pthread_mutex_lock(&tl_depot_lock);
    if (now >= atomic_load_explicit(&tl_depot_due_ms, memory_order_relaxed)) tl_depot_purge_locked(now);
    tl_depot_unlock();
}

/* The queued purge, made here under the lock (tl_pool_collect, which must
 * leave nothing beyond its limit). */
static void tl_depot_flush_queued_locked(void) {
    tl_page *next;
    for (tl_page *pg = tl_purge_pages; pg; pg = next) {
        next = pg->next;
        tl_os_discard(pg->start, pg->touched);
        (void)tl_page_purged_locked(pg); /* the caller unmaps emptied segments */
    }
    tl_purge_pages = NULL;
    tl_segments_unmap(tl_purge_segs);
    tl_purge_segs = NULL;
}

size_t tl_depot_purging_pages(void) {
    size_t n = 0;
    pthread_mutex_lock(&tl_depot_lock);
    for (tl_segment *s = tl_segments; s; s = s->next)
        for (uint32_t i = 0; i < s->num_pages; i++) n += tl_segment_page(s, i)->purging;
    tl_depot_unlock();
    return n;
}

/* In a child of fork: pages whose purge a thread of the parent had taken
 * (flagged, on no list) go back on the dirty lists; the queued ones too. */
void tl_depot_fork_child(void) {
    pthread_mutex_lock(&tl_depot_lock);
    tl_purge_pages = NULL;
    for (tl_segment *s = tl_segments; s; s = s->next) {
        for (uint32_t i = 0; i < s->num_pages; i++) {
            tl_page *pg = tl_segment_page(s, i);
            if (!pg->purging) continue;
            pg->purging = 0;
            s->used_pages--;
            pg->freed_ms = 0; /* oldest: first to go */
            tl_queue_push_back(&tl_dirty[pg->kind], pg);
            tl_retained += pg->touched;
        }
    }
    tl_depot_lower_due_locked(0);
    tl_depot_unlock(); /* the queued segments, if any */
}

/* ---- pages in and out ------------------------------------------------------------ */

static tl_page *tl_depot_take_page_locked(tl_heap *h, unsigned c, int map) {
    /* 1. Abandoned pages of this class: adopt them (their blocks come back to
     *    whoever owns the page). A few at most, to bound the time under the lock. */
    tl_aqueue *aq = &tl_abandoned[c];
    tl_page *pg;
    for (int tries = 0; tries < 8 && (pg = aq->head) != NULL; tries++) {
        tl_aqueue_remove(aq, pg);
        tl_heap *expected = NULL;
        if (!atomic_compare_exchange_strong_explicit(&pg->heap, &expected, h, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue; /* a freeing thread adopted it already */
        tl_page_collect(pg);
        pg->in_full = 0;
        TL_COUNTER_ADD(h->c.num_reclaimed_pages, 1);
        if (pg->free || pg->extended < pg->capacity) return pg;
        if (!tl_page_watch(pg)) { /* foreign frees arrived meanwhile */
            tl_page_collect(pg);
            return pg;
        }
        pg->in_full = 1;
        tl_queue_push_back(&h->full[c], pg);
    }
    /* 2. A free page, dirty (warm) ones first; a new segment if none (with
     *    `map`; else NULL, and the caller maps one without the lock). */
    int kind = tl_class_kind(c);
    tl_page_queue *q = tl_dirty[kind].head ? &tl_dirty[kind] : &tl_clean[kind];
    if (!q->head) {
        tl_segment *s = map ? tl_segment_map(kind) : NULL;
        if (!s) {
            if (map) errno = ENOMEM;
            return NULL;
        }
        tl_segment_link_locked(s);
        q = &tl_clean[kind];
    }
    pg = q->head;
    tl_queue_remove(q, pg);
    if (TL_UNLIKELY(pg->eager)) tl_depot_eager_taken_locked(pg);
    tl_retained -= pg->touched;
    tl_free_space -= pg->bytes;
    pg->in_depot = 0;
    tl_segment_of(pg->start)->used_pages++;
    uint32_t bs = (uint32_t)tl_pool_class_size(c);
    pg->free = NULL;
    pg->used = 0;
    pg->block_size = bs;
    pg->cls = (uint8_t)c;
    pg->in_full = 0;
    pg->capacity = (uint32_t)(pg->bytes / bs);
    pg->extended = 0;
    tl_assert(pg->capacity > 0);
    tl_assert(atomic_load_explicit(&pg->xfree, memory_order_relaxed) == 0);
    atomic_store_explicit(&pg->heap, h, memory_order_relaxed); /* ordered by the lock */
    return pg;
}

/* The locked global heap, which holds the lock: a new segment is mapped under it. */
tl_page *tl_depot_take_locked(tl_heap *h, unsigned c) { return tl_depot_take_page_locked(h, c, 1); }

/* A thread heap: takes the lock, and maps a new segment with it released
 * (an mmap and two munmaps, 10-60 us: see tl_depot_unlock for why not under
 * it). Another thread may map one meanwhile; the depot then holds one more
 * free segment, given back by the purge's rules. */
tl_page *tl_depot_take(tl_heap *h, unsigned c) {
    tl_segment *fresh = NULL;
    for (;;) {
        pthread_mutex_lock(&tl_depot_lock);
        TL_COUNTER_ADD(h->c.num_depot_locks, 1);
        if (fresh) tl_segment_link_locked(fresh);
        tl_page *pg = tl_depot_take_page_locked(h, c, 0);
        tl_assert(pg || !fresh); /* the new segment's pages are on the clean list */
        tl_depot_unlock();
        if (pg) return pg;
        fresh = tl_segment_map(tl_class_kind(c));
        if (!fresh) {
            errno = ENOMEM;
            return NULL;
        }
    }
}

void tl_depot_return_locked(tl_page *pg) {
    tl_assert(pg->used == 0);
    /* No block, and state NONE: the owner unwatched it (pool_internal.h). */
    tl_assert(atomic_load_explicit(&pg->xfree, memory_order_relaxed) == 0);
    if (pg->in_abandoned) tl_aqueue_remove(&tl_abandoned[pg->cls], pg);
    size_t touched = (size_t)pg->extended * pg->block_size;
    if (touched > pg->touched) pg->touched = touched;
    pg->free = NULL;
    pg->extended = 0;
    pg->in_full = 0;
    pg->in_depot = 1;
    atomic_store_explicit(&pg->heap, NULL, memory_order_release);
    tl_segment *s = tl_segment_of(pg->start);
    s->used_pages--;
    size_t limit = atomic_load_explicit(&tl_retain, memory_order_relaxed);
    uint64_t delay = tl_large_purge_delay();
    int lazy = tl_depot_lazy(limit, delay);
    uint64_t now = lazy ? tl_os_coarse_ms() : 0;
    if (pg->touched) {
        /* Dirty lists stay ordered by freed_ms (the coarse clock is monotonic). */
        pg->freed_ms = now;
        tl_queue_push_front(&tl_dirty[pg->kind], pg);
        tl_retained += pg->touched;
    } else {
        tl_queue_push_front(&tl_clean[pg->kind], pg);
    }
    tl_free_space += pg->bytes;
    if (lazy) {
        /* Beyond the limit: due a delay from now (tl_depot_purge_locked). */
        if (tl_retained > limit || s->used_pages == 0) {
            if (now >= atomic_load_explicit(&tl_depot_due_ms, memory_order_relaxed))
                tl_depot_purge_locked(now);
            tl_depot_lower_due_locked(now + delay);
            /* The eager bound (tl_eager, above): what waits for the delay
             * stays below it, so that a program that frees a lot and then
             * makes no call keeps at most that much beyond the limit. Beyond
             * it, the oldest pages go back now (after the unlock), down to
             * half of it: a batch, not a page per return. */
            if (tl_eager > TL_DEPOT_EAGER_BYTES && now >= tl_eager_changed_ms + 8 * delay) {
                tl_eager /= 2;
                tl_eager_changed_ms = now;
            }
            if (tl_retained > limit + tl_eager) tl_depot_purge_oldest_locked(limit + tl_eager / 2, now);
        }
        return;
    }
    if (tl_retained > limit) tl_depot_trim_locked(limit);
    /* A segment with no page in use: unmap it once the depot holds more free
     * page space than the limit without it. */
    if (tl_segment_beyond_limit_locked(s, limit)) tl_segment_free_locked(s);
}

void tl_depot_abandon_locked(tl_page *pg) {
    tl_assert(pg->used > 0);
    tl_assert((atomic_load_explicit(&pg->xfree, memory_order_relaxed) & TL_X_MASK) == TL_X_NONE);
    pg->in_full = 0;
    pg->next = pg->prev = NULL;
    if (!pg->in_abandoned) tl_aqueue_push(&tl_abandoned[pg->cls], pg);
    tl_num_abandoned++;
    /* Publish the owner fields written above to whoever adopts the page. */
    atomic_store_explicit(&pg->heap, NULL, memory_order_release);
}

/* ---- housekeeping and statistics ------------------------------------------------------ */

void tl_depot_set_retain(size_t bytes) {
    atomic_store_explicit(&tl_retain, bytes, memory_order_relaxed);
    pthread_mutex_lock(&tl_depot_lock);
    /* Lazily, the new limit and delay apply from the next tick (pages already
     * free that long go then); else at once. */
    if (tl_depot_lazy(bytes, tl_large_purge_delay()))
        atomic_store_explicit(&tl_depot_due_ms, 0, memory_order_relaxed);
    else
        tl_depot_trim_locked(bytes);
    tl_depot_unlock();
}

size_t tl_depot_get_retain(void) { return atomic_load_explicit(&tl_retain, memory_order_relaxed); }

/* Take an abandoned page over for a moment to collect its foreign frees: an
 * empty one goes to the free lists (returns 1), another is abandoned again
 * (returns 0, still on its list), one adopted meanwhile leaves the list
 * (returns -1). */
static int tl_abandoned_check_locked(tl_aqueue *q, tl_page *pg) {
    tl_heap *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&pg->heap, &expected, &tl_heap_collect,
                                                 memory_order_acq_rel, memory_order_relaxed)) {
        tl_aqueue_remove(q, pg); /* adopted meanwhile */
        return -1;
    }
    tl_page_collect(pg);
    if (pg->used == 0) {
        tl_depot_return_locked(pg); /* unlinks it */
        return 1;
    }
    atomic_store_explicit(&pg->heap, NULL, memory_order_release);
    return 0;
}

void tl_depot_sweep_abandoned(tl_heap *h, unsigned c) {
    pthread_mutex_lock(&tl_depot_lock);
    TL_COUNTER_ADD(h->c.num_depot_locks, 1);
    tl_aqueue *q = &tl_abandoned[c];
    tl_page *pg, *last = q->tail; /* each page once, even on a short list */
    for (int n = 0; n < TL_SWEEP_PAGES && (pg = q->head) != NULL; n++) {
        int was_last = pg == last;
        if (tl_abandoned_check_locked(q, pg) == 0) { /* still in use: to the back */
            tl_aqueue_remove(q, pg);
            tl_aqueue_push(q, pg);
        }
        if (was_last) break;
    }
    tl_depot_unlock();
}

void tl_depot_collect(int release_all) {
    pthread_mutex_lock(&tl_depot_lock);
    atomic_fetch_add_explicit(&tl_orphan_counters[offsetof(tl_heap_counters, num_depot_locks) / 8],
                              1, memory_order_relaxed);
    /* Abandoned pages: take each over for a moment to collect its foreign
     * frees; empty ones go to the free lists, the others are abandoned again. */
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
        tl_page *next;
        for (tl_page *pg = tl_abandoned[c].head; pg; pg = next) {
            next = pg->anext; /* still valid after the check unlinks pg */
            (void)tl_abandoned_check_locked(&tl_abandoned[c], pg);
        }
    }
    /* The locked heap (caches off) keeps one empty page per class: return them.
     * Collect first (we hold its lock, so we act as its owner): a thread that
     * found a page abandoned just before this heap adopted it pushed its free on
     * the page's cross-thread list, and until collected such blocks count as
     * used, which would pin the page (and its segment) here forever if it is
     * full or never becomes current again. */
    tl_heap *g = &tl_heap_global;
    tl_heap_drain(g); /* its delayed blocks first (may return pages itself) */
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
        tl_page_queue *qs[2] = {&g->avail[c], &g->full[c]};
        for (int k = 0; k < 2; k++) {
            tl_page *next;
            for (tl_page *pg = qs[k]->head; pg; pg = next) {
                next = pg->next;
                uint32_t got = tl_page_collect(pg);
                if (pg->used != 0 && !(k == 1 && got)) continue;
                tl_queue_remove(qs[k], pg);
                pg->in_full = 0;
                if (pg->used == 0) tl_page_unwatch(pg, 1);
                if (pg->used == 0) tl_depot_return_locked(pg);
                else tl_queue_push_back(&g->avail[c], pg); /* full page that got blocks back */
            }
        }
        g->cur[c] = g->avail[c].head ? g->avail[c].head : &tl_page_empty;
    }
    size_t limit = release_all ? 0 : atomic_load_explicit(&tl_retain, memory_order_relaxed);
    tl_depot_flush_queued_locked(); /* what the returns above queued */
    tl_depot_trim_locked(limit);
    /* Segments with no page in use, beyond the limit. */
    tl_segment *next;
    for (tl_segment *s = tl_segments; s; s = next) {
        next = s->next;
        if (tl_segment_beyond_limit_locked(s, limit)) tl_segment_free_locked(s); /* limit 0: all */
    }
    /* Nothing beyond the limit is left for the lazy purge. */
    atomic_store_explicit(&tl_depot_due_ms, UINT64_MAX, memory_order_relaxed);
    tl_depot_unlock();
}

void tl_depot_usage(uint64_t *reserved, uint64_t *retained, uint64_t *segments,
                    uint64_t *abandoned) {
    pthread_mutex_lock(&tl_depot_lock);
    *retained = tl_retained;
    *segments = tl_num_segments;
    *abandoned = tl_num_abandoned;
    pthread_mutex_unlock(&tl_depot_lock);
    *reserved = atomic_load_explicit(&tl_reserved, memory_order_relaxed);
    /* Large blocks (pool_large.c): their mappings, and cached resident bytes. */
    *reserved += tl_large_reserved();
    *retained += tl_large_resident_cached();
}
