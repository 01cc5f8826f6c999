/* Memory freed goes back to the OS without a later call into the pool, as
 * behaviour read from /proc/self/statm (resident and mapped bytes), with no
 * timing assertion (deadlines only bound the waits):
 *
 * - the depot's eager bound: a burst of frees much larger than retain_bytes
 *   leaves the resident set as it happens, even with a purge delay of a
 *   minute and no call afterwards, and the segments it empties are unmapped;
 *   a churn that asks for what it freed again raises the bound (its later
 *   rounds take no page faults);
 * - the background purge thread (tl_pool_purge_thread): pages beyond
 *   retain_bytes, a large cached block and the segments left with no page in
 *   use go back (RSS and mapped bytes fall) while the program only sleeps;
 *   without the thread they stay (the control);
 * - by default the thread starts itself: an allocation slow path after
 *   something freed waited for the purge delay starts it, and the memory
 *   freed after that goes back while the program sleeps;
 * - the thread stops when asked; fork stops it (the parent counts one thread
 *   right after fork returns, as CPython's fork warning does) and the next
 *   allocation while something is due starts it again in parent and child.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/pool_internal.h"
#include "tl_test.h"
#include "tlalloc.h"

#define MIB ((size_t)1 << 20)

/* ThreadSanitizer's shadow memory follows the application's pages into the
 * resident set and does not leave it with them; and it cannot start threads
 * in a child of a multi-threaded fork. */
#if defined(__SANITIZE_THREAD__)
#define TL_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TL_UNDER_TSAN 1
#endif
#endif
#ifndef TL_UNDER_TSAN
#define TL_UNDER_TSAN 0
#endif
/* AddressSanitizer: a child of fork does not start the thread itself (pool.c,
 * TL_BG_CHILD_AUTOSTART); an explicit start still works there. */
#if defined(__SANITIZE_ADDRESS__)
#define TL_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TL_UNDER_ASAN 1
#endif
#endif
#ifndef TL_UNDER_ASAN
#define TL_UNDER_ASAN 0
#endif

/* Mapped bytes of the process (/proc/self/statm's first field). */
static size_t mapped_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0;
    if (fscanf(f, "%lu", &size) != 1) size = 0;
    fclose(f);
    return (size_t)size * (size_t)sysconf(_SC_PAGESIZE);
}

static void configure(size_t retain, unsigned delay_ms) {
    tl_pool_options o = TL_POOL_OPTIONS_DEFAULT;
    o.retain_bytes = retain;
    o.purge_delay_ms = delay_ms;
    CHECK(tl_pool_configure(&o) == 0);
}

/* Blocks of 4000 B (class 4096, small pages): n bytes of them, touched. */
static void **alloc_blocks(size_t bytes, size_t *count) {
    size_t n = bytes / 4096;
    void **b = tl_pool_malloc(n * sizeof *b);
    CHECK(b != NULL);
    for (size_t i = 0; i < n; i++) {
        b[i] = tl_pool_malloc(4000);
        CHECK(b[i] != NULL);
        memset(b[i], 0x33, 4000);
    }
    *count = n;
    return b;
}

static void free_blocks(void **b, size_t n) {
    for (size_t i = 0; i < n; i++) tl_pool_free(b[i]);
    tl_pool_free(b);
}

