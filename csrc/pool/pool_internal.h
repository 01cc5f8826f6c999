/* pool_internal.h: data structures shared by pool.c (thread caches, the fast
 * paths) and pool_depot.c (segments, the depot, abandoned pages, large blocks).
 *
 * Ownership rules, which every function below respects:
 *
 * - A page's owner is `page->heap`. Only the owning thread changes it away
 *   from itself (abandon at thread exit, return to the depot), and a thread can
 *   only make itself the owner of a page that has none (compare-and-swap from
 *   NULL, or under the depot lock for a page taken from the free lists). So a
 *   thread that reads `page->heap == my_heap` knows the answer cannot change
 *   under it, which is what makes the lock-free free path correct.
 * - Fields marked (owner) are read and written by the owner only. Fields marked
 *   (depot) are protected by the depot lock. `xfree` is the one field any
 *   thread writes: an atomic LIFO of blocks freed by non-owners.
 * - A page with live blocks never leaves its segment's "used" state, so a
 *   thread freeing a live block may always read its page descriptor.
 * - Delayed free (how the owner learns that a full page got blocks back
 *   without walking its full pages): the two low bits of `xfree` hold a state,
 *   changed only by compare-and-swap on the whole word, so a state change and
 *   a push are ordered against each other.
 *     NONE:  a non-owner pushes its block on `xfree`.
 *     WATCH: set by the owner (only while it owns the page and `xfree` holds no
 *            block) when it moves the page to its full list. The first
 *            non-owner to free into it swaps WATCH for BUSY instead of
 *            pushing, pushes its block on the owner heap's `xblocks` list, then
 *            clears BUSY to NONE. So a full page is found again through
 *            `xblocks` (the block still counts in `used` until the owner frees
 *            it from there, so the page cannot become empty before).
 *     BUSY:  a non-owner holds a lease on the owner heap: until it clears
 *            BUSY, the owner neither gives the page away (depot return,
 *            abandon) nor tears the heap down, nor sets WATCH; it waits
 *            (tl_page_unwatch), which lasts a few instructions of the freer.
 *   Hence the rule: an owner clears WATCH (and waits out BUSY) before a page
 *   leaves its heap, and a heap is freed only after every page it owned was
 *   cleared, so a freer that won WATCH always finds `page->heap` alive. The
 *   one exception is a child of fork, where the freer holding BUSY may not
 *   exist: there BUSY is cleared without waiting (its block at worst leaks).
 * - Lazy purge of free blocks (pool.c): only the owner reads or writes the
 *   contents of free blocks on its pages' `free` lists, so only the owner
 *   marks them (second word) and gives their pages after the first 4 KiB back
 *   to the OS; blocks on `xfree` or `xblocks` are left alone until collected.
 * - Pages that another thread emptied are given back by their owner when it
 *   frees the blocks of `xblocks` on its refill path: a page that becomes
 *   empty there goes to the depot unless the class's available pages span at
 *   most TL_KEEP_AVAIL_BYTES (pool.c). A thread that allocates and never frees
 *   thus returns the pages its consumers emptied at its next refill.
 */
#ifndef TLALLOC_POOL_INTERNAL_H
#define TLALLOC_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "platform/os.h"
#include "tlalloc/pool.h"

/* Segments: 4 MiB, aligned to 4 MiB, so masking a block address finds them. */
#define TL_SEG_SHIFT 22u
#define TL_SEG_SIZE ((size_t)1 << TL_SEG_SHIFT)
#define TL_SEG_MASK (TL_SEG_SIZE - 1)

