/* Unit tests of the arena's chunks: escapes, their release in any order and
 * from other threads, the bound on held chunks, rewinds into held chunks. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "tl_test.h"
#include "tlalloc.h"

#define CAP ((size_t)64 << 10)

static tl_arena *make(size_t cap) {
    tl_arena_options o = {.capacity = cap, .overflow = TL_OVERFLOW_ERROR};
    tl_arena *a = tl_arena_create(&o);
    CHECK(a != NULL);
    return a;
}

static tl_arena_stats stats(const tl_arena *a) {
    tl_arena_stats s;
    tl_arena_get_stats(a, &s);
    return s;
}

/* An escape keeps its bytes; the arena goes on elsewhere; the release hands
 * the chunk back, and the next fresh chunk is that one (no new mapping). */
static void test_escape_keeps_memory_and_comes_back(void) {
    tl_arena *a = make(CAP);
    tl_mark m = tl_arena_mark(a);
    unsigned char *p = tl_arena_alloc(a, 1000, 64);
    memset(p, 0x5A, 1000);
    tl_escape e;
    CHECK(tl_arena_escape(a, m, &e) == 0 && e.arena == a && e.bytes == 1000);
    tl_arena_stats s = stats(a);
    CHECK(s.escaped_bytes == 1000 && s.num_escapes == 1 && s.num_chunks == 2);
    CHECK(s.escaped_chunks == 1 && s.used_bytes == 0);
    CHECK(tl_arena_used(a) == 0 && !tl_arena_contains(a, p));
    unsigned char *q = tl_arena_alloc(a, 1000, 64);
    memset(q, 0xA5, 1000);
    for (int i = 0; i < 1000; i++) CHECK(p[i] == 0x5A);
    CHECK(tl_arena_rewind(a, tl_arena_mark(a)) == 0);
    tl_arena_escape_release(&e);
    CHECK(e.arena == NULL);
    s = stats(a);
    CHECK(s.escaped_bytes == 0 && s.escaped_chunks == 0 && s.num_chunks == 2);
    /* Another escape takes the chunk given back, not a new mapping. */
    m = tl_arena_mark(a);
    (void)tl_arena_alloc(a, 100, 64);
    CHECK(tl_arena_escape(a, m, &e) == 0);
    s = stats(a);
    CHECK(s.num_chunks == 2);
    tl_arena_escape_release(&e);
    tl_arena_release(a);
}

/* Nothing allocated since the mark: nothing held, the position stays. */
static void test_empty_escape_holds_nothing(void) {
    tl_arena *a = make(CAP);
    (void)tl_arena_alloc(a, 64, 64);
    tl_mark m = tl_arena_mark(a);
    tl_escape e;
    CHECK(tl_arena_escape(a, m, &e) == 0 && e.arena == NULL);
    CHECK(tl_arena_used(a) == 64 && stats(a).num_chunks == 1);
    tl_arena_escape_release(&e); /* a no-op */
    tl_arena_reset(a);
    CHECK(tl_arena_escape(a, m, &e) == -1 && e.arena == NULL); /* stale */
    tl_arena_release(a);
}

/* An escape that starts in the middle of a chunk leaves the open scopes' part
 * where it is; the parent's rewind does not reuse the escaped part while it
 * is held, and reuses the chunk once it is not. */
static void test_parent_rewind_into_held_chunk(void) {
    tl_arena *a = make(CAP);
    tl_mark outer = tl_arena_mark(a);
    char *parent = tl_arena_alloc(a, 512, 64);
    tl_mark inner = tl_arena_mark(a);
    char *child = tl_arena_alloc(a, 512, 64);
    memset(child, 7, 512);
    tl_escape e;
    CHECK(tl_arena_escape(a, inner, &e) == 0 && e.bytes == 512);
    tl_arena_stats s = stats(a);
    CHECK(s.used_bytes == 512 && tl_arena_used(a) == 0); /* the parent's 512 are kept below */
    char *more = tl_arena_alloc(a, 256, 64);
    CHECK(more != NULL && more != child);
    /* The parent ends while the child's memory is held: the arena continues
     * in a fresh chunk, never over `child`. */
    CHECK(tl_arena_rewind(a, outer) == 0);
    for (int i = 0; i < 16; i++) {
        char *x = tl_arena_alloc(a, 4096, 64);
        CHECK(x != NULL && (x + 4096 <= child || x >= child + 512));
    }
    for (int i = 0; i < 512; i++) CHECK(child[i] == 7);
    CHECK(tl_arena_rewind(a, outer) == 0);
    tl_arena_escape_release(&e);
    /* Held by nobody now: a rewind may use it again from the start. */
    tl_arena_reset(a);
    CHECK(tl_arena_alloc(a, 512, 64) != NULL);
    (void)parent;
    s = stats(a);
    CHECK(s.escaped_bytes == 0 && s.escaped_chunks == 0);
    tl_arena_release(a);
}