static void test_burst_leaves_at_once(void) {
    configure(8 * MIB, 60000); /* a minute's delay: only the eager bound acts */
    tl_pool_collect(1);
    size_t base = rss_bytes(), n;
    void **b = alloc_blocks(96 * MIB, &n);
    size_t high = rss_bytes(), mapped_high = mapped_bytes();
    CHECK(high >= base + 90 * MIB);
    free_blocks(b, n);
    size_t after = rss_bytes(), mapped_after = mapped_bytes(); /* no call since the last free */
    /* The segments those pages leave with no page in use are unmapped too
     * (not only their pages purged). */
    CHECK(mapped_after + 60 * MIB <= mapped_high);
    /* retain_bytes and the 16 MiB eager bound wait; the rest is back. The
     * statistics (which purge nothing) say the same where RSS cannot. */
    tl_pool_stats st;
    tl_pool_get_stats(&st);
    CHECK(st.retained_bytes <= 8 * MIB + 16 * MIB);
    if (!TL_UNDER_TSAN) CHECK(after <= base + 8 * MIB + 16 * MIB + 8 * MIB);
    if (after > base + 32 * MIB)
        fprintf(stderr, "     base %zu KiB, high %zu, after %zu\n", base >> 10, high >> 10, after >> 10);
    printf("     96 MiB freed in a burst: RSS %zu -> %zu KiB, mapped %zu -> %zu KiB with no later call\n",
           high >> 10, after >> 10, mapped_high >> 10, mapped_after >> 10);
    configure(TL_POOL_DEFAULT_RETAIN, TL_POOL_DEFAULT_PURGE_DELAY_MS);
    tl_pool_collect(1);
}

/* A churn that frees more than the eager bound and asks for it again within
 * the purge delay raises the bound: its later rounds take their pages back
 * without page faults, instead of faulting in what the bound gave back. */
static void test_churn_raises_the_eager_bound(void) {
    configure(8 * MIB, 60000);
    tl_pool_collect(1);
    long faults[6];
    for (int r = 0; r < 6; r++) {
        long f0 = minflt();
        size_t n;
        void **b = alloc_blocks(64 * MIB, &n);
        free_blocks(b, n);
        faults[r] = minflt() - f0;
    }
    /* 64 MiB is 16,384 pages: a round that faults them all again lost them. */
    printf("     64 MiB churn, page faults per round: %ld %ld %ld %ld %ld %ld\n", faults[0], faults[1],
           faults[2], faults[3], faults[4], faults[5]);
    CHECK(faults[0] > 12000);
    CHECK(faults[4] < 4000 && faults[5] < 4000);
    configure(TL_POOL_DEFAULT_RETAIN, TL_POOL_DEFAULT_PURGE_DELAY_MS);
    tl_pool_collect(1);
}

/* Frees that stay below the eager bound (12 MiB of pages beyond a 1 MiB
 * retain, in three segments) and a 64 MiB large block (cached, resident),
 * then sleep `wait_ms` with no call. Returns the RSS and mapped bytes the
 * sleep saw fall from the moment of the frees, at their lowest. */
static void free_then_sleep(unsigned wait_ms, size_t *rss_drop, size_t *map_drop) {
    configure(1 * MIB, 100);
    tl_pool_collect(1);
    size_t n;
    void **b = alloc_blocks(12 * MIB, &n);
    char *big = tl_pool_malloc(64 * MIB);
    CHECK(big != NULL);
    if (big) memset(big, 0x44, 64 * MIB);
    free_blocks(b, n);
    tl_pool_free(big);
    size_t rss0 = rss_bytes(), map0 = mapped_bytes(), rss_low = rss0, map_low = map0;
    for (unsigned t = 0; t < wait_ms; t += 20) {
        usleep(20000);
        size_t r = rss_bytes(), m = mapped_bytes();
        if (r < rss_low) rss_low = r;
        if (m < map_low) map_low = m;
        if (rss0 - rss_low >= 72 * MIB && map0 - map_low >= 68 * MIB) break;
    }
    *rss_drop = rss0 - rss_low;
    *map_drop = map0 - map_low;
}

/* Threads of this process (/proc/self/status), as CPython counts them at fork. */
static int threads_now(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    fclose(f);
    return n;
}

/* Something due (a cached large block), then an allocation above 1 KiB: the
 * thread starts itself if it is on. */
static void make_due_then_allocate(void) {
    tl_pool_free(tl_pool_malloc(300000));
    tl_pool_free(tl_pool_malloc(3000));
}

/* The default: nobody calls tl_pool_purge_thread, the thread starts itself,
 * and what is freed afterwards goes back while the program sleeps. */
