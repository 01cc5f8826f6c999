/* Tests that the pool gives back free memory that a churn of mixed sizes
 * leaves behind, as behaviour: resident bytes from
 * /proc/self/statm, no timing assertions (deadlines only bound the waits).
 *
 * - free blocks of 16 KiB and more in pages that stay partly used go back to
 *   the OS after the purge delay, through later allocations of their owner;
 * - freed large blocks of up to 4 MiB are not kept resident beyond the retain
 *   limit plus what the live ones lack of the most live large bytes of the
 *   last purge delay, even before the delay, and a live set freed at once
 *   stays resident (taken again without page faults);
 * - pages emptied in a burst stay in the depot beyond the retain limit for the
 *   purge delay (taken again without page faults), then go back to the OS
 *   through later allocations; at once with a delay of 0. */
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/pool_internal.h" /* tl_num_block_purges */
#include "tl_test.h"
#include "tlalloc.h"

#define MIB ((size_t)1 << 20)

static uint64_t minor_faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_minflt;
}

static void configure(unsigned delay_ms) {
    tl_pool_options o = TL_POOL_OPTIONS_DEFAULT;
    o.purge_delay_ms = delay_ms;
    CHECK(tl_pool_configure(&o) == 0);
}

static void test_free_class_blocks_purged(void) {
    configure(20);
    enum { N = 512 };
    size_t each = 32 << 10; /* a size class (medium pages of 15 blocks) */
    static char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = tl_pool_malloc(each);
        CHECK(b[i] != NULL);
        memset(b[i], 0x5a, each);
    }
    /* Free 7 of every 8: every page keeps a live block, so none is empty. */
    for (int i = 0; i < N; i++)
        if (i % 8) tl_pool_free(b[i]);
    size_t high = rss_bytes(), low = high, want = 8 * MIB; /* of 14 MiB freed */
    uint64_t p0 = atomic_load(&tl_num_block_purges);
    for (int t = 0; t < 2000 && low + want > high; t++) {
        usleep(5000);
        tl_pool_free(tl_pool_malloc(5000)); /* the owner's later allocations */
        low = rss_bytes();
    }
    if (low + want > high) fprintf(stderr, "RSS %zu KiB before, %zu KiB after\n", high >> 10, low >> 10);
    CHECK(low + want <= high);
    CHECK(atomic_load(&tl_num_block_purges) - p0 >= N / 2);
    /* The blocks are reusable, purged or not, and the live ones intact. */
    for (int i = 0; i < N; i++) {
        if (i % 8 == 0) {
            CHECK(b[i][0] == 0x5a && b[i][each - 1] == 0x5a);
            continue;
        }
        b[i] = tl_pool_malloc(each);
        CHECK(b[i] != NULL);
        memset(b[i], 0x33, each);
    }
    for (int i = 0; i < N; i++) tl_pool_free(b[i]);
    configure(TL_POOL_DEFAULT_PURGE_DELAY_MS);
}

/* The resident bound of cached large blocks (tl_purge_excess): live and
 * cached together stay within the most live large bytes of the last purge
 * delay plus the retain limit. */
static void test_large_resident_bounded(void) {
    configure(60000); /* no purge by age during the test */
    tl_pool_collect(1);
    enum { N = 24 };
    size_t each = MIB + 4096 * 3; /* sizes that differ: one mapping each */
    char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = tl_pool_malloc(each + (size_t)i * 8192);
        CHECK(b[i] != NULL);
        memset(b[i], 0x11, each);
    }
    for (int i = 0; i < N; i++) tl_pool_free(b[i]);
    tl_pool_large_info li;
    tl_pool_large_cache_info(&li);
    /* 1. A live set freed at once stays resident: it was live a moment ago,
     *    and the next round of the program (threads that exit and come back:
     *    mstress) takes it again without page faults. With the bound at the
     *    live bytes now (nothing), all but retain_bytes was purged. */
    CHECK(li.num_cached == N);
    CHECK(li.resident_bytes >= (N - 2) * each);
    uint64_t faults0 = minor_faults();
    for (int i = 0; i < N; i++) {
        b[i] = tl_pool_malloc(each + (size_t)i * 8192);
        CHECK(b[i] != NULL);
        memset(b[i], 0x22, each);
    }
    uint64_t refaults = minor_faults() - faults0;
    printf("     %d blocks of 1 MiB taken again: %llu page faults\n", N, (unsigned long long)refaults);
    CHECK(refaults < (uint64_t)N * 16); /* against 256 a block when purged */
    for (int i = 0; i < N; i++) tl_pool_free(b[i]);
    /* 2. Beyond that most, the bound holds: 3 MiB blocks (no cached 1 MiB
     *    mapping fits them) raise the most to about 3N MiB; once they are
     *    freed too, 4N MiB is cached, and at most 3N MiB, the retain limit
     *    and a batch stay resident. */
    size_t big = 3 * MIB;
    for (int i = 0; i < N; i++) {
        b[i] = tl_pool_malloc(big + (size_t)i * 8192);
        CHECK(b[i] != NULL);
        memset(b[i], 0x33, big);
    }
    for (int i = 0; i < N; i++) tl_pool_free(b[i]);
    tl_pool_large_cache_info(&li);
    CHECK(li.num_cached == 2 * N);
    CHECK(li.resident_bytes <= N * (big + (size_t)N * 8192) + TL_POOL_DEFAULT_RETAIN + 4 * MIB);
    CHECK(li.resident_bytes + 16 * MIB <= li.cached_bytes);
    tl_pool_collect(1);
    configure(TL_POOL_DEFAULT_PURGE_DELAY_MS);
}

