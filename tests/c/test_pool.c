/* Unit tests of the size-class pool (no Python): classes, the malloc-like API,
 * bad input, a random model test, cross-thread frees with thread churn, thread
 * exit with live blocks (also racing the owner's exit), the cache-off mode, large
 * blocks and retention. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tl_test.h"
#include "tlalloc.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) { /* xorshift64*: deterministic */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* Sanitizer builds run the same tests with fewer iterations. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SCALE 10
#else
#define SCALE 1
#endif

/* Pattern fill and check: every byte of the first 64 KiB, then one byte per
 * 4 KiB (enough to catch a short copy, and cheap for large blocks). */
static size_t pattern_next(size_t i) { return i < 65536 ? i + 1 : i + 4096; }
static void fill(void *p, size_t n, uint8_t seed) {
    uint8_t *b = p;
    for (size_t i = 0; i < n; i = pattern_next(i)) b[i] = (uint8_t)(seed + i * 31);
}
static int check_fill(const void *p, size_t n, uint8_t seed) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i = pattern_next(i))
        if (b[i] != (uint8_t)(seed + i * 31)) return 0;
    return 1;
}

static tl_pool_stats stats(void) {
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    return s;
}

/* Runs first: fork is simplest while the process has one thread. */
static void test_double_free_detected_in_debug(void) {
#ifdef TLALLOC_DEBUG
    for (int mode = 0; mode < 3; mode++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            int devnull = open("/dev/null", 1);
            if (devnull >= 0) dup2(devnull, 2);
            char *p = tl_pool_malloc(mode == 2 ? (3u << 20) : 40);
            if (mode == 1) {
                tl_pool_free(p + 16); /* not a block start */
            } else {
                tl_pool_free(p);
                tl_pool_free(p);
            }
            _exit(0); /* not detected */
        }
        int st = 0;
        CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    }
#else
    printf("     (release build: double-free detection is a debug-build feature, skipped)\n");
#endif
}

static void test_size_classes(void) {
    CHECK(tl_pool_class_size(0) == 8);
    CHECK(tl_pool_class_size(55) == TL_POOL_MAX_SMALL); /* the last class in use */
    CHECK(tl_pool_class_size(TL_POOL_NUM_CLASSES) == 0);
    for (unsigned c = 1; c < TL_POOL_NUM_CLASSES; c++) {
        size_t s = tl_pool_class_size(c), prev = tl_pool_class_size(c - 1);
        CHECK(s > prev);
        CHECK(s % 16 == 0);
        /* Documented bound: waste below 20% above 64 bytes, < 16 bytes below. */
        if (prev >= 64) CHECK((s - (prev + 1)) * 5 < s);
        else CHECK(s - (prev + 1) < 16);
    }
    for (size_t n = 1; n <= TL_POOL_MAX_SMALL; n += (n < 70000 ? 1 : 997)) {
        size_t g = tl_pool_good_size(n);
        if (g < n) {
            CHECK(g >= n);
            break;
        }
    }
    CHECK(tl_pool_good_size(0) == 8);
    CHECK(tl_pool_good_size(TL_POOL_MAX_SMALL + 1) >= TL_POOL_MAX_SMALL + 1);
}

static void test_basic(void) {
    size_t sizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 1000, 1024, 1025, 4096,
                      8192, 8193, 65536, 65537, 100000, (1u << 20) - 1, 1u << 20, (1u << 20) + 1,
                      5u << 20};
    void *ptrs[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ptrs[i] = tl_pool_malloc(sizes[i]);
        CHECK(ptrs[i] != NULL);
        CHECK(tl_pool_usable_size(ptrs[i]) >= sizes[i]);
        if (sizes[i] >= 16) CHECK((uintptr_t)ptrs[i] % 16 == 0);
        else CHECK((uintptr_t)ptrs[i] % 8 == 0);
        fill(ptrs[i], sizes[i], (uint8_t)i);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        CHECK(check_fill(ptrs[i], sizes[i], (uint8_t)i));
        for (size_t j = 0; j < i; j++) CHECK(ptrs[i] != ptrs[j]);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) tl_pool_free(ptrs[i]);
    tl_pool_free(NULL);
    CHECK(tl_pool_usable_size(NULL) == 0);
}