/* The parent's rewind after the child's memory came back resumes in the
 * first chunk, at the parent's mark. */
static void test_parent_resumes_when_child_gone(void) {
    tl_arena *a = make(CAP);
    char *first = tl_arena_alloc(a, 128, 64);
    tl_mark outer = tl_arena_mark(a);
    tl_mark inner = tl_arena_mark(a);
    (void)tl_arena_alloc(a, 128, 64); /* the scope's own part: [128, 256) */
    (void)inner;
    tl_mark child_mark = tl_arena_mark(a);
    (void)tl_arena_alloc(a, 1000, 64);
    tl_escape e;
    CHECK(tl_arena_escape(a, child_mark, &e) == 0);
    tl_arena_escape_release(&e);
    CHECK(tl_arena_rewind(a, outer) == 0);
    CHECK(tl_arena_used(a) == 128 && tl_arena_contains(a, first));
    CHECK(stats(a).used_bytes == 128);
    tl_arena_release(a);
}

/* Nested escapes at several depths, released in every order. */
static void escape_nest(int order) {
    tl_arena *a = make(CAP);
    enum { D = 5 };
    tl_mark marks[D];
    tl_escape e[D];
    unsigned char *p[D];
    for (int d = 0; d < D; d++) {
        marks[d] = tl_arena_mark(a);
        p[d] = tl_arena_alloc(a, 3000, 64);
        memset(p[d], d + 1, 3000);
    }
    for (int d = D - 1; d >= 0; d--) CHECK(tl_arena_escape(a, marks[d], &e[d]) == 0);
    for (int k = 0; k < 100; k++) memset(tl_arena_alloc(a, 500, 64), 0xEE, 500);
    for (int d = 0; d < D; d++)
        for (int i = 0; i < 3000; i++) CHECK(p[d][i] == d + 1);
    int seq[D];
    for (int d = 0; d < D; d++) seq[d] = order == 0 ? d : order == 1 ? D - 1 - d : (d * 3) % D;
    for (int k = 0; k < D; k++) tl_arena_escape_release(&e[seq[k]]);
    tl_arena_reset(a);
    tl_arena_stats s = stats(a);
    CHECK(s.escaped_bytes == 0 && s.escaped_chunks == 0);
    CHECK(s.num_chunks <= 1 + TL_ARENA_SPARE_CHUNKS);
    tl_arena_release(a);
}

static void test_nested_escapes_any_order(void) {
    escape_nest(0);
    escape_nest(1);
    escape_nest(2);
}

/* A scope that spans chunks (it went on after an inner escape) escapes as a
 * whole: every chunk it touched is held. */
static void test_escape_spanning_chunks(void) {
    tl_arena *a = make(CAP);
    (void)tl_arena_alloc(a, 64, 64);
    tl_mark outer = tl_arena_mark(a);
    unsigned char *x = tl_arena_alloc(a, 1000, 64);
    memset(x, 1, 1000);
    tl_mark inner = tl_arena_mark(a);
    (void)tl_arena_alloc(a, 1000, 64);
    tl_escape ei, eo;
    CHECK(tl_arena_escape(a, inner, &ei) == 0);
    unsigned char *y = tl_arena_alloc(a, 2000, 64); /* in the next chunk */
    memset(y, 2, 2000);
    CHECK(tl_arena_escape(a, outer, &eo) == 0);
    CHECK(eo.bytes == 3000 && eo.n_more == 1);
    tl_arena_escape_release(&ei);
    for (int k = 0; k < 50; k++) memset(tl_arena_alloc(a, 1000, 64), 0xEE, 1000);
    CHECK(tl_arena_rewind(a, tl_arena_mark(a)) == 0);
    tl_arena_reset(a);
    for (int k = 0; k < 50; k++) memset(tl_arena_alloc(a, 1000, 64), 0xEE, 1000);
    for (int i = 0; i < 1000; i++) CHECK(x[i] == 1);
    for (int i = 0; i < 2000; i++) CHECK(y[i] == 2);
    tl_arena_escape_release(&eo);
    tl_arena_release(a);
}

