/* larson.c: the Larson server benchmark (Larson and Krishnan, "Memory
 * allocation for long-running server applications", ISMM 1998), written from
 * its published description and the way mimalloc-bench runs it:
 *
 *     larson SECONDS MIN_SIZE MAX_SIZE CHUNKS ROUNDS SEED THREADS
 *     larson 5 8 1000 5000 100 4141 4        (mimalloc-bench's arguments)
 *
 * THREADS groups of CHUNKS slots are filled by the main thread. One worker per
 * group then repeats: free a random slot, allocate a block of random size in
 * [MIN_SIZE, MAX_SIZE) into it and write two bytes. After ROUNDS x CHUNKS such
 * operations the worker starts a fresh thread on the same slots and exits, so
 * blocks are freed by threads that did not allocate them, after their
 * allocating thread has exited. After SECONDS the workers stop.
 *
 * Output, one line of key=value pairs: ops_per_sec counts operations (one free
 * plus one allocation) per second over all threads; rss_bytes is the resident
 * memory at the end (blocks still live), peak_rss_bytes its high-water mark.
 *
 * Built twice (Makefile): `larson` on the tlalloc pool (TLALLOC_POOL_CACHE=0
 * turns the per-thread caches off) and `larson-system` on the C library's
 * malloc, which is also the binary to run under LD_PRELOAD of jemalloc or
 * mimalloc.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef LARSON_SYSTEM_MALLOC
#define ALLOCATOR "system"
#define LARSON_MALLOC malloc
#define LARSON_FREE free
#else
#include "tlalloc.h"
#define ALLOCATOR "tlalloc"
#define LARSON_MALLOC tl_pool_malloc
#define LARSON_FREE tl_pool_free
#endif

typedef struct group {
    char **slots;
    size_t chunks;
    size_t min_size, range;
    uint64_t rng;                 /* carried from a worker to its successor */
    uint64_t ops_per_thread;
    _Atomic uint64_t ops;         /* written by the group's current worker */
    _Atomic uint64_t threads;
    _Atomic int finished;
} group;

static _Atomic int stop_flag;
static pthread_attr_t detached;

static inline uint64_t next_rand(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

static void *worker(void *arg) {
    group *g = arg;
    uint64_t rng = g->rng, done = 0;
    atomic_fetch_add_explicit(&g->threads, 1, memory_order_relaxed);
    while (done < g->ops_per_thread && !atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        size_t victim = (size_t)(next_rand(&rng) % g->chunks);
        LARSON_FREE(g->slots[victim]);
        size_t size = g->min_size + (size_t)(next_rand(&rng) % g->range);
        volatile char *p = LARSON_MALLOC(size);
        if (!p) {
            fprintf(stderr, "larson: out of memory\n");
            exit(1);
        }
        p[0] = 'a'; /* write something, as the original does */
        p[size > 1] = 'b';
        g->slots[victim] = (char *)p;
        done++;
    }
    atomic_fetch_add_explicit(&g->ops, done, memory_order_relaxed);
    g->rng = rng;
    if (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        /* Hand the slots to a fresh thread and exit. */
        pthread_t t;
        if (pthread_create(&t, &detached, worker, g) == 0) return NULL;
        fprintf(stderr, "larson: pthread_create failed, group stops early\n");
    }
    atomic_store_explicit(&g->finished, 1, memory_order_release);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Resident and peak resident bytes of this process (Linux), 0 if unknown. */
static void read_rss(uint64_t *rss, uint64_t *peak) {
    *rss = *peak = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) *rss = (uint64_t)kb * 1024;
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) *peak = (uint64_t)kb * 1024;
    }
    fclose(f);
}

static int parse_u64(const char *s, const char *name, uint64_t lo, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo) {
        fprintf(stderr, "larson: %s must be an integer >= %llu, got '%s'\n", name,
                (unsigned long long)lo, s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr,
                "usage: %s SECONDS MIN_SIZE MAX_SIZE CHUNKS ROUNDS SEED THREADS\n"
                "       (mimalloc-bench: %s 5 8 1000 5000 100 4141 THREADS)\n",
                argv[0], argv[0]);
        return 2;
    }
    double seconds = strtod(argv[1], NULL);
    uint64_t min_size, max_size, chunks, rounds, seed, nthreads;
    if (!(seconds > 0)) {
        fprintf(stderr, "larson: SECONDS must be a positive number, got '%s'\n", argv[1]);
        return 2;
    }
    if (parse_u64(argv[2], "MIN_SIZE", 1, &min_size) || parse_u64(argv[3], "MAX_SIZE", 2, &max_size) ||
        parse_u64(argv[4], "CHUNKS", 1, &chunks) || parse_u64(argv[5], "ROUNDS", 1, &rounds) ||
        parse_u64(argv[6], "SEED", 0, &seed) || parse_u64(argv[7], "THREADS", 1, &nthreads))
        return 2;
    if (max_size <= min_size) {
        fprintf(stderr, "larson: MAX_SIZE (%s) must be larger than MIN_SIZE (%s)\n", argv[3], argv[2]);
        return 2;
    }
    int cache = 1;
