/* pool.c: the pool's thread caches (heaps) and its malloc-like API.
 *
 * Every thread that allocates gets a heap: for each size class, a queue of
 * pages it owns, the first of which is the "current" page the fast path pops
 * from. The depot (pool_depot.c) hands out and takes back pages under a lock;
 * nothing in this file takes that lock except the refill, the return of an
 * empty page, thread exit, and the whole of the cache-off mode.
 *
 * The design: docs/pool.md. See pool_internal.h for the ownership rules the
 * code below relies on.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool_internal.h"

/* ---- size classes ----------------------------------------------------------- */

/* Classes up to 1 KiB: 8-byte steps to 64, then four per doubling. From 1 KiB
 * to 8 KiB (64 KiB pages): the largest multiple of 16 that n blocks fill a page
 * with, for n = 64, 56, 48, 42, 36, 32, 28, 25, 22, 20, 18, 16, 15, ..., 8: a
 * step of 6-16% instead of four per doubling's 12-25%, and a page holds no
 * tail a block of the next smaller class would not have left. Measured by
 * `tlalloc bench footprint`: SQLite's page cache asks for 4,368 B (4 KiB pages
 * plus their header), 15,836 of them live at its peak; as 5,120 B blocks that
 * was 12 MiB (15%) above glibc's peak RSS, as 4,368 B blocks (15 a page) none.
 * From 8 KiB to 16 KiB eight classes per doubling, then four to 64 KiB
 * (multiples of 4 KiB from 16 KiB: free blocks' pages are purged there). The
 * entries above TL_POOL_MAX_SMALL are unused. */
static const uint32_t tl_class_sizes[TL_POOL_NUM_CLASSES] = {
    8,      16,     32,     48,     64,     80,     96,     112,    128,    160,    192,
    224,    256,    320,    384,    448,    512,    640,    768,    896,    1024,   1168,
    1360,   1552,   1808,   2048,   2336,   2608,   2976,   3264,   3632,   4096,   4368,
    4672,   5040,   5456,   5952,   6544,   7280,   8192,   9216,   10240,  11264,  12288,
    13312,  14336,  15360,  16384,  20480,  24576,  28672,  32768,  40960,  49152,  57344,
    65536,  81920,  98304,  114688, 131072, 163840};

/* Class of sizes up to 1024, indexed by (size + 7) / 8. */
static const uint8_t tl_small_class[129] = {
    0,  0,  1,  2,  2,  3,  3,  4,  4,  5,  5,  6,  6,  7,  7,  8,  8,  9,  9,  9,  9,  10,
    10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14,
    14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17,
    17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 18, 18, 18, 18, 18, 18, 18,
    18, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19,
    19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20};

/* From 1 KiB to 8 KiB: the class of a request that n blocks of a 64 KiB page
 * still fit (n = 65536 / its size rounded up to 16, 8 to 63): the class of the
 * largest listed count at most n. */
static const uint8_t tl_fill_class[64] = {
    [8] = 39,  [9] = 38,  [10] = 37, [11] = 36, [12] = 35, [13] = 34, [14] = 33, [15] = 32,
    [16] = 31, [17] = 31, [18] = 30, [19] = 30, [20] = 29, [21] = 29, [22] = 28, [23] = 28,
    [24] = 28, [25] = 27, [26] = 27, [27] = 27, [28] = 26, [29] = 26, [30] = 26, [31] = 26,
    [32] = 25, [33] = 25, [34] = 25, [35] = 25, [36] = 24, [37] = 24, [38] = 24, [39] = 24,
    [40] = 24, [41] = 24, [42] = 23, [43] = 23, [44] = 23, [45] = 23, [46] = 23, [47] = 23,
    [48] = 22, [49] = 22, [50] = 22, [51] = 22, [52] = 22, [53] = 22, [54] = 22, [55] = 22,
    [56] = 21, [57] = 21, [58] = 21, [59] = 21, [60] = 21, [61] = 21, [62] = 21, [63] = 21};

/* Class of 1 <= size <= TL_POOL_MAX_SMALL (see the table above). Above 1 KiB
 * this is the slow path's: a division or a count of leading zeros. */
static inline unsigned tl_size_class(size_t size) {
    if (size <= 1024) return tl_small_class[(size + 7) >> 3];
    if (size <= 8192) return tl_fill_class[65536u / (unsigned)((size + 15) & ~(size_t)15)];
    unsigned w = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
    if (size <= 16384) return 40u + (unsigned)((size - 1) >> (w - 3u)) - 8u;
    return 48u + (w - 14u) * 4u + (unsigned)((size - 1) >> (w - 2u)) - 4u;
}

size_t tl_pool_class_size(unsigned c) { return c < TL_POOL_NUM_CLASSES ? tl_class_sizes[c] : 0; }

size_t tl_pool_good_size(size_t size) {
    if (size <= TL_CLASS_MAX) return tl_class_sizes[tl_size_class(size ? size : 1)];
    size_t page = tl_os_page_size();
    return size > SIZE_MAX - page ? size : (size + page - 1) & ~(page - 1);
}

/* ---- shared state ---------------------------------------------------------- */

#define TL_ALL_EMPTY {[0 ... TL_POOL_NUM_CLASSES - 1] = &tl_page_empty}

tl_page tl_page_empty; /* free == NULL, capacity == extended == 0 */
tl_heap tl_heap_global = {.cur = TL_ALL_EMPTY, .kind = TL_HEAP_GLOBAL};
tl_heap tl_heap_huge = {.cur = TL_ALL_EMPTY, .kind = TL_HEAP_HUGE};
tl_heap tl_heap_collect = {.cur = TL_ALL_EMPTY, .kind = TL_HEAP_COLLECT};
tl_heap tl_heap_redirect = {.cur = TL_ALL_EMPTY, .kind = TL_HEAP_REDIRECT};
static tl_heap tl_heap_empty = {.cur = TL_ALL_EMPTY, .kind = TL_HEAP_EMPTY};
static tl_heap tl_heap_dead = {.cur = TL_ALL_EMPTY, .kind = TL_HEAP_DEAD};

pthread_mutex_t tl_depot_lock = PTHREAD_MUTEX_INITIALIZER;
_Atomic uint64_t tl_orphan_counters[TL_NUM_HEAP_COUNTERS];

/* The calling thread's heap. Initial-exec TLS (internal.h): one load off the
 * thread pointer, no call, also inside the Python extension (8 bytes of
 * static TLS). */
static _Thread_local tl_heap *tl_tls_heap TL_TLS_MODEL = &tl_heap_empty;

static _Atomic int tl_cache_enabled = 1;
/* Raised by tl_pool_release (memory pressure, below); heaps compare it with
 * their pressure_seen. */
static _Atomic unsigned tl_pressure_epoch;

/* Registry of live heaps, for statistics. */
static pthread_mutex_t tl_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_heap *tl_registry_head;
static uint64_t tl_num_heaps, tl_num_threads;
static uint64_t tl_dead_counters[TL_NUM_HEAP_COUNTERS]; /* heaps torn down (registry lock) */

/* Peak tracking: heaps fold their in-use delta in at refills and returns. */
static _Atomic int64_t tl_in_use_estimate;
static _Atomic uint64_t tl_peak_bytes;

static pthread_once_t tl_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t tl_heap_key;
static int tl_heap_key_ok; /* pthread_key_create succeeded (written once, under tl_key_once) */

/* Heap descriptors come from the pool's own mappings, never from malloc: when
 * the pool is the process's malloc (libtlalloc.so) a calloc here would come
 * back into the pool before the thread has a heap. Freed descriptors go on a
 * free list for the next thread (registry lock, which the fork handlers hold
 * across fork, so a child finds the list whole). A process keeps as many
 * descriptors as it ever had live threads at once, plus those tl_forked_heaps
 * keeps. */
#define TL_HEAP_META_CHUNK ((size_t)64 << 10)
static tl_heap *tl_heap_meta_free_list; /* linked through reg_next (registry lock) */
static char *tl_heap_meta_next, *tl_heap_meta_end; /* unused part of the last chunk */

static void tl_pool_first_use_once(void);

/* ---- page queues ------------------------------------------------------------- */

void tl_queue_push_front(tl_page_queue *q, tl_page *pg) {
    pg->prev = NULL;
    pg->next = q->head;
    if (q->head) q->head->prev = pg;
    else q->tail = pg;
    q->head = pg;
    q->count++;
}

void tl_queue_push_back(tl_page_queue *q, tl_page *pg) {
    pg->next = NULL;
    pg->prev = q->tail;
    if (q->tail) q->tail->next = pg;
    else q->head = pg;
    q->tail = pg;
    q->count++;
}

void tl_queue_remove(tl_page_queue *q, tl_page *pg) {
    if (pg->prev) pg->prev->next = pg->next;
    else q->head = pg->next;
    if (pg->next) pg->next->prev = pg->prev;
    else q->tail = pg->prev;
    pg->next = pg->prev = NULL;
    tl_assert(q->count > 0);
    q->count--;
}

/* The fast path reads cur[c]; keep it the head of the available queue. */
static inline void tl_heap_update_cur(tl_heap *h, unsigned c) {
    h->cur[c] = h->avail[c].head ? h->avail[c].head : &tl_page_empty;
}