/* Heap blocks (fallback policy) allocated since the mark go with the escape. */
static void test_escape_takes_fallback_blocks(void) {
    tl_arena_options o = {.capacity = 4096, .overflow = TL_OVERFLOW_FALLBACK};
    tl_arena *a = tl_arena_create(&o);
    tl_mark m = tl_arena_mark(a);
    char *big = tl_arena_alloc(a, 10000, 64);
    memset(big, 3, 10000);
    tl_escape e;
    CHECK(tl_arena_escape(a, m, &e) == 0 && e.fallback != NULL && e.bytes == 10000);
    tl_arena_stats s = stats(a);
    CHECK(s.fallback_live_bytes == 0 && s.escaped_bytes == 10000);
    tl_arena_reset(a); /* must not free the escaped block */
    CHECK(big[9999] == 3);
    tl_arena_escape_release(&e);
    tl_arena_release(a);
}

/* Escapes outlive the arena's other references: the last release unmaps. */
static void test_escape_outlives_arena(void) {
    tl_arena *a = make(CAP);
    tl_mark m = tl_arena_mark(a);
    unsigned char *p = tl_arena_alloc(a, 100, 64);
    memset(p, 9, 100);
    tl_escape e;
    CHECK(tl_arena_escape(a, m, &e) == 0);
    tl_arena_release(a); /* the creator's reference */
    CHECK(p[99] == 9);
    tl_arena_escape_release(&e); /* destroys the arena */
}

/* Zeroing arenas zero a chunk that comes back before it is used again. */
static void test_zero_on_reset_returned_chunk(void) {
    tl_arena_options o = {.capacity = CAP, .zero_on_reset = 1};
    tl_arena *a = tl_arena_create(&o);
    tl_mark m = tl_arena_mark(a);
    char *p = tl_arena_alloc(a, 4096, 64);
    memset(p, 0x77, 4096);
    tl_escape e;
    CHECK(tl_arena_escape(a, m, &e) == 0);
    tl_arena_escape_release(&e);
    for (int k = 0; k < 4; k++) { /* go through the spare chunks until p's comes back */
        m = tl_arena_mark(a);
        char *q = tl_arena_alloc(a, 4096, 64);
        for (int i = 0; i < 4096; i++)
            if (q[i] != 0) {
                CHECK(q[i] == 0);
                break;
            }
        memset(q, 0x11, 4096);
        CHECK(tl_arena_escape(a, m, &e) == 0);
        tl_arena_escape_release(&e);
    }
    tl_arena_release(a);
}

/* A long churn: a window of live escapes released first in first out, the
 * chunks held stay within the bound (current + one per live escape + spares). */
static void test_churn_bound(void) {
    tl_arena *a = make(CAP);
    enum { W = 64, N = 20000 };
    tl_escape win[W];
    memset(win, 0, sizeof win);
    uint64_t max_chunks = 0;
    for (int it = 0; it < N; it++) {
        tl_escape *slot = &win[it % W];
        tl_arena_escape_release(slot); /* the oldest goes (FIFO) */
        tl_mark m = tl_arena_mark(a);
        size_t n = 1000 + (size_t)(it % 7) * 3000;
        unsigned char *p = tl_arena_alloc(a, n, 64);
        CHECK(p != NULL);
        p[0] = p[n - 1] = (unsigned char)it;
        CHECK(tl_arena_escape(a, m, slot) == 0);
        tl_arena_stats s = stats(a);
        if (s.num_chunks > max_chunks) max_chunks = s.num_chunks;
    }
    CHECK(max_chunks <= 1 + W + TL_ARENA_SPARE_CHUNKS);
    for (int k = 0; k < W; k++) tl_arena_escape_release(&win[k]);
    tl_arena_stats s = stats(a);
    CHECK(s.escaped_bytes == 0 && s.num_escapes == N);
    tl_arena_release(a);
}

/* Releases from other threads while the owner keeps allocating and escaping:
 * the returned chunks are reused; contents never overlap (run under TSan). */
#define XT_THREADS 4
#define XT_ROUNDS 3000
typedef struct {
    tl_escape slots[64];
    _Atomic int ready[64];
    unsigned char *ptr[64];
    _Atomic int done;
} xt_box;

static void *xt_consumer(void *arg) {
    xt_box *b = arg;
    uintptr_t seen = 0;
    for (;;) {
        int any = 0;
        for (int k = 0; k < 64; k++) {
            if (atomic_load_explicit(&b->ready[k], memory_order_acquire) != 1) continue;
            int expect = 1;
            if (!atomic_compare_exchange_strong(&b->ready[k], &expect, 2)) continue;
            unsigned char v = b->ptr[k][0];
            for (int i = 1; i < 256; i++)
                if (b->ptr[k][i] != v) {
                    CHECK(b->ptr[k][i] == v);
                    break;
                }
            tl_arena_escape_release(&b->slots[k]);
            atomic_store_explicit(&b->ready[k], 0, memory_order_release);
            any = 1;
            seen++;
        }
        if (!any && atomic_load(&b->done)) break;
    }
    return (void *)seen;
}

