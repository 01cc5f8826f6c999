/* scratch.c: the three sources of kernel scratch memory (see tlalloc/scratch.h).
 *
 * THREAD is the product: its fast path is inline in the header. This file holds
 * the slow paths: spilled blocks from the pool (requests the arena cannot
 * hold), heap blocks of the MALLOC strategy, the shared arena with its mutex,
 * and the per-kernel statistics.
 */
#include "tlalloc/scratch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "platform/fork.h"
#include "tlalloc/pool.h"

/* A spilled or MALLOC block: the header sits just before the aligned pointer
 * handed out. */
typedef struct tl_scratch_block {
    struct tl_scratch_block *next;
    void *raw; /* what tl_pool_aligned_alloc (spills) or malloc (MALLOC) returned */
} tl_scratch_block;

/* ---- per-kernel statistics ----------------------------------------------------- */

typedef struct tl_kstats {
    _Atomic uint64_t num_spilled_calls, num_spills, spilled_bytes;
    _Atomic uint64_t peak_need_bytes, fit_capacity_bytes, spill_capacity_bytes;
} tl_kstats;

/* One cache line per kernel: threads running different kernels never share one. */
static struct {
    _Alignas(64) tl_kstats s;
} g_kstats[TL_SCRATCH_NUM_KERNELS];

static const char *const g_kernel_names[TL_SCRATCH_NUM_KERNELS] = {"other", "cosine", "spread", "decay"};

const char *tl_scratch_kernel_name(tl_scratch_kernel k) {
    return (unsigned)k < TL_SCRATCH_NUM_KERNELS ? g_kernel_names[k] : NULL;
}

/* Raise *p to v. Cost when v is not larger (the steady state): one relaxed load
 * of a line that stays shared between the cores. */
static int tl_atomic_max(_Atomic uint64_t *p, uint64_t v) {
    uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);
    while (v > cur)
        if (atomic_compare_exchange_weak_explicit(p, &cur, v, memory_order_relaxed, memory_order_relaxed))
            return 1;
    return 0;
}

void tl_scratch_kernel_get_stats(tl_scratch_kernel k, tl_scratch_kernel_stats *out) {
    memset(out, 0, sizeof *out);
    if ((unsigned)k >= TL_SCRATCH_NUM_KERNELS) return;
    tl_kstats *g = &g_kstats[k].s;
    out->num_spilled_calls = atomic_load_explicit(&g->num_spilled_calls, memory_order_relaxed);
    out->num_spills = atomic_load_explicit(&g->num_spills, memory_order_relaxed);
    out->spilled_bytes = atomic_load_explicit(&g->spilled_bytes, memory_order_relaxed);
    out->peak_need_bytes = atomic_load_explicit(&g->peak_need_bytes, memory_order_relaxed);
    out->fit_capacity_bytes = atomic_load_explicit(&g->fit_capacity_bytes, memory_order_relaxed);
    out->spill_capacity_bytes = atomic_load_explicit(&g->spill_capacity_bytes, memory_order_relaxed);
}

void tl_scratch_kernel_reset_stats(void) {
    for (unsigned k = 0; k < TL_SCRATCH_NUM_KERNELS; k++) {
        tl_kstats *g = &g_kstats[k].s;
        atomic_store_explicit(&g->num_spilled_calls, 0, memory_order_relaxed);
        atomic_store_explicit(&g->num_spills, 0, memory_order_relaxed);
        atomic_store_explicit(&g->spilled_bytes, 0, memory_order_relaxed);
        atomic_store_explicit(&g->peak_need_bytes, 0, memory_order_relaxed);
        atomic_store_explicit(&g->fit_capacity_bytes, 0, memory_order_relaxed);
        atomic_store_explicit(&g->spill_capacity_bytes, 0, memory_order_relaxed);
    }
}

/* At the end of a bracket, before the rewind. THREAD brackets only know their
 * need: the arena bytes the call took since its mark plus what its spills
 * would have taken (the arena only grows during a bracket, so its offset now
 * is the call's peak). SHARED brackets count their spills only (their arena's
 * offset mixes every thread's calls). */