/* ---- pages --------------------------------------------------------------------- */

uint32_t tl_page_collect(tl_page *pg) {
    uintptr_t x = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
    if ((x & ~TL_X_MASK) == 0) return 0;
    /* Take the list and keep the state bits, which a freer may change meanwhile.
     * Only the owner takes blocks, so the list cannot become empty here. */
    while (!atomic_compare_exchange_weak_explicit(&pg->xfree, &x, x & TL_X_MASK,
                                                  memory_order_acquire, memory_order_relaxed)) {
    }
    tl_block *list = (tl_block *)(x & ~TL_X_MASK);
    tl_assert(list != NULL);
    uint32_t n = 1;
    tl_block *tail = list;
    while (tail->next) {
        tail = tail->next;
        n++;
    }
    tail->next = pg->free;
    pg->free = list;
    tl_assert(pg->used >= n);
    pg->used -= n;
    return n;
}

/* Delayed free, the owner's side (rules: pool_internal.h). */
int tl_page_watch(tl_page *pg) {
    uintptr_t x = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
    for (;;) {
        if (x & ~TL_X_MASK) return 0; /* blocks came back: not full after all */
        if (x == TL_X_WATCH) return 1;
        if (x == TL_X_BUSY) { /* a freer's block for this page is on its way */
            sched_yield();
            x = atomic_load_explicit(&pg->xfree, memory_order_relaxed);
            continue;
        }
        /* Release: a freer that wins WATCH reads the owner fields set before. */
        if (atomic_compare_exchange_weak_explicit(&pg->xfree, &x, TL_X_WATCH, memory_order_release,
                                                  memory_order_relaxed))
            return 1;
    }
}

void tl_page_unwatch(tl_page *pg, int wait) {
    uintptr_t x = atomic_load_explicit(&pg->xfree, memory_order_acquire);
    for (;;) {
        uintptr_t st = x & TL_X_MASK;
        if (st == TL_X_NONE) return;
        if (st == TL_X_BUSY && wait) {
            /* Acquire pairs with the freer's release when it clears BUSY: its
             * push on the heap's xblocks list is complete after this. */
            sched_yield();
            x = atomic_load_explicit(&pg->xfree, memory_order_acquire);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&pg->xfree, &x, x & ~TL_X_MASK,
                                                  memory_order_acq_rel, memory_order_acquire))
            return;
    }
}

/* Delayed free, the freer's side: we swapped the page's WATCH for BUSY, so its
 * owner heap stays alive and keeps the page until we clear BUSY. */
TL_NOINLINE static void tl_page_push_delayed(tl_page *pg, tl_block *b) {
    tl_heap *owner = atomic_load_explicit(&pg->heap, memory_order_acquire);
    tl_block *head = atomic_load_explicit(&owner->xblocks, memory_order_relaxed);
    do {
        b->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&owner->xblocks, &head, b, memory_order_release,
                                                    memory_order_relaxed));
    atomic_fetch_and_explicit(&pg->xfree, ~TL_X_BUSY, memory_order_release);
}

static void tl_heap_return_pages(tl_heap *h, tl_page *list);

/* A page that other threads emptied stays with its owner while the class's
 * available pages span at most this many bytes (8 small pages, one medium or
 * large page): a producer that keeps allocating reuses them without the depot
 * lock and without faulting in pages the depot gave back to the OS. Measured
 * with `pool_xthread pool 16 2` (bench/c, 2 loaded cores): keeping none cost
 * about 1.6x the CPU per operation of keeping everything, for 100 MB peak RSS
 * instead of 175 MB; 512 KiB cost about 1.3x for 110-120 MB. */
/* Bytes a heap frees into abandoned pages it does not adopt between two
 * sweeps of them (tl_pool_free_slow). */
#define TL_SWEEP_BYTES ((size_t)64 << 10)

#ifndef TL_KEEP_AVAIL_BYTES
#define TL_KEEP_AVAIL_BYTES ((size_t)512 << 10)
#endif

/* Free the blocks of h->xblocks into their pages: each came from a page on a
 * full list, which moves back to the available queue (and gets its other
 * foreign frees collected). Pages that become empty go back to the depot,
 * unless the class's available pages span at most TL_KEEP_AVAIL_BYTES (and
 * never the class's only available page). The cost is one
 * iteration per block, and each block is the first foreign free into its page
 * since the page went full, so it is paid for by the frees. */
void tl_heap_drain(tl_heap *h) {
    if (atomic_load_explicit(&h->xblocks, memory_order_relaxed) == NULL) return;
    tl_block *b = atomic_exchange_explicit(&h->xblocks, NULL, memory_order_acquire);
    tl_page *ret = NULL;
    uint64_t looked = 0;
    while (b) {
        tl_block *next = b->next;
        tl_page *pg = tl_page_of(tl_segment_of(b), b);
        unsigned c = pg->cls;
        tl_assert(atomic_load_explicit(&pg->heap, memory_order_relaxed) == h && pg->used > 0);
        b->next = pg->free; /* counted as freed by the thread that freed it */
        pg->free = b;
        pg->used--;
        looked++;
        if (pg->in_full) {
            tl_queue_remove(&h->full[c], pg);
            pg->in_full = 0;
            tl_queue_push_back(&h->avail[c], pg);
        }
        tl_page_collect(pg);
        /* A page with a block further down this list still counts it in
         * `used`, so a page is put on `ret` at most once. */
        if (pg->used == 0 && h->avail[c].count > 1 &&
            h->avail[c].count * pg->bytes > TL_KEEP_AVAIL_BYTES) {
            tl_queue_remove(&h->avail[c], pg);
            pg->next = ret;
            ret = pg;
        }
        tl_heap_update_cur(h, c);
        b = next;
    }
    TL_COUNTER_ADD(h->c.num_refill_pages, looked);
    if (ret) tl_heap_return_pages(h, ret);
}

/* Carve up to TL_EXTEND_BYTES of never-used blocks onto the free list. */
static void tl_page_extend(tl_page *pg) {
    tl_assert(pg->free == NULL && pg->extended < pg->capacity);
    uint32_t bs = pg->block_size;
    uint32_t n = TL_EXTEND_BYTES / bs;
    if (n == 0) n = 1;
    if (n > pg->capacity - pg->extended) n = pg->capacity - pg->extended;
    char *first = pg->start + (size_t)pg->extended * bs;
    char *p = first;
    for (uint32_t i = 1; i < n; i++, p += bs) ((tl_block *)p)->next = (tl_block *)(p + bs);
    ((tl_block *)p)->next = NULL;
    pg->free = (tl_block *)first;
    pg->extended += n;
}

/* ---- statistics helpers ------------------------------------------------------- */

void tl_heap_flush_peak(tl_heap *h) {
    int64_t now = (int64_t)(TL_LOAD(h->c.alloc_bytes) - TL_LOAD(h->c.free_bytes));
    int64_t d = now - h->flushed_in_use;
    if (d == 0) return;
    h->flushed_in_use = now;
    tl_peak_add(d);
}

