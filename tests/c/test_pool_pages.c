/* Tests of the pool's page logic across threads:
 *
 * - refills look at a bounded number of pages, however many pages are full
 *   (delayed free instead of a walk of the full list);
 * - a refill hands out blocks of 4 KiB and more freed into the pages behind
 *   the current one (by the owner or by other threads) before it carves
 *   blocks from memory not yet resident;
 * - full pages that other threads free into are found again and reused;
 * - pages emptied by other threads' frees go back to the depot, for a live
 *   producer that never frees and for the pages of an exited thread;
 * - a thread's exit hands over the pages of every class it used (teardown
 *   visits only those: tl_heap.classes), and the next thread starts clean
 *   on the reused descriptor;
 * - a stress of producers and consumers (run under TSan by `make test
 *   SAN=tsan`) that ends with every page given back.
 *
 * The peak estimate for producer/consumer work: test_pool_pages_peak.c (its own
 * process, the peak being process-wide and monotonic). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool/pool_internal.h" /* tl_pool_refill_counters */
#include "tl_test.h"
#include "tlalloc.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SCALE 10
#else
#define SCALE 1
#endif

static tl_pool_stats stats(void) {
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    return s;
}

static void run_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0) abort();
    pthread_join(t, NULL);
}

/* ---- refill cost independent of the number of full pages ------------------- */

typedef struct {
    void **blocks;
    size_t n, step;
} slice_t;