static void test_bad_input(void) {
    errno = 0;
    CHECK(tl_pool_malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(tl_pool_malloc((size_t)PTRDIFF_MAX + 1) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(tl_pool_calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(tl_pool_calloc((size_t)1 << 40, (size_t)1 << 40) == NULL && errno == ENOMEM);
    size_t bad_aligns[] = {0, 3, 24, 48, 1000, TL_POOL_MAX_ALIGN * 2};
    for (size_t i = 0; i < sizeof bad_aligns / sizeof bad_aligns[0]; i++) {
        errno = 0;
        CHECK(tl_pool_aligned_alloc(bad_aligns[i], 64) == NULL && errno == EINVAL);
    }
    errno = 0;
    CHECK(tl_pool_aligned_alloc(64, SIZE_MAX - 10) == NULL && errno == ENOMEM);
    void *p = tl_pool_malloc(100);
    errno = 0;
    CHECK(tl_pool_realloc(p, SIZE_MAX) == NULL && errno == ENOMEM);
    CHECK(tl_pool_usable_size(p) >= 100); /* still valid */
    tl_pool_free(p);
    tl_pool_options o = {.cache = 7, .retain_bytes = 0};
    errno = 0;
    CHECK(tl_pool_configure(&o) == -1 && errno == EINVAL);
}

static void test_calloc_zeroes(void) {
    for (int round = 0; round < 2; round++) {
        size_t sizes[] = {1, 24, 500, 5000, 70000, 900000, 3u << 20};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            /* Dirty a block of the same class first so reuse must be zeroed. */
            char *d = tl_pool_malloc(sizes[i]);
            memset(d, 0xAB, sizes[i]);
            tl_pool_free(d);
            unsigned char *p = tl_pool_calloc(sizes[i], 1);
            CHECK(p != NULL);
            size_t nz = 0;
            for (size_t k = 0; k < sizes[i]; k++) nz += p[k] != 0;
            CHECK(nz == 0);
            tl_pool_free(p);
        }
    }
    void *z = tl_pool_calloc(0, 10); /* a unique minimal block, like malloc(0) */
    CHECK(z != NULL);
    tl_pool_free(z);
}

static void test_aligned(void) {
    size_t sizes[] = {0, 1, 8, 16, 100, 4095, 4096, 4097, 70000, (1u << 20) - 1, 1u << 20,
                      (1u << 20) + 1};
    for (size_t align = 1; align <= TL_POOL_MAX_ALIGN; align *= 2) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            char *p = tl_pool_aligned_alloc(align, sizes[i]);
            CHECK(p != NULL);
            CHECK((uintptr_t)p % align == 0);
            CHECK(tl_pool_usable_size(p) >= sizes[i]);
            fill(p, sizes[i], 3);
            CHECK(check_fill(p, sizes[i], 3));
            tl_pool_free(p);
        }
    }
    /* Around every class size, at every alignment a class can serve: the
     * plain allocation when the size's own class is aligned, a larger class
     * otherwise. Every block aligned and holding the size. */
    for (size_t align = 16; align <= 4096; align *= 2) {
        for (unsigned c = 0; tl_pool_class_size(c) != 0; c++) {
            size_t cs = tl_pool_class_size(c);
            for (size_t n = cs - 1; n <= cs + 1; n++) {
                char *p = tl_pool_aligned_alloc(align, n);
                CHECK(p != NULL);
                CHECK((uintptr_t)p % align == 0);
                size_t u = tl_pool_usable_size(p);
                CHECK(u >= n && u % align == 0);
                fill(p, n, 5);
                CHECK(check_fill(p, n, 5));
                tl_pool_free(p);
            }
        }
    }
}

