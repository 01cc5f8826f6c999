/* arena.c: bump arenas. The allocation fast path is inline in tlalloc/arena.h;
 * this file holds creation, the out-of-line overflow path, rewind and reset,
 * and the chunks that escapes hold (the design: docs/arena.md).
 *
 * A chunk's reference count: 1 while it is in the owner's chain, plus 1 per
 * escape that holds it. Only the owner adds references (it makes escapes and
 * changes the chain); anyone drops them. So when the owner reads 1 on a chunk
 * of its chain, nobody else can hold it, and it may be reused at once. A chunk
 * whose count falls to 0 is outside the chain: the owner puts it on its spare
 * list, another thread pushes it on the arena's `returned` list (a lock-free
 * stack taken whole by the owner, so no ABA), which the owner drains when it
 * needs a fresh chunk, and the arena's destruction unmaps. The escape's
 * release (acq_rel on the count, release on the push) is ordered before the
 * owner's reuse (acquire on the count or on taking the list). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena_internal.h"
#include "internal.h"
#include "platform/os.h"
#include "tlalloc/arena.h"

/* A heap block served under the fallback policy. Blocks form a stack (newest
 * first) so that a mark can remember the head and a rewind frees exactly the
 * blocks allocated after it. */
struct tl_fallback {
    struct tl_fallback *next;
    void *raw;    /* what malloc returned */
    size_t bytes; /* bytes requested by the caller */
};

struct tl_chunk {
    char *base;             /* page-aligned, a->capacity usable bytes */
    size_t mapped;
    tl_page_kind pages;
    _Atomic long refs;      /* see the top of this file */
    size_t used;            /* owner: highest offset used while it was the current chunk */
    size_t keep;            /* owner: bytes of open scopes in it while below the current one */
    struct tl_chunk *next;  /* spare or returned list */
};

/* Zero-size requests that find no room get a pointer to this: non-NULL, aligned
 * to the largest alignment, never written (nothing can be stored in 0 bytes). */
static _Alignas(TL_MAX_ALIGN) char tl_zero_size_block[TL_MAX_ALIGN];

static void tl_leave_held_top(tl_arena *a);

static size_t tl_chunk_align(tl_page_kind pages) {
    return pages != TL_PAGES_DEFAULT && tl_os_huge_page_size() ? tl_os_huge_page_size()
                                                               : tl_os_page_size();
}

/* Map a chunk with the arena's options. NULL with errno set on failure. */
static struct tl_chunk *tl_chunk_map(size_t capacity, tl_page_kind pages, tl_numa numa,
                                     int prefault, tl_os_region *out) {
    struct tl_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    tl_os_region r;
    if (tl_os_map(capacity, tl_chunk_align(pages), pages, numa, prefault, &r) != 0) {
        int e = errno;
        free(c);
        errno = e;
        return NULL;
    }
    c->base = r.base;
    c->mapped = r.size;
    c->pages = r.pages;
    atomic_init(&c->refs, 1);
    c->used = 0;
    c->keep = 0;
    c->next = NULL;
    if (out) *out = r;
    tl_assert(((uintptr_t)c->base & (tl_os_page_size() - 1)) == 0);
    return c;
}

static void tl_chunk_unmap(tl_arena *a, struct tl_chunk *c) {
    tl_os_region r = {.base = c->base, .size = c->mapped, .pages = c->pages};
    tl_os_unmap(&r);
    free(c);
    atomic_fetch_sub_explicit(&a->num_chunks, 1, memory_order_relaxed);
}

