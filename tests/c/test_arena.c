/* Unit tests of the arena and the thread arenas (no Python). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "tl_test.h"
#include "tlalloc.h"

static tl_arena *make(size_t cap, tl_overflow ov) {
    tl_arena_options o = {.capacity = cap, .overflow = ov};
    tl_arena *a = tl_arena_create(&o);
    CHECK(a != NULL);
    return a;
}

static void test_alignment(void) {
    tl_arena *a = make(1 << 20, TL_OVERFLOW_ERROR);
    CHECK(((uintptr_t)a->base & 4095) == 0);
    for (size_t align = 1; align <= TL_MAX_ALIGN; align *= 2) {
        (void)tl_arena_alloc(a, 1, 1); /* misalign on purpose */
        void *p = tl_arena_alloc(a, 24, align);
        CHECK(p != NULL && ((uintptr_t)p % align) == 0);
        CHECK(tl_arena_contains(a, p));
    }
    tl_arena_release(a);
}

static void test_bump_and_reset(void) {
    tl_arena *a = make(4096, TL_OVERFLOW_ERROR);
    char *p = tl_arena_alloc(a, 100, 64);
    char *q = tl_arena_alloc(a, 100, 64);
    CHECK(p == a->base && q == a->base + 128);
    CHECK(tl_arena_used(a) == 228);
    uint64_t g = tl_arena_generation(a);
    tl_arena_reset(a);
    CHECK(tl_arena_used(a) == 0 && tl_arena_generation(a) != g);
    tl_arena_stats s;
    tl_arena_get_stats(a, &s);
    CHECK(s.peak_bytes == 228 && s.num_allocations == 2 && s.num_resets == 1);
    CHECK(s.capacity_bytes == 4096);
    tl_arena_release(a);
}

static void test_zero_size(void) {
    tl_arena *a = make(4096, TL_OVERFLOW_ERROR);
    void *p = tl_arena_alloc(a, 0, 64);
    CHECK(p != NULL && tl_arena_used(a) == 0);
    CHECK(tl_arena_alloc(a, 4096, 64) != NULL);
    void *z = tl_arena_alloc(a, 0, 4096); /* full arena: still a valid pointer */
    CHECK(z != NULL && ((uintptr_t)z % 4096) == 0);
    tl_arena_release(a);
}

static void test_overflow_never_wraps(void) {
    tl_arena *a = make(4096, TL_OVERFLOW_ERROR);
    (void)tl_arena_alloc(a, 1, 1);
    CHECK(tl_arena_alloc(a, SIZE_MAX, 64) == NULL);
    CHECK(tl_arena_alloc(a, SIZE_MAX - 10, 64) == NULL);
    CHECK(tl_arena_alloc(a, 4096, 1) == NULL);
    CHECK(tl_arena_alloc(a, 4095, 1) != NULL);
    tl_arena_stats s;
    tl_arena_get_stats(a, &s);
    CHECK(s.num_overflows == 3 && s.used_bytes == 4096);
    tl_arena_release(a);
}

static void test_try_alloc_and_note_overflow(void) {
    tl_arena *a = make(4096, TL_OVERFLOW_PANIC); /* try_alloc must never apply the policy */
    CHECK(tl_arena_try_alloc(a, 4000, 64) != NULL);
    CHECK(tl_arena_try_alloc(a, 200, 64) == NULL);
    CHECK(tl_arena_try_alloc(a, SIZE_MAX, 64) == NULL);
    tl_arena_note_overflow(a, 200);
    tl_arena_stats s;
    tl_arena_get_stats(a, &s);
    CHECK(s.num_allocations == 2 && s.num_overflows == 1 && s.fallback_bytes == 200);
    CHECK(s.fallback_live_bytes == 0 && s.used_bytes == 4000);
    tl_arena_release(a);
}

static void test_marks(void) {
    tl_arena *a = make(8192, TL_OVERFLOW_ERROR);
    (void)tl_arena_alloc(a, 10, 1);
    tl_mark outer = tl_arena_mark(a);
    (void)tl_arena_alloc(a, 100, 1);
    tl_mark inner = tl_arena_mark(a);
    (void)tl_arena_alloc(a, 1000, 1);
    CHECK(tl_arena_rewind(a, inner) == 0 && tl_arena_used(a) == 110);
    CHECK(tl_arena_rewind(a, outer) == 0 && tl_arena_used(a) == 10);
    CHECK(tl_arena_rewind(a, inner) == -1); /* beyond the offset: stale */
    tl_mark m = tl_arena_mark(a);
    tl_arena_reset(a);
    CHECK(tl_arena_rewind(a, m) == -1); /* taken before a reset: stale */
    tl_arena_release(a);
}