static void test_realloc(void) {
    char *p = tl_pool_realloc(NULL, 10);
    CHECK(p != NULL);
    fill(p, 10, 9);
    size_t steps[] = {20, 100, 1000, 70000, 2u << 20, 3u << 20, 5000, 40, 3};
    size_t cur = 10;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char *q = tl_pool_realloc(p, steps[i]);
        CHECK(q != NULL);
        size_t keep = cur < steps[i] ? cur : steps[i];
        CHECK(check_fill(q, keep, 9));
        CHECK(tl_pool_usable_size(q) >= steps[i]);
        fill(q, steps[i], 9);
        p = q;
        cur = steps[i];
    }
    /* Shrinking a little keeps the block. */
    char *b = tl_pool_malloc(1000);
    CHECK(tl_pool_realloc(b, 900) == b);
    char *z = tl_pool_realloc(b, 0);
    CHECK(z != NULL);
    tl_pool_free(z);
    tl_pool_free(p);
}

/* Random allocate/free/realloc against a model that remembers each block's
 * size and fill seed. */
#define MODEL_SLOTS 512
static void test_random_model(void) {
    tl_pool_stats s0 = stats();
    void *ptr[MODEL_SLOTS] = {0};
    size_t sz[MODEL_SLOTS] = {0};
    uint8_t seed[MODEL_SLOTS] = {0};
    uint64_t live_bytes_ok = 1;
    for (int it = 0; it < 200000 / SCALE; it++) {
        unsigned i = (unsigned)(rng() % MODEL_SLOTS);
        uint64_t r = rng();
        size_t n;
        switch (r % 8) {
        case 0: n = tl_pool_class_size((unsigned)(rng() % TL_POOL_NUM_CLASSES)) + (rng() % 3) - 1; break;
        case 1: n = rng() % 200000; break;
        case 2: n = (1u << 20) + (rng() % 3) - 1; break;
        default: n = rng() % 2048; break;
        }
        if (!ptr[i]) {
            size_t align = (size_t)1 << (rng() % 13);
            ptr[i] = (r >> 8) % 4 == 0 ? tl_pool_aligned_alloc(align, n) : tl_pool_malloc(n);
            CHECK(ptr[i] != NULL);
            if ((r >> 8) % 4 == 0) CHECK((uintptr_t)ptr[i] % align == 0);
            sz[i] = n;
            seed[i] = (uint8_t)r;
            fill(ptr[i], n, seed[i]);
        } else if ((r >> 16) % 3 == 0) {
            void *q = tl_pool_realloc(ptr[i], n);
            CHECK(q != NULL);
            size_t keep = sz[i] < n ? sz[i] : n;
            if (!check_fill(q, keep, seed[i])) live_bytes_ok = 0;
            fill(q, n, seed[i]);
            ptr[i] = q;
            sz[i] = n;
        } else {
            if (!check_fill(ptr[i], sz[i], seed[i])) live_bytes_ok = 0;
            CHECK(tl_pool_usable_size(ptr[i]) >= sz[i]);
            tl_pool_free(ptr[i]);
            ptr[i] = NULL;
        }
    }
    CHECK(live_bytes_ok);
    for (unsigned i = 0; i < MODEL_SLOTS; i++) tl_pool_free(ptr[i]);
    tl_pool_stats s1 = stats();
    CHECK(s1.in_use_bytes == s0.in_use_bytes);
    CHECK(s1.num_allocations - s0.num_allocations == s1.num_frees - s0.num_frees);
}

/* ---- cross-thread with churn -------------------------------------------------- */

#define RING 4096
#define PER_PRODUCER (3000 / SCALE)
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void *items[RING];
    size_t sizes[RING];
    unsigned head, tail;
    int producers_left;
} ring_t;

static ring_t ring = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void ring_put(void *p, size_t n) {
    pthread_mutex_lock(&ring.mu);
    while (ring.tail - ring.head == RING) pthread_cond_wait(&ring.cv, &ring.mu);
    ring.items[ring.tail % RING] = p;
    ring.sizes[ring.tail % RING] = n;
    ring.tail++;
    pthread_cond_broadcast(&ring.cv);
    pthread_mutex_unlock(&ring.mu);
}