void tl_peak_add(int64_t d) {
    int64_t v = atomic_fetch_add_explicit(&tl_in_use_estimate, d, memory_order_relaxed) + d;
    if (v <= 0) return;
    uint64_t peak = atomic_load_explicit(&tl_peak_bytes, memory_order_relaxed);
    while ((uint64_t)v > peak &&
           !atomic_compare_exchange_weak_explicit(&tl_peak_bytes, &peak, (uint64_t)v,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ---- heaps: creation and thread exit ------------------------------------------- */

static void tl_heap_teardown(tl_heap *h);
static void tl_bg_fork_child(void);
static void tl_bg_fork_prepare(void);
static void tl_bg_fork_parent(void);

/* The background purge thread starts itself (see its section below) at the
 * first allocation slow path after something freed waits for the purge delay.
 * tl_bg_autostart is nonzero only while no purge thread runs and one may
 * start: while it runs (or is off), the check is one relaxed load. */
#if defined(__SANITIZE_THREAD__)
#define TL_BG_DEFAULT 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TL_BG_DEFAULT 0
#endif
#endif
#ifndef TL_BG_DEFAULT
#define TL_BG_DEFAULT 1 /* off under ThreadSanitizer, which cannot start a thread in
                         * a child of a multi-threaded fork */
#endif
/* Whether a child of fork starts the thread itself. Not under AddressSanitizer:
 * its thread registry lock is not reset in a child, so a fork that caught
 * another thread starting or ending a thread leaves it held, and the child's
 * pthread_create waits on it forever (test_fork.c's hammering children hung
 * in it 3 times in 40 runs of 200 forks; a plain glibc child is unaffected).
 * tl_pool_purge_thread(1) in such a child still starts it. */
#if defined(__SANITIZE_ADDRESS__)
#define TL_BG_CHILD_AUTOSTART 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TL_BG_CHILD_AUTOSTART 0
#endif
#endif
#ifndef TL_BG_CHILD_AUTOSTART
#define TL_BG_CHILD_AUTOSTART 1
#endif
static _Atomic int tl_bg_autostart = TL_BG_DEFAULT;
TL_NOINLINE TL_COLD static void tl_bg_autostart_slow(void);
static inline void tl_bg_maybe_autostart(void) {
    if (TL_UNLIKELY(atomic_load_explicit(&tl_bg_autostart, memory_order_relaxed)) &&
        (atomic_load_explicit(&tl_depot_due_ms, memory_order_relaxed) != UINT64_MAX ||
         atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed) != UINT64_MAX))
        tl_bg_autostart_slow();
}

static void tl_heap_key_destructor(void *p) {
    tl_heap *h = p;
    /* Only this thread's own heap. In a child of fork, glibc may hand a new
     * thread the stack of a parent thread that was running its key destructors
     * at the fork, with that thread's key values still set: the value is then
     * a heap already torn down by tl_pool_fork_child (kept, never freed, so
     * reading it here is safe), while this thread's TLS, initialised afresh,
     * does not point to it. */
    if (h != tl_tls_heap) return;
    tl_heap_teardown(h);
    /* Frees after this point (other destructors) find no cache: they take the
     * cross-thread path, and allocations the locked heap. */
    tl_tls_heap = &tl_heap_dead;
}

static void tl_make_key(void) {
    tl_pool_fork_register();
    tl_heap_key_ok = pthread_key_create(&tl_heap_key, tl_heap_key_destructor) == 0;
}

/* Debug builds: every class of h is as a new heap has it (no page queued,
 * cur the sentinel). */
static void tl_heap_assert_empty(const tl_heap *h) {
#ifdef TLALLOC_DEBUG
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
        tl_assert(h->cur[c] == &tl_page_empty);
        tl_assert(!h->avail[c].head && !h->avail[c].tail && h->avail[c].count == 0);
        tl_assert(!h->full[c].head && !h->full[c].tail && h->full[c].count == 0);
    }
#else
    (void)h;
#endif
}

/* A heap descriptor with empty queues, every cur[c] the sentinel and every
 * other field zero (registry lock held). mmap directly: the OS layer calls no
 * malloc for default pages. NULL when the OS refuses. */
_Static_assert(offsetof(tl_heap, cur) < offsetof(tl_heap, c) &&
                   offsetof(tl_heap, c) < offsetof(tl_heap, avail) &&
                   offsetof(tl_heap, avail) < offsetof(tl_heap, full) &&
                   offsetof(tl_heap, full) < offsetof(tl_heap, xblocks),
               "tl_heap_meta_alloc_locked zeroes c..avail and xblocks..end");
static tl_heap *tl_heap_meta_alloc_locked(void) {
    tl_heap *h = tl_heap_meta_free_list;
    if (h) {
        /* Back from teardown, which left cur[] and the queues (3.4 KiB of the
         * 3.7) as a new heap has them: zero the fields around them only. */
        tl_heap_meta_free_list = h->reg_next;
        tl_heap_assert_empty(h);
        memset(&h->c, 0, offsetof(tl_heap, avail) - offsetof(tl_heap, c));
        memset(&h->xblocks, 0, sizeof *h - offsetof(tl_heap, xblocks));
        return h;
    }
    const size_t sz = (sizeof(tl_heap) + 63) & ~(size_t)63;
    if ((size_t)(tl_heap_meta_end - tl_heap_meta_next) < sz) {
        tl_os_region r;
        /* The registry lock is held: no release hook (tl_heap_create retries). */
        if (tl_os_map_norelease(TL_HEAP_META_CHUNK, 64, TL_PAGES_DEFAULT, TL_NUMA_OFF, 0, &r) != 0)
            return NULL;
        tl_heap_meta_next = r.base; /* fresh mapping: zero; the tail of the last chunk is dropped */
        tl_heap_meta_end = (char *)r.base + r.size;
    }
    h = (tl_heap *)tl_heap_meta_next;
    tl_heap_meta_next += sz;
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) h->cur[c] = &tl_page_empty;
    return h;
}

/* Give a torn-down heap's descriptor back for reuse (registry lock held). */
static void tl_heap_meta_free_locked(tl_heap *h) {
    h->reg_next = tl_heap_meta_free_list;
    tl_heap_meta_free_list = h;
}

/* First use of the pool on this thread. Everything the C library may
 * allocate for us here (pthread_once running pthread_atfork, and
 * pthread_setspecific, which callocs a second-level block for keys >= 32)
 * comes back into the pool while tl_pool_bootstrapping is set, and is served
 * by the global heap (tl_heap_resolve). */
TL_NOINLINE TL_COLD static tl_heap *tl_heap_create(void) {
    tl_pool_bootstrapping++;
    pthread_once(&tl_key_once, tl_make_key);
    tl_heap *h = NULL;
    for (int tries = 0; tries < 2 && tl_heap_key_ok && !h; tries++) {
        if (tries) tl_pool_release(); /* the OS refused a descriptor chunk */
        pthread_mutex_lock(&tl_registry_lock);
        h = tl_heap_meta_alloc_locked();
        if (h) {
            h->kind = TL_HEAP_THREAD;
            h->reg_next = tl_registry_head;
            if (tl_registry_head) tl_registry_head->reg_prev = h;
            tl_registry_head = h;
            tl_num_heaps++;
            tl_num_threads++;
            h->pressure_seen = atomic_load_explicit(&tl_pressure_epoch, memory_order_relaxed);
        }
        pthread_mutex_unlock(&tl_registry_lock);
    }
    if (h && pthread_setspecific(tl_heap_key, h) != 0) {
        /* No exit hook: tear down at once rather than leak pages at exit. */
        tl_heap_teardown(h);
        h = NULL;
    }
    if (h) tl_tls_heap = h;
    tl_pool_bootstrapping--;
    return h;
}

/* Give every page back (empty ones) or hand it over (abandon), fold the
 * counters into the totals and unregister the heap; with free_meta, its
 * descriptor goes back for reuse under the same lock (else the caller keeps
 * it: a child of fork).
 * The queues are walked forward through `next` only, never unlinked one by
 * one: after fork, a heap of a thread that was in the middle of a queue
 * operation has links that disagree (a `prev` not yet updated), while the
 * forward chain from the head is always finite and lists each page once
 * (every store of a queue operation goes to memory that may alias the next
 * one's, so the compiler keeps their order). */
static void tl_heap_teardown_unfreed(tl_heap *h, int wait, int free_meta) {
    tl_assert(h->kind == TL_HEAP_THREAD);
    tl_large_heap_flush(h); /* its cached large blocks go to the shared cache */
    /* Only the classes that ever had pages (h->classes); the others are
     * empty and stay so. */
    const uint64_t classes = h->classes;
    /* Clear WATCH on every page (waiting out freers that hold BUSY): after
     * that no thread pushes on h->xblocks or reads h through a page. Then the
     * delayed blocks go back into their pages. (After fork, `wait` is 0: the
     * thread holding BUSY may not exist in the child.) */
    for (uint64_t m = classes; m; m &= m - 1) {
        const unsigned c = (unsigned)__builtin_ctzll(m);
        for (tl_page *pg = h->avail[c].head; pg; pg = pg->next) tl_page_unwatch(pg, wait);
        for (tl_page *pg = h->full[c].head; pg; pg = pg->next) tl_page_unwatch(pg, wait);
    }
    tl_block *b = atomic_exchange_explicit(&h->xblocks, NULL, memory_order_acquire);
    while (b) {
        tl_block *next = b->next;
        tl_page *pg = tl_page_of(tl_segment_of(b), b);
        b->next = pg->free;
        pg->free = b;
        tl_assert(pg->used > 0);
        pg->used--;
        b = next;
    }
    pthread_mutex_lock(&tl_depot_lock);
    TL_COUNTER_ADD(h->c.num_depot_locks, 1);
    for (uint64_t m = classes; m; m &= m - 1) {
        const unsigned c = (unsigned)__builtin_ctzll(m);
        tl_page_queue *qs[2] = {&h->avail[c], &h->full[c]};
        for (int k = 0; k < 2; k++) {
            tl_page *next;
            for (tl_page *pg = qs[k]->head; pg; pg = next) {
                next = pg->next;
                pg->next = pg->prev = NULL;
                pg->in_full = 0;
                tl_page_collect(pg);
                if (pg->used == 0) tl_depot_return_locked(pg);
                else tl_depot_abandon_locked(pg);
            }
            qs[k]->head = qs[k]->tail = NULL;
            qs[k]->count = 0;
        }
        h->cur[c] = &tl_page_empty;
    }
    h->classes = 0;
    tl_heap_assert_empty(h);
    tl_depot_unlock();
    tl_heap_flush_peak(h);
    pthread_mutex_lock(&tl_registry_lock);
    const _Atomic uint64_t *src = (const _Atomic uint64_t *)&h->c;
    for (size_t i = 0; i < TL_NUM_HEAP_COUNTERS; i++) tl_dead_counters[i] += TL_LOAD(src[i]);
    if (h->reg_prev) h->reg_prev->reg_next = h->reg_next;
    else tl_registry_head = h->reg_next;
    if (h->reg_next) h->reg_next->reg_prev = h->reg_prev;
    h->reg_next = h->reg_prev = NULL;
    tl_num_heaps--;
    if (free_meta) tl_heap_meta_free_locked(h); /* same lock: one round trip per exit */
    pthread_mutex_unlock(&tl_registry_lock);
}