/* Page kinds: pages of one size per segment. */
enum {
    TL_KIND_SMALL = 0,  /* 64 KiB pages, classes up to 8 KiB (>= 8 blocks a page) */
    TL_KIND_MEDIUM = 1, /* 512 KiB pages, classes up to 64 KiB */
    TL_KIND_LARGE = 2,  /* one page per segment, classes up to 1 MiB */
    TL_KIND_HUGE = 3,   /* one block mapped on its own (not a size class) */
    TL_NUM_PAGE_KINDS = 3
};
#define TL_SMALL_PAGE_SHIFT 16u
#define TL_MEDIUM_PAGE_SHIFT 19u
#define TL_LAST_SMALL_CLASS 39u  /* 8 KiB */
#define TL_LAST_MEDIUM_CLASS 55u /* 64 KiB */

/* Requests above this many bytes are large blocks (pool_large.c), not size
 * classes (why: docs/pool.md, "Size classes"). */
#define TL_CLASS_MAX TL_POOL_MAX_SMALL

/* Free blocks of at least this many bytes (classes whose sizes are multiples
 * of 4 KiB) are given back to the OS lazily by their owner, except their first
 * 4 KiB, which holds the free-list link and the purge mark (pool.c). */
#define TL_PURGE_MIN_BLOCK ((uint32_t)16 << 10)

/* Fresh pages are carved into free lists this many bytes at a time (at least
 * one block), so that untouched memory stays untouched (not resident). */
#define TL_EXTEND_BYTES 4096u

typedef struct tl_block {
    struct tl_block *next;
} tl_block;

struct tl_heap;

/* The thread's large cache (pool_large.c): slots, and the mapping bytes it
 * holds at most (each block's mapping at most this too). */
#define TL_LCACHE_SLOTS 4u
#define TL_LCACHE_BYTES ((size_t)1 << 20)

/* Page descriptor: 128 bytes, the owner's hot fields in the first cache line,
 * the field other threads write (xfree) in the second. */
typedef struct tl_page {
    tl_block *free;                /* (owner) blocks ready to hand out */
    uint32_t used;                 /* (owner) blocks out, incl. uncollected xfree ones */
    uint32_t block_size;           /* (owner) class size */
    _Atomic(struct tl_heap *) heap; /* owner; NULL: abandoned or in the depot */
    uint8_t in_full;               /* (owner) on the heap's full list */
    uint8_t cls;                   /* (owner) size class */
    uint8_t kind;                  /* page kind, fixed at segment creation */
    uint8_t in_depot;              /* (depot) on a depot free list */
    uint32_t capacity;             /* (owner) blocks that fit */
    uint32_t extended;             /* (owner) blocks carved so far */
    char *start;                   /* first block, 4 KiB aligned; fixed */
    struct tl_page *next, *prev;   /* heap queue (owner) or depot free list (depot) */
    /* --- second cache line --- */
    _Alignas(64) _Atomic uintptr_t xfree; /* blocks freed by other threads | TL_X_* state */
    struct tl_page *anext, *aprev; /* (depot) abandoned list of its class */
    size_t bytes;                  /* usable bytes of the page area; fixed */
    size_t touched;                /* (depot) bytes possibly resident while free; the
                                    * owner reads it (unchanged while owned) */
    uint8_t in_abandoned;          /* (depot) on an abandoned list */
    uint8_t purging;               /* (depot) free, being given back (tl_depot_unlock) */
    uint8_t eager;                 /* (depot) given back by the eager bound, at freed_ms */
    _Atomic uint64_t *dbg_live;    /* debug builds: one bit per block, set while out */
    uint64_t freed_ms;             /* (depot) when it went on a dirty list (coarse ms) */
} tl_page;
_Static_assert(sizeof(tl_page) == 128, "a page descriptor is two cache lines");

/* States in the low bits of tl_page.xfree (blocks are 8-byte aligned). */
#define TL_X_NONE ((uintptr_t)0)
#define TL_X_WATCH ((uintptr_t)1)
#define TL_X_BUSY ((uintptr_t)2)
#define TL_X_MASK ((uintptr_t)3)

typedef struct tl_page_queue {
    tl_page *head, *tail;
    size_t count;
} tl_page_queue;