tl_arena *tl_arena_create(const tl_arena_options *opts) {
    tl_arena_options o = {0};
    if (opts) o = *opts;
    if (o.capacity == 0) o.capacity = TL_ARENA_DEFAULT_CAPACITY;
    if (o.capacity < TL_ARENA_MIN_CAPACITY || o.capacity > TL_ARENA_MAX_CAPACITY ||
        (unsigned)o.overflow > TL_OVERFLOW_PANIC || (unsigned)o.pages > TL_PAGES_HUGETLB ||
        (unsigned)o.numa > TL_NUMA_INTERLEAVE) {
        errno = EINVAL;
        return NULL;
    }
    /* Own cache lines: two threads' arenas never share one (no false sharing
     * between their hot offsets and counters). */
    size_t bytes = (sizeof(tl_arena) + 63) & ~(size_t)63;
    tl_arena *a = aligned_alloc(64, bytes);
    if (!a) return NULL;
    memset(a, 0, bytes);
    tl_os_region r;
    struct tl_chunk *c = tl_chunk_map(o.capacity, o.pages, o.numa, o.prefault, &r);
    if (!c) {
        int e = errno;
        free(a);
        errno = e;
        return NULL;
    }
    a->chain = a->chain_inline;
    a->chain_cap = sizeof a->chain_inline / sizeof a->chain_inline[0];
    a->chain[0] = c;
    a->chain_len = 1;
    atomic_init(&a->chain_count, 1);
    atomic_init(&a->num_chunks, 1);
    a->base = c->base;
    a->mapped = r.size;
    a->capacity = o.capacity;
    a->overflow = o.overflow;
    a->zero_on_reset = o.zero_on_reset != 0;
    a->pages_requested = o.pages;
    a->pages = r.pages;
    a->numa = r.numa;
    a->numa_node = r.numa_node;
    a->prefaulted = r.prefaulted;
    atomic_init(&a->refcount, 1);
    a->thread_id = tl_current_thread_id();
    return a;
}

static void tl_fallback_free_until(tl_arena *a, struct tl_fallback *stop) {
    uint64_t freed = 0;
    while (a->fallback != stop) {
        struct tl_fallback *f = a->fallback;
        tl_assert(f != NULL); /* stop must be on the stack */
        a->fallback = f->next;
        freed += f->bytes;
        free(f->raw);
        free(f);
    }
    if (freed) TL_COUNTER_ADD(a->c.fallback_live_bytes, -freed);
}

static void tl_chunks_unmap_list(tl_arena *a, struct tl_chunk *c) {
    while (c) {
        struct tl_chunk *next = c->next;
        tl_chunk_unmap(a, c);
        c = next;
    }
}

/* The last reference is gone: no escape holds a chunk (each holds a reference). */
static void tl_arena_destroy(tl_arena *a) {
    tl_fallback_free_until(a, NULL);
    for (size_t i = 0; i < a->chain_len; i++) {
        tl_assert(atomic_load_explicit(&a->chain[i]->refs, memory_order_relaxed) == 1);
        tl_chunk_unmap(a, a->chain[i]);
    }
    tl_chunks_unmap_list(a, a->spare);
    tl_chunks_unmap_list(a, atomic_exchange_explicit(&a->returned, NULL, memory_order_acquire));
    tl_assert(TL_LOAD(a->num_chunks) == 0);
    if (a->chain != a->chain_inline) free(a->chain);
    free(a);
}

void tl_arena_retain(tl_arena *a) {
    long old = atomic_fetch_add_explicit(&a->refcount, 1, memory_order_relaxed);
    tl_assert(old > 0);
    (void)old;
}

void tl_arena_release(tl_arena *a) {
    if (!a) return;
    long old = atomic_fetch_sub_explicit(&a->refcount, 1, memory_order_acq_rel);
    tl_assert(old > 0);
    if (old == 1) {
        if (a->is_thread_arena) tl_registry_retire(a);
        tl_arena_destroy(a);
    }
}

/* Fold the current offset into the peak; called before the offset shrinks. */
static inline void tl_fold_peak(tl_arena *a) {
    size_t off = TL_LOAD(a->offset);
    if (off > TL_LOAD(a->c.peak_bytes)) TL_STORE(a->c.peak_bytes, off);
}

TL_NOINLINE TL_COLD static void tl_arena_panic(tl_arena *a, size_t size, size_t align) {
    fprintf(stderr,
            "tlalloc: arena overflow (policy 'panic'): request of %zu bytes (align %zu) "
            "does not fit; capacity %zu bytes, %zu bytes in use, thread %llu (%s). Aborting.\n",
            size, align, a->capacity, TL_LOAD(a->offset), (unsigned long long)tl_current_thread_id(),
            a->thread_name[0] ? a->thread_name : "unnamed");
    fflush(stderr);
    abort();
}

