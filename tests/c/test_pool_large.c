/* Unit tests of the pool's large blocks (csrc/pool/pool_large.c), no Python:
 *
 * - realloc growth in O(n) page faults: 2,400 growths by 4,100 bytes (to 9.4 MB)
 *   fault in about final/4 KiB pages, not the quadratic millions of a copy per
 *   growth (ru_minflt, a behaviour bound with a generous constant);
 * - realloc shrink and growth keep contents (also across the 1 MiB class limit);
 * - the cache: a freed 64 MiB block is reused (same address, no faults), a
 *   block of a close size is reused, a larger one trimmed, a smaller one grown,
 *   the cache never holds more bytes than its bound, calloc from a resident
 *   cached block is zero;
 * - the lazy purge: RSS (/proc/self/statm) drops within 10 s after a burst of
 *   large blocks is freed, with later small allocations giving it the chance;
 * - alignments 8 KiB to 64 MiB served, aligned, usable, and (up to 1 MiB)
 *   without mapping more than the alignment plus the block;
 * - threads allocating, growing and freeing large blocks at once, and fork
 *   while they do (the large lock's atfork handlers);
 * - the thread's large cache: a 256 KiB block freed and allocated again by one
 *   thread comes back (same address) without the large lock and without page
 *   faults; it counts as cached; a thread's exit hands its blocks to the shared
 *   cache; a block freed by another thread goes to that thread's cache; a
 *   block left there is purged after the delay; a bound of 0 or a delay of 0
 *   keeps none.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tl_test.h"
#include "tlalloc.h"

#define MIB ((size_t)1 << 20)

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static tl_pool_large_info info(void) {
    tl_pool_large_info i;
    tl_pool_large_cache_info(&i);
    return i;
}

static void set_large(size_t cache_bytes, unsigned delay_ms) {
    tl_pool_options o;
    tl_pool_get_options(&o);
    o.large_cache_bytes = cache_bytes;
    o.purge_delay_ms = delay_ms;
    CHECK(tl_pool_configure(&o) == 0);
}

static void restore_defaults(void) {
    tl_pool_options d = TL_POOL_OPTIONS_DEFAULT;
    CHECK(tl_pool_configure(&d) == 0);
    tl_pool_collect(1);
}

static uint8_t pat(size_t i, uint8_t seed) { return (uint8_t)(seed + i * 131 + (i >> 12)); }

/* ---- realloc ------------------------------------------------------------------ */

static void test_realloc_growth_faults(void) {
    enum { STEP = 4100, STEPS = 2400 };
    long f0 = minflt();
    uint8_t *p = NULL;
    size_t n = 0;
    for (int i = 0; i < STEPS; i++) {
        uint8_t *q = tl_pool_realloc(p, n + STEP);
        CHECK(q != NULL);
        if (!q) break;
        for (size_t k = n; k < n + STEP; k++) q[k] = pat(k, 7);
        p = q;
        n += STEP;
    }
    long faults = minflt() - f0;
    size_t bad = 0;
    for (size_t k = 0; k < n; k++) bad += p[k] != pat(k, 7);
    CHECK(bad == 0);
    /* Each page of the final block faulted in about once (the class-sized part
     * up to 1 MiB copies through ~25 classes: a few MiB more). The quadratic
     * behaviour is ~2.9 million faults. */
    long bound = (long)(4 * n / 4096) + 4096;
#ifdef __SANITIZE_THREAD__
    (void)faults;
    (void)bound; /* TSan's shadow memory faults in with every page touched */
#else
    if (faults > bound) fprintf(stderr, "realloc growth: %ld minor faults, bound %ld\n", faults, bound);
    CHECK(faults <= bound);
#endif
    tl_pool_free(p);
}