/* A segment header sits at the start of its segment (rounded up to 4 KiB). */
typedef struct tl_segment {
    tl_os_region region;
    uint8_t kind;
    uint8_t page_shift;
    uint32_t num_pages;            /* pages (each described by its first slot) */
    uint32_t used_pages;           /* (depot) pages not on a free list */
    size_t huge_offset;            /* huge: offset of the block from the segment */
    struct tl_segment *next, *prev; /* (depot) list of all segments, or huge cache */
    _Atomic uint64_t *dbg;         /* debug builds: bitmaps of every page */
    _Atomic int dbg_huge_live;     /* debug builds: huge block is out */
    /* Huge segments in the large cache (pool_large.c, large lock): next/prev
     * above link its size bin, these its age list. */
    struct tl_segment *lru_next, *lru_prev;
    uint64_t cached_ms;            /* when freed (dirty) or purged */
    uint8_t cache_state;           /* TL_LARGE_DIRTY, _BUSY (being purged), _PURGED */
    uint8_t thp;                   /* advised MADV_HUGEPAGE */
    /* TL_NUM_SLOTS descriptors follow (tl_seg_pages), then the debug bitmaps. */
} tl_segment;

/* Counters of one heap: written by the owner only (TL_COUNTER_ADD), read by the
 * statistics from any thread. */
typedef struct tl_heap_counters {
    _Atomic uint64_t num_allocations;
    _Atomic uint64_t alloc_bytes;
    _Atomic uint64_t num_frees;
    _Atomic uint64_t free_bytes;
    _Atomic uint64_t num_cross_thread_frees;
    _Atomic uint64_t num_cache_misses;
    _Atomic uint64_t num_depot_locks;
    _Atomic uint64_t num_reclaimed_pages;
    _Atomic uint64_t num_refills;      /* calls of the refill (tl_heap_find_page) */
    _Atomic uint64_t num_refill_pages; /* pages the refills looked at */
    _Atomic uint64_t num_large_allocations; /* large blocks handed out */
    _Atomic uint64_t num_large_reuses;      /* of which from the thread's large cache */
} tl_heap_counters;
#define TL_NUM_HEAP_COUNTERS (sizeof(tl_heap_counters) / sizeof(uint64_t))

enum {
    TL_HEAP_THREAD = 0, /* a thread's cache */
    TL_HEAP_GLOBAL = 1, /* the one locked heap used when caches are off */
    TL_HEAP_EMPTY = 2,  /* sentinel: this thread has no cache yet */
    TL_HEAP_DEAD = 3,   /* sentinel: this thread's cache was torn down at exit */
    TL_HEAP_HUGE = 4,   /* marker owner of huge blocks' descriptors */
    TL_HEAP_COLLECT = 5, /* marker owner while tl_pool_collect inspects a page */
    TL_HEAP_REDIRECT = 6 /* marker owner of a slot that is not the start of its page */
};