static void test_release_from_other_threads(void) {
    tl_arena *a = make(CAP);
    xt_box *b = calloc(1, sizeof *b);
    pthread_t t[XT_THREADS];
    for (int i = 0; i < XT_THREADS; i++) pthread_create(&t[i], NULL, xt_consumer, b);
    uint64_t max_chunks = 0;
    for (int it = 0; it < XT_ROUNDS; it++) {
        int k = it % 64;
        while (atomic_load_explicit(&b->ready[k], memory_order_acquire) != 0) sched_yield();
        tl_mark m = tl_arena_mark(a);
        unsigned char *p = tl_arena_alloc(a, 256 + (size_t)(it % 5) * 5000, 64);
        memset(p, it & 0xff, 256);
        b->ptr[k] = p;
        CHECK(tl_arena_escape(a, m, &b->slots[k]) == 0);
        atomic_store_explicit(&b->ready[k], 1, memory_order_release);
        tl_arena_stats s = stats(a);
        if (s.num_chunks > max_chunks) max_chunks = s.num_chunks;
    }
    atomic_store(&b->done, 1);
    uintptr_t total = 0;
    for (int i = 0; i < XT_THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (uintptr_t)r;
    }
    CHECK(total == XT_ROUNDS);
    CHECK(max_chunks <= 1 + 64 + TL_ARENA_SPARE_CHUNKS + 1);
    tl_arena_reset(a); /* drains what came back */
    (void)tl_arena_alloc(a, 64, 64);
    tl_escape e;
    tl_mark m = tl_arena_mark(a);
    (void)tl_arena_alloc(a, 64, 64);
    CHECK(tl_arena_escape(a, m, &e) == 0);
    tl_arena_escape_release(&e);
    tl_arena_stats s = stats(a);
    CHECK(s.escaped_bytes == 0 && s.num_chunks <= 2 + TL_ARENA_SPARE_CHUNKS);
    free(b);
    tl_arena_release(a);
}

/* A thread arena escapes, its thread exits, another thread releases last. */
static void *exiting_owner(void *arg) {
    tl_escape *e = arg;
    tl_arena *a = tl_thread_arena("escaper");
    tl_mark m = tl_arena_mark(a);
    memset(tl_arena_alloc(a, 5000, 64), 4, 5000);
    CHECK(tl_arena_escape(a, m, e) == 0);
    return NULL;
}

static void test_escape_outlives_thread(void) {
    tl_escape e;
    pthread_t t;
    pthread_create(&t, NULL, exiting_owner, &e);
    pthread_join(t, NULL);
    CHECK(e.arena != NULL);
    tl_registry_stats before, after;
    tl_registry_get_stats(&before);
    tl_arena_escape_release(&e);
    tl_registry_get_stats(&after);
    CHECK(after.num_arenas == before.num_arenas - 1);
}

/* A deep stack of scopes, each left with a few bytes alive, closed innermost
 * first: each escape holds only the chunk with its bytes, never the empty
 * fresh chunk above, so the chunks stay few. */
static void test_deep_nest_reuses_empty_chunks(void) {
    tl_arena *a = make(CAP);
    enum { N = 500 };
    static tl_mark marks[N];
    static tl_escape e[N];
    for (int d = 0; d < N; d++) {
        marks[d] = tl_arena_mark(a);
        (void)tl_arena_alloc(a, 8, 8);
    }
    for (int d = N - 1; d >= 0; d--) {
        CHECK(tl_arena_escape(a, marks[d], &e[d]) == 0 && e[d].bytes == 8 && e[d].n_more == 0);
        CHECK(stats(a).num_chunks <= 3);
    }
    for (int d = 0; d < N; d++) tl_arena_escape_release(&e[d]);
    tl_arena_release(a);
}

int main(void) {
    RUN(test_escape_keeps_memory_and_comes_back);
    RUN(test_empty_escape_holds_nothing);
    RUN(test_parent_rewind_into_held_chunk);
    RUN(test_parent_resumes_when_child_gone);
    RUN(test_nested_escapes_any_order);
    RUN(test_escape_spanning_chunks);
    RUN(test_escape_takes_fallback_blocks);
    RUN(test_escape_outlives_arena);
    RUN(test_zero_on_reset_returned_chunk);
    RUN(test_churn_bound);
    RUN(test_release_from_other_threads);
    RUN(test_escape_outlives_thread);
    RUN(test_deep_nest_reuses_empty_chunks);
    TEST_MAIN_END();
}