static int ring_get(void **p, size_t *n) {
    pthread_mutex_lock(&ring.mu);
    while (ring.tail == ring.head && ring.producers_left > 0) pthread_cond_wait(&ring.cv, &ring.mu);
    int ok = ring.tail != ring.head;
    if (ok) {
        *p = ring.items[ring.head % RING];
        *n = ring.sizes[ring.head % RING];
        ring.head++;
        pthread_cond_broadcast(&ring.cv);
    }
    pthread_mutex_unlock(&ring.mu);
    return ok;
}

static void *producer(void *arg) {
    uint64_t x = (uint64_t)(uintptr_t)arg * 7919 + 1;
    for (int i = 0; i < PER_PRODUCER; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = (x >> 33) % 3000 + 2;
        if (i % (500 / SCALE) == 0) n = (1u << 20) + 17; /* a few large ones */
        else if (i % 50 == 1) n = 20000 + (size_t)((x >> 40) % 400000); /* medium and large pages */
        unsigned char *p = tl_pool_malloc(n);
        if (!p) abort();
        p[0] = (unsigned char)n;
        p[n - 1] = (unsigned char)(n >> 3);
        ring_put(p, n);
    }
    return NULL;
}

static _Atomic int bad_blocks;

static void *consumer(void *arg) {
    (void)arg;
    void *p;
    size_t n;
    int k = 0;
    /* A consumer quits after a while; the main thread starts a fresh one. */
    while (k++ < 2500 / SCALE && ring_get(&p, &n)) {
        unsigned char *b = p;
        if (b[0] != (unsigned char)n || b[n - 1] != (unsigned char)(n >> 3)) bad_blocks++;
        tl_pool_free(p);
    }
    return NULL;
}

/* Keeps one consumer alive at a time, each quitting after a while, until the
 * producers are done and the ring is empty. */
static void *consumer_manager(void *arg) {
    (void)arg;
    for (;;) {
        pthread_t t;
        pthread_create(&t, NULL, consumer, NULL);
        pthread_join(t, NULL);
        pthread_mutex_lock(&ring.mu);
        int done = ring.producers_left == 0 && ring.tail == ring.head;
        pthread_mutex_unlock(&ring.mu);
        if (done) return NULL;
    }
}

static void test_cross_thread_churn(void) {
    tl_pool_stats s0 = stats();
    enum { WAVES = 4, PER_WAVE = 3 };
    pthread_t prod[WAVES * PER_WAVE], mgr[2];
    ring.producers_left = WAVES * PER_WAVE;
    for (int i = 0; i < 2; i++) pthread_create(&mgr[i], NULL, consumer_manager, NULL);
    /* Producers start and exit in waves while consumers come and go. */
    for (int w = 0; w < WAVES; w++) {
        for (int i = 0; i < PER_WAVE; i++)
            pthread_create(&prod[w * PER_WAVE + i], NULL, producer, (void *)(uintptr_t)(w * 10 + i));
        for (int i = 0; i < PER_WAVE; i++) {
            pthread_join(prod[w * PER_WAVE + i], NULL);
            pthread_mutex_lock(&ring.mu);
            ring.producers_left--;
            pthread_cond_broadcast(&ring.cv);
            pthread_mutex_unlock(&ring.mu);
        }
    }
    for (int i = 0; i < 2; i++) pthread_join(mgr[i], NULL);
    CHECK(ring.tail == ring.head);
    CHECK(bad_blocks == 0);
    tl_pool_stats s1 = stats();
    uint64_t allocs = s1.num_allocations - s0.num_allocations;
    uint64_t frees = s1.num_frees - s0.num_frees;
    CHECK(allocs == (uint64_t)WAVES * PER_WAVE * PER_PRODUCER);
    CHECK(frees == allocs);                    /* every block accounted for */
    CHECK(s1.in_use_bytes == s0.in_use_bytes); /* and its bytes */
    CHECK(s1.num_cross_thread_frees > s0.num_cross_thread_frees);
    CHECK(s1.num_threads > s0.num_threads);
    CHECK(s1.num_heaps == s0.num_heaps); /* every worker's cache torn down */
    /* Memory is bounded: after collection, what is mapped is at most the
     * retention limit plus a few segments, far below all that was allocated. */
    tl_pool_collect(0);
    tl_pool_stats s2 = stats();
    /* tl_pool_collect purges the large cache: nothing of it stays resident. */
    size_t bound = TL_POOL_DEFAULT_RETAIN;
    CHECK(s2.retained_bytes <= bound);
    CHECK(s2.reserved_bytes <= s0.reserved_bytes + bound + (80u << 20));
}