static void test_realloc_keeps_contents(void) {
    size_t steps[] = {MIB - 1,   MIB,       MIB + 1, 3 * MIB,  2 * MIB + 5, 40 * MIB,
                      5 * MIB,   MIB + 100, 500000,  70 * MIB, 64 * MIB,    MIB + 4096,
                      64 * 1024, 9 * MIB};
    uint8_t *p = tl_pool_malloc(1000);
    size_t cur = 1000;
    for (size_t k = 0; k < cur; k++) p[k] = pat(k, 3);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        size_t n = steps[i];
        uint8_t *q = tl_pool_realloc(p, n);
        CHECK(q != NULL);
        if (!q) return;
        CHECK((uintptr_t)q % 16 == 0);
        CHECK(tl_pool_usable_size(q) >= n);
        size_t keep = cur < n ? cur : n, bad = 0;
        for (size_t k = 0; k < keep; k++) bad += q[k] != pat(k, 3);
        CHECK(bad == 0);
        for (size_t k = keep; k < n; k++) q[k] = pat(k, 3);
        p = q;
        cur = n;
    }
    /* A large shrink gives the tail back: the mapping gets smaller. */
    uint64_t before = info().mapped_bytes;
    uint8_t *q = tl_pool_realloc(p, 2 * MIB);
    CHECK(q == p); /* in place */
    CHECK(info().mapped_bytes + 6 * MIB <= before);
    size_t bad = 0;
    for (size_t k = 0; k < 2 * MIB; k++) bad += q[k] != pat(k, 3);
    CHECK(bad == 0);
    tl_pool_free(q);
}

/* ---- the cache ----------------------------------------------------------------- */

static void test_cache_reuse(void) {
    restore_defaults();
    size_t n = 64 * MIB;
    char *a = tl_pool_malloc(n);
    CHECK(a != NULL);
    memset(a, 1, n);
    tl_pool_free(a);
    CHECK(info().cached_bytes >= n);
    long f0 = minflt();
    char *b = tl_pool_malloc(n);
    memset(b, 2, n);
    long faults = minflt() - f0;
    CHECK(b == a); /* the cached mapping, */
#ifndef __SANITIZE_THREAD__
    CHECK(faults < 64); /* resident: not faulted in again (16,384 pages) */
#else
    (void)faults;
#endif
    tl_pool_free(b);
    /* A close size (within a quarter) reuses it too; a much smaller one does not. */
    char *c = tl_pool_malloc(n - 10 * MIB);
    CHECK(c == a);
    tl_pool_free(c);
    char *d = tl_pool_malloc(n / 4);
    CHECK(d != a);
    tl_pool_free(d);
    tl_pool_collect(1);
    /* Above 4 MiB a mapping up to three quarters larger is taken as it is
     * (the slack stays resident rather than faulted in again later)... */
    char *loose = tl_pool_malloc(8 * MIB);
    memset(loose, 3, 8 * MIB);
    tl_pool_free(loose);
    tl_pool_large_info i0 = info();
    char *l2 = tl_pool_malloc(5 * MIB); /* 8 MiB + 4 KiB for 5 MiB + 4 KiB: 1.6x */
    CHECK(l2 == loose);
    CHECK(info().num_reuses == i0.num_reuses + 1);
    CHECK(info().mapped_bytes == i0.mapped_bytes);
    CHECK(tl_pool_usable_size(l2) >= 8 * MIB);
    tl_pool_free(l2);
    tl_pool_collect(1);
    /* ...up to 4 MiB only a quarter larger: 4 MiB for 3 MiB is trimmed. */
    char *q4 = tl_pool_malloc(4 * MIB - 4096);
    memset(q4, 3, 4 * MIB - 4096);
    tl_pool_free(q4);
    i0 = info();
    char *q3 = tl_pool_malloc(3 * MIB);
    CHECK(q3 == q4);
    CHECK(info().num_reuses == i0.num_reuses + 1);
    CHECK(info().mapped_bytes + MIB - 8192 <= i0.mapped_bytes);
    tl_pool_free(q3);
    tl_pool_collect(1);
    /* No close fit: a block up to twice as large is trimmed, one at least half
     * as large is grown (its resident pages kept). Both are cache reuses. */
    char *big = tl_pool_malloc(10 * MIB);
    memset(big, 3, 10 * MIB);
    tl_pool_free(big);
    i0 = info();
    char *t = tl_pool_malloc(5 * MIB); /* 10 MiB + 4 KiB for 5 MiB + 4 KiB: 2.0x */
    CHECK(t == big);
    CHECK(info().num_reuses == i0.num_reuses + 1);
    CHECK(info().mapped_bytes + 5 * MIB - 8192 <= i0.mapped_bytes); /* the tail went back */
    tl_pool_free(t);
    tl_pool_collect(1);
    char *small = tl_pool_malloc(3 * MIB);
    memset(small, 4, 3 * MIB);
    tl_pool_free(small);
    i0 = info();
    long g0 = minflt();
    char *g = tl_pool_malloc(5 * MIB);
    memset(g, 5, 5 * MIB);
    long grow_faults = minflt() - g0;
    CHECK(info().num_reuses == i0.num_reuses + 1);
    CHECK(info().num_cached == 0);
#ifndef __SANITIZE_THREAD__ /* TSan's shadow memory faults in with every page */
    CHECK(grow_faults < (long)(2 * MIB / 4096) + 128); /* only the new 2 MiB fault in */
#else
    (void)grow_faults;
#endif
    tl_pool_free(g);
    /* calloc from a resident cached block is zero. */
    char *e = tl_pool_malloc(3 * MIB);
    memset(e, 0x5A, 3 * MIB);
    tl_pool_free(e);
    unsigned char *z = tl_pool_calloc(3 * MIB, 1);
    CHECK(z == (unsigned char *)e);
    size_t nz = 0;
    for (size_t k = 0; k < 3 * MIB; k++) nz += z[k] != 0;
    CHECK(nz == 0);
    tl_pool_free(z);
    restore_defaults();
}

