/* scratch.c: the three sources of kernel scratch memory (see tlalloc/scratch.h).
 *
 * THREAD is the product: its fast path is inline in the header. This file holds
 * the slow paths: heap blocks (overflow and the MALLOC strategy) and the shared
 * arena with its mutex.
 */
#include "tlalloc/scratch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A heap block: the header sits just before the aligned pointer handed out. */
typedef struct tl_scratch_block {
    struct tl_scratch_block *next;
    void *raw; /* what malloc returned */
} tl_scratch_block;

/* ---- the shared strategy's arena ------------------------------------------ */

static pthread_mutex_t g_shared_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_arena *g_shared;   /* created on first use, lives until exit */
static long g_shared_users;  /* brackets currently open on it */
/* Brackets the calling thread has open on it: after fork, the child keeps only
 * the forking thread's (the others' brackets never end there). */
static _Thread_local long g_shared_mine;

/* fork (lock order and handlers: thread.c). This lock is the first one taken:
 * it is held while the options lock is taken (tl_shared_create_locked). */
void tl_scratch_fork_lock(void) { pthread_mutex_lock(&g_shared_lock); }
void tl_scratch_fork_unlock(void) { pthread_mutex_unlock(&g_shared_lock); }
void tl_scratch_fork_child(void) {
    pthread_mutex_lock(&g_shared_lock);
    g_shared_users = g_shared_mine;
    /* Memory of the other threads' brackets is garbage now: reset when the
     * forking thread has none open, else when its last one ends. */
    if (g_shared && g_shared_users == 0) tl_arena_reset(g_shared);
    pthread_mutex_unlock(&g_shared_lock);
}

TL_NOINLINE TL_COLD static tl_arena *tl_shared_create_locked(void) {
    tl_arena_options opts;
    tl_get_thread_arena_options(&opts);
    opts.overflow = TL_OVERFLOW_ERROR; /* we serve overflows from the heap ourselves */
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
        tl_fork_init(); /* pthread_once: a load and a branch once registered */
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
    while (b) {
        tl_scratch_block *next = b->next;
        free(b->raw);
        b = next;
    }
    s->heap = NULL;
}

void tl_scratch_end(tl_scratch *s) {
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

/* One malloc per request, header in front of the aligned pointer. */
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

/* Serve a request that the arena cannot: heap, counted against the arena. */
TL_NOINLINE TL_COLD static void *tl_scratch_overflow(tl_scratch *s, size_t size, size_t align) {
    s->num_overflows++;
    return tl_scratch_heap_alloc(s, size, align);
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