static void tl_heap_teardown(tl_heap *h) { tl_heap_teardown_unfreed(h, 1, 1); }

/* ---- fork (lock order and handlers: platform/fork.c) ---------------------------- */

/* The heap registry lock comes before the depot lock (order 4 and 5); the
 * pool never holds both at once otherwise. */
void tl_pool_fork_lock(void) {
    tl_bg_fork_prepare(); /* before 4 and 5: the purge thread takes them */
    pthread_mutex_lock(&tl_registry_lock);
    pthread_mutex_lock(&tl_depot_lock);
}

void tl_pool_fork_unlock(void) {
    pthread_mutex_unlock(&tl_depot_lock);
    pthread_mutex_unlock(&tl_registry_lock);
    tl_bg_fork_parent();
}

/* Heaps of threads that fork did not copy, torn down in a child: kept here and
 * never freed. A page that such a thread was moving between its queues at the
 * moment of the fork is on no queue, so teardown cannot hand it over; it still
 * names the dead heap as its owner, and if the heap's memory were reused for a
 * new thread's heap, that thread would take the page for its own. Kept, the
 * address stays unique and such a page only leaks (frees into it are
 * cross-thread pushes). A few KiB per thread per fork; reachable for leak
 * checkers. */

static tl_heap *tl_forked_heaps;

/* In the child: every heap but the forking thread's belongs to a thread that
 * does not exist here. Tear each down as its thread's exit would: empty pages
 * go back to the depot, pages with live blocks are abandoned (any thread of the
 * child adopts them when it frees into them or needs a page of their class),
 * their counters are folded into the totals. The child has one thread now, so
 * nothing changes the registry between the look-ups below. */
void tl_pool_fork_child(void) {
    tl_heap *self = tl_tls_heap;
    tl_bg_fork_child();
    tl_depot_fork_child();
    /* A page of ours (or of the locked heap) that a parent's thread held BUSY
     * at the fork would stay BUSY forever here: clear it (the block that
     * thread was delaying is on xblocks, or leaks). */
    tl_heap *keep[2] = {self->kind == TL_HEAP_THREAD ? self : NULL, &tl_heap_global};
    for (int k = 0; k < 2; k++) {
        if (!keep[k]) continue;
        for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
            tl_page_queue *qs[2] = {&keep[k]->avail[c], &keep[k]->full[c]};
            for (int i = 0; i < 2; i++)
                for (tl_page *pg = qs[i]->head; pg; pg = pg->next)
                    if ((atomic_load_explicit(&pg->xfree, memory_order_relaxed) & TL_X_MASK) == TL_X_BUSY)
                        atomic_fetch_and_explicit(&pg->xfree, ~TL_X_BUSY, memory_order_relaxed);
        }
    }
    for (;;) {
        pthread_mutex_lock(&tl_registry_lock);
        tl_heap *h = tl_registry_head;
        if (h == self) h = h->reg_next;
        pthread_mutex_unlock(&tl_registry_lock);
        if (!h) break;
        tl_heap_teardown_unfreed(h, 0, 0);
        h->reg_next = tl_forked_heaps;
        tl_forked_heaps = h;
    }
}

void tl_pool_thread_release(void) {
    tl_heap *h = tl_tls_heap;
    if (h->kind != TL_HEAP_THREAD) return;
    (void)pthread_setspecific(tl_heap_key, NULL);
    tl_tls_heap = &tl_heap_empty;
    tl_heap_teardown(h);
}

/* The heap a slow path should work on: the thread's own (created on first
 * use), or the locked global heap when caches are off or the thread is past
 * its teardown (returned as &tl_heap_global; the caller takes the lock). */
static tl_heap *tl_heap_resolve(tl_heap *h) {
    if (TL_LIKELY(h->kind == TL_HEAP_THREAD)) return h;
    if (h->kind == TL_HEAP_EMPTY) {
        tl_pool_first_use_once();
        /* While this thread sets up its heap (or the fork handlers), a call
         * back into the pool from the C library takes the global heap. */
        if (!tl_pool_bootstrapping && atomic_load_explicit(&tl_cache_enabled, memory_order_relaxed)) {
            tl_heap *nh = tl_heap_create();
            if (nh) return nh;
        }
    }
    return &tl_heap_global;
}

/* ---- allocation ------------------------------------------------------------------ */

/* Pages with uncarved blocks a refill passes over looking for freed blocks
 * (tl_heap_find_page). */
#define TL_SKIP_PAGES 8u

/* A page of class c with a free block, made current (owner, or the global heap
 * under the depot lock). NULL when the OS refuses memory. */
static tl_page *tl_heap_find_page(tl_heap *h, unsigned c) {
    tl_page_queue *q = &h->avail[c];
    h->classes |= (uint64_t)1 << c; /* pages of c may come in below */
    TL_COUNTER_ADD(h->c.num_refills, 1);
    tl_heap_maybe_flush(h);
    /* 1. Full pages that other threads freed into come back (delayed free):
     *    cost proportional to those pages, not to the full ones. */
    tl_heap_drain(h);
    /* 2. Available pages, from the head: collect each one's foreign frees and
     *    take the first with free blocks (made the head); a page with
     *    neither free nor uncarved blocks is full and moves aside, watched;
     *    the first page with uncarved blocks is carved, with one exception.
     *    Blocks of 4 KiB and more whose next carve would touch memory not
     *    known to be resident (pg->touched: what the page held before it left
     *    the depot) come from blocks freed into the pages behind it first (by
     *    this thread, or by others and not collected yet), and are carved
     *    only if none has any: carving such blocks faults in fresh pages,
     *    while the freed ones sit idle. The slow half of rptest x2's runs
     *    (`tlalloc bench mimalloc-bench --benchmarks rptest --threads 2`)
     *    took 0.65-0.72 s so, against 0.75-0.77 s
     *    (docs/benchmark-log/mimalloc-bench.md). Smaller
     *    blocks are carved at once: xmalloc-test x1 (64-byte blocks a
     *    consumer thread frees) ran at 0.81x the speed taking the freed ones
     *    first (why is not measured: likely their cache lines on the
     *    consumer's core). 4 KiB is where one extension carves one block;
     *    sizes between were not measured apart. Cost: each full page moves
     *    aside once per time it fills (paid for by allocations); at most
     *    TL_SKIP_PAGES others are passed over. */
    tl_page *pg, *next, *carve = NULL;
    uint64_t looked = 0;
    unsigned skipped = 0;
    for (pg = q->head; pg != NULL; pg = next) {
        next = pg->next;
        looked++;
        tl_page_collect(pg);
        if (pg->free) break;
        if (pg->extended < pg->capacity) {
            if (pg->block_size < TL_EXTEND_BYTES ||
                (size_t)(pg->extended + 1) * pg->block_size <= pg->touched) {
                carve = pg; /* carving it costs no fault */
                pg = NULL;
                break;
            }
            if (!carve) carve = pg;
            if (++skipped > TL_SKIP_PAGES) {
                pg = NULL;
                break;
            }
            continue;
        }
        if (!tl_page_watch(pg)) { /* foreign frees arrived: collect them */
            next = pg;
            continue;
        }
        tl_queue_remove(q, pg);
        pg->in_full = 1;
        tl_queue_push_back(&h->full[c], pg);
    }
    if (!pg && carve) {
        pg = carve;
        tl_page_extend(pg);
    }
    if (pg && pg != q->head) {
        tl_queue_remove(q, pg);
        tl_queue_push_front(q, pg);
    }
    TL_COUNTER_ADD(h->c.num_refill_pages, looked);
    /* 3. The depot (a lock, unless this is the global heap, which holds it). */
    if (!pg) {
        if (h->kind == TL_HEAP_THREAD) {
            TL_COUNTER_ADD(h->c.num_cache_misses, 1); /* the global heap counts every call */
            tl_heap_flush_peak(h);
            pg = tl_depot_take(h, c);
        } else {
            pg = tl_depot_take_locked(h, c);
        }
        if (!pg) {
            tl_heap_update_cur(h, c);
            return NULL;
        }
        tl_queue_push_front(q, pg);
        if (!pg->free) {
            tl_page_collect(pg);
            if (!pg->free) tl_page_extend(pg);
        }
    }
    tl_heap_update_cur(h, c);
    tl_assert(h->cur[c] == pg && pg->free != NULL);
    return pg;
}

/* ---- lazy purge of free blocks ---------------------------------------------------- *
 *
 * Size classes keep their freed blocks resident: a thread that once had four
 * 1 MiB blocks of a class live keeps 4 MiB resident for that class, and with
 * one such high-water mark per class of 16 KiB and up (twenty classes) and per
 * thread, a churn of mixed sizes held 2.8x the RSS of glibc's malloc
 * (`tlalloc bench numpy-alloc`, churn). So the owner gives free blocks of
 * TL_PURGE_MIN_BLOCK bytes and more back to the OS once they stayed free for a
 * purge delay (tl_pool_options.purge_delay_ms, shared with the large cache),
 * all but their first 4 KiB (the free-list link and the mark below).
 *
 * Every 64th slow-path allocation of a thread (sizes above 1 KiB, refills)
 * reads the coarse clock; every purge delay, the owner walks the free lists
 * of its available pages of those classes (at most 63 blocks a page) and
 * marks each free block in its second word: unmarked -> SEEN, SEEN -> purged
 * (madvise, then PURGED). Allocation of such a block clears the mark, so a
 * block is purged after being free continuously for one to two delays, and a
 * block that is reused in between (the head of a busy class) never is. A mark
 * forged by the caller's data can only make a free block purged early. A
 * thread that stops allocating keeps its blocks until it allocates again. */