static void *free_every_step(void *arg) {
    slice_t *s = arg;
    for (size_t i = 0; i < s->n; i += s->step) {
        tl_pool_free(s->blocks[i]);
        s->blocks[i] = NULL;
    }
    return NULL;
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* One thread allocates N live 32-byte blocks (N / 2048 full pages). Before
 * the fix each refill walked the whole full list: about N / 4096 pages per
 * refill on average (244 for N = 1M). */
static void *refill_worker(void *arg) {
    (void)arg;
    const size_t n = (size_t)1000000 / SCALE, step = 64;
    void **blocks = malloc(n * sizeof *blocks);
    if (!blocks) abort();
    uint64_t r0, p0, r1, p1, r2, p2;
    tl_pool_refill_counters(&r0, &p0);
    for (size_t i = 0; i < n; i++) {
        blocks[i] = tl_pool_malloc(32);
        if (!blocks[i]) abort();
        *(size_t *)blocks[i] = i;
    }
    tl_pool_refill_counters(&r1, &p1);
    uint64_t refills = r1 - r0, pages = p1 - p0;
    CHECK(refills >= n / 2048); /* one per page at least */
    CHECK(pages <= 3 * refills);
    printf("     %zu live blocks: %llu refills looked at %llu pages\n", n,
           (unsigned long long)refills, (unsigned long long)pages);

    /* Another thread frees every 64th block: one block in each full page. */
    size_t nfreed = (n + step - 1) / step;
    uintptr_t *freed = malloc(nfreed * sizeof *freed);
    if (!freed) abort();
    for (size_t i = 0, k = 0; i < n; i += step) freed[k++] = (uintptr_t)blocks[i];
    slice_t sl = {blocks, n, step};
    tl_pool_stats s0 = stats();
    run_thread(free_every_step, &sl);
    /* The owner's next allocations reuse every one of those blocks before it
     * needs a fresh page: after the rest of its current page (at most 2048
     * blocks), each full page is found again through the delayed-free list
     * (none is lost) and hands out its one block. */
    qsort(freed, nfreed, sizeof *freed, cmp_ptr);
    size_t k_all = nfreed + 2048, hits = 0;
    uintptr_t *again = malloc(k_all * sizeof *again);
    if (!again) abort();
    for (size_t k = 0; k < k_all; k++) {
        again[k] = (uintptr_t)tl_pool_malloc(32);
        if (bsearch(&again[k], freed, nfreed, sizeof *freed, cmp_ptr)) hits++;
    }
    tl_pool_stats s1 = stats();
    tl_pool_refill_counters(&r2, &p2);
    CHECK(hits == nfreed);
    CHECK(s1.reserved_bytes <= s0.reserved_bytes);
    CHECK(p2 - p1 <= 3 * (r2 - r1) + nfreed);
    for (size_t k = 0; k < k_all; k++) tl_pool_free((void *)again[k]);
    for (size_t i = 0; i < n; i++)
        if (blocks[i]) {
            CHECK(*(size_t *)blocks[i] == i);
            tl_pool_free(blocks[i]);
        }
    free(again);
    free(freed);
    free(blocks);
    return NULL;
}

static void test_refill_bounded(void) { run_thread(refill_worker, NULL); }

/* ---- freed blocks before fresh ones ----------------------------------------- */

/* A medium class: pages of 512 KiB, 32 blocks, one carved at a time. */
#define FB_SIZE ((size_t)16 << 10)
#define FB_PAGE ((uintptr_t)512 << 10)
#define FB_MAX 64
#define FB_FOREIGN 8

static void *fb_blocks[FB_MAX];

static uintptr_t fb_page(const void *p) { return (uintptr_t)p & ~(FB_PAGE - 1); }

static void *fb_free_foreign(void *arg) {
    (void)arg;
    for (size_t i = 1; i <= FB_FOREIGN; i++) tl_pool_free(fb_blocks[i]);
    return NULL;
}

/* Fill page A, then one block more: page B becomes the current page with one
 * block carved of 32. The owner frees one block of A (A goes back behind B)
 * and another thread frees FB_FOREIGN more (pushed on A's lists, not yet
 * collected). The owner's next FB_FOREIGN + 1 allocations must be exactly
 * those blocks; before the fix they were carved from B (fresh memory, the
 * freed blocks left idle). Only then does B carve again. Run first in a fresh
 * process: B comes from a new segment (no abandoned or once-used page of the
 * medium kind exists yet), so it holds no free block of its own and none of
 * its memory is resident (resident memory is carved at once, as are blocks
 * below 4 KiB). */
static void *fb_worker(void *arg) {
    (void)arg;
    size_t k = 0;
    fb_blocks[k++] = tl_pool_malloc(FB_SIZE);
    CHECK(fb_blocks[0] != NULL);
    while (k < FB_MAX) {
        fb_blocks[k] = tl_pool_malloc(FB_SIZE);
        CHECK(fb_blocks[k] != NULL);
        if (fb_page(fb_blocks[k++]) != fb_page(fb_blocks[0])) break;
    }
    size_t in_a = k - 1; /* blocks 0 .. k-2 in A, block k-1 in B */
    uintptr_t a = fb_page(fb_blocks[0]), b = fb_page(fb_blocks[k - 1]);
    CHECK(a != b && in_a > FB_FOREIGN + 1);
    for (size_t i = 0; i < in_a; i++) CHECK(fb_page(fb_blocks[i]) == a);
    if (a == b || in_a <= FB_FOREIGN + 1) return NULL;

    void *freed[FB_FOREIGN + 1];
    for (size_t i = 0; i <= FB_FOREIGN; i++) freed[i] = fb_blocks[i];
    tl_pool_free(fb_blocks[0]);
    run_thread(fb_free_foreign, NULL);
    int all_reused = 1;
    for (size_t i = 0; i <= FB_FOREIGN; i++) {
        void *p = tl_pool_malloc(FB_SIZE);
        CHECK(p != NULL);
        size_t j = 0;
        while (j <= FB_FOREIGN && freed[j] != p) j++;
        if (j > FB_FOREIGN) all_reused = 0;
        else freed[j] = NULL; /* each once */
        fb_blocks[i] = p;
    }
    CHECK(all_reused);
    void *next = tl_pool_malloc(FB_SIZE);
    CHECK(next != NULL && fb_page(next) == b);
    tl_pool_free(next);
    for (size_t i = 0; i < k; i++) tl_pool_free(fb_blocks[i]);
    return NULL;
}

static void test_freed_before_fresh(void) { run_thread(fb_worker, NULL); }

/* ---- pages emptied by other threads go back -------------------------------- */

#define PC_BYTES ((size_t)16 << 20)
#define PC_SIZE 64u
#define PC_N (PC_BYTES / PC_SIZE) /* not scaled: it must span several segments */

static void *pc_blocks[PC_BYTES / PC_SIZE];
static pthread_barrier_t pc_bar;
static uint64_t pc_reserved_full, pc_reserved_after;

static void *free_all_pc(void *arg) {
    (void)arg;
    for (size_t i = 0; i < PC_N; i++) tl_pool_free(pc_blocks[i]);
    return NULL;
}

/* A producer that never frees: allocates 16 MiB of 64-byte blocks, waits while
 * a consumer frees them all, then allocates one more page's worth (one refill
 * at least). Before the fix its full pages stayed with it, emptied. */
static void *pc_producer(void *arg) {
    int exit_early = arg != NULL;
    for (size_t i = 0; i < PC_N; i++) {
        pc_blocks[i] = tl_pool_malloc(PC_SIZE);
        if (!pc_blocks[i]) abort();
        memset(pc_blocks[i], 0x33, PC_SIZE);
    }
    if (exit_early) return NULL; /* abandon the pages */
    pc_reserved_full = stats().reserved_bytes;
    pthread_barrier_wait(&pc_bar); /* consumer frees everything */
    pthread_barrier_wait(&pc_bar);
    enum { MORE = 2 * 65536 / PC_SIZE };
    void *more[MORE];
    for (int i = 0; i < MORE; i++) more[i] = tl_pool_malloc(PC_SIZE);
    pc_reserved_after = stats().reserved_bytes;
    for (int i = 0; i < MORE; i++) tl_pool_free(more[i]);
    return NULL;
}

static void *pc_consumer(void *arg) {
    (void)arg;
    pthread_barrier_wait(&pc_bar);
    free_all_pc(NULL);
    pthread_barrier_wait(&pc_bar);
    return NULL;
}

static void test_emptied_pages_returned_live_owner(void) {
    tl_pool_options o = {.cache = 1, .retain_bytes = 0}; /* empty segments unmapped at once */
    CHECK(tl_pool_configure(&o) == 0);
    pthread_barrier_init(&pc_bar, NULL, 2);
    pthread_t p, c;
    pthread_create(&p, NULL, pc_producer, NULL);
    pthread_create(&c, NULL, pc_consumer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    pthread_barrier_destroy(&pc_bar);
    size_t bytes = PC_N * PC_SIZE;
    printf("     reserved with %zu KiB live: %llu KiB, after the consumer freed them and the "
           "producer refilled: %llu KiB\n",
           bytes >> 10, (unsigned long long)(pc_reserved_full >> 10),
           (unsigned long long)(pc_reserved_after >> 10));
    /* All but a few pages (one per class kept, one segment) came back. */
    CHECK(pc_reserved_after + bytes - (bytes / 8 < (8u << 20) ? bytes / 8 : (8u << 20)) <=
          pc_reserved_full + (4u << 20));
    CHECK(pc_reserved_after + bytes / 2 <= pc_reserved_full);
    CHECK(tl_pool_configure(NULL) == 0);
}

static void *consume_and_measure(void *arg) {
    free_all_pc(NULL);
    *(uint64_t *)arg = stats().reserved_bytes;
    return NULL;
}

/* The producer exits with every block live; another thread frees them all. */
static void test_emptied_pages_returned_exited_owner(void) {
    tl_pool_options o = {.cache = 1, .retain_bytes = 0};
    CHECK(tl_pool_configure(&o) == 0);
    run_thread(pc_producer, (void *)1);
    uint64_t full = stats().reserved_bytes, after = 0;
    run_thread(consume_and_measure, &after);
    size_t bytes = PC_N * PC_SIZE;
    printf("     abandoned: reserved %llu KiB with the blocks live, %llu KiB once freed\n",
           (unsigned long long)(full >> 10), (unsigned long long)(after >> 10));
    CHECK(after + bytes / 2 <= full);
    CHECK(tl_pool_configure(NULL) == 0);
}

/* ---- thread exit visits exactly the classes the thread used --------------------
 * Teardown walks only the classes marked in tl_heap.classes, and the next
 * thread reuses the descriptor without clearing its queues. Each thread of a
 * sequence takes one block of every class, frees all but one (class k for
 * the k-th thread) and exits. The kept block's page must be abandoned (no
 * owner) when the thread is gone: a page of a class teardown skipped would
 * still name the freed descriptor as its owner, and the next thread, handed
 * the same descriptor, would find it on its queues (the debug builds' check
 * on reuse, tl_heap_assert_empty, fails there too). */
static void *kept_blocks[TL_POOL_NUM_CLASSES];

static int small_class(unsigned c) {
    const size_t sz = tl_pool_class_size(c);
    return sz != 0 && sz <= TL_POOL_MAX_SMALL;
}

static void *use_every_class(void *arg) {
    const unsigned keep = (unsigned)(uintptr_t)arg;
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
        if (!small_class(c)) continue;
        const size_t sz = tl_pool_class_size(c);
        unsigned char *p = tl_pool_malloc(sz);
        CHECK(p != NULL);
        if (!p) continue;
        memset(p, (int)c, sz);
        if (c == keep) kept_blocks[c] = p;
        else tl_pool_free(p);
    }
    return NULL;
}

static tl_heap *owner_of(void *p) {
    return atomic_load(&tl_page_of(tl_segment_of(p), p)->heap);
}

static void test_exit_hands_over_every_class(void) {
    tl_pool_stats s0 = stats();
    unsigned used = 0, orphaned = 0;
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
        if (!small_class(c)) continue;
        run_thread(use_every_class, (void *)(uintptr_t)c);
        CHECK(stats().num_heaps == s0.num_heaps);
        CHECK(kept_blocks[c] != NULL);
        if (kept_blocks[c]) orphaned += owner_of(kept_blocks[c]) == NULL;
        used++;
    }
    CHECK(used > 40);
    CHECK(orphaned == used);
    /* Every kept page is still without an owner: no later thread took one
     * over by inheriting a queue it should not have had. */
    unsigned still = 0;
    size_t kept = 0;
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
        unsigned char *p = kept_blocks[c];
        if (!p) continue;
        still += owner_of(p) == NULL;
        const size_t sz = tl_pool_class_size(c);
        int intact = 1;
        for (size_t i = 0; i < sz; i++) intact &= p[i] == (unsigned char)c;
        CHECK(intact);
        kept += sz;
    }
    printf("     %u threads, one class kept each: %u pages without an owner after the exits\n",
           used, still);
    CHECK(still == used);
    tl_pool_stats s1 = stats();
    CHECK(s1.num_threads == s0.num_threads + used);
    CHECK(s1.in_use_bytes == s0.in_use_bytes + kept);
    for (unsigned c = 0; c < TL_POOL_NUM_CLASSES; c++) {
        tl_pool_free(kept_blocks[c]);
        kept_blocks[c] = NULL;
    }
    CHECK(stats().in_use_bytes == s0.in_use_bytes);
}