static void test_cache_byte_bound(void) {
    set_large(40 * MIB, 60000);
    char *b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = tl_pool_malloc(9 * MIB + (size_t)i * 4096);
        CHECK(b[i] != NULL);
        b[i][0] = 1;
    }
    for (int i = 0; i < 8; i++) {
        tl_pool_free(b[i]);
        CHECK(info().cached_bytes <= 40 * MIB);
    }
    tl_pool_large_info i1 = info();
    CHECK(i1.num_cached == 4); /* four of ~9 MiB fit in 40 MiB */
    /* A block larger than the bound is never cached. */
    char *big = tl_pool_malloc(41 * MIB);
    tl_pool_free(big);
    CHECK(info().cached_bytes <= 40 * MIB);
    /* No cache at all. */
    set_large(0, 60000);
    CHECK(info().num_cached == 0);
    char *x = tl_pool_malloc(2 * MIB);
    tl_pool_free(x);
    CHECK(info().num_cached == 0);
    restore_defaults();
}

static void test_lazy_purge_returns_memory(void) {
    restore_defaults();
    set_large(TL_POOL_DEFAULT_LARGE_CACHE, 50);
    enum { N = 8 };
    size_t each = 16 * MIB;
    char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = tl_pool_malloc(each);
        CHECK(b[i] != NULL);
        memset(b[i], 0x33, each);
    }
    size_t high = rss_bytes();
    for (int i = 0; i < N; i++) tl_pool_free(b[i]);
    CHECK(info().resident_bytes >= N * each); /* cached, still resident */
    /* Ordinary later allocations give the purge its chance; no collect call. */
    size_t low = high;
    for (int t = 0; t < 500 && low + N * each * 3 / 4 > high; t++) {
        usleep(20000);
        void *p = tl_pool_malloc(5000);
        tl_pool_free(p);
        low = rss_bytes();
    }
    if (low + N * each * 3 / 4 > high)
        fprintf(stderr, "purge: RSS %zu MiB before, %zu MiB after\n", high >> 20, low >> 20);
    CHECK(low + N * each * 3 / 4 <= high);
    tl_pool_large_info i = info();
    CHECK(i.resident_bytes == 0);
    CHECK(i.num_purged == (uint64_t)N); /* purged but still mapped for reuse */
    /* A purged block is reused, and reads as zero through calloc. */
    unsigned char *z = tl_pool_calloc(each, 1);
    CHECK(info().num_cached == N - 1);
    size_t nz = 0;
    for (size_t k = 0; k < each; k += 4096) nz += z[k] != 0;
    CHECK(nz == 0);
    tl_pool_free(z);
    /* tl_pool_collect(1) unmaps the whole cache. */
    tl_pool_collect(1);
    CHECK(info().num_cached == 0);
    restore_defaults();
}