static tl_pool_stats pool_stats(void) {
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    return s;
}

enum { DEPOT_N = 4096 };
static char *depot_b[DEPOT_N];

/* 16 MiB of 4 KiB blocks (256 small pages), written, then freed: their pages
 * empty and go to the depot. */
static void depot_burst(int keep) {
    for (int i = 0; i < DEPOT_N; i++) {
        depot_b[i] = tl_pool_malloc(4096);
        CHECK(depot_b[i] != NULL);
        memset(depot_b[i], 0x3c, 4096);
    }
    if (keep) return;
    for (int i = 0; i < DEPOT_N; i++) tl_pool_free(depot_b[i]);
}

static void test_depot_lazy_purge(void) {
    tl_pool_collect(1);
    tl_pool_options o = TL_POOL_OPTIONS_DEFAULT;
    o.retain_bytes = MIB;
    o.purge_delay_ms = 600000; /* nothing falls due during this part */
    CHECK(tl_pool_configure(&o) == 0);
    depot_burst(0);
    /* Kept beyond the limit while the delay runs (the pages of the current
     * and one more page of the class may stay with the thread). */
    CHECK(pool_stats().retained_bytes >= 12 * MIB);
    /* ... and taken again without faulting them in: 4096 faults otherwise. */
    long f0 = minflt();
    depot_burst(1);
    long faults = minflt() - f0;
    if (faults >= DEPOT_N / 4) fprintf(stderr, "%ld minor faults taking the pages again\n", faults);
    CHECK(faults < DEPOT_N / 4);
    for (int i = 0; i < DEPOT_N; i++) tl_pool_free(depot_b[i]);

    /* A short delay: later allocations give the excess back. */
    o.purge_delay_ms = 50;
    CHECK(tl_pool_configure(&o) == 0);
    depot_burst(0);
    size_t high = rss_bytes(), low = high;
    tl_pool_stats s = pool_stats();
    for (int t = 0; t < 2000 && (s.retained_bytes > MIB || low + 8 * MIB > high); t++) {
        usleep(5000);
        for (int k = 0; k < 64; k++) tl_pool_free(tl_pool_malloc(2000)); /* slow path: the tick */
        s = pool_stats();
        low = rss_bytes();
    }
    if (s.retained_bytes > MIB || low + 8 * MIB > high)
        fprintf(stderr, "retained %llu KiB, RSS %zu KiB before, %zu KiB after\n",
                (unsigned long long)s.retained_bytes >> 10, high >> 10, low >> 10);
    CHECK(s.retained_bytes <= MIB);
    CHECK(low + 8 * MIB <= high);

    /* A delay of 0: at once, on the free that empties each page. */
    o.purge_delay_ms = 0;
    CHECK(tl_pool_configure(&o) == 0);
    depot_burst(0);
    CHECK(pool_stats().retained_bytes <= MIB);
    o = (tl_pool_options)TL_POOL_OPTIONS_DEFAULT;
    CHECK(tl_pool_configure(&o) == 0);
}

/* The lazy purge's system calls are made with the depot lock released, and a
 * fork meanwhile (from another thread) leaves the child no page stuck in
 * flight. The hook stops the first purge between the two. */
static sem_t hook_go, hook_done;
static int hook_calls, hook_lock_free, child_status = -1;
static size_t hook_in_flight;