/* ---- stress: producers and consumers, producers exiting ----------------------- */

#define ST_RING 512
#define ST_PRODUCERS 3
#define ST_ROUNDS 4
#define ST_PER_PRODUCER (40000 / SCALE)

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void *items[ST_RING];
    unsigned head, tail;
    int producers_left;
} st = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
static _Atomic int st_bad;

static void st_put(void *p) {
    pthread_mutex_lock(&st.mu);
    while (st.tail - st.head == ST_RING) pthread_cond_wait(&st.cv, &st.mu);
    st.items[st.tail++ % ST_RING] = p;
    pthread_cond_broadcast(&st.cv);
    pthread_mutex_unlock(&st.mu);
}

static void *st_get(void) {
    void *p = NULL;
    pthread_mutex_lock(&st.mu);
    while (st.tail == st.head && st.producers_left > 0) pthread_cond_wait(&st.cv, &st.mu);
    if (st.tail != st.head) {
        p = st.items[st.head++ % ST_RING];
        pthread_cond_broadcast(&st.cv);
    }
    pthread_mutex_unlock(&st.mu);
    return p;
}

/* Block layout: size (8 bytes), then a fill byte derived from it. */
static void *st_producer(void *arg) {
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    void *keep[64] = {0};
    for (int i = 0; i < ST_PER_PRODUCER; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        /* mostly small classes, so pages fill and empty fast */
        size_t n = 8 + (size_t)((x >> 35) % ((x >> 60) ? 200 : 3000));
        unsigned char *p = tl_pool_malloc(n);
        if (!p) abort();
        memcpy(p, &n, sizeof n);
        memset(p + 8, (int)(n & 0xFF), n - 8);
        /* A few blocks are freed by the producer itself, late. */
        if ((x >> 20) % 16 == 0) {
            unsigned k = (unsigned)(x >> 40) % 64;
            if (keep[k]) tl_pool_free(keep[k]);
            keep[k] = p;
        } else {
            st_put(p);
        }
    }
    for (int k = 0; k < 64; k++) tl_pool_free(keep[k]);
    return NULL;
}