#define TL_MARK_SEEN ((uintptr_t)0x5EE9A7E1D0C0FFEEull)
#define TL_MARK_PURGED ((uintptr_t)0x9D26EDB10C4C0FFEull)
_Atomic uint64_t tl_num_block_purges;

/* now: purge every free block at once (memory pressure), not only SEEN ones. */
static void tl_page_purge_free(tl_page *pg, int now) {
    tl_assert(pg->block_size >= TL_PURGE_MIN_BLOCK && pg->block_size % 4096u == 0);
    uint64_t n = 0;
    for (tl_block *b = pg->free; b; b = b->next) {
        uintptr_t *mark = (uintptr_t *)b + 1;
        if (*mark == TL_MARK_PURGED) continue;
        if (*mark != TL_MARK_SEEN && !now) {
            *mark = TL_MARK_SEEN;
            continue;
        }
        tl_os_discard((char *)b + 4096, pg->block_size - 4096u);
        *mark = TL_MARK_PURGED;
        n++;
    }
    if (n) atomic_fetch_add_explicit(&tl_num_block_purges, n, memory_order_relaxed);
}

/* ---- memory pressure: release and retry ------------------------------------------ *
 *
 * When the OS refuses a mapping (RLIMIT_AS, the strict overcommit mode), the
 * pool gives back what it can before it reports failure (tl_pool_release),
 * then tries once more: the calling thread's empty pages and free blocks,
 * every thread's cached large blocks (tl_large_collect steals them), the
 * abandoned pages that are empty, the depot's free pages and every segment
 * with no page in use, the whole large cache. Other threads' heaps belong to
 * their threads: the epoch below tells each to give back its own empty pages
 * at its next slow-path tick (every 64th allocation above 1 KiB or refill). */
/* Owner: every empty page of h goes back to the depot (also a class's only
 * available page), and free blocks of TL_PURGE_MIN_BLOCK bytes and more are
 * purged now. */
TL_NOINLINE TL_COLD static void tl_heap_release_free(tl_heap *h) {
    h->pressure_seen = atomic_load_explicit(&tl_pressure_epoch, memory_order_relaxed);
    tl_heap_drain(h);
    tl_page *ret = NULL;
    for (uint64_t m = h->classes; m; m &= m - 1) {
        const unsigned c = (unsigned)__builtin_ctzll(m);
        tl_page *next;
        for (tl_page *pg = h->avail[c].head; pg; pg = next) {
            next = pg->next;
            tl_page_collect(pg);
            if (pg->used == 0) {
                tl_queue_remove(&h->avail[c], pg);
                pg->next = ret;
                ret = pg;
            } else if (pg->block_size >= TL_PURGE_MIN_BLOCK) {
                tl_page_purge_free(pg, 1);
            }
        }
        tl_heap_update_cur(h, c);
    }
    if (ret) tl_heap_return_pages(h, ret);
}

void tl_pool_release(void) {
    atomic_fetch_add_explicit(&tl_pressure_epoch, 1, memory_order_relaxed);
    tl_heap *h = tl_tls_heap;
    if (h->kind == TL_HEAP_THREAD) tl_heap_release_free(h);
    tl_pool_collect(1);
}

/* Owner only (a thread's heap). */
TL_NOINLINE TL_COLD static void tl_heap_purge_tick(tl_heap *h) {
    uint64_t now = tl_os_coarse_ms();
    tl_depot_maybe_tick(now); /* the depot's lazy purge (pool_depot.c): a load */
    if (TL_UNLIKELY(atomic_load_explicit(&tl_pressure_epoch, memory_order_relaxed) != h->pressure_seen))
        tl_heap_release_free(h);
    if (now < h->purge_next_ms) return;
    h->purge_next_ms = now + tl_large_purge_delay();
    for (unsigned c = tl_size_class(TL_PURGE_MIN_BLOCK); c < TL_POOL_NUM_CLASSES; c++) {
        for (tl_page *pg = h->avail[c].head; pg; pg = pg->next) {
            tl_page_collect(pg);
            tl_page_purge_free(pg, 0);
        }
    }
}

/* Pop a block of class c from heap h (owner, or global heap under the lock). */
static void *tl_heap_alloc_class(tl_heap *h, unsigned c) {
    tl_page *pg = h->cur[c];
    if (!pg->free) {
        pg = tl_heap_find_page(h, c);
        if (!pg) {
            errno = ENOMEM;
            return NULL;
        }
    }
    tl_block *b = pg->free;
    pg->free = b->next;
    pg->used++;
    /* Clear the purge mark (above): a compare and a store into the line the
     * caller is about to use, for blocks of 16 KiB and more only. */
    if (pg->block_size >= TL_PURGE_MIN_BLOCK) ((uintptr_t *)b)[1] = 0;
    TL_COUNTER_ADD(h->c.num_allocations, 1);
    TL_COUNTER_ADD(h->c.alloc_bytes, pg->block_size);
    TL_DBG_ON_ALLOC(pg, b);
    return b;
}

/* Everything the fast path does not handle: first use, sizes above 1 KiB or
 * above the classes, a current page that ran dry, caches off. */
TL_NOINLINE static void *tl_alloc_class_slow(tl_heap *h, unsigned c) {
    h = tl_heap_resolve(h);
    if (h != &tl_heap_global) {
        /* Lazy purge of free blocks: an increment and a test, the clock every
         * 64th call (above). */
        if (TL_UNLIKELY((++h->purge_calls & 63u) == 0)) tl_heap_purge_tick(h);
        void *p = tl_heap_alloc_class(h, c);
        if (TL_UNLIKELY(!p)) { /* the OS refused a segment: release and retry */
            tl_pool_release();
            p = tl_heap_alloc_class(h, c);
        }
        return p;
    }
    void *p = NULL;
    for (int tries = 0; tries < 2 && !p; tries++) {
        if (tries) tl_pool_release(); /* without the lock, which it takes */
        pthread_mutex_lock(&tl_depot_lock);
        TL_COUNTER_ADD(h->c.num_depot_locks, 1);
        TL_COUNTER_ADD(h->c.num_cache_misses, 1);
        p = tl_heap_alloc_class(h, c);
        tl_depot_unlock();
    }
    if (!p) errno = ENOMEM;
    return p;
}

/* The heap for a large block, from the thread's tl_tls_heap h: the thread's
 * (created on its first use, so that a thread that only allocates large
 * blocks has a large cache too), or another heap (no thread cache). */
static inline tl_heap *tl_large_heap(tl_heap *h) {
    return TL_LIKELY(h->kind != TL_HEAP_EMPTY) ? h : tl_heap_resolve(h);
}

TL_NOINLINE static void *tl_pool_malloc_slow(tl_heap *h, size_t size) {
    tl_bg_maybe_autostart(); /* the purge thread, once something is due (one load) */
    if (TL_UNLIKELY(size > TL_CLASS_MAX)) return tl_huge_alloc(tl_large_heap(tl_tls_heap), size, 0, 0);
    tl_large_maybe_tick_sampled(); /* lazy purge of the large cache (pool_internal.h) */
    return tl_alloc_class_slow(h, tl_size_class(size ? size : 1));
}

/* Fast path: TLS load, table lookup, load of the current page, pop of its free
 * list, two owner-only counter adds. About 15 instructions, one branch taken
 * for sizes up to 1 KiB; no lock, no atomic read-modify-write. */
void *tl_pool_malloc(size_t size) {
    tl_heap *h = tl_tls_heap;
    if (TL_LIKELY(size <= 1024)) {
        tl_page *pg = h->cur[tl_small_class[(size + 7) >> 3]];
        tl_block *b = pg->free;
        if (TL_LIKELY(b != NULL)) {
            pg->free = b->next;
            pg->used++;
            TL_COUNTER_ADD(h->c.num_allocations, 1);
            TL_COUNTER_ADD(h->c.alloc_bytes, pg->block_size);
            TL_DBG_ON_ALLOC(pg, b);
            return b;
        }
    }
    return tl_pool_malloc_slow(h, size);
}

void *tl_pool_calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    if (total > TL_CLASS_MAX) return tl_huge_alloc(tl_large_heap(tl_tls_heap), total, 0, 1);
    void *p = tl_pool_malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

