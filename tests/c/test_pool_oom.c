/* What the pool does when the OS refuses memory, as behaviour:
 *
 * - release and retry: a mapping refused once (tl_os_inject_map_failures,
 *   which makes the next mappings fail with ENOMEM as RLIMIT_AS would) is
 *   asked for again after the pool gave back what it held unused: the large
 *   cache is empty and the depot holds no free page afterwards; refused
 *   twice, the allocation returns NULL with errno ENOMEM and the pool still
 *   works. For a large block, a new segment of pages, realloc's growth, a
 *   thread's first allocation, and an arena's region (the OS layer's hook);
 * - other threads' heaps give back their empty pages at their next slow-path
 *   allocations after such a release;
 * - the same under a real limit (RLIMIT_AS, in a child process; not under
 *   the sanitizers, whose shadow memory needs far more address space);
 * - the kernel's overcommit policy: under the heuristic mode a request above
 *   RAM + swap fails at once with ENOMEM (nothing is released for it), under
 *   "always" it is mapped, under the strict mode mappings are charged.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/pool_internal.h"
#include "tl_test.h"
#include "tlalloc.h"
#include "platform/os.h"

#define MIB ((size_t)1 << 20)

static tl_pool_large_info large_info(void) {
    tl_pool_large_info li;
    tl_pool_large_cache_info(&li);
    return li;
}

static tl_pool_stats stats(void) {
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    return s;
}

/* Fill the large cache and the depot with memory that is free but kept. */
static void hold_free_memory(void) {
    void *big[4];
    for (int i = 0; i < 4; i++) {
        big[i] = tl_pool_malloc(3 * MIB + (size_t)i * 4096);
        CHECK(big[i] != NULL);
        memset(big[i], 1, 3 * MIB);
    }
    for (int i = 0; i < 4; i++) tl_pool_free(big[i]);
    enum { N = 4096 };
    static void *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = tl_pool_malloc(2000);
        CHECK(s[i] != NULL);
        memset(s[i], 2, 2000);
    }
    for (int i = 0; i < N; i++) tl_pool_free(s[i]);
}

static void test_large_block_released_and_retried(void) {
    tl_pool_collect(1);
    hold_free_memory();
    CHECK(large_info().cached_bytes >= 12 * MIB);
    CHECK(stats().retained_bytes > 0);
    /* A size none of the cached blocks serves: a fresh mapping, refused once. */
    tl_os_inject_map_failures(1);
    errno = 0;
    char *p = tl_pool_malloc(40 * MIB);
    CHECK(p != NULL);
    tl_os_inject_map_failures(0);
    CHECK(large_info().cached_bytes == 0); /* released before the retry */
    tl_pool_stats st = stats();
    CHECK(st.retained_bytes == 0);
    if (p) {
        memset(p, 3, 40 * MIB);
        tl_pool_free(p);
    }
    /* Refused twice: NULL with ENOMEM, and the pool keeps working. */
    tl_pool_collect(1); /* (a cached block would be grown instead: one more try) */
    tl_os_inject_map_failures(2);
    errno = 0;
    p = tl_pool_malloc(41 * MIB);
    CHECK(p == NULL && errno == ENOMEM);
    tl_os_inject_map_failures(0);
    p = tl_pool_malloc(41 * MIB);
    CHECK(p != NULL);
    tl_pool_free(p);
    tl_pool_collect(1);
}

static void test_segment_released_and_retried(void) {
    /* No medium page anywhere: this thread's heap torn down (its empty pages
     * to the depot), the depot's free segments unmapped. The first block of
     * 48 KiB (a medium page's class) needs a new segment. */
    tl_pool_thread_release();
    tl_pool_collect(1);
    hold_free_memory();
    CHECK(large_info().cached_bytes > 0);
    tl_os_inject_map_failures(1);
    enum { N = 200 };
    static void *m[N];
    int got = 0;
    for (int i = 0; i < N; i++)
        if ((m[i] = tl_pool_malloc(48 << 10)) != NULL) got++;
    tl_os_inject_map_failures(0);
    CHECK(got == N);
    CHECK(large_info().cached_bytes == 0); /* the refused segment released the cache */
    for (int i = 0; i < N; i++) tl_pool_free(m[i]);
    /* Refused twice: the allocation that needs a segment fails cleanly. */
    tl_pool_thread_release();
    tl_pool_collect(1);
    tl_os_inject_map_failures(2);
    errno = 0;
    void *p = tl_pool_malloc(48 << 10);
    CHECK(p == NULL && errno == ENOMEM);
    tl_os_inject_map_failures(0);
    p = tl_pool_malloc(48 << 10);
    CHECK(p != NULL);
    tl_pool_free(p);
    tl_pool_collect(1);
}

