/* arena.c: bump arenas. The allocation fast path is inline in tlalloc/arena.h;
 * this file holds creation, the out-of-line overflow path, rewind and reset. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tlalloc/arena.h"
#include "tlalloc/os.h"

/* A heap block served under the fallback policy. Blocks form a stack (newest
 * first) so that a mark can remember the head and a rewind frees exactly the
 * blocks allocated after it. */
struct tl_fallback {
    struct tl_fallback *next;
    void *raw;    /* what malloc returned */
    size_t bytes; /* bytes requested by the caller */
};

/* Zero-size requests that find no room get a pointer to this: non-NULL, aligned
 * to the largest alignment, never written (nothing can be stored in 0 bytes). */
static _Alignas(TL_MAX_ALIGN) char tl_zero_size_block[TL_MAX_ALIGN];

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
    size_t align = o.pages != TL_PAGES_DEFAULT && tl_os_huge_page_size() ? tl_os_huge_page_size()
                                                                         : tl_os_page_size();
    if (tl_os_map(o.capacity, align, o.pages, o.numa, o.prefault, &r) != 0) {
        int e = errno;
        free(a);
        errno = e;
        return NULL;
    }
    a->base = r.base;
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
    tl_assert(((uintptr_t)a->base & (tl_os_page_size() - 1)) == 0);
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

static void tl_arena_destroy(tl_arena *a) {
    tl_fallback_free_until(a, NULL);
    tl_os_region r = {.base = a->base, .size = a->mapped, .pages = a->pages};
    tl_os_unmap(&r);
    free(a);
}

void tl_arena_retain(tl_arena *a) {
    long old = atomic_fetch_add_explicit(&a->refcount, 1, memory_order_relaxed);
    tl_assert(old > 0);
    (void)old;
}

/* Defined in thread.c: unlink a thread arena from the registry before it dies. */
void tl_registry_retire(tl_arena *a);

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
    if (m.epoch != a->epoch || m.offset > TL_LOAD(a->offset)) return -1;
    /* The mark's fallback head must still be on the stack: true whenever the
     * mark is not stale, since blocks are only popped by rewinds and resets. */
    tl_release_to(a, m.offset, m.fallback);
    return 0;
}

void tl_arena_reset(tl_arena *a) {
    tl_release_to(a, 0, NULL);
    a->epoch++;
}

void tl_arena_get_stats(const tl_arena *a, tl_arena_stats *out) {
    size_t used = TL_LOAD(a->offset);
    size_t peak = TL_LOAD(a->c.peak_bytes);
    out->capacity_bytes = a->capacity;
    out->used_bytes = used;
    out->peak_bytes = used > peak ? used : peak;
    out->num_allocations = TL_LOAD(a->c.num_allocations);
    out->num_overflows = TL_LOAD(a->c.num_overflows);
    out->fallback_bytes = TL_LOAD(a->c.fallback_bytes);
    out->fallback_live_bytes = TL_LOAD(a->c.fallback_live_bytes);
    out->num_resets = TL_LOAD(a->c.num_resets);
}