/* ---- thread exit with live blocks ------------------------------------------- */

#define ORPHANS 5000
static void *orphans[ORPHANS];

static void *alloc_and_exit(void *arg) {
    (void)arg;
    for (int i = 0; i < ORPHANS; i++) {
        orphans[i] = tl_pool_malloc((size_t)(i % 700) + 1);
        memset(orphans[i], 0x5A, (size_t)(i % 700) + 1);
    }
    return NULL;
}

static void *free_half(void *arg) {
    (void)arg;
    for (int i = 0; i < ORPHANS; i += 2) tl_pool_free(orphans[i]);
    return NULL;
}

static void test_free_after_owner_exit(void) {
    tl_pool_stats s0 = stats();
    pthread_t t;
    pthread_create(&t, NULL, alloc_and_exit, NULL);
    pthread_join(t, NULL);
    tl_pool_stats s1 = stats();
    CHECK(s1.num_abandoned_pages > s0.num_abandoned_pages);
    CHECK(s1.in_use_bytes > s0.in_use_bytes);
    /* Half freed by a short-lived thread, half by this one. */
    pthread_create(&t, NULL, free_half, NULL);
    pthread_join(t, NULL);
    for (int i = 1; i < ORPHANS; i += 2) tl_pool_free(orphans[i]);
    tl_pool_stats s2 = stats();
    CHECK(s2.in_use_bytes == s0.in_use_bytes);
    CHECK(s2.num_reclaimed_pages > s0.num_reclaimed_pages);
    tl_pool_collect(0);
}

/* ---- owner exits while other threads free its blocks ---------------------------
 * Targets the hand-over races: an owner publishes blocks (several kinds of
 * page) and exits, or releases its cache half-way, while freer threads free
 * them concurrently: frees race the owner's teardown (pushes onto pages being
 * abandoned, CAS adoptions against other freers and the depot), adopted pages
 * are re-abandoned when their freers exit, and a housekeeper runs
 * tl_pool_collect and the statistics throughout. retain_bytes = 0, so emptied
 * pages are discarded and segments unmapped at once: a late access to a page
 * that went back to the depot faults here or is reported by TSan. */

#define XR_ROUNDS (120 / SCALE)
#define XR_BLOCKS 3000
#define XR_FREERS 3
static void *xr_blocks[XR_BLOCKS];
static size_t xr_sizes[XR_BLOCKS];
static _Atomic size_t xr_published, xr_claimed;
static _Atomic int xr_stop, xr_bad, xr_owner_done;

static size_t xr_size(size_t i) {
    if (i % 97 == 0) return 20000 + (i * 7919) % 300000; /* medium and large classes */
    return (i * 131) % 2000 + 1;
}

static void *xr_owner(void *arg) {
    int release_midway = (int)(uintptr_t)arg;
    for (size_t i = 0; i < XR_BLOCKS; i++) {
        if (release_midway && i == XR_BLOCKS / 2) tl_pool_thread_release();
        size_t n = xr_size(i);
        unsigned char *p = tl_pool_malloc(n);
        if (!p) {
            atomic_fetch_add(&xr_bad, 1);
            n = 0;
        } else {
            p[n - 1] = (unsigned char)(i >> 3);
            p[0] = (unsigned char)i; /* after: n may be 1 */
        }
        xr_blocks[i] = p;
        xr_sizes[i] = n;
        atomic_store_explicit(&xr_published, i + 1, memory_order_release);
    }
    return NULL; /* exits at once: its teardown races the freers */
}