static void tl_scratch_record(const tl_scratch *s) {
    if ((unsigned)s->kernel >= TL_SCRATCH_NUM_KERNELS) return;
    tl_kstats *g = &g_kstats[s->kernel].s;
    uint64_t need = 0, start = 0;
    size_t used = s->kind == TL_SCRATCH_THREAD ? tl_arena_used(s->arena) : 0;
    /* Offsets count within the arena's current chunk, which a kernel call never
     * leaves (only a Python scope's escape moves the arena to a fresh chunk). */
    if (s->kind == TL_SCRATCH_THREAD && TL_LIKELY(used >= s->mark.offset)) {
        start = s->mark.offset;
        need = (uint64_t)(used - s->mark.offset) + s->spill_need;
        tl_atomic_max(&g->peak_need_bytes, need);
    }
    if (TL_LIKELY(s->num_overflows == 0)) return;
    atomic_fetch_add_explicit(&g->num_spilled_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->num_spills, s->num_overflows, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->spilled_bytes, s->heap_bytes, memory_order_relaxed);
    if (need && tl_atomic_max(&g->fit_capacity_bytes, start + need))
        atomic_store_explicit(&g->spill_capacity_bytes, s->arena->capacity, memory_order_relaxed);
}

/* ---- the shared strategy's arena ------------------------------------------ */

static pthread_mutex_t g_shared_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_arena *g_shared;   /* created on first use, lives until exit */
static long g_shared_users;  /* brackets currently open on it */
/* Brackets the calling thread has open on it: after fork, the child keeps only
 * the forking thread's (the others' brackets never end there). */
static _Thread_local long g_shared_mine;

/* fork (slot TL_FORK_SCRATCH, lock 1 of platform/fork.c's order): it is held
 * while the options lock is taken (tl_shared_create_locked). */
static void tl_scratch_fork_lock(void) { pthread_mutex_lock(&g_shared_lock); }
static void tl_scratch_fork_unlock(void) { pthread_mutex_unlock(&g_shared_lock); }
static void tl_scratch_fork_child(void) {
    pthread_mutex_lock(&g_shared_lock);
    g_shared_users = g_shared_mine;
    /* Memory of the other threads' brackets is garbage now: reset when the
     * forking thread has none open, else when its last one ends. */
    if (g_shared && g_shared_users == 0) tl_arena_reset(g_shared);
    pthread_mutex_unlock(&g_shared_lock);
}
static const tl_fork_hooks tl_scratch_fork_hooks = {tl_scratch_fork_lock, tl_scratch_fork_unlock,
                                                    tl_scratch_fork_child};
static void tl_scratch_fork_register(void) { tl_fork_register(TL_FORK_SCRATCH, &tl_scratch_fork_hooks); }
#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor)) static void tl_scratch_fork_at_load(void) { tl_scratch_fork_register(); }
#endif

TL_NOINLINE TL_COLD static tl_arena *tl_shared_create_locked(void) {
    tl_arena_options opts;
    tl_get_thread_arena_options(&opts);
    opts.overflow = TL_OVERFLOW_ERROR; /* overflows are spilled to the pool here */
    return tl_arena_create(&opts);
}

void tl_scratch_shared_stats(tl_arena_stats *out) {
    pthread_mutex_lock(&g_shared_lock);
    if (g_shared)
        tl_arena_get_stats(g_shared, out);
    else
        memset(out, 0, sizeof *out);
    pthread_mutex_unlock(&g_shared_lock);
}

/* ---- begin / end -------------------------------------------------------------- */

int tl_scratch_begin(tl_scratch *s, tl_scratch_kind kind, tl_arena *arena) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    switch (kind) {
    case TL_SCRATCH_THREAD:
        if (!arena) arena = tl_thread_arena(NULL);
        if (!arena) return -1; /* errno set by tl_thread_arena */
        s->arena = arena;
        s->mark = tl_arena_mark(arena);
        return 0;
    case TL_SCRATCH_SHARED:
        tl_scratch_fork_register(); /* pthread_once and a load once registered */
        pthread_mutex_lock(&g_shared_lock);
        if (!g_shared) g_shared = tl_shared_create_locked();
        if (!g_shared) {
            pthread_mutex_unlock(&g_shared_lock);
            errno = ENOMEM;
            return -1;
        }
        g_shared_users++;
        g_shared_mine++;
        s->arena = g_shared;
        pthread_mutex_unlock(&g_shared_lock);
        return 0;
    case TL_SCRATCH_MALLOC:
        return 0;
    }
    errno = EINVAL;
    return -1;
}

static void tl_scratch_free_heap(tl_scratch *s) {
    tl_scratch_block *b = s->heap;
    const int pool = s->kind != TL_SCRATCH_MALLOC;
    while (b) {
        tl_scratch_block *next = b->next;
        if (pool)
            tl_pool_free(b->raw);
        else
            free(b->raw);
        b = next;
    }
    s->heap = NULL;
}

