/* huffman_heap.c: the two baselines the Huffman benchmark measures the thread
 * arenas against: a global-lock heap, and per-thread pools in front of it.
 *
 * The heap is deliberately simple, the allocator of a plain threaded C program:
 * a first-fit walk of a free list kept in address order, splitting on
 * allocation and coalescing with both neighbours on free, every operation
 * inside one mutex. Its cost is the lock
 * (and, under load, the waiting for it), plus a list walk that grows with
 * fragmentation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "huffman_internal.h"

/* A block of the heap. `size` counts the header; `next` links free blocks
 * and holds TL_HH_USED while the block is allocated. */
typedef struct tl_hh_block {
    size_t size;
    struct tl_hh_block *next;
} tl_hh_block;

#define TL_HH_USED ((tl_hh_block *)(uintptr_t)0x7e11a110UL)
#define TL_HH_HDR sizeof(tl_hh_block)
#define TL_HH_MIN_BLOCK (2 * TL_HH_HDR) /* smallest block worth splitting off */

_Static_assert(sizeof(tl_hh_block) == 16, "heap header is one granule");

size_t tl_hheap_block_bytes(size_t size) {
    size_t need = (size + TL_HH_HDR + TL_HH_ALIGN - 1) & ~(TL_HH_ALIGN - 1);
    return need < TL_HH_MIN_BLOCK ? TL_HH_MIN_BLOCK : need;
}

int tl_hheap_init(tl_hheap *h, size_t size) {
    memset(h, 0, sizeof *h);
    size &= ~(TL_HH_ALIGN - 1);
    if (size < 4096) return -1;
    h->base = aligned_alloc(TL_HH_ALIGN, size);
    if (h->base == NULL) return -1;
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h->base);
        h->base = NULL;
        return -1;
    }
    h->size = size;
    tl_hh_block *b = (tl_hh_block *)(void *)h->base;
    b->size = size;
    b->next = NULL;
    h->free_list = b;
    return 0;
}

void tl_hheap_destroy(tl_hheap *h) {
    if (h->base == NULL) return;
    pthread_mutex_destroy(&h->lock);
    free(h->base);
    h->base = NULL;
}

/* Take the lock, counting the acquisition and whether it had to wait. */
static inline void hh_lock(tl_hheap *h) {
    if (pthread_mutex_trylock(&h->lock) != 0) {
        pthread_mutex_lock(&h->lock);
        h->contended++;
    }
    h->locks++;
}

void *tl_hheap_alloc(tl_hheap *h, size_t size) {
    if (size == 0 || size > h->size) {
        hh_lock(h); /* every call takes the lock, failing ones too */
        h->num_failed++;
        pthread_mutex_unlock(&h->lock);
        return NULL;
    }
    size_t need = tl_hheap_block_bytes(size);
    hh_lock(h);
    tl_hh_block **link = &h->free_list;
    tl_hh_block *b = h->free_list;
    while (b != NULL && b->size < need) {
        link = &b->next;
        b = b->next;
    }
    if (b == NULL) {
        h->num_failed++;
        pthread_mutex_unlock(&h->lock);
        return NULL;
    }
    if (b->size - need >= TL_HH_MIN_BLOCK) { /* split: the tail stays free */
        tl_hh_block *rest = (tl_hh_block *)(void *)((char *)b + need);
        rest->size = b->size - need;
        rest->next = b->next;
        *link = rest;
        b->size = need;
    } else {
        *link = b->next;
    }
    b->next = TL_HH_USED;
    h->used += b->size;
    if (h->used > h->peak) h->peak = h->used;
    h->num_allocs++;
    pthread_mutex_unlock(&h->lock);
    return (char *)b + TL_HH_HDR;
}

void tl_hheap_free(tl_hheap *h, void *p) {
    if (p == NULL) return;
    tl_hh_block *b = (tl_hh_block *)(void *)((char *)p - TL_HH_HDR);
    tl_assert(tl_hheap_contains(h, b));
    tl_assert(b->next == TL_HH_USED);
    hh_lock(h);
    h->used -= b->size;
    h->num_frees++;
    /* Insert in address order, then merge with the following and the
     * preceding free block when they touch. */
    tl_hh_block *prev = NULL, *cur = h->free_list;
    while (cur != NULL && cur < b) {
        prev = cur;
        cur = cur->next;
    }
    b->next = cur;
    if (cur != NULL && (char *)b + b->size == (char *)cur) {
        b->size += cur->size;
        b->next = cur->next;
    }
    if (prev != NULL) {
        prev->next = b;
        if ((char *)prev + prev->size == (char *)b) {
            prev->size += b->size;
            prev->next = b->next;
        }
    } else {
        h->free_list = b;
    }
    pthread_mutex_unlock(&h->lock);
}

/* ---- one worker's allocator ------------------------------------------------ */

tl_huff_status tl_halloc_init(tl_halloc *a, tl_huff_allocator kind, tl_hheap *heap,
                              size_t pool_bytes, tl_huff_error *err) {
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->heap = heap;
    switch (kind) {
    case TL_HUFF_POOLED:
        pool_bytes = (pool_bytes + TL_HH_ALIGN - 1) & ~(TL_HH_ALIGN - 1);
        a->pool = tl_hheap_alloc(heap, pool_bytes); /* the pool's one locked carve */
        if (a->pool == NULL)
            return tl_huff_fail(err, TL_HUFF_ENOMEM,
                                "the heap (%zu bytes) has no room for a pool of %zu bytes; "
                                "raise heap_bytes or lower pool_bytes or threads",
                                heap->size, pool_bytes);
        a->pool_cur = a->pool;
        a->pool_end = a->pool + pool_bytes;
        return TL_HUFF_OK;
    case TL_HUFF_TLALLOC:
        a->arena = tl_thread_arena("tlalloc-huffman");
        if (a->arena == NULL)
            return tl_huff_fail(err, TL_HUFF_ENOMEM, "could not create a thread arena");
        return TL_HUFF_OK;
    default:
        return TL_HUFF_OK;
    }
}

void tl_halloc_fini(tl_halloc *a) {
    if (a->kind == TL_HUFF_POOLED && a->pool != NULL) {
        tl_hheap_free(a->heap, a->pool);
        a->pool = a->pool_cur = a->pool_end = NULL;
    } else if (a->kind == TL_HUFF_TLALLOC && a->arena != NULL) {
        a->arena = NULL;
        tl_thread_arena_release_current();
    }
}

TL_NOINLINE TL_COLD void *tl_halloc_pool_fallback(tl_halloc *a, size_t size) {
    a->heap_allocs++;
    return tl_hheap_alloc(a->heap, size);
}

tl_huff_status tl_huff_fail(tl_huff_error *err, tl_huff_status status, const char *fmt, ...) {
    if (err != NULL && err->status == TL_HUFF_OK) { /* keep the first failure */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}