static void *xr_freer(void *arg) {
    (void)arg;
    for (;;) {
        size_t i = atomic_fetch_add(&xr_claimed, 1);
        if (i >= XR_BLOCKS) break;
        while (atomic_load_explicit(&xr_published, memory_order_acquire) <= i) sched_yield();
        /* The last block outlives its owner: at least one page is abandoned. */
        if (i == XR_BLOCKS - 1)
            while (!atomic_load(&xr_owner_done)) sched_yield();
        unsigned char *p = xr_blocks[i];
        size_t n = xr_sizes[i];
        if (p && (p[0] != (unsigned char)i || (n > 1 && p[n - 1] != (unsigned char)(i >> 3))))
            atomic_fetch_add(&xr_bad, 1);
        if (i % 5 == 0) { /* a block of its own: the freer owns pages too */
            void *q = tl_pool_malloc(xr_size(i));
            tl_pool_free(p);
            tl_pool_free(q);
        } else {
            tl_pool_free(p);
        }
    }
    return NULL; /* pages it adopted and still holding live blocks are abandoned again */
}

static void *xr_housekeeper(void *arg) {
    (void)arg;
    while (!atomic_load(&xr_stop)) {
        tl_pool_collect(0);
        tl_pool_stats s;
        tl_pool_get_stats(&s);
        if (s.in_use_bytes > ((uint64_t)1 << 40)) atomic_fetch_add(&xr_bad, 1);
        sched_yield();
    }
    return NULL;
}

static void test_exit_while_freeing(void) {
    tl_pool_options saved;
    tl_pool_get_options(&saved);
    tl_pool_options o = saved;
    o.retain_bytes = 0;
    CHECK(tl_pool_configure(&o) == 0);
    tl_pool_collect(1);
    tl_pool_stats s0 = stats();
    pthread_t hk;
    pthread_create(&hk, NULL, xr_housekeeper, NULL);
    for (int r = 0; r < XR_ROUNDS; r++) {
        atomic_store(&xr_published, 0);
        atomic_store(&xr_claimed, 0);
        atomic_store(&xr_owner_done, 0);
        pthread_t own, fr[XR_FREERS];
        /* Every third round the freers have no cache: they push onto the
         * abandoned pages, and their own blocks come from the locked heap,
         * which adopts abandoned pages from the depot. */
        int cache_off = r % 3 == 2;
        pthread_create(&own, NULL, xr_owner, (void *)(uintptr_t)(r % 3 == 1));
        if (cache_off) {
            while (atomic_load(&xr_published) == 0) sched_yield(); /* the owner has its cache */
            o.cache = 0;
            CHECK(tl_pool_configure(&o) == 0);
        }
        for (int k = 0; k < XR_FREERS; k++) pthread_create(&fr[k], NULL, xr_freer, NULL);
        pthread_join(own, NULL);
        atomic_store(&xr_owner_done, 1);
        for (int k = 0; k < XR_FREERS; k++) pthread_join(fr[k], NULL);
        o.cache = 1;
        CHECK(tl_pool_configure(&o) == 0);
    }
    atomic_store(&xr_stop, 1);
    pthread_join(hk, NULL);
    CHECK(atomic_load(&xr_bad) == 0);
    tl_pool_collect(0);
    tl_pool_stats s1 = stats();
    CHECK(s1.in_use_bytes == s0.in_use_bytes); /* every block came back */
    CHECK(s1.num_cross_thread_frees > s0.num_cross_thread_frees);
    CHECK(s1.num_abandoned_pages > s0.num_abandoned_pages);
    CHECK(s1.num_heaps == s0.num_heaps); /* every thread's cache was torn down */
    CHECK(tl_pool_configure(&saved) == 0);
}