void *tl_pool_aligned_alloc(size_t align, size_t size) {
    if (!tl_is_pow2(align) || align > TL_POOL_MAX_ALIGN) {
        errno = EINVAL;
        return NULL;
    }
    if (align <= 8) return tl_pool_malloc(size);
    size_t n = size < align ? align : size;
    /* Beyond the page alignment: a large block starting `align` bytes into its
     * mapping (the pages before it untouched; pool_large.c). */
    if (align > TL_POOL_PAGE_ALIGN || n > TL_CLASS_MAX) return tl_huge_alloc(tl_large_heap(tl_tls_heap), size, align, 0);
    /* Pages start 4 KiB aligned, so a class whose size is a multiple of align
     * yields aligned blocks; the power of two ending n's doubling is one. */
    unsigned c = tl_size_class(n);
    /* n's own class aligned (every class from 16 B is a multiple of 16): the
     * plain allocation, fast path included, picks that class. A table load
     * and a mask (align is a power of two); memalign(16, n) in rptest is a
     * third of its allocations. */
    if ((tl_class_sizes[c] & (align - 1)) == 0) return tl_pool_malloc(n);
    tl_large_maybe_tick_sampled(); /* lazy purge of the large cache (pool_internal.h) */
    while ((tl_class_sizes[c] & (align - 1)) != 0) c++;
    tl_assert(c < TL_POOL_NUM_CLASSES);
    return tl_alloc_class_slow(tl_tls_heap, c);
}

size_t tl_pool_usable_size(const void *p) {
    if (!p) return 0;
    tl_segment *s = tl_segment_of(p);
    if (s->kind == TL_KIND_HUGE) return tl_huge_usable(s);
    return tl_page_of(s, p)->block_size;
}

void *tl_pool_realloc(void *p, size_t size) {
    if (!p) return tl_pool_malloc(size);
    if (size > (size_t)PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    size_t have = tl_pool_usable_size(p);
    /* Keep the block when the new size fits and would not waste half of it. */
    if (size <= have && size >= have / 2) return p;
    tl_segment *s = tl_segment_of(p);
    if (s->kind == TL_KIND_HUGE && size > TL_CLASS_MAX) {
        /* Large to large: shrink in place or grow with mremap, no copy. */
        void *q = tl_huge_realloc(s, size);
        if (q) return q;
    }
    void *q = tl_pool_malloc(size);
    if (!q) return NULL;
    memcpy(q, p, size < have ? size : have);
    tl_pool_free(p);
    return q;
}

/* ---- free ------------------------------------------------------------------------- */

/* The owner freed a block that emptied its page, or freed into a full page. */
TL_NOINLINE static void tl_page_free_slow(tl_heap *h, tl_page *pg) {
    unsigned c = pg->cls;
    if (pg->in_full) {
        tl_queue_remove(&h->full[c], pg);
        pg->in_full = 0;
        tl_queue_push_back(&h->avail[c], pg);
        tl_heap_update_cur(h, c);
    }
    /* An empty page goes back to the depot unless it is the class's only
     * available page (then allocate/free in a loop stays off the lock). */
    if (pg->used == 0 && h->avail[c].count > 1) {
        tl_queue_remove(&h->avail[c], pg);
        tl_heap_update_cur(h, c);
        pg->next = NULL;
        tl_heap_return_pages(h, pg);
    }
}

/* Give a list of empty pages (linked by `next`, on no queue of h) back to the
 * depot: one lock for all, taken here unless h is the locked global heap. */
static void tl_heap_return_pages(tl_heap *h, tl_page *list) {
    for (tl_page *pg = list; pg; pg = pg->next) tl_page_unwatch(pg, 1);
    int thread = h->kind == TL_HEAP_THREAD;
    if (thread) {
        tl_heap_flush_peak(h);
        pthread_mutex_lock(&tl_depot_lock);
        TL_COUNTER_ADD(h->c.num_depot_locks, 1);
    }
    tl_page *next;
    for (tl_page *pg = list; pg; pg = next) {
        next = pg->next;
        tl_depot_return_locked(pg);
    }
    if (thread) tl_depot_unlock();
}

/* Owner's free (also used for the global heap under the lock). */
static inline void tl_page_free_local(tl_heap *h, tl_page *pg, void *p) {
    tl_block *b = p;
    b->next = pg->free;
    pg->free = b;
    TL_COUNTER_ADD(h->c.num_frees, 1);
    TL_COUNTER_ADD(h->c.free_bytes, pg->block_size);
    if (TL_UNLIKELY(--pg->used == 0 || pg->in_full)) tl_page_free_slow(h, pg);
}

/* A page we just became the owner of (claimed from the abandoned state). */
static void tl_heap_adopt(tl_heap *h, tl_page *pg) {
    tl_page_collect(pg);
    pg->in_full = 0;
    h->classes |= (uint64_t)1 << pg->cls;
    tl_queue_push_back(&h->avail[pg->cls], pg);
    tl_heap_update_cur(h, pg->cls);
    TL_COUNTER_ADD(h->c.num_reclaimed_pages, 1);
}

/* Not the owner: large block, the global heap's page, an abandoned page we can
 * adopt, or a page owned by another thread (push on its cross-thread list). */
TL_NOINLINE static void tl_pool_free_slow(tl_heap *h, void *p) {
    tl_segment *s = tl_segment_of(p);
    if (s->kind == TL_KIND_HUGE) {
        tl_huge_free(tl_large_heap(h), s);
        return;
    }
    tl_page *pg = tl_page_of(s, p); /* the page, not the 64 KiB slot */
    TL_DBG_ON_FREE(pg, p);
    tl_heap *owner = atomic_load_explicit(&pg->heap, memory_order_acquire);
    if (owner == h) { /* the owner freeing beyond the first slot of a page */
        tl_page_free_local(h, pg, p);
        return;
    }
    if (owner == &tl_heap_global) {
        pthread_mutex_lock(&tl_depot_lock);
        TL_COUNTER_ADD(tl_heap_global.c.num_depot_locks, 1);
        tl_page_free_local(&tl_heap_global, pg, p);
        tl_depot_unlock();
        return;
    }
    /* A thread that only frees gets a cache too: it counts its frees there and
     * can adopt abandoned pages. */
    if (h->kind == TL_HEAP_EMPTY && atomic_load_explicit(&tl_cache_enabled, memory_order_relaxed))
        h = tl_heap_resolve(h);
    if (h->kind != TL_HEAP_THREAD) h = NULL;
    /* Abandoned: its owner exited. Adopting it makes this and later frees into
     * it local; the CAS is the one arbiter against other adopters. But only
     * while this heap's available pages of the class span at most
     * TL_KEEP_AVAIL_BYTES (the rule of tl_heap_drain): a thread that has room
     * enough in the class would never allocate from the page, while a page
     * left abandoned is adopted by the next thread that needs a page of the
     * class (tl_depot_take_locked) and its free blocks are reused. Measured
     * with mimalloc-bench's `mstress 2 50 25` (a long-lived thread frees the
     * blocks that short-lived threads leave behind, and a new thread each
     * round allocates the most): adopting every such page, the long-lived
     * thread piled up pages that a few live blocks each kept from the depot,
     * 90 pages of one class for 34 KiB in use, and peak RSS grew by about
     * 1 MiB a round to 26 MiB (mimalloc 15.7, glibc 11); with the limit, 17. */
    if (owner == NULL && h && h->avail[pg->cls].count * pg->bytes <= TL_KEEP_AVAIL_BYTES) {
        tl_heap *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&pg->heap, &expected, h, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            tl_heap_adopt(h, pg);
            tl_page_free_local(h, pg, p);
            return;
        }
    }
    /* Cross-thread free: one CAS on the page's list, nothing else shared. The
     * block size must be read before the push: until then our block keeps the
     * page in use; right after it the owner may collect the block, return the
     * empty page to the depot and another thread may reuse it for another class. */
    /* A page its owner watches (on its full list) takes the delayed path
     * instead: the block goes to the owner heap's list, so the owner finds the
     * page again without walking its full pages (pool_internal.h). */
    uint32_t bs = pg->block_size;
    unsigned cls = pg->cls;
    tl_block *b = p;
    uintptr_t x = atomic_load_explicit(&pg->xfree, memory_order_relaxed), nx;
    do {
        if ((x & TL_X_MASK) == TL_X_WATCH) {
            nx = (x & ~TL_X_MASK) | TL_X_BUSY;
        } else {
            b->next = (tl_block *)(x & ~TL_X_MASK);
            nx = (uintptr_t)b | (x & TL_X_MASK);
        }
    } while (!atomic_compare_exchange_weak_explicit(&pg->xfree, &x, nx, memory_order_acq_rel,
                                                    memory_order_relaxed));
    if ((x & TL_X_MASK) == TL_X_WATCH) tl_page_push_delayed(pg, b);
    TL_HEAP_COUNT(h, num_frees, 1);
    TL_HEAP_COUNT(h, free_bytes, bs);
    TL_HEAP_COUNT(h, num_cross_thread_frees, 1);
    /* A thread that only frees still folds its frees into the peak estimate. */
    if (h) tl_heap_maybe_flush(h);
    /* Blocks pushed onto abandoned pages (adoption declined above) may empty
     * them, and nothing else would notice until a thread refills the class:
     * every TL_SWEEP_BYTES of such frees, give the emptied pages of the class
     * back to the depot (one lock, at most TL_SWEEP_PAGES pages looked at).
     * Without it, a thread that frees the 20 MB a worker left behind kept all
     * 20 MB resident until tl_pool_collect. */
    if (owner == NULL && h && (h->abandoned_freed += bs) >= TL_SWEEP_BYTES) {
        h->abandoned_freed = 0;
        tl_depot_sweep_abandoned(h, cls);
    }
}