/* ---- alignment ------------------------------------------------------------------ */

static void test_alignments(void) {
    size_t sizes[] = {0, 1, 16, 5000, MIB + 1, 3 * MIB};
    for (size_t align = 8192; align <= 64 * MIB; align *= 2) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t n = sizes[i];
            uint64_t m0 = info().mapped_bytes;
            char *p = tl_pool_aligned_alloc(align, n);
            CHECK(p != NULL);
            if (!p) continue;
            CHECK((uintptr_t)p % align == 0);
            CHECK(tl_pool_usable_size(p) >= n);
            /* Up to 1 MiB: the mapping is the alignment plus the block, rounded
             * to pages (a fresh mapping; a cached one is at most a quarter more). */
            /* (negative when a larger cached mapping was trimmed) */
            int64_t grew = (int64_t)(info().mapped_bytes - m0);
            if (align <= MIB) CHECK(grew <= (int64_t)(align + n + n / 4 + 8192));
            if (n) {
                p[0] = 1;
                p[n - 1] = 2;
            }
            tl_pool_free(p);
        }
    }
    errno = 0;
    CHECK(tl_pool_aligned_alloc(TL_POOL_MAX_ALIGN * 2, 10) == NULL && errno == EINVAL);
    restore_defaults();
}

/* ---- threads and fork ------------------------------------------------------------ */

static _Atomic int stop_flag;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    uint8_t *live[4] = {0};
    size_t len[4] = {0};
    int rounds = SANITIZED ? 60 : 400;
    for (int r = 0; r < rounds || (arg == NULL && !atomic_load(&stop_flag)); r++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 16) & 3);
        size_t n = MIB + ((seed >> 8) % (6 * MIB));
        if (live[k]) {
            size_t bad = 0;
            for (size_t i = 0; i < len[k]; i += 4096) bad += live[k][i] != (uint8_t)(k + i / 4096);
            CHECK(bad == 0);
            if (seed & 1) {
                tl_pool_free(live[k]);
                live[k] = NULL;
                continue;
            }
            uint8_t *q = tl_pool_realloc(live[k], n);
            CHECK(q != NULL);
            size_t keep = n < len[k] ? n : len[k];
            for (size_t i = 0; i < keep; i += 4096) bad += q[i] != (uint8_t)(k + i / 4096);
            CHECK(bad == 0);
            live[k] = q;
        } else {
            live[k] = tl_pool_malloc(n);
            CHECK(live[k] != NULL);
        }
        len[k] = n;
        for (size_t i = 0; i < n; i += 4096) live[k][i] = (uint8_t)(k + i / 4096);
        if ((seed & 63) == 5) tl_pool_collect(0);
    }
    for (int k = 0; k < 4; k++) tl_pool_free(live[k]);
    return NULL;
}

static void test_threads(void) {
    set_large(64 * MIB, 1); /* small bound and delay: eviction and purges race the users */
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    CHECK(info().cached_bytes <= 64 * MIB);
    restore_defaults();
    CHECK(info().mapped_bytes == 0); /* nothing live, nothing cached */
}