typedef struct tl_heap {
    /* Fast path: current page of each class (never NULL: tl_page_empty). */
    tl_page *cur[TL_POOL_NUM_CLASSES];
    tl_heap_counters c;
    int kind;
    int64_t flushed_in_use;        /* (owner) in-use delta already folded into the peak */
    tl_page_queue avail[TL_POOL_NUM_CLASSES]; /* pages with free or uncarved blocks */
    tl_page_queue full[TL_POOL_NUM_CLASSES];  /* pages found full */
    /* Blocks freed by other threads into pages on the full lists (delayed
     * free, see above): an atomic LIFO any thread pushes on, the owner drains. */
    _Atomic(tl_block *) xblocks;
    /* (owner) the pressure epoch this heap last answered (pool.c's
     * tl_pool_release: a changed epoch makes it give back its empty pages). */
    unsigned pressure_seen;
    /* Lazy purge of free blocks of TL_PURGE_MIN_BLOCK bytes and more (pool.c):
     * slow-path calls counted (owner), and the next time the clock is due. */
    uint32_t purge_calls;
    uint64_t purge_next_ms;
    /* (owner) bytes freed into abandoned pages it did not adopt since its last
     * sweep of them (tl_depot_sweep_abandoned, from pool.c's free path). */
    size_t abandoned_freed;
    struct tl_heap *reg_next, *reg_prev; /* registry (registry lock) */
    /* The thread's large cache (pool_large.c): large blocks of up to
     * TL_LCACHE_BYTES this thread freed, reused without a lock. Only the owner
     * stores a segment in a slot; the owner takes it back, or any thread
     * holding the registry lock steals it (tl_large_steal), each by an atomic
     * exchange, and only the one that got it reads the segment. lcache_size is
     * owner-only; lcache_ms (when put) is read by stealers. */
    _Atomic(struct tl_segment *) lcache[TL_LCACHE_SLOTS];
    _Atomic uint64_t lcache_ms[TL_LCACHE_SLOTS];
    size_t lcache_size[TL_LCACHE_SLOTS];
    uint8_t lcache_missed;  /* (owner) the last look into the cache found no fit */
    uint8_t lcache_probes;  /* (owner) frees since, every 8th kept anyway */
    /* (owner) bit c: class c may have pages on avail[c]/full[c] (set by the
     * refill and by adoption, the only ways in). Teardown visits these classes
     * only, and leaves every other one as it found it: empty, cur[c] the
     * sentinel. So a thread that used one class starts and exits in about
     * 360 instructions of ours, not 3,800 (callgrind, mleak). */
    uint64_t classes;
} tl_heap;
_Static_assert(TL_POOL_NUM_CLASSES <= 64, "tl_heap.classes has a bit per class");

/* Fold the heap's in-use delta into the estimate once it has moved this far,
 * so the peak misses at most this much per thread (plus the page being
 * carved): refills check it, and so do cross-thread frees, which is what keeps
 * the estimate right when some threads only allocate and others only free. */
#define TL_PEAK_SLACK ((int64_t)256 << 10)
/* Fold the heap's in-use delta into the process-wide estimate and the peak (pool.c). */
void tl_heap_flush_peak(tl_heap *h);
static inline void tl_heap_maybe_flush(tl_heap *h) {
    int64_t now = (int64_t)(TL_LOAD(h->c.alloc_bytes) - TL_LOAD(h->c.free_bytes));
    int64_t d = now - h->flushed_in_use;
    if (d >= TL_PEAK_SLACK || d <= -TL_PEAK_SLACK) tl_heap_flush_peak(h);
}

/* ---- shared state (pool.c) ---- */
extern tl_page tl_page_empty;     /* sentinel page: no free blocks, never extended */
extern tl_heap tl_heap_global;    /* the locked heap (caches off) */
extern tl_heap tl_heap_huge;      /* owner marker of huge segments */
extern tl_heap tl_heap_collect;   /* owner marker during tl_pool_collect */
extern tl_heap tl_heap_redirect;  /* owner marker of non-first slots of a page */
extern pthread_mutex_t tl_depot_lock;
extern _Atomic uint64_t tl_orphan_counters[TL_NUM_HEAP_COUNTERS]; /* no-heap threads, huge */

/* The segment of a block: the 4 MiB boundary at or below p - 1. Every block
 * starts after its segment's header, so p - 1 is in the segment too; a large
 * block aligned to 4 MiB or more starts exactly on a boundary, with its header
 * 4 MiB before it (pool_large.c). */
static inline tl_segment *tl_segment_of(const void *p) {
    return (tl_segment *)(((uintptr_t)p - 1) & ~(uintptr_t)TL_SEG_MASK);
}
/* Every segment has one descriptor per 64 KiB slot. For small pages the slot
 * is the page. A medium or large page is described by the descriptor of its
 * first slot; its other slots carry the owner tl_heap_redirect (and all slots
 * of a huge segment tl_heap_huge), which no thread's heap equals, so the free
 * fast path falls through to the slow path for them. The point: the fast path
 * finds a block's descriptor with a mask and a constant shift, without a
 * dependent load of the segment header (which measured about 6% of larson's
 * single-thread throughput). */
