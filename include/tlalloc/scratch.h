/* tlalloc/scratch.h: where a kernel's temporary memory comes from.
 *
 * A kernel brackets its work with tl_scratch_begin/tl_scratch_end and takes
 * every temporary buffer from tl_scratch_alloc. The same kernel code then runs
 * with its scratch from one of three sources, so that they can be compared:
 *
 *   TL_SCRATCH_THREAD  the calling thread's arena (the product): a pointer bump,
 *                      no lock; everything is released by one rewind at the end.
 *   TL_SCRATCH_SHARED  one arena for every thread: a mutex around every
 *                      allocation; the arena is reset when its last concurrent
 *                      user finishes; the pool serves what does not fit.
 *   TL_SCRATCH_MALLOC  malloc for every allocation, free for each at the end.
 *
 * Never fails for lack of arena space: a request that does not fit in the arena
 * ("spills") is served from the pool's blocks (tl_pool_aligned_alloc; large
 * requests are the pool's large blocks), freed at tl_scratch_end, and counted
 * twice: as an overflow in that arena's statistics, and in the statistics of
 * the kernel the bracket serves (tl_scratch_kernel_get_stats), with the arena
 * size that would have held the whole call. tl_scratch_alloc returns NULL only
 * when the pool itself is exhausted.
 *
 * A tl_scratch lives on the caller's stack and is used by one thread.
 */
#ifndef TLALLOC_SCRATCH_H
#define TLALLOC_SCRATCH_H

#include <stddef.h>
#include <stdint.h>

#include "tlalloc/arena.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tl_scratch_kind {
    TL_SCRATCH_THREAD = 0,
    TL_SCRATCH_SHARED = 1,
    TL_SCRATCH_MALLOC = 2
} tl_scratch_kind;

/* Whom a bracket serves: spills are counted per kernel. A kernel's entry point
 * sets it (tl_scratch_set_kernel) when the bracket's owner left it OTHER. */
typedef enum tl_scratch_kernel {
    TL_SCRATCH_OTHER = 0, /* not (yet) attributed to a kernel */
    TL_SCRATCH_COSINE = 1,
    TL_SCRATCH_SPREAD = 2,
    TL_SCRATCH_DECAY = 3,
    TL_SCRATCH_NUM_KERNELS = 4
} tl_scratch_kernel;

struct tl_scratch_block; /* a pool or heap block (scratch.c) */

typedef struct tl_scratch {
    tl_scratch_kind kind;
    tl_scratch_kernel kernel;      /* whom the statistics are charged to */
    tl_arena *arena;               /* THREAD: the caller's arena; SHARED: the shared one */
    tl_mark mark;                  /* THREAD: where to rewind at the end */
    struct tl_scratch_block *heap; /* spilled (pool) or MALLOC (heap) blocks, newest first */
    uint64_t num_allocations;      /* requests served during this bracket */
    uint64_t num_overflows;        /* requests that did not fit the arena (pool-served) */
    uint64_t heap_bytes;           /* bytes served outside the arena (spills and MALLOC) */
    uint64_t spill_need;           /* arena bytes the spills would have taken: each
                                      request's size plus its alignment's worst padding */
} tl_scratch;

/* Per-kernel scratch statistics (process-wide, all threads; read any time).
 * Written only when a bracket ends: spills add to the counters (relaxed atomic
 * adds, rare), a call that needed more than any before raises the peak (a
 * relaxed load, and a compare-and-swap only when it grows). */
typedef struct tl_scratch_kernel_stats {
    uint64_t num_spilled_calls;    /* brackets with at least one spilled request */
    uint64_t num_spills;           /* requests served from the pool */
    uint64_t spilled_bytes;        /* their bytes (cumulative) */
    uint64_t peak_need_bytes;      /* most arena bytes one thread-arena call needed
                                      (in the arena and spilled, with padding) */
    uint64_t fit_capacity_bytes;   /* smallest thread-arena capacity that would have
                                      held every spilled call whole: the largest
                                      (bytes in use at the call's start + its need);
                                      0 when no thread-arena call spilled */
    uint64_t spill_capacity_bytes; /* capacity of the arena of the call behind
                                      fit_capacity_bytes */
} tl_scratch_kernel_stats;

/* Charge the bracket's statistics to `k`, unless its owner already chose a
 * kernel (the first attribution wins: a kernel called by another kernel's
 * entry point stays charged to the outer one). */
static inline void tl_scratch_set_kernel(tl_scratch *s, tl_scratch_kernel k) {
    if (s->kernel == TL_SCRATCH_OTHER) s->kernel = k;
}

/* Start a bracket. `arena` is the arena for TL_SCRATCH_THREAD (normally the
 * caller's thread arena; NULL means tl_thread_arena(NULL)); it is ignored by the
 * other kinds. Returns 0, or -1 with errno set (EINVAL for an unknown kind,
 * ENOMEM if the arena cannot be created). */
int tl_scratch_begin(tl_scratch *s, tl_scratch_kind kind, tl_arena *arena);

/* Out of line: every request of SHARED and MALLOC, overflows of THREAD. */
void *tl_scratch_alloc_slow(tl_scratch *s, size_t size, size_t align);

/* `size` bytes aligned to `align` (a power of two, at most TL_MAX_ALIGN).
 * Fast path for THREAD: one fit test and the arena's pointer bump. A request of
 * 0 bytes returns a valid, unique-enough pointer that must not be dereferenced. */
static inline void *tl_scratch_alloc(tl_scratch *s, size_t size, size_t align) {
    if (TLALLOC_LIKELY_(s->kind == TL_SCRATCH_THREAD)) {
        void *p = tl_arena_try_alloc(s->arena, size, align);
        if (TLALLOC_LIKELY_(p != NULL)) {
            s->num_allocations++;
            return p;
        }
    }
    return tl_scratch_alloc_slow(s, size, align);
}

/* End the bracket: record its kernel's statistics, free the spilled blocks,
 * rewind (THREAD) or leave (SHARED). */
void tl_scratch_end(tl_scratch *s);

/* Statistics of kernel `k` (all zero for an unknown k), and its name
 * ("other", "cosine", "spread", "decay"; NULL for an unknown k). */
void tl_scratch_kernel_get_stats(tl_scratch_kernel k, tl_scratch_kernel_stats *out);
const char *tl_scratch_kernel_name(tl_scratch_kernel k);
/* Zero every kernel's statistics (tests; not atomic with respect to brackets
 * ending meanwhile). */
void tl_scratch_kernel_reset_stats(void);

/* Statistics of the shared strategy's arena (all zero before its first use). */
void tl_scratch_shared_stats(tl_arena_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TLALLOC_SCRATCH_H */