/* Slow path: zero-size requests and requests that do not fit. */
TL_NOINLINE void *tl_arena_alloc_slow(tl_arena *a, size_t size, size_t align) {
    tl_assert(tl_is_pow2(align) && align <= TL_MAX_ALIGN);
    if (TL_UNLIKELY(a->top_held) && size != 0) {
        tl_leave_held_top(a);
        void *p = tl_arena_try_alloc(a, size, align);
        if (p) return p;
    }
    size_t off = TL_LOAD(a->offset);
    uintptr_t cur = (uintptr_t)a->base + off;
    size_t pad = (size_t)(-cur & (uintptr_t)(align - 1));
    if (size == 0) {
        /* Nothing is stored: hand out an aligned address without moving the offset. */
        TL_COUNTER_ADD(a->c.num_allocations, 1);
        return pad <= a->capacity - off ? (void *)(cur + pad) : (void *)tl_zero_size_block;
    }
    TL_COUNTER_ADD(a->c.num_overflows, 1);
    switch (a->overflow) {
    case TL_OVERFLOW_PANIC:
        tl_arena_panic(a, size, align);
        return NULL;
    case TL_OVERFLOW_FALLBACK: {
        if (size > SIZE_MAX - align) return NULL; /* cannot be served by anyone */
        struct tl_fallback *f = malloc(sizeof *f);
        void *raw = f ? malloc(size + align - 1) : NULL;
        if (!raw) {
            free(f);
            return NULL;
        }
        f->raw = raw;
        f->bytes = size;
        f->next = a->fallback;
        a->fallback = f;
        TL_COUNTER_ADD(a->c.num_allocations, 1);
        TL_COUNTER_ADD(a->c.fallback_bytes, size);
        TL_COUNTER_ADD(a->c.fallback_live_bytes, size);
        uintptr_t p = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
        return (void *)p;
    }
    case TL_OVERFLOW_ERROR:
    default:
        return NULL;
    }
}

void tl_arena_note_overflow(tl_arena *a, size_t bytes) {
    TL_COUNTER_ADD(a->c.num_allocations, 1);
    TL_COUNTER_ADD(a->c.num_overflows, 1);
    TL_COUNTER_ADD(a->c.fallback_bytes, bytes);
}

/* ---- chunks (owner) -------------------------------------------------------- */

static inline void tl_note_used(tl_arena *a) {
    struct tl_chunk *top = a->chain[a->chain_len - 1];
    size_t off = TL_LOAD(a->offset);
    if (off > top->used) top->used = off;
}

/* The chain changed: publish what readers of the statistics see. */
static void tl_chain_published(tl_arena *a) {
    uint64_t kept = 0;
    for (size_t i = 0; i + 1 < a->chain_len; i++) kept += a->chain[i]->keep;
    TL_STORE(a->kept_bytes, kept);
    TL_STORE(a->chain_count, a->chain_len);
}

/* A chunk nobody holds any more becomes spare (zeroed first if the arena
 * zeroes released memory); beyond TL_ARENA_SPARE_CHUNKS it is unmapped. */
static void tl_spare_put(tl_arena *a, struct tl_chunk *c) {
    if (TL_LOAD(a->num_spare) >= TL_ARENA_SPARE_CHUNKS) {
        tl_chunk_unmap(a, c);
        return;
    }
    if (a->zero_on_reset && c->used) memset(c->base, 0, c->used);
    c->used = 0;
    c->keep = 0;
    atomic_store_explicit(&c->refs, 1, memory_order_relaxed);
    c->next = a->spare;
    a->spare = c;
    TL_COUNTER_ADD(a->num_spare, 1);
}

/* Take the chunks other threads gave back. One atomic load when there are none. */
static void tl_drain_returned(tl_arena *a) {
    if (atomic_load_explicit(&a->returned, memory_order_relaxed) == NULL) return;
    struct tl_chunk *c = atomic_exchange_explicit(&a->returned, NULL, memory_order_acquire);
    while (c) {
        struct tl_chunk *next = c->next;
        atomic_fetch_sub_explicit(&a->returned_count, 1, memory_order_relaxed);
        tl_spare_put(a, c);
        c = next;
    }
}

/* A chunk leaves the chain: drop the chain's reference. */
static void tl_chain_drop(tl_arena *a, struct tl_chunk *c) {
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) tl_spare_put(a, c);
}