static void test_realloc_growth_retried(void) {
    tl_pool_collect(1);
    char *p = tl_pool_malloc(2 * MIB);
    CHECK(p != NULL);
    memset(p, 7, 2 * MIB);
    hold_free_memory();
    /* Every attempt of the growth's first round is refused (the in-place
     * mremap and the move), then none: it succeeds after the release. */
    tl_os_inject_map_failures(2);
    char *q = tl_pool_realloc(p, 64 * MIB);
    tl_os_inject_map_failures(0);
    CHECK(q != NULL);
    if (q) {
        CHECK(q[0] == 7 && q[2 * MIB - 1] == 7);
        CHECK(large_info().cached_bytes == 0);
        tl_pool_free(q);
    } else {
        tl_pool_free(p);
    }
    tl_pool_collect(1);
}

/* An arena's region: the OS layer calls the pool's release hook. */
static void test_arena_region_gets_the_pools_memory(void) {
    tl_pool_collect(1);
    tl_pool_free(tl_pool_malloc(100)); /* the pool's first use registers the hook */
    hold_free_memory();
    CHECK(large_info().cached_bytes > 0);
    tl_os_inject_map_failures(1);
    tl_os_region r;
    int rc = tl_os_map(8 * MIB, 4096, TL_PAGES_DEFAULT, TL_NUMA_OFF, 0, &r);
    tl_os_inject_map_failures(0);
    CHECK(rc == 0);
    CHECK(large_info().cached_bytes == 0);
    if (rc == 0) tl_os_unmap(&r);
    tl_os_inject_map_failures(2);
    errno = 0;
    rc = tl_os_map(8 * MIB, 4096, TL_PAGES_DEFAULT, TL_NUMA_OFF, 0, &r);
    tl_os_inject_map_failures(0);
    CHECK(rc == -1 && errno == ENOMEM);
    /* Without the hook: one try. */
    tl_os_inject_map_failures(1);
    rc = tl_os_map_norelease(8 * MIB, 4096, TL_PAGES_DEFAULT, TL_NUMA_OFF, 0, &r);
    tl_os_inject_map_failures(0);
    CHECK(rc == -1);
}

/* Another thread's empty pages go back at its next slow-path allocations
 * after a release elsewhere (the pressure epoch). */
static pthread_barrier_t bar;
static uint64_t other_segments_after;

static void *other_thread(void *arg) {
    (void)arg;
    /* Empty pages it keeps: each class's only available page, small and
     * medium (blocks above 8 KiB). */
    for (int c = 0; c < 16; c++) tl_pool_free(tl_pool_malloc(2048 + (size_t)c * 512));
    pthread_barrier_wait(&bar); /* main releases now */
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 256; i++) tl_pool_free(tl_pool_malloc(5000)); /* slow-path ticks */
    tl_pool_collect(1);
    other_segments_after = stats().num_segments;
    pthread_barrier_wait(&bar);
    return NULL;
}

static void test_other_heaps_answer_the_pressure(void) {
    tl_pool_thread_release();
    tl_pool_collect(1);
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0);
    pthread_barrier_wait(&bar);
    tl_pool_release();
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&bar);
    /* Its empty pages went back at a tick: the collect left only the small
     * segment of the page of its last class (kept, it had none of the
     * medium class it used before the release). */
    CHECK(other_segments_after == 1);
    if (other_segments_after != 1) fprintf(stderr, "segments %llu\n", (unsigned long long)other_segments_after);
}