#ifndef LARSON_SYSTEM_MALLOC
    const char *env = getenv("TLALLOC_POOL_CACHE");
    if (env) {
        if (strcmp(env, "0") != 0 && strcmp(env, "1") != 0) {
            fprintf(stderr, "larson: TLALLOC_POOL_CACHE must be 0 or 1, got '%s'\n", env);
            return 2;
        }
        cache = env[0] == '1';
        tl_pool_options o;
        tl_pool_get_options(&o);
        o.cache = cache;
        tl_pool_configure(&o);
    }
    const char *retain = getenv("TLALLOC_POOL_RETAIN"); /* plain bytes here */
    if (retain) {
        uint64_t v;
        if (parse_u64(retain, "TLALLOC_POOL_RETAIN (bytes)", 0, &v)) return 2;
        tl_pool_options o;
        tl_pool_get_options(&o);
        o.retain_bytes = (size_t)v;
        tl_pool_configure(&o);
    }
#endif
    pthread_attr_init(&detached);
    pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);

    group *groups = calloc(nthreads, sizeof *groups);
    if (!groups) return 1;
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    /* The main thread allocates every slot, and churns them a little. */
    for (uint64_t i = 0; i < nthreads; i++) {
        group *g = &groups[i];
        g->slots = calloc(chunks, sizeof(char *));
        if (!g->slots) return 1;
        g->chunks = chunks;
        g->min_size = min_size;
        g->range = max_size - min_size;
        g->ops_per_thread = rounds * chunks;
        g->rng = next_rand(&rng) | 1;
        for (uint64_t k = 0; k < chunks; k++) {
            size_t size = min_size + (size_t)(next_rand(&rng) % g->range);
            g->slots[k] = LARSON_MALLOC(size);
            if (!g->slots[k]) return 1;
            g->slots[k][0] = 'a';
        }
    }
    for (uint64_t i = 0; i < nthreads * chunks; i++) {
        group *g = &groups[next_rand(&rng) % nthreads];
        size_t k = (size_t)(next_rand(&rng) % chunks);
        LARSON_FREE(g->slots[k]);
        g->slots[k] = LARSON_MALLOC(min_size + (size_t)(next_rand(&rng) % g->range));
    }

    double t0 = now_s();
    for (uint64_t i = 0; i < nthreads; i++) {
        pthread_t t;
        if (pthread_create(&t, &detached, worker, &groups[i]) != 0) {
            fprintf(stderr, "larson: cannot start thread %llu\n", (unsigned long long)i);
            return 1;
        }
    }
    sleep_s(seconds);
    atomic_store_explicit(&stop_flag, 1, memory_order_relaxed);
    double elapsed = now_s() - t0;
    for (uint64_t i = 0; i < nthreads; i++)
        while (!atomic_load_explicit(&groups[i].finished, memory_order_acquire)) sleep_s(0.001);

    uint64_t ops = 0, started = 0;
    for (uint64_t i = 0; i < nthreads; i++) {
        ops += atomic_load_explicit(&groups[i].ops, memory_order_relaxed);
        started += atomic_load_explicit(&groups[i].threads, memory_order_relaxed);
    }
    uint64_t rss, peak_rss;
    read_rss(&rss, &peak_rss);
    printf("larson allocator=%s threads=%llu seconds=%.3f ops=%llu ops_per_sec=%.0f "
           "threads_started=%llu rss_bytes=%llu peak_rss_bytes=%llu",
           ALLOCATOR, (unsigned long long)nthreads, elapsed, (unsigned long long)ops,
           (double)ops / elapsed, (unsigned long long)started, (unsigned long long)rss,
           (unsigned long long)peak_rss);
#ifndef LARSON_SYSTEM_MALLOC
    tl_pool_stats st;
    tl_pool_get_stats(&st);
    double hit = st.num_allocations ? 1.0 - (double)st.num_cache_misses / (double)st.num_allocations : 0.0;
    printf(" cache=%d cache_hit_rate=%.4f num_depot_locks=%llu num_cross_thread_frees=%llu "
           "num_reclaimed_pages=%llu in_use_bytes=%llu reserved_bytes=%llu retained_bytes=%llu",
           cache, hit, (unsigned long long)st.num_depot_locks,
           (unsigned long long)st.num_cross_thread_frees, (unsigned long long)st.num_reclaimed_pages,
           (unsigned long long)st.in_use_bytes, (unsigned long long)st.reserved_bytes,
           (unsigned long long)st.retained_bytes);
#else
    (void)cache;
#endif
    printf("\n");
    for (uint64_t i = 0; i < nthreads; i++) {
        for (uint64_t k = 0; k < chunks; k++) LARSON_FREE(groups[i].slots[k]);
        free(groups[i].slots);
    }
    free(groups);
    return 0;
}