#define TL_SLOT_SHIFT 16u
#define TL_NUM_SLOTS ((uint32_t)(TL_SEG_SIZE >> TL_SLOT_SHIFT))
/* The descriptor array follows the header's fixed part, then the debug bitmaps. */
#define TL_SEG_FIXED ((sizeof(tl_segment) + 127) & ~(size_t)127)
#define TL_SEG_DESC_END (TL_SEG_FIXED + TL_NUM_SLOTS * sizeof(tl_page))
static inline tl_page *tl_seg_pages(const tl_segment *s) {
    return (tl_page *)((uintptr_t)s + TL_SEG_FIXED);
}
static inline tl_page *tl_slot_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    return tl_seg_pages((const tl_segment *)(a & ~(uintptr_t)TL_SEG_MASK)) +
           ((a & TL_SEG_MASK) >> TL_SLOT_SHIFT);
}
/* The descriptor of the page holding p (reads the segment header). */
static inline tl_page *tl_page_of(tl_segment *s, const void *p) {
    size_t i = ((uintptr_t)p - (uintptr_t)s) >> s->page_shift;
    return tl_seg_pages(s) + (i << (s->page_shift - TL_SLOT_SHIFT));
}
/* Descriptor of page i of segment s. */
static inline tl_page *tl_segment_page(tl_segment *s, uint32_t i) {
    return tl_seg_pages(s) + ((size_t)i << (s->page_shift - TL_SLOT_SHIFT));
}
static inline int tl_class_kind(unsigned c) {
    return c <= TL_LAST_SMALL_CLASS ? TL_KIND_SMALL
           : c <= TL_LAST_MEDIUM_CLASS ? TL_KIND_MEDIUM
                                       : TL_KIND_LARGE;
}

/* Count on heap h (owner or lock holder) or, for h == NULL, on the orphan
 * counters (atomic add: only threads without a cache and large blocks). */
#define TL_HEAP_COUNT(h, field, n)                                                   \
    do {                                                                             \
        if (h) TL_COUNTER_ADD((h)->c.field, (n));                                    \
        else atomic_fetch_add_explicit(&tl_orphan_counters[offsetof(tl_heap_counters, field) / 8], \
                                       (n), memory_order_relaxed);                   \
    } while (0)

/* ---- queue helpers (pool.c) ---- */
void tl_queue_push_front(tl_page_queue *q, tl_page *pg);
void tl_queue_push_back(tl_page_queue *q, tl_page *pg);
void tl_queue_remove(tl_page_queue *q, tl_page *pg);

/* ---- pages (pool.c) ---- */
/* Move the blocks of pg->xfree onto pg->free (owner). Returns blocks moved. */
uint32_t tl_page_collect(tl_page *pg);
/* Clear WATCH (waiting out BUSY) before pg leaves its owner; `wait` 0 only in
 * a child of fork, where a BUSY freer may not exist. */
void tl_page_unwatch(tl_page *pg, int wait);
/* Set WATCH on a page moving to its owner's full list. Returns 0 when blocks
 * arrived on xfree meanwhile (collect them: the page is not full). */
int tl_page_watch(tl_page *pg);
/* Free the blocks of h->xblocks into their pages (owner, or the global heap
 * under the depot lock); pages that become empty go back to the depot. */
void tl_heap_drain(tl_heap *h);
/* Test hook: refills and pages they looked at, summed over live heaps and
 * exited ones. */
void tl_pool_refill_counters(uint64_t *refills, uint64_t *pages);
/* Add d bytes to the process-wide in-use estimate and raise the peak. */
void tl_peak_add(int64_t d);