/* Fast path: mask and shift to the 64 KiB slot's descriptor (no segment
 * header load), compare its owner with this thread's heap, push. About 12
 * instructions and one predictable branch when the freeing thread owns the
 * page; everything else (other owners, medium pages beyond their first slot,
 * large blocks) goes to the slow path. */
void tl_pool_free(void *p) {
    if (!p) return;
    tl_page *pg = tl_slot_of(p);
    tl_heap *h = tl_tls_heap;
    /* A block on a 4 MiB boundary is a large block aligned to 4 MiB or more
     * (every other block starts after its segment's header): its slot
     * descriptor would be read from the block itself, so it takes the slow
     * path, tested first (one test of the address, predicted). */
    if (TL_LIKELY(((uintptr_t)p & TL_SEG_MASK) != 0 &&
                  atomic_load_explicit(&pg->heap, memory_order_relaxed) == h)) {
        TL_DBG_ON_FREE(pg, p);
        tl_page_free_local(h, pg, p);
        return;
    }
    tl_pool_free_slow(h, p);
}

/* ---- settings ---------------------------------------------------------------------- */

/* Called once, when the first thread without a heap reaches a slow path (the
 * first allocation of the process, in practice), before any heap exists. It
 * must not allocate. The core does nothing here; libtlalloc.so defines it
 * (preload.c) to read its settings from the environment, since no constructor
 * of its own has run when the C library or the dynamic loader first calls
 * malloc. A weak symbol, so the static library and the extension need no stub. */
__attribute__((weak)) void tl_pool_first_use(void) {}

static pthread_once_t tl_first_use_once = PTHREAD_ONCE_INIT;

/* The OS layer's release hook (an arena's chunk the OS refused gets the
 * pool's unused memory), then the settings. */
static void tl_pool_first_use_init(void) {
    tl_os_set_release_hook(tl_pool_release);
    tl_pool_first_use();
}

static void tl_pool_first_use_once(void) { pthread_once(&tl_first_use_once, tl_pool_first_use_init); }

int tl_pool_configure(const tl_pool_options *opts) {
    tl_pool_options d = TL_POOL_OPTIONS_DEFAULT;
    if (!opts) opts = &d;
    if ((opts->cache != 0 && opts->cache != 1) || opts->large_cache_bytes > TL_POOL_MAX_LARGE_CACHE ||
        opts->purge_delay_ms > TL_POOL_MAX_PURGE_DELAY_MS) {
        errno = EINVAL;
        return -1;
    }
    if (tl_large_set_options(opts->large_cache_bytes, opts->purge_delay_ms) != 0) return -1;
    atomic_store_explicit(&tl_cache_enabled, opts->cache, memory_order_relaxed);
    tl_depot_set_retain(opts->retain_bytes);
    return 0;
}

void tl_pool_get_options(tl_pool_options *out) {
    out->cache = atomic_load_explicit(&tl_cache_enabled, memory_order_relaxed);
    out->retain_bytes = tl_depot_get_retain();
    tl_large_get_options(&out->large_cache_bytes, &out->purge_delay_ms);
}

void tl_pool_collect(int release_all) {
    tl_depot_collect(release_all);
    tl_large_collect(release_all);
}

/* ---- the background purge thread ---------------------------------------------------- *
 *
 * A thread that sleeps until the depot's or the large cache's lazy purge is
 * due and does it, so that memory freed before a program stops calling the
 * pool goes back within the purge delay plus TL_BG_SLACK_MS, or TL_BG_IDLE_MS
 * when nothing was due when it last looked (a free made since is only seen at
 * its next wake). It does what any later pool call would: the depot's free
 * pages beyond retain_bytes, then its segments with no page in use, the large
 * cache's blocks (thread caches included) and then their mappings. What only
 * an owner thread may touch (its own empty pages and free blocks) stays for
 * that thread's next slow-path call.
 *
 * On by default, started lazily: the first malloc slow path (sizes above
 * 1 KiB, refills) after something freed waits for the purge delay starts it
 * (tl_bg_maybe_autostart, no pool lock held), so a program that never frees
 * enough to wait for the delay never has it. Never from free: the C library
 * frees with its own locks held, some of which pthread_create takes (glibc
 * frees a dead thread's TLS under the stack-cache lock: a thread started
 * there deadlocked). Its malloc calls under a lock are under the loader's
 * recursive locks (dlopen, TLS), where library constructors start thread
 * pools too. tl_pool_purge_thread(0) (or TLALLOC_POOL_PURGE_THREAD=0 for
 * libtlalloc.so and the Python module) stops it and keeps it off;
 * tl_pool_purge_thread(1) starts it at once.
 *
 * Fork: the prepare handler stops it (joins it) and neither the parent nor
 * the child restarts it in a fork handler; each starts its own again at its
 * next allocation slow path while something is due. So the thread does not exist while
 * fork copies the process, and a parent that counts its threads right after
 * fork returns does not see it: CPython 3.12 and later count
 * /proc/self/stat's threads in the parent after fork (before their
 * after-fork hooks run) to warn about forking a multi-threaded process.
 * Signals are blocked in it. */
#define TL_BG_IDLE_MS 1000u
#define TL_BG_SLACK_MS 5u /* the coarse clock's tick and a margin */

static pthread_mutex_t tl_bg_ctl = PTHREAD_MUTEX_INITIALIZER;  /* start/stop, held across join */
static pthread_mutex_t tl_bg_lock = PTHREAD_MUTEX_INITIALIZER; /* tl_bg_on and the wait */
static pthread_cond_t tl_bg_cond = PTHREAD_COND_INITIALIZER;
static int tl_bg_on;         /* (tl_bg_lock) the thread should run */
static int tl_bg_exists;     /* (tl_bg_ctl) a thread was started and not joined */
static int tl_bg_enabled = TL_BG_DEFAULT; /* (tl_bg_ctl) starts itself when something is due */
static pthread_t tl_bg_thread; /* (tl_bg_ctl) */
static _Atomic uint64_t tl_bg_wakes; /* times it looked, for tests */

static void *tl_bg_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&tl_bg_lock);
    while (tl_bg_on) {
        pthread_mutex_unlock(&tl_bg_lock);
        atomic_fetch_add_explicit(&tl_bg_wakes, 1, memory_order_relaxed);
        tl_depot_maybe_tick(tl_os_coarse_ms());
        tl_large_maybe_tick();
        uint64_t due = atomic_load_explicit(&tl_depot_due_ms, memory_order_relaxed);
        uint64_t ldue = atomic_load_explicit(&tl_large_due_ms, memory_order_relaxed);
        if (ldue < due) due = ldue;
        uint64_t now = tl_os_coarse_ms();
        uint64_t wait = due == UINT64_MAX ? TL_BG_IDLE_MS : (due > now ? due - now : 0) + TL_BG_SLACK_MS;
        if (wait > TL_BG_IDLE_MS) wait = TL_BG_IDLE_MS;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts); /* the condition variable's clock */
        ts.tv_sec += (time_t)(wait / 1000u);
        ts.tv_nsec += (long)(wait % 1000u) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&tl_bg_lock);
        if (tl_bg_on) pthread_cond_timedwait(&tl_bg_cond, &tl_bg_lock, &ts);
    }
    pthread_mutex_unlock(&tl_bg_lock);
    return NULL;
}

/* Start the thread (tl_bg_ctl held). Returns 0 or pthread_create's error. */
static int tl_bg_start_locked(void) {
    if (tl_bg_exists) return 0;
    pthread_mutex_lock(&tl_bg_lock);
    tl_bg_on = 1;
    pthread_mutex_unlock(&tl_bg_lock);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited: no signal lands there */
    int e = pthread_create(&tl_bg_thread, NULL, tl_bg_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e == 0) {
        tl_bg_exists = 1;
#if defined(__GLIBC__)
        (void)pthread_setname_np(tl_bg_thread, "tlalloc-purge");
#endif
    } else {
        pthread_mutex_lock(&tl_bg_lock);
        tl_bg_on = 0;
        pthread_mutex_unlock(&tl_bg_lock);
    }
    return e;
}

/* Stop and join the thread (tl_bg_ctl held). */
static void tl_bg_stop_locked(void) {
    if (!tl_bg_exists) return;
    pthread_mutex_lock(&tl_bg_lock);
    tl_bg_on = 0;
    pthread_cond_signal(&tl_bg_cond);
    pthread_mutex_unlock(&tl_bg_lock);
    pthread_join(tl_bg_thread, NULL);
    tl_bg_exists = 0;
}

/* tl_bg_maybe_autostart found something due while no thread runs. Only one
 * caller gets past the exchange; one whose start fails leaves it off (the
 * purge then waits for later pool calls, as without the thread). */