static void test_fallback(void) {
    tl_arena *a = make(4096, TL_OVERFLOW_FALLBACK);
    tl_mark m = tl_arena_mark(a);
    char *p = tl_arena_alloc(a, 10000, 256);
    CHECK(p != NULL && !tl_arena_contains(a, p) && ((uintptr_t)p % 256) == 0);
    memset(p, 1, 10000);
    tl_mark m2 = tl_arena_mark(a);
    char *q = tl_arena_alloc(a, 20000, 64);
    CHECK(q != NULL);
    tl_arena_stats s;
    tl_arena_get_stats(a, &s);
    CHECK(s.num_overflows == 2 && s.fallback_bytes == 30000 && s.fallback_live_bytes == 30000);
    CHECK(tl_arena_rewind(a, m2) == 0);
    tl_arena_get_stats(a, &s);
    CHECK(s.fallback_live_bytes == 10000);
    CHECK(tl_arena_rewind(a, m) == 0);
    tl_arena_get_stats(a, &s);
    CHECK(s.fallback_live_bytes == 0 && s.fallback_bytes == 30000);
    CHECK(tl_arena_alloc(a, SIZE_MAX, 64) == NULL); /* too big for the heap too */
    tl_arena_release(a);
}

static void test_zero_on_reset(void) {
    tl_arena_options o = {.capacity = 4096, .zero_on_reset = 1};
    tl_arena *a = tl_arena_create(&o);
    char *p = tl_arena_alloc(a, 64, 64);
    memset(p, 0xAB, 64);
    tl_arena_reset(a);
    char *q = tl_arena_alloc(a, 64, 64);
    CHECK(p == q && q[0] == 0 && q[63] == 0);
    tl_arena_release(a);
}

static void test_bad_options(void) {
    tl_arena_options o = {.capacity = 1};
    errno = 0;
    CHECK(tl_arena_create(&o) == NULL && errno == EINVAL);
    o.capacity = 8192;
    o.overflow = (tl_overflow)7;
    CHECK(tl_arena_create(&o) == NULL && errno == EINVAL);
}

#define NTHREADS 8
static void *worker(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    tl_arena *a = tl_thread_arena("worker");
    for (int it = 0; it < 2000; it++) {
        tl_mark m = tl_arena_mark(a);
        unsigned char *p = tl_arena_alloc(a, 256, 64);
        if (!p) return (void *)1;
        memset(p, (int)(id * 31 + it) & 0xff, 256);
        sched_yield();
        for (int i = 0; i < 256; i++)
            if (p[i] != ((id * 31 + it) & 0xff)) return (void *)1;
        tl_arena_rewind(a, m);
    }
    return tl_thread_arena(NULL) == a ? NULL : (void *)1;
}

static void test_thread_arenas(void) {
    tl_registry_stats before, after;
    tl_registry_get_stats(&before);
    pthread_t t[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < NTHREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        CHECK(r == NULL);
    }
    tl_registry_get_stats(&after);
    CHECK(after.num_threads == before.num_threads + NTHREADS);
    CHECK(after.num_arenas == before.num_arenas); /* released at thread exit */
    CHECK(after.total.num_allocations == before.total.num_allocations + NTHREADS * 2000);
    CHECK(after.max_peak_bytes >= 256); /* kept after the workers' arenas were released */
}

static void *hold_worker(void *arg) {
    tl_arena **out = arg;
    *out = tl_thread_arena("holder");
    tl_arena_retain(*out); /* like an array that outlives its thread */
    return NULL;
}

static void test_arena_outlives_thread(void) {
    tl_arena *a = NULL;
    pthread_t t;
    pthread_create(&t, NULL, hold_worker, &a);
    pthread_join(t, NULL);
    tl_thread_stats list[64];
    size_t n = tl_registry_list(list, 64);
    int found = 0;
    for (size_t i = 0; i < n && i < 64; i++)
        if (strcmp(list[i].thread_name, "holder") == 0 && !list[i].alive) found = 1;
    CHECK(found);
    char *p = tl_arena_alloc(a, 16, 16); /* still valid memory */
    CHECK(p != NULL);
    tl_registry_stats s1, s2;
    tl_registry_get_stats(&s1);
    tl_arena_release(a);
    tl_registry_get_stats(&s2);
    CHECK(s2.num_arenas == s1.num_arenas - 1);
}

int main(void) {
    RUN(test_alignment);
    RUN(test_bump_and_reset);
    RUN(test_zero_size);
    RUN(test_overflow_never_wraps);
    RUN(test_try_alloc_and_note_overflow);
    RUN(test_marks);
    RUN(test_fallback);
    RUN(test_zero_on_reset);
    RUN(test_bad_options);
    RUN(test_thread_arenas);
    RUN(test_arena_outlives_thread);
    TEST_MAIN_END();
}