/* ---- depot (pool_depot.c): every function takes the depot lock unless its
 * name ends in _locked. ---- */
/* A page for class c owned by h: an abandoned page of that class, a free page,
 * or a page of a new segment. NULL with errno = ENOMEM if the OS refuses. */
tl_page *tl_depot_take_locked(tl_heap *h, unsigned c);
tl_page *tl_depot_take(tl_heap *h, unsigned c); /* takes the lock itself */
/* Releases tl_depot_lock; every path but fork's releases it so. */
void tl_depot_unlock(void);
void tl_depot_fork_child(void);

/* ---- fork (pool_fork.c registers these in platform/fork.c's order) ---- */
/* Slot TL_FORK_POOL (pool.c): the heap registry lock, then the depot lock. */
void tl_pool_fork_lock(void);
void tl_pool_fork_unlock(void);
void tl_pool_fork_child(void);
/* Slot TL_FORK_POOL_LARGE (pool_large.c): the large-block cache lock. */
void tl_large_fork_lock(void);
void tl_large_fork_unlock(void);
void tl_large_fork_child(void);
/* Register both slots (at load time, and on a thread's first heap). */
void tl_pool_fork_register(void);
/* Tests: pages whose purge is under way (flagged, on no list), and a function
 * that a purge calls after it released the lock, before its system calls. */
size_t tl_depot_purging_pages(void);
extern _Atomic(void (*)(void)) tl_depot_purge_hook;
/* An empty page (used == 0, not on any heap queue) goes back to the depot. */
void tl_depot_return_locked(tl_page *pg);
/* Hand over a page with live blocks (owner, at thread exit). */
void tl_depot_abandon_locked(tl_page *pg);
/* ---- large blocks (pool_large.c; the large lock, never nested with others) ---- */
/* h: the calling thread's heap (its large cache is used when h is a thread's
 * heap), or any other heap (then only the shared cache). */
void *tl_huge_alloc(tl_heap *h, size_t size, size_t align, int zero);
void tl_huge_free(tl_heap *h, tl_segment *s);
/* Move every block of h's large cache to the shared cache (h's thread is
 * exiting or gone, or a request of its fit none of them); 1 if it held any.
 * Takes the large lock only then. */
int tl_large_heap_flush(tl_heap *h);
/* Large-cache statistics summed over heaps (pool.c): allocations and reuses. */
void tl_pool_large_counter_sums(uint64_t *allocations, uint64_t *reuses);
/* Steal the blocks put before older_than_ms from every heap's large cache
 * (pool.c: under the registry lock, tl_large_steal_heap for each heap);
 * chained by `next`; *next_ms lowered to the earliest put time of those left. */
tl_segment *tl_pool_large_steal_all(uint64_t older_than_ms, uint64_t *next_ms);
tl_segment *tl_large_steal_heap(tl_heap *h, uint64_t older_than_ms, tl_segment *out, uint64_t *next_ms);
/* Resize the large block of s in place or by moving its mapping (no copy).
 * Returns the block's new address, or NULL (block unchanged: copy instead). */
void *tl_huge_realloc(tl_segment *s, size_t size);
static inline size_t tl_huge_usable(const tl_segment *s) { return s->region.size - s->huge_offset; }
/* Mapping bytes of large blocks (live and cached) and resident cached bytes. */
uint64_t tl_large_reserved(void);
uint64_t tl_large_resident_cached(void);
int tl_large_set_options(size_t cache_bytes, unsigned delay_ms);
void tl_large_get_options(size_t *cache_bytes, unsigned *delay_ms);
/* The purge delay (ms), shared by the large cache and the class blocks. */
unsigned tl_large_purge_delay(void);
void tl_large_collect(int release_all);
/* Lazy purge: the earliest time (coarse ms) something in the cache is due,
 * UINT64_MAX when nothing is. The check costs one relaxed load. */