static void *st_consumer(void *arg) {
    (void)arg;
    unsigned char *p;
    while ((p = st_get()) != NULL) {
        size_t n;
        memcpy(&n, p, sizeof n);
        for (size_t i = 8; i < n; i += 61)
            if (p[i] != (unsigned char)(n & 0xFF)) st_bad++;
        tl_pool_free(p);
    }
    return NULL;
}

static void test_stress_producers_consumers(void) {
    tl_pool_stats s0 = stats();
    pthread_t cons[2], prod[ST_PRODUCERS];
    st.producers_left = ST_ROUNDS * ST_PRODUCERS;
    for (int i = 0; i < 2; i++) pthread_create(&cons[i], NULL, st_consumer, NULL);
    for (int r = 0; r < ST_ROUNDS; r++) { /* producers come and go */
        for (int i = 0; i < ST_PRODUCERS; i++)
            pthread_create(&prod[i], NULL, st_producer, (void *)(uintptr_t)(r * 16 + i + 1));
        for (int i = 0; i < ST_PRODUCERS; i++) {
            pthread_join(prod[i], NULL);
            pthread_mutex_lock(&st.mu);
            st.producers_left--;
            pthread_cond_broadcast(&st.cv);
            pthread_mutex_unlock(&st.mu);
        }
    }
    for (int i = 0; i < 2; i++) pthread_join(cons[i], NULL);
    CHECK(st_bad == 0);
    tl_pool_stats s1 = stats();
    CHECK(s1.in_use_bytes == s0.in_use_bytes);
    CHECK(s1.num_frees - s0.num_frees == s1.num_allocations - s0.num_allocations);
    CHECK(s1.num_cross_thread_frees > s0.num_cross_thread_frees);
    /* Every page came back: after collecting, no segment stays mapped (this
     * thread allocated nothing from the pool, every worker has exited). */
    tl_pool_thread_release();
    tl_pool_collect(1);
    tl_pool_stats s2 = stats();
    CHECK(s2.num_segments == 0);
    CHECK(s2.num_heaps == 0);
}

int main(void) {
    RUN(test_freed_before_fresh); /* first: see fb_worker */
    RUN(test_refill_bounded);
    RUN(test_emptied_pages_returned_live_owner);
    RUN(test_emptied_pages_returned_exited_owner);
    RUN(test_exit_hands_over_every_class);
    RUN(test_stress_producers_consumers);
    TEST_MAIN_END();
}