/* ---- the thread's large cache ----------------------------------------------- */

static uint64_t depot_locks(void) {
    tl_pool_stats st;
    tl_pool_get_stats(&st);
    return st.num_depot_locks;
}

static void test_thread_cache_reuse(void) {
    restore_defaults();
    tl_pool_collect(1); /* purged blocks unmapped too: nothing due */
    size_t n = 256 << 10;
    char *a = tl_pool_malloc(n);
    CHECK(a != NULL);
    memset(a, 1, n);
    tl_pool_large_info i0 = info();
    tl_pool_free(a);
    tl_pool_large_info i1 = info();
    CHECK(i1.num_cached == i0.num_cached + 1); /* cached (here or in the shared cache) */
    CHECK(i1.cached_bytes == i0.cached_bytes + n + 4096);
    CHECK(i1.resident_bytes == i0.resident_bytes + n + 4096);
    CHECK(i1.mapped_bytes == i0.mapped_bytes);
    /* A thread whose requests missed its cache keeps every 8th block only, so
     * the cache may take a few rounds to fill (earlier tests ran here). */
    for (int k = 0; k < 16; k++) tl_pool_free(tl_pool_malloc(n));
    i1 = info();
    uint64_t locks0 = depot_locks();
    long f0 = minflt();
    for (int k = 0; k < 100; k++) {
        char *p = tl_pool_malloc(n - 4096 * (size_t)(k % 3)); /* within the as-is fit */
        CHECK(p == a);
        memset(p, k, n - 4096 * (size_t)(k % 3));
        tl_pool_free(p);
    }
    long faults = minflt() - f0;
    uint64_t locks = depot_locks() - locks0;
    CHECK(info().num_reuses == i1.num_reuses + 100);
    /* Through the shared cache: two large-lock round trips per pair (200); a
     * lazy-purge tick may take it a few times. */
    CHECK(locks < 10);
#ifndef __SANITIZE_THREAD__
    CHECK(faults < 16); /* resident: not faulted in again (64 pages a time) */
#else
    (void)faults;
#endif
    /* calloc from the thread's cache is zero. */
    char *z = tl_pool_calloc(1, n);
    CHECK(z == a);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) nonzero += z[i] != 0;
    CHECK(nonzero == 0);
    tl_pool_free(z);
    /* Collect empties the thread caches too. */
    tl_pool_collect(1);
    CHECK(info().resident_bytes == 0);
    tl_pool_collect(1);
    CHECK(info().num_cached == 0);
    CHECK(info().mapped_bytes == 0);
}

struct xfree_arg {
    char *p;      /* freed by the thread */
    char *again;  /* what the thread got back for the same size */
    char *kept;   /* left in the thread's cache at its exit */
};

static void *xfree_thread(void *arg) {
    struct xfree_arg *x = arg;
    tl_pool_free(x->p); /* allocated by the main thread */
    x->again = tl_pool_malloc(256 << 10);
    memset(x->again, 7, 256 << 10);
    x->kept = tl_pool_malloc(300 << 10);
    memset(x->kept, 8, 300 << 10);
    tl_pool_free(x->kept);
    return NULL;
}

static void test_thread_cache_cross_thread_and_exit(void) {
    restore_defaults();
    tl_pool_collect(1);
    struct xfree_arg x = {.p = tl_pool_malloc(256 << 10)};
    memset(x.p, 6, 256 << 10);
    pthread_t t;
    pthread_create(&t, NULL, xfree_thread, &x);
    pthread_join(t, NULL);
    CHECK(x.again == x.p); /* the freeing thread's cache served it */
    /* The thread's exit moved `kept` to the shared cache: this thread reuses it. */
    tl_pool_large_info i0 = info();
    CHECK(i0.num_cached == 1);
    char *k = tl_pool_malloc(300 << 10);
    CHECK(k == x.kept);
    CHECK(info().num_reuses == i0.num_reuses + 1);
    tl_pool_free(k);
    tl_pool_free(x.again); /* freed by another thread than its allocator */
    CHECK(info().num_cached == 2);
    restore_defaults();
    tl_pool_collect(1);
    CHECK(info().mapped_bytes == 0);
}