static void test_purge_thread_starts_itself(void) {
    if (TL_UNDER_TSAN) return; /* no RSS figures there */
    make_due_then_allocate();
    CHECK(tl_pool_purge_thread_running() == 1);
    size_t rss_drop, map_drop;
    free_then_sleep(10000, &rss_drop, &map_drop);
    CHECK(rss_drop >= 72 * MIB);
    CHECK(map_drop >= 68 * MIB);
    printf("     started by itself, while asleep: RSS fell %zu KiB, mapped bytes %zu KiB\n",
           rss_drop >> 10, map_drop >> 10);
    configure(TL_POOL_DEFAULT_RETAIN, TL_POOL_DEFAULT_PURGE_DELAY_MS);
    tl_pool_collect(1);
}

static void test_purge_thread_gives_back_while_idle(void) {
    size_t rss_drop, map_drop;
    /* Control: the thread off, no call: the memory stays for a later call,
     * and it does not start itself. */
    CHECK(tl_pool_purge_thread(0) == 0);
    CHECK(tl_pool_purge_thread_running() == 0);
    make_due_then_allocate();
    CHECK(tl_pool_purge_thread_running() == 0);
    free_then_sleep(600, &rss_drop, &map_drop);
    CHECK(rss_drop < 8 * MIB && map_drop < 8 * MIB);
    /* With the thread: the 64 MiB block's pages and 11 of the 12 MiB of pages
     * go back after the 100 ms delay, then the block's mapping (after 8
     * delays, at least a second) and the emptied segments. */
    CHECK(tl_pool_purge_thread(1) == 0);
    CHECK(tl_pool_purge_thread_running() == 1);
    CHECK(tl_pool_purge_thread(1) == 0); /* already on: no second thread */
    uint64_t wakes = tl_pool_purge_thread_wakes();
    free_then_sleep(10000, &rss_drop, &map_drop);
    CHECK(tl_pool_purge_thread_wakes() > wakes);
    CHECK(rss_drop >= 72 * MIB);
    CHECK(map_drop >= 68 * MIB);
    printf("     with the purge thread, while asleep: RSS fell %zu KiB, mapped bytes %zu KiB\n",
           rss_drop >> 10, map_drop >> 10);
    CHECK(tl_pool_purge_thread(0) == 0);
    CHECK(tl_pool_purge_thread_running() == 0);
    CHECK(tl_pool_purge_thread(2) == -1);
    configure(TL_POOL_DEFAULT_RETAIN, TL_POOL_DEFAULT_PURGE_DELAY_MS);
    tl_pool_collect(1);
}

static void test_fork_stops_the_thread_until_needed(void) {
    CHECK(tl_pool_purge_thread(1) == 0);
    CHECK(TL_UNDER_TSAN || threads_now() == 2); /* TSan has a thread of its own */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int ok = tl_pool_purge_thread_running() == 0;
        if (!TL_UNDER_TSAN) {
            make_due_then_allocate();
            /* started itself, except under ASan */
            ok &= tl_pool_purge_thread_running() == (TL_UNDER_ASAN ? 0 : 1);
            ok &= tl_pool_purge_thread(0) == 0 && tl_pool_purge_thread_running() == 0;
            ok &= tl_pool_purge_thread(1) == 0 && tl_pool_purge_thread_running() == 1;
            tl_pool_free(tl_pool_malloc(100000));
            ok &= tl_pool_purge_thread(0) == 0 && tl_pool_purge_thread_running() == 0;
        }
        _exit(ok ? 0 : 1);
    }
    /* The parent, right after fork returns: one thread, this one. */
    CHECK(TL_UNDER_TSAN || threads_now() == 1);
    CHECK(tl_pool_purge_thread_running() == 0);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    make_due_then_allocate();
    CHECK(tl_pool_purge_thread_running() == 1);
    CHECK(tl_pool_purge_thread(0) == 0);
    CHECK(TL_UNDER_TSAN || threads_now() == 1);
}

int main(void) {
    RUN(test_burst_leaves_at_once); /* first: the bound at its start */
    RUN(test_purge_thread_starts_itself);
    RUN(test_churn_raises_the_eager_bound);
    RUN(test_purge_thread_gives_back_while_idle);
    RUN(test_fork_stops_the_thread_until_needed);
    TEST_MAIN_END();
}