static void purge_hook(void) {
    if (hook_calls++) return;
    hook_lock_free = pthread_mutex_trylock(&tl_depot_lock) == 0;
    if (hook_lock_free) pthread_mutex_unlock(&tl_depot_lock);
    hook_in_flight = tl_depot_purging_pages();
    sem_post(&hook_go);
    sem_wait(&hook_done);
}

static void *forker(void *arg) {
    (void)arg;
    sem_wait(&hook_go);
    if (!hook_calls) return NULL; /* no purge came */
    pid_t pid = fork();
    if (pid == 0) {
        /* The purging thread does not exist here: its pages are back. */
        void *p = tl_pool_malloc(100);
        tl_pool_free(p);
        _exit(tl_depot_purging_pages() == 0 && p != NULL ? 0 : 1);
    }
    if (pid > 0) waitpid(pid, &child_status, 0);
    sem_post(&hook_done);
    return NULL;
}

static void test_purge_outside_lock(void) {
    tl_pool_options o = TL_POOL_OPTIONS_DEFAULT;
    o.retain_bytes = MIB;
    o.purge_delay_ms = 1;
    CHECK(tl_pool_configure(&o) == 0);
    sem_init(&hook_go, 0, 0);
    sem_init(&hook_done, 0, 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, forker, NULL) == 0);
    atomic_store(&tl_depot_purge_hook, purge_hook);
    depot_burst(0);
    for (int i = 0; i < 2000 && !hook_calls; i++) {
        usleep(2000);
        for (int k = 0; k < 64; k++) tl_pool_free(tl_pool_malloc(2000)); /* the tick */
    }
    atomic_store(&tl_depot_purge_hook, NULL);
    if (!hook_calls) sem_post(&hook_go);
    pthread_join(t, NULL);
    CHECK(hook_calls > 0);
    CHECK(hook_lock_free);
    CHECK(hook_in_flight > 0);
    CHECK(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0);
    CHECK(tl_depot_purging_pages() == 0); /* done, back on the clean lists */
    o = (tl_pool_options)TL_POOL_OPTIONS_DEFAULT;
    CHECK(tl_pool_configure(&o) == 0);
}

/* The resident bound covers mappings above 4 MiB too: a 6 MiB block freed
 * and not reused is purged, before its delay, at the next free that checks
 * the bound once the live large blocks hold the recent most themselves. */
static void test_large_resident_bound_covers_big_mappings(void) {
    tl_pool_options o = TL_POOL_OPTIONS_DEFAULT;
    o.retain_bytes = 1 * MIB;
    /* Forget the most live bytes of the tests before: a short delay passes,
     * then a free samples them anew. */
    o.purge_delay_ms = 10;
    CHECK(tl_pool_configure(&o) == 0);
    tl_pool_collect(1);
    usleep(30000);
    tl_pool_free(tl_pool_malloc(2 * MIB));
    o.purge_delay_ms = 60000; /* nothing goes by the delay from here */
    CHECK(tl_pool_configure(&o) == 0);
    tl_pool_collect(1);
    char *c = tl_pool_malloc(2 * MIB); /* above the thread cache's 1 MiB */
    char *a = tl_pool_malloc(6 * MIB);
    CHECK(a && c);
    if (a) memset(a, 1, 6 * MIB);
    tl_pool_free(a); /* cached, resident */
    tl_pool_large_info li;
    tl_pool_large_cache_info(&li);
    CHECK(li.resident_bytes >= 6 * MIB);
    char *b = tl_pool_malloc(20 * MIB); /* too big for the cached block to serve */
    CHECK(b != NULL);
    if (b) memset(b, 2, 20 * MIB);
    tl_pool_free(c); /* checks the bound: the 20 MiB live and c are the most now */
    tl_pool_large_cache_info(&li);
    /* The 6 MiB block went; the block just freed (2 MiB and its header page)
     * may stay, within the recent most. */
    CHECK(li.resident_bytes <= 2 * MIB + 8192);
    CHECK(li.num_purged >= 1);
    tl_pool_free(b);
    CHECK(tl_pool_configure(NULL) == 0);
    tl_pool_collect(1);
}

int main(void) {
    RUN(test_free_class_blocks_purged);
    RUN(test_depot_lazy_purge);
    RUN(test_purge_outside_lock);
    RUN(test_large_resident_bounded);
    RUN(test_large_resident_bound_covers_big_mappings);
    TEST_MAIN_END();
}