/* A chunk with nothing in it: spare, given back, or newly mapped. */
static struct tl_chunk *tl_fresh_chunk(tl_arena *a) {
    tl_drain_returned(a);
    struct tl_chunk *c = a->spare;
    if (c) {
        a->spare = c->next;
        TL_COUNTER_ADD(a->num_spare, (size_t)-1);
        c->next = NULL;
        return c;
    }
    c = tl_chunk_map(a->capacity, a->pages_requested, a->numa, 0, NULL);
    if (c) atomic_fetch_add_explicit(&a->num_chunks, 1, memory_order_relaxed);
    return c;
}

/* Make chain[chain_len - 1] the current chunk, at `off`. */
static void tl_set_top(tl_arena *a, size_t off) {
    struct tl_chunk *top = a->chain[a->chain_len - 1];
    a->base = top->base;
    TL_STORE(a->offset, off);
}

/* Push `c` as the new current chunk. -1 if the chain cannot grow. */
static int tl_chain_push(tl_arena *a, struct tl_chunk *c) {
    if (a->chain_len == a->chain_cap) {
        size_t cap = a->chain_cap * 2;
        struct tl_chunk **p = malloc(cap * sizeof *p);
        if (!p) return -1;
        memcpy(p, a->chain, a->chain_len * sizeof *p);
        if (a->chain != a->chain_inline) free(a->chain);
        a->chain = p;
        a->chain_cap = cap;
    }
    a->chain[a->chain_len++] = c;
    return 0;
}

/* Continue above chain[i], which an escape holds: in a fresh chunk that
 * replaces it (keep == 0: nothing of the open scopes lies in it) or goes on
 * top of it (it keeps the open scopes' first `keep` bytes). Chunks above i
 * must already have left the chain. If no fresh chunk can be had, chain[i]
 * stays current and full (top_held) until a rewind below it. */
static void tl_continue_above(tl_arena *a, size_t i, size_t keep) {
    tl_assert(a->chain_len == i + 1);
    struct tl_chunk *held = a->chain[i];
    struct tl_chunk *f = tl_fresh_chunk(a);
    if (f) {
        if (keep == 0) {
            a->chain[i] = f;
            tl_chain_drop(a, held); /* the escape's reference keeps it */
            a->top_held = 0;
            tl_set_top(a, 0);
            return;
        }
        if (tl_chain_push(a, f) == 0) {
            held->keep = keep;
            a->top_held = 0;
            tl_set_top(a, 0);
            return;
        }
        tl_spare_put(a, f);
    }
    held->keep = keep;
    a->top_held = 1;
    tl_set_top(a, a->capacity);
}

/* A mark still designates a position of the chain. */
static int tl_mark_valid(const tl_arena *a, tl_mark m) {
    if (m.epoch != a->epoch || m.index >= a->chain_len) return 0;
    size_t limit = m.index + 1 == a->chain_len ? TL_LOAD(a->offset) : a->chain[m.index]->keep;
    return m.offset <= limit;
}

/* Release down to (i, off): chunks above i leave the chain; chain[i] becomes
 * current at `off`, or, if an escape holds it, the arena continues above it. */
static void tl_release_chain(tl_arena *a, size_t i, size_t off, struct tl_fallback *fb) {
    tl_drain_returned(a);
    tl_fold_peak(a);
    tl_note_used(a);
    if (a->chain_len > i + 1) {
        a->top_held = 0; /* the held current chunk, if any, leaves the chain */
        while (a->chain_len > i + 1) tl_chain_drop(a, a->chain[--a->chain_len]);
    }
    struct tl_chunk *c = a->chain[i];
    if (a->top_held && off > c->keep) off = c->keep; /* a mark taken while full */
    if (atomic_load_explicit(&c->refs, memory_order_acquire) == 1) {
        /* Nobody else holds it, and only this thread could make it held again. */
        if (a->zero_on_reset && c->used > off) {
            memset(c->base + off, 0, c->used - off);
            c->used = off;
        }
        c->keep = 0;
        a->top_held = 0;
        tl_set_top(a, off);
    } else {
        tl_continue_above(a, i, off);
    }
    tl_fallback_free_until(a, fb);
    tl_chain_published(a);
    TL_COUNTER_ADD(a->c.num_resets, 1);
    TL_COUNTER_ADD(a->generation, 1);
}