TL_NOINLINE TL_COLD static void tl_bg_autostart_slow(void) {
    if (!atomic_exchange_explicit(&tl_bg_autostart, 0, memory_order_relaxed)) return;
    pthread_mutex_lock(&tl_bg_ctl);
    if (tl_bg_enabled) (void)tl_bg_start_locked();
    pthread_mutex_unlock(&tl_bg_ctl);
}

int tl_pool_purge_thread(int on) {
    if (on != 0 && on != 1) {
        errno = EINVAL;
        return -1;
    }
    int rc = 0;
    pthread_mutex_lock(&tl_bg_ctl);
    tl_bg_enabled = on;
    atomic_store_explicit(&tl_bg_autostart, 0, memory_order_relaxed);
    if (on) {
        int e = tl_bg_start_locked();
        if (e != 0) {
            errno = e;
            rc = -1;
            atomic_store_explicit(&tl_bg_autostart, 1, memory_order_relaxed); /* try again later */
        }
    } else {
        tl_bg_stop_locked();
    }
    pthread_mutex_unlock(&tl_bg_ctl);
    return rc;
}

int tl_pool_purge_thread_running(void) {
    pthread_mutex_lock(&tl_bg_ctl);
    int r = tl_bg_exists;
    pthread_mutex_unlock(&tl_bg_ctl);
    return r;
}

uint64_t tl_pool_purge_thread_wakes(void) { return atomic_load_explicit(&tl_bg_wakes, memory_order_relaxed); }

/* Fork's prepare handler (before the pool's locks): stop the thread and hold
 * tl_bg_ctl across the fork, so that no free starts it meanwhile. The thread
 * takes none of the locks the prepare handler holds before this one. */
static void tl_bg_fork_prepare(void) {
    pthread_mutex_lock(&tl_bg_ctl);
    atomic_store_explicit(&tl_bg_autostart, 0, memory_order_relaxed);
    tl_bg_stop_locked();
}

/* Parent (and child, before tl_bg_fork_child): the next allocation slow path
 * while something is due starts the thread again, if it is enabled. */
static void tl_bg_fork_parent(void) {
    atomic_store_explicit(&tl_bg_autostart, tl_bg_enabled, memory_order_relaxed);
    pthread_mutex_unlock(&tl_bg_ctl);
}

/* In a child of fork: the thread was stopped before the fork. Its locks are
 * re-made all the same (fork copied tl_bg_ctl locked by this thread, released
 * by tl_bg_fork_parent). */
static void tl_bg_fork_child(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    tl_bg_ctl = m;
    tl_bg_lock = m;
    tl_bg_cond = c;
    tl_bg_on = 0;
    tl_bg_exists = 0;
    if (!TL_BG_CHILD_AUTOSTART) atomic_store_explicit(&tl_bg_autostart, 0, memory_order_relaxed);
}

/* ---- statistics ---------------------------------------------------------------------- */

/* Every heap's counters summed (live, torn down, orphan, the global heap). */
static void tl_heap_counter_sums(uint64_t sum[TL_NUM_HEAP_COUNTERS], uint64_t *heaps,
                                 uint64_t *threads) {
    pthread_mutex_lock(&tl_registry_lock);
    for (size_t i = 0; i < TL_NUM_HEAP_COUNTERS; i++)
        sum[i] = tl_dead_counters[i] + atomic_load_explicit(&tl_orphan_counters[i], memory_order_relaxed);
    for (tl_heap *h = tl_registry_head; h; h = h->reg_next) {
        const _Atomic uint64_t *src = (const _Atomic uint64_t *)&h->c;
        for (size_t i = 0; i < TL_NUM_HEAP_COUNTERS; i++) sum[i] += TL_LOAD(src[i]);
    }
    if (heaps) *heaps = tl_num_heaps;
    if (threads) *threads = tl_num_threads;
    pthread_mutex_unlock(&tl_registry_lock);
    /* The global heap's counters are written under the depot lock. */
    pthread_mutex_lock(&tl_depot_lock);
    const _Atomic uint64_t *g = (const _Atomic uint64_t *)&tl_heap_global.c;
    for (size_t i = 0; i < TL_NUM_HEAP_COUNTERS; i++) sum[i] += TL_LOAD(g[i]);
    pthread_mutex_unlock(&tl_depot_lock);
}

void tl_pool_large_counter_sums(uint64_t *allocations, uint64_t *reuses) {
    uint64_t sum[TL_NUM_HEAP_COUNTERS];
    tl_heap_counter_sums(sum, NULL, NULL);
    *allocations = sum[offsetof(tl_heap_counters, num_large_allocations) / 8];
    *reuses = sum[offsetof(tl_heap_counters, num_large_reuses) / 8];
}

/* Walk the live heaps (registry lock: none is freed meanwhile) and steal the
 * blocks of their large caches put before older_than_ms; returns them chained
 * by `next`, and in *next_ms the earliest put time of those left. */
tl_segment *tl_pool_large_steal_all(uint64_t older_than_ms, uint64_t *next_ms) {
    tl_segment *out = NULL;
    pthread_mutex_lock(&tl_registry_lock);
    for (tl_heap *h = tl_registry_head; h; h = h->reg_next)
        out = tl_large_steal_heap(h, older_than_ms, out, next_ms);
    pthread_mutex_unlock(&tl_registry_lock);
    return out;
}

void tl_pool_get_stats(tl_pool_stats *out) {
    uint64_t sum[TL_NUM_HEAP_COUNTERS];
    memset(out, 0, sizeof *out);
    tl_heap_counter_sums(sum, &out->num_heaps, &out->num_threads);
#define TL_SUM(field) sum[offsetof(tl_heap_counters, field) / sizeof(uint64_t)]
    uint64_t ab = TL_SUM(alloc_bytes), fb = TL_SUM(free_bytes);
    out->in_use_bytes = ab > fb ? ab - fb : 0;
    out->num_allocations = TL_SUM(num_allocations);
    out->num_frees = TL_SUM(num_frees);
    out->num_cross_thread_frees = TL_SUM(num_cross_thread_frees);
    out->num_cache_misses = TL_SUM(num_cache_misses);
    out->num_depot_locks = TL_SUM(num_depot_locks);
    out->num_reclaimed_pages = TL_SUM(num_reclaimed_pages);
    out->num_large_allocations = TL_SUM(num_large_allocations);
#undef TL_SUM
    uint64_t peak = atomic_load_explicit(&tl_peak_bytes, memory_order_relaxed);
    out->peak_bytes = peak > out->in_use_bytes ? peak : out->in_use_bytes;
    tl_depot_usage(&out->reserved_bytes, &out->retained_bytes, &out->num_segments,
                   &out->num_abandoned_pages);
    out->cache_enabled = atomic_load_explicit(&tl_cache_enabled, memory_order_relaxed);
}

void tl_pool_refill_counters(uint64_t *refills, uint64_t *pages) {
    size_t ir = offsetof(tl_heap_counters, num_refills) / 8;
    size_t ip = offsetof(tl_heap_counters, num_refill_pages) / 8;
    pthread_mutex_lock(&tl_registry_lock);
    uint64_t r = tl_dead_counters[ir], n = tl_dead_counters[ip];
    for (tl_heap *h = tl_registry_head; h; h = h->reg_next) {
        r += TL_LOAD(h->c.num_refills);
        n += TL_LOAD(h->c.num_refill_pages);
    }
    pthread_mutex_unlock(&tl_registry_lock);
    pthread_mutex_lock(&tl_depot_lock);
    r += TL_LOAD(tl_heap_global.c.num_refills);
    n += TL_LOAD(tl_heap_global.c.num_refill_pages);
    pthread_mutex_unlock(&tl_depot_lock);
    *refills = r;
    *pages = n;
}

/* ---- debug checks ------------------------------------------------------------------- */

#ifdef TLALLOC_DEBUG
TL_COLD static void tl_dbg_fail(const char *what, const void *p) {
    fprintf(stderr, "tlalloc: %s: %p passed to tl_pool_free\n", what, p);
    abort();
}

void tl_dbg_on_alloc(tl_page *pg, void *p) {
    size_t off = (size_t)((char *)p - pg->start);
    tl_assert(off % pg->block_size == 0 && off / pg->block_size < pg->extended);
    size_t i = off / pg->block_size;
    uint64_t bit = (uint64_t)1 << (i % 64);
    uint64_t old = atomic_fetch_or_explicit(&pg->dbg_live[i / 64], bit, memory_order_relaxed);
    if (old & bit) {
        fprintf(stderr, "tlalloc: internal error: block %p handed out twice\n", p);
        abort();
    }
}

void tl_dbg_on_free(tl_page *pg, void *p) {
    if ((char *)p < pg->start || pg->block_size == 0) tl_dbg_fail("invalid pointer", p);
    size_t off = (size_t)((char *)p - pg->start);
    if (off % pg->block_size != 0 || off / pg->block_size >= pg->capacity)
        tl_dbg_fail("invalid pointer (not a block start)", p);
    size_t i = off / pg->block_size;
    uint64_t bit = (uint64_t)1 << (i % 64);
    uint64_t old = atomic_fetch_and_explicit(&pg->dbg_live[i / 64], ~bit, memory_order_relaxed);
    if (!(old & bit)) tl_dbg_fail("double free or invalid pointer", p);
}
#endif