static void test_thread_cache_purge_and_bounds(void) {
    restore_defaults();
    tl_pool_collect(1);
    size_t n = 256 << 10;
    set_large(TL_POOL_DEFAULT_LARGE_CACHE, 50);
    char *a = tl_pool_malloc(n);
    memset(a, 1, n);
    tl_pool_free(a);
    CHECK(info().resident_bytes == n + 4096);
    /* After the delay, a lazy-purge tick (here: this thread's next large
     * allocation, of another size) steals it into the shared cache, which
     * purges it at once (its age is its put time). */
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
    char *other = tl_pool_malloc(2 * MIB);
    tl_pool_large_info i = info();
    CHECK(i.resident_bytes == 0);
    CHECK(i.num_cached == 1 && i.num_purged == 1);
    tl_pool_free(other);
    /* A bound of 0, or a delay of 0, keeps no block in a thread's cache. */
    set_large(0, 250);
    char *b = tl_pool_malloc(n);
    tl_pool_free(b);
    CHECK(info().num_cached == 0);
    CHECK(info().mapped_bytes == 0);
    set_large(TL_POOL_DEFAULT_LARGE_CACHE, 0);
    b = tl_pool_malloc(n);
    memset(b, 1, n);
    tl_pool_free(b);
    CHECK(info().resident_bytes == 0);
    /* A small bound covers the thread caches: 4 MiB of 700 KiB blocks freed
     * by this thread keep at most 4 MiB cached. */
    set_large(2 * MIB, 250);
    char *v[8];
    for (int k = 0; k < 8; k++) v[k] = tl_pool_malloc(700 << 10);
    for (int k = 0; k < 8; k++) tl_pool_free(v[k]);
    CHECK(info().cached_bytes <= 2 * MIB);
    CHECK(info().num_cached >= 1);
    restore_defaults();
    tl_pool_collect(1);
    CHECK(info().mapped_bytes == 0);
}

static void test_fork_while_churning(void) {
    set_large(64 * MIB, 1);
    atomic_store(&stop_flag, 0);
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    int forks = SANITIZED ? 5 : 30;
    for (int i = 0; i < forks; i++) {
        usleep(2000);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            /* The child: every large path once (no threads: not under TSan). */
            char *a = tl_pool_malloc(5 * MIB);
            char *b = tl_pool_realloc(a, 9 * MIB);
            char *c = tl_pool_aligned_alloc(8 * MIB, 100);
            tl_pool_free(b);
            tl_pool_free(c);
            tl_pool_collect(0);
            char *d = tl_pool_malloc(5 * MIB);
            tl_pool_free(d);
            tl_pool_collect(1);
            _exit(a && b && c && d ? 0 : 3);
        }
        CHECK(pid > 0);
        int status = 0;
        for (int w = 0; w < 1000; w++) { /* up to 10 s, then it hangs: kill, fail */
            if (waitpid(pid, &status, WNOHANG) == pid) break;
            if (w == 999) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
            }
            usleep(10000);
        }
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    atomic_store(&stop_flag, 1);
    pthread_join(t, NULL);
    restore_defaults();
}

int main(void) {
    RUN(test_realloc_growth_faults);
    RUN(test_realloc_keeps_contents);
    RUN(test_cache_reuse);
    RUN(test_cache_byte_bound);
    RUN(test_lazy_purge_returns_memory);
    RUN(test_alignments);
    RUN(test_threads);
    RUN(test_thread_cache_reuse);
    RUN(test_thread_cache_cross_thread_and_exit);
    RUN(test_thread_cache_purge_and_bounds);
    RUN(test_fork_while_churning);
    TEST_MAIN_END();
}
