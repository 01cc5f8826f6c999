/* huffman_internal.h: the three allocators behind the Huffman coder (not installed).
 *
 * tl_hheap is the baseline allocator: one fixed region, a first-fit free
 * list kept in address order (neighbours coalesce on free), one mutex around
 * every operation. tl_halloc is one worker's view of the allocator chosen for a
 * run: the global heap itself, a private pool in front of it, or the worker's
 * thread arena.
 */
#ifndef TLALLOC_HUFFMAN_INTERNAL_H
#define TLALLOC_HUFFMAN_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "tlalloc/arena.h"
#include "huffman.h"

/* Record a failure in err (may be NULL); returns `status`. */
tl_huff_status tl_huff_fail(tl_huff_error *err, tl_huff_status status, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Granule of the heap and of the pools: every block is a multiple of it. */
#define TL_HH_ALIGN ((size_t)16)

struct tl_hh_block;

typedef struct tl_hheap {
    pthread_mutex_t lock;
    char *base;                    /* region from malloc, TL_HH_ALIGN-aligned */
    size_t size;
    struct tl_hh_block *free_list; /* free blocks in address order */
    /* Everything below is written under `lock` only. */
    uint64_t locks;                /* acquisitions of `lock`, exact */
    uint64_t contended;            /* acquisitions that found it held */
    uint64_t num_allocs, num_frees, num_failed;
    size_t used, peak;             /* bytes in allocated blocks, headers included */
} tl_hheap;

/* Create a heap of `size` bytes (>= 4096). Returns 0, or -1 if malloc fails. */
int tl_hheap_init(tl_hheap *h, size_t size);
void tl_hheap_destroy(tl_hheap *h);
/* First fit; takes the lock once. NULL when no free block is large enough. */
void *tl_hheap_alloc(tl_hheap *h, size_t size);
/* Takes the lock once. p must come from tl_hheap_alloc on h (NULL is ignored
 * without taking the lock). */
void tl_hheap_free(tl_hheap *h, void *p);
/* Nonzero if p lies in the heap's region. */
static inline int tl_hheap_contains(const tl_hheap *h, const void *p) {
    return (const char *)p >= h->base && (const char *)p < h->base + h->size;
}
/* Bytes a request of `size` takes in the heap (header and rounding included). */
size_t tl_hheap_block_bytes(size_t size);

/* One worker's allocator. Counters are written by the worker only and read by
 * the coordinating thread after joining it. */
typedef struct tl_halloc {
    tl_huff_allocator kind;
    tl_hheap *heap;       /* global-lock and pooled */
    char *pool;           /* pooled: the worker's pool, from `heap` */
    char *pool_cur, *pool_end;
    tl_arena *arena;      /* tlalloc: the worker's thread arena */
    uint64_t num_allocs, num_frees;
    uint64_t heap_allocs, heap_frees; /* requests that went to the locked heap */
    uint64_t pool_allocs;
    uint64_t arena_resets;
    int failed;           /* an allocation returned NULL */
} tl_halloc;

/* Set up the calling worker's allocator: carve its pool (pooled, one locked
 * heap allocation) or fetch its thread arena (tlalloc). Returns TL_HUFF_OK or
 * TL_HUFF_ENOMEM with a message in err. */
tl_huff_status tl_halloc_init(tl_halloc *a, tl_huff_allocator kind, tl_hheap *heap,
                              size_t pool_bytes, tl_huff_error *err);
/* Give the pool back to the heap (one locked free), or drop the thread arena. */
void tl_halloc_fini(tl_halloc *a);

/* Out of line: the pool is full, serve from the locked heap. */
void *tl_halloc_pool_fallback(tl_halloc *a, size_t size);

/* Allocate `size` (> 0) bytes aligned to TL_HH_ALIGN. NULL when the allocator
 * ran out (and a->failed is set). Cost: global-lock, a mutex round trip and a
 * free-list walk; pooled, a compare and an add; tlalloc, the arena fast path. */
static inline void *tl_halloc_alloc(tl_halloc *a, size_t size) {
    void *p;
    a->num_allocs++;
    switch (a->kind) {
    case TL_HUFF_POOLED: {
        size_t need = (size + TL_HH_ALIGN - 1) & ~(TL_HH_ALIGN - 1);
        if (TL_LIKELY(need <= (size_t)(a->pool_end - a->pool_cur))) {
            p = a->pool_cur;
            a->pool_cur += need;
            a->pool_allocs++;
            return p;
        }
        p = tl_halloc_pool_fallback(a, size);
        break;
    }
    case TL_HUFF_TLALLOC:
        p = tl_arena_alloc(a->arena, size, TL_HH_ALIGN);
        break;
    default:
        a->heap_allocs++;
        p = tl_hheap_alloc(a->heap, size);
        break;
    }
    if (TL_UNLIKELY(p == NULL)) a->failed = 1;
    return p;
}

/* Free: global-lock takes the lock; pooled takes it only for heap memory (pool
 * memory is released all at once when the pool is recycled); tlalloc does
 * nothing (the arena is reset after the block). */
static inline void tl_halloc_free(tl_halloc *a, void *p) {
    if (p == NULL) return;
    a->num_frees++;
    switch (a->kind) {
    case TL_HUFF_POOLED:
        if ((char *)p >= a->pool && (char *)p < a->pool_end) return;
        a->heap_frees++;
        tl_hheap_free(a->heap, p);
        return;
    case TL_HUFF_TLALLOC:
        return;
    default:
        a->heap_frees++;
        tl_hheap_free(a->heap, p);
        return;
    }
}

/* Between batches: the pool starts over (pooled); nothing for the others. */
static inline void tl_halloc_recycle(tl_halloc *a) {
    if (a->kind == TL_HUFF_POOLED) a->pool_cur = a->pool;
}

/* After each block: the thread arena is reset (tlalloc). */
static inline void tl_halloc_block_done(tl_halloc *a) {
    if (a->kind == TL_HUFF_TLALLOC) {
        tl_arena_reset(a->arena);
        a->arena_resets++;
    }
}

#endif