/* The current chunk is held and full (no fresh chunk could be had earlier):
 * try again to continue above it. */
TL_NOINLINE TL_COLD static void tl_leave_held_top(tl_arena *a) {
    size_t i = a->chain_len - 1;
    struct tl_chunk *c = a->chain[i];
    if (atomic_load_explicit(&c->refs, memory_order_acquire) == 1) {
        a->top_held = 0; /* the escapes ended: the rest of the chunk is free */
        tl_set_top(a, c->keep);
        c->keep = 0;
    } else {
        tl_continue_above(a, i, c->keep);
    }
    tl_chain_published(a);
}

static void tl_release_to(tl_arena *a, size_t off, struct tl_fallback *fb) {
    size_t cur = TL_LOAD(a->offset);
    tl_assert(off <= cur);
    tl_fold_peak(a);
    if (a->zero_on_reset && cur > off) memset(a->base + off, 0, cur - off);
    TL_STORE(a->offset, off);
    tl_fallback_free_until(a, fb);
    TL_COUNTER_ADD(a->c.num_resets, 1);
    TL_COUNTER_ADD(a->generation, 1);
}

int tl_arena_rewind(tl_arena *a, tl_mark m) {
    /* The common case first, in one test: a mark of the current chunk, which
     * no escape holds. O(1). */
    if (TL_LIKELY(m.epoch == a->epoch && m.index + 1 == a->chain_len && !a->top_held &&
                  m.offset <= TL_LOAD(a->offset))) {
        tl_release_to(a, m.offset, m.fallback);
        return 0;
    }
    if (!tl_mark_valid(a, m)) return -1;
    /* The mark's fallback head must still be on the stack: true whenever the
     * mark is not stale, since blocks are only popped by rewinds, resets and
     * escapes (an escape takes only blocks newer than its own mark, and marks
     * taken inside it are stale afterwards). */
    tl_release_chain(a, m.index, m.offset, m.fallback);
    return 0;
}

void tl_arena_reset(tl_arena *a) {
    tl_drain_returned(a); /* one atomic load when nothing came back */
    if (a->chain_len == 1 && !a->top_held) tl_release_to(a, 0, NULL);
    else tl_release_chain(a, 0, 0, NULL);
    a->epoch++;
}