/* The overcommit rule, simulated per mode (tl_os_set_overcommit). */
static void test_overcommit_modes(void) {
    tl_pool_collect(1);
    /* Heuristic mode, RAM + swap of 1 GiB: 2 GiB is refused at once, with
     * nothing released for it (the cache keeps its blocks). */
    tl_os_set_overcommit(0, (uint64_t)1 << 30);
    hold_free_memory();
    size_t cached = large_info().cached_bytes;
    errno = 0;
    void *p = tl_pool_malloc((size_t)2 << 30);
    CHECK(p == NULL && errno == ENOMEM);
    CHECK(large_info().cached_bytes == cached);
    errno = 0;
    CHECK(tl_pool_calloc(1, (size_t)3 << 30) == NULL && errno == ENOMEM);
    CHECK(tl_pool_aligned_alloc((size_t)1 << 21, (size_t)2 << 30) == NULL);
    p = tl_pool_malloc(64 * MIB); /* below the limit: served */
    CHECK(p != NULL);
    errno = 0;
    void *q = p ? tl_pool_realloc(p, (size_t)2 << 30) : NULL; /* growth refused, p kept */
    CHECK(q == NULL && errno == ENOMEM);
    tl_pool_free(p);
    /* Always: the same request is only address space, and is mapped. */
    tl_os_set_overcommit(1, 0);
    p = tl_pool_malloc((size_t)2 << 30);
    CHECK(p != NULL);
    tl_pool_free(p);
    /* Strict: mapped without MAP_NORESERVE, so the kernel's accounting
     * decides; 64 MiB fits any commit limit worth running tests on. */
    tl_os_set_overcommit(2, 0);
    CHECK(tl_os_overcommit_mode() == 2 && tl_os_size_possible((size_t)1 << 46));
    p = tl_pool_malloc(64 * MIB);
    CHECK(p != NULL);
    tl_pool_free(p);
    /* Back to the kernel's mode; 64 TiB is beyond any machine's RAM + swap
     * (or the address space) under modes 0 and 2, and is refused. */
    tl_os_set_overcommit(-1, 0);
    int mode = tl_os_overcommit_mode();
    CHECK(mode >= -1 && mode <= 2);
    if (mode != 1) {
        errno = 0;
        CHECK(tl_pool_malloc((size_t)1 << 46) == NULL && errno == ENOMEM);
    }
    tl_pool_collect(1);
}

/* A real RLIMIT_AS, in a child: after 200 MiB of small blocks are freed, 300
 * blocks of 1 MiB fit in a limit that could not hold both. */
static void test_rlimit_as_child(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    printf("     (skipped under a sanitizer: its shadow memory needs the address space)\n");
    return;
#else
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        tl_pool_collect(1);
        struct rlimit rl;
        getrlimit(RLIMIT_AS, &rl);
        /* What is mapped now, plus 380 MiB. */
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!f || fscanf(f, "%lu", &pages) != 1) _exit(3);
        fclose(f);
        rl.rlim_cur = (rlim_t)pages * 4096 + 380 * MIB;
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(3);
        enum { N = 200000 };
        static void *s[N];
        for (int i = 0; i < N; i++)
            if (!(s[i] = tl_pool_malloc(1000))) _exit(4);
        for (int i = 0; i < N; i++) tl_pool_free(s[i]);
        static void *b[300];
        for (int i = 0; i < 300; i++) {
            if (!(b[i] = tl_pool_malloc(MIB))) _exit(5);
            memset(b[i], 1, MIB);
        }
        for (int i = 0; i < 300; i++) tl_pool_free(b[i]);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) fprintf(stderr, "child status %d\n", st);
#endif
}

int main(void) {
    RUN(test_large_block_released_and_retried);
    RUN(test_segment_released_and_retried);
    RUN(test_realloc_growth_retried);
    RUN(test_arena_region_gets_the_pools_memory);
    RUN(test_other_heaps_answer_the_pressure);
    RUN(test_overcommit_modes);
    RUN(test_rlimit_as_child);
    TEST_MAIN_END();
}