/* ---- cache off ------------------------------------------------------------------ */

static void *cache_off_worker(void *arg) {
    (void)arg;
    void *p[100];
    for (int r = 0; r < 10; r++) {
        for (int i = 0; i < 100; i++) p[i] = tl_pool_malloc((size_t)(i * 13 + 1));
        for (int i = 0; i < 100; i++) tl_pool_free(p[i]);
    }
    return NULL;
}

static void test_cache_off(void) {
    tl_pool_options saved;
    tl_pool_get_options(&saved);
    tl_pool_options o = saved;
    o.cache = 0;
    CHECK(tl_pool_configure(&o) == 0);
    tl_pool_stats s0 = stats();
    CHECK(s0.cache_enabled == 0);
    pthread_t t;
    pthread_create(&t, NULL, cache_off_worker, NULL);
    pthread_join(t, NULL);
    tl_pool_stats s1 = stats();
    CHECK(s1.num_threads == s0.num_threads);               /* no cache created */
    CHECK(s1.num_allocations - s0.num_allocations == 1000);
    CHECK(s1.num_cache_misses - s0.num_cache_misses == 1000); /* every one went to the depot */
    CHECK(s1.num_depot_locks - s0.num_depot_locks >= 2000);   /* a lock per malloc and free */
    CHECK(s1.in_use_bytes == s0.in_use_bytes);
    CHECK(tl_pool_configure(&saved) == 0);
}

/* ---- large blocks and retention ---------------------------------------------- */

static void test_large_and_retention(void) {
    tl_pool_stats s0 = stats();
    char *a = tl_pool_malloc(3u << 20);
    CHECK(a != NULL && (uintptr_t)a % TL_POOL_PAGE_ALIGN == 0);
    fill(a, 3u << 20, 1);
    CHECK(check_fill(a, 3u << 20, 1));
    tl_pool_free(a);
    char *b = tl_pool_malloc(3u << 20); /* served from the large-block cache */
    CHECK(b != NULL);
    tl_pool_free(b);
    tl_pool_stats s1 = stats();
    CHECK(s1.num_large_allocations == s0.num_large_allocations + 2);
    /* Retain nothing: after the caches are gone and collection runs, no
     * segment stays mapped. */
    tl_pool_options saved;
    tl_pool_get_options(&saved);
    tl_pool_options o = saved;
    o.retain_bytes = 0;
    CHECK(tl_pool_configure(&o) == 0);
    tl_pool_thread_release();
    tl_pool_collect(1);
    tl_pool_stats s2 = stats();
    CHECK(s2.retained_bytes == 0);
    if (s2.in_use_bytes != 0 || s2.num_segments != 0)
        fprintf(stderr, "in use %llu, segments %llu, abandoned %llu\n",
                (unsigned long long)s2.in_use_bytes, (unsigned long long)s2.num_segments,
                (unsigned long long)s2.num_abandoned_pages);
    CHECK(s2.in_use_bytes == 0);
    CHECK(s2.num_segments == 0);
    CHECK(s2.reserved_bytes == 0);
    CHECK(tl_pool_configure(&saved) == 0);
    /* The thread gets a fresh cache on its next allocation. */
    void *p = tl_pool_malloc(10);
    CHECK(p != NULL);
    tl_pool_free(p);
    CHECK(stats().peak_bytes >= (3u << 20));
}

int main(void) {
    RUN(test_double_free_detected_in_debug);
    RUN(test_size_classes);
    RUN(test_basic);
    RUN(test_bad_input);
    RUN(test_calloc_zeroes);
    RUN(test_aligned);
    RUN(test_realloc);
    RUN(test_random_model);
    RUN(test_cross_thread_churn);
    RUN(test_free_after_owner_exit);
    RUN(test_exit_while_freeing);
    RUN(test_cache_off);
    RUN(test_large_and_retention);
    TEST_MAIN_END();
}