extern _Atomic uint64_t tl_large_due_ms;
void tl_large_tick(void);
static inline void tl_large_maybe_tick(void) {
    if (TL_UNLIKELY(atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed) != UINT64_MAX))
        tl_large_tick();
}
/* The same from the class-size allocation paths, which may run millions of
 * times a second: while something is cached, only every 64th call of a thread
 * reads the clock (a load, a thread-local increment and a test otherwise). */
#if defined(__GNUC__) || defined(__clang__)
extern _Thread_local unsigned tl_large_tick_calls __attribute__((tls_model("initial-exec")));
#else
extern _Thread_local unsigned tl_large_tick_calls;
#endif
static inline void tl_large_maybe_tick_sampled(void) {
    if (TL_UNLIKELY(atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed) != UINT64_MAX) &&
        (++tl_large_tick_calls & 63u) == 0)
        tl_large_tick();
}
/* Free class blocks of TL_PURGE_MIN_BLOCK bytes or more given back, over time. */
extern _Atomic uint64_t tl_num_block_purges;
/* Bytes mapped now, free resident bytes held, segments mapped. */
void tl_depot_usage(uint64_t *reserved, uint64_t *retained, uint64_t *segments,
                    uint64_t *abandoned);
void tl_depot_set_retain(size_t bytes);
/* Lazy purge of the depot (pool_depot.c): the earliest time (coarse ms) free
 * pages beyond the retain limit, or a wholly free segment, may be due to be
 * given back; UINT64_MAX when none. tl_depot_tick(now) does what is due when
 * now has reached it (takes the depot lock then). */
extern _Atomic uint64_t tl_depot_due_ms;
void tl_depot_tick(uint64_t now);
static inline void tl_depot_maybe_tick(uint64_t now) {
    if (TL_UNLIKELY(now >= atomic_load_explicit(&tl_depot_due_ms, memory_order_relaxed)))
        tl_depot_tick(now);
}
size_t tl_depot_get_retain(void);
void tl_depot_collect(int release_all);
/* Look at up to TL_SWEEP_PAGES abandoned pages of class c (oldest first):
 * collect their foreign frees, give the empty ones back to the depot, move
 * the others to the back of the list. Takes the depot lock; h counts it. */
#define TL_SWEEP_PAGES 64
void tl_depot_sweep_abandoned(tl_heap *h, unsigned c);

/* ---- memory pressure (pool.c) ---- */
/* Give back to the OS what the pool holds unused and can reach without other
 * threads' cooperation (the caller's empty pages and free blocks' pages,
 * every cached large block, the empty abandoned pages, the depot's free
 * pages and segments), and tell the other heaps to give back theirs at their
 * next slow-path tick. Called when the OS refused memory, before one retry;
 * the caller holds no pool lock. Registered as the OS layer's release hook
 * (tl_os_set_release_hook) at the pool's first use. */
void tl_pool_release(void);

/* Tests: times the background purge thread looked at what is due. */
uint64_t tl_pool_purge_thread_wakes(void);

/* ---- first use (pool.c calls it once, before the first heap exists) ---- */
/* A weak no-op in pool.c; libtlalloc.so's preload.c reads its environment
 * settings here. Must not allocate. */
void tl_pool_first_use(void);

/* ---- debug checks (compiled out unless TLALLOC_DEBUG) ---- */
#ifdef TLALLOC_DEBUG
void tl_dbg_on_alloc(tl_page *pg, void *p);
void tl_dbg_on_free(tl_page *pg, void *p);
#define TL_DBG_ON_ALLOC(pg, p) tl_dbg_on_alloc((pg), (p))
#define TL_DBG_ON_FREE(pg, p) tl_dbg_on_free((pg), (p))
#else
#define TL_DBG_ON_ALLOC(pg, p) ((void)0)
#define TL_DBG_ON_FREE(pg, p) ((void)0)
#endif

#endif