/* Add a reference to c for an escape. Only the owner adds references. */
static inline void tl_chunk_hold(struct tl_chunk *c) {
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

/* Bytes used in chain[k] above `lo`: its open-scope part below the current
 * chunk, its used part for the current one. */
static size_t tl_chunk_bytes(const tl_arena *a, size_t k, size_t lo) {
    size_t top = a->chain_len - 1;
    size_t hi = k == top && !a->top_held ? TL_LOAD(a->offset) : a->chain[k]->keep;
    return hi > lo ? hi - lo : 0;
}

int tl_arena_escape(tl_arena *a, tl_mark m, tl_escape *e) {
    memset(e, 0, sizeof *e);
    if (!tl_mark_valid(a, m)) return -1;
    size_t top = a->chain_len - 1, i = m.index;
    if (a->top_held && i == top && m.offset > a->chain[top]->keep) m.offset = a->chain[top]->keep;
    /* Bytes since the mark: the rest of chain[i], the open-scope part of the
     * chunks above it, the current chunk's used part. */
    uint64_t bytes = 0;
    for (size_t k = i; k <= top; k++) bytes += tl_chunk_bytes(a, k, k == i ? m.offset : 0);
    /* Heap blocks since the mark go with the escape. */
    uint64_t fb_bytes = 0;
    while (a->fallback != m.fallback) {
        struct tl_fallback *f = a->fallback;
        tl_assert(f != NULL);
        a->fallback = f->next;
        f->next = e->fallback;
        e->fallback = f;
        fb_bytes += f->bytes;
    }
    if (fb_bytes) TL_COUNTER_ADD(a->c.fallback_live_bytes, -fb_bytes);
    if (bytes == 0 && e->fallback == NULL) return 0; /* nothing to hold */
    tl_arena_retain(a);
    e->arena = a;
    e->bytes = bytes + fb_bytes;
    atomic_fetch_add_explicit(&a->escaped_bytes, e->bytes, memory_order_relaxed);
    TL_COUNTER_ADD(a->num_escapes, 1);
    tl_fold_peak(a);
    TL_COUNTER_ADD(a->generation, 1);
    if (bytes == 0) return 0; /* only heap blocks */
    tl_note_used(a);
    /* Hold the chunks of chain[i..top] that have bytes since the mark (an empty
     * current chunk is not held: it becomes the fresh chunk again). Without
     * room to record a second one (malloc failed), the others are held for
     * good: never reused, never unmapped before the arena. Leaking is safe;
     * reusing would not be. */
    size_t n = 0;
    for (size_t k = i; k <= top; k++) {
        if (tl_chunk_bytes(a, k, k == i ? m.offset : 0) == 0) continue;
        struct tl_chunk *c = a->chain[k];
        tl_chunk_hold(c);
        if (e->chunk == NULL) {
            e->chunk = c;
            continue;
        }
        if (e->more == NULL && n == 0) {
            e->more = malloc((top - k + 1) * sizeof *e->more);
            n = 1; /* tried */
        }
        if (e->more) e->more[e->n_more++] = c;
    }
    int held = e->chunk == a->chain[i] ||
               atomic_load_explicit(&a->chain[i]->refs, memory_order_acquire) > 1;
    if (a->chain_len > i + 1) {
        a->top_held = 0;
        while (a->chain_len > i + 1) tl_chain_drop(a, a->chain[--a->chain_len]);
    }
    if (held) {
        tl_continue_above(a, i, m.offset);
    } else { /* nothing of the escape in chain[i]: go on there, at the mark */
        a->chain[i]->keep = 0;
        tl_set_top(a, m.offset);
    }
    tl_chain_published(a);
    return 0;
}

/* Drop an escape's reference; the last one hands the chunk back to its arena. */
static void tl_chunk_unhold(tl_arena *a, struct tl_chunk *c) {
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    atomic_fetch_add_explicit(&a->returned_count, 1, memory_order_relaxed);
    struct tl_chunk *head = atomic_load_explicit(&a->returned, memory_order_relaxed);
    do {
        c->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&a->returned, &head, c, memory_order_release,
                                                    memory_order_relaxed));
}

void tl_arena_escape_release(tl_escape *e) {
    tl_arena *a = e->arena;
    if (!a) return;
    e->arena = NULL;
    if (e->chunk) tl_chunk_unhold(a, e->chunk);
    for (size_t k = 0; k < e->n_more; k++) tl_chunk_unhold(a, e->more[k]);
    free(e->more);
    e->more = NULL;
    struct tl_fallback *f = e->fallback;
    while (f) {
        struct tl_fallback *next = f->next;
        free(f->raw);
        free(f);
        f = next;
    }
    e->fallback = NULL;
    atomic_fetch_sub_explicit(&a->escaped_bytes, e->bytes, memory_order_relaxed);
    tl_arena_release(a); /* the last reference destroys the arena and unmaps the chunks */
}

void tl_arena_get_stats(const tl_arena *a, tl_arena_stats *out) {
    size_t used = TL_LOAD(a->offset);
    size_t peak = TL_LOAD(a->c.peak_bytes);
    out->capacity_bytes = a->capacity;
    out->used_bytes = used + TL_LOAD(a->kept_bytes);
    out->peak_bytes = used > peak ? used : peak;
    out->num_allocations = TL_LOAD(a->c.num_allocations);
    out->num_overflows = TL_LOAD(a->c.num_overflows);
    out->fallback_bytes = TL_LOAD(a->c.fallback_bytes);
    out->fallback_live_bytes = TL_LOAD(a->c.fallback_live_bytes);
    out->num_resets = TL_LOAD(a->c.num_resets);
    out->escaped_bytes = TL_LOAD(a->escaped_bytes);
    out->num_escapes = TL_LOAD(a->num_escapes);
    uint64_t chunks = TL_LOAD(a->num_chunks);
    uint64_t spare = TL_LOAD(a->num_spare) + TL_LOAD(a->returned_count);
    uint64_t owned = TL_LOAD(a->chain_count) + spare;
    out->num_chunks = chunks;
    out->spare_chunks = spare;
    out->escaped_chunks = chunks > owned ? chunks - owned : 0;
}
