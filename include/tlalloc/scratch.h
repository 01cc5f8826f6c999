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
 *                      user finishes; the heap serves what does not fit.
 *   TL_SCRATCH_MALLOC  malloc for every allocation, free for each at the end.
 *
 * Never fails for lack of arena space: a request that does not fit in the arena
 * is served from the heap (freed at tl_scratch_end) and counted as an overflow
 * in that arena's statistics. tl_scratch_alloc returns NULL only when the heap
 * itself is exhausted.
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

struct tl_scratch_block; /* a heap block (scratch.c) */

typedef struct tl_scratch {
    tl_scratch_kind kind;
    tl_arena *arena;               /* THREAD: the caller's arena; SHARED: the shared one */
    tl_mark mark;                  /* THREAD: where to rewind at the end */
    struct tl_scratch_block *heap; /* heap blocks to free at the end, newest first */
    uint64_t num_allocations;      /* requests served during this bracket */
    uint64_t num_overflows;        /* requests that did not fit the arena (heap-served) */
    uint64_t heap_bytes;           /* bytes served from the heap (overflows and MALLOC) */
} tl_scratch;

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
    if (TL_LIKELY(s->kind == TL_SCRATCH_THREAD)) {
        void *p = tl_arena_try_alloc(s->arena, size, align);
        if (TL_LIKELY(p != NULL)) {
            s->num_allocations++;
            return p;
        }
    }
    return tl_scratch_alloc_slow(s, size, align);
}

/* End the bracket: free the heap blocks, rewind (THREAD) or leave (SHARED). */
void tl_scratch_end(tl_scratch *s);

/* Statistics of the shared strategy's arena (all zero before its first use). */
void tl_scratch_shared_stats(tl_arena_stats *out);

/* Record in `a`'s statistics a request of `size` bytes that did not fit and was
 * served from the heap by the caller (counted like the arena's own fallback:
 * one allocation, one overflow, `size` fallback bytes). Only the arena's owner
 * (or the holder of the shared arena's lock) may call it. */

#ifdef __cplusplus
}
#endif
#endif /* TLALLOC_SCRATCH_H */