void tl_scratch_end(tl_scratch *s) {
    if (s->kind != TL_SCRATCH_MALLOC) tl_scratch_record(s);
    tl_scratch_free_heap(s);
    switch (s->kind) {
    case TL_SCRATCH_THREAD: {
        int rc = tl_arena_rewind(s->arena, s->mark);
        tl_assert(rc == 0); /* nothing can reset the caller's arena during a kernel */
        (void)rc;
        break;
    }
    case TL_SCRATCH_SHARED:
        pthread_mutex_lock(&g_shared_lock);
        tl_assert(g_shared_users > 0 && g_shared_mine > 0);
        g_shared_mine--;
        if (--g_shared_users == 0) tl_arena_reset(g_shared);
        pthread_mutex_unlock(&g_shared_lock);
        break;
    case TL_SCRATCH_MALLOC:
        break;
    }
    s->arena = NULL;
}

/* ---- slow path ----------------------------------------------------------------- */

/* One malloc per request (the MALLOC strategy), header in front of the
 * aligned pointer. */
static void *tl_scratch_heap_alloc(tl_scratch *s, size_t size, size_t align) {
    if (align < sizeof(void *)) align = sizeof(void *);
    size_t extra = sizeof(tl_scratch_block) + align - 1;
    if (size > SIZE_MAX - extra) return NULL;
    char *raw = malloc(size + extra);
    if (!raw) return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(tl_scratch_block) + align - 1) & ~(uintptr_t)(align - 1);
    tl_scratch_block *b = (tl_scratch_block *)(p - sizeof(tl_scratch_block));
    b->raw = raw;
    b->next = s->heap;
    s->heap = b;
    s->heap_bytes += size;
    return (void *)p;
}

/* Serve a request that the arena cannot: a pool block (a large block above
 * TL_POOL_MAX_SMALL, 64 KiB, kept in the large cache for reuse once freed; a
 * size-class block below), aligned
 * as asked, with the header in the `hdr` bytes before the pointer. Counted as
 * an overflow of the bracket, and its need (size plus the worst padding the
 * arena could have put before it) is remembered for the kernel's statistics.
 * Freed at tl_scratch_end with tl_pool_free, by the same thread. */
TL_NOINLINE TL_COLD static void *tl_scratch_overflow(tl_scratch *s, size_t size, size_t align) {
    size_t hdr = align > sizeof(tl_scratch_block) ? align : sizeof(tl_scratch_block);
    size_t ba = align > TL_POOL_MIN_ALIGN ? align : TL_POOL_MIN_ALIGN;
    if (size > SIZE_MAX - hdr) return NULL;
    char *raw = tl_pool_aligned_alloc(ba, hdr + size);
    if (!raw) return NULL;
    tl_scratch_block *b = (tl_scratch_block *)(raw + hdr - sizeof(tl_scratch_block));
    b->raw = raw;
    b->next = s->heap;
    s->heap = b;
    s->num_overflows++;
    s->heap_bytes += size;
    s->spill_need += size + align - 1;
    return raw + hdr;
}

TL_NOINLINE void *tl_scratch_alloc_slow(tl_scratch *s, size_t size, size_t align) {
    tl_assert(tl_is_pow2(align) && align <= TL_MAX_ALIGN);
    if (size == 0) size = 1; /* keep pointers distinct and valid */
    s->num_allocations++;
    switch (s->kind) {
    case TL_SCRATCH_THREAD: {
        /* The inline attempt failed (or size was 0): try again, then overflow. */
        void *p = tl_arena_try_alloc(s->arena, size, align);
        if (p) return p;
        tl_arena_note_overflow(s->arena, size);
        return tl_scratch_overflow(s, size, align);
    }
    case TL_SCRATCH_SHARED: {
        /* Cost: one uncontended lock/unlock pair (~40 ns) plus waiting when contended. */
        pthread_mutex_lock(&g_shared_lock);
        void *p = tl_arena_try_alloc(s->arena, size, align);
        if (!p) tl_arena_note_overflow(s->arena, size);
        pthread_mutex_unlock(&g_shared_lock);
        return p ? p : tl_scratch_overflow(s, size, align);
    }
    case TL_SCRATCH_MALLOC:
        return tl_scratch_heap_alloc(s, size, align);
    }
    return NULL;
}
