/* pool_xthread.c: memory held when some threads allocate and others free (in
 * the manner of mimalloc-bench's xmalloc-test).
 *
 *     pool_xthread pool|system THREADS SECONDS
 *
 * THREADS/2 producers allocate batches of 256 blocks of random sizes (8 bytes
 * to 2 KiB, and one in 64 up to 32 KiB) and push them on a shared stack of at
 * most 64 batches; THREADS/2 consumers pop batches and free every block. The
 * live bytes are thus bounded; the program tracks their high-water mark and
 * prints it with the peak resident set (VmHWM), the operation rate and the
 * process CPU time (user + system) per operation, which depends less on what
 * else the machine runs than the rate does:
 *
 *     allocator=pool threads=16 ops_per_sec=... cpu_ns_per_op=... max_live_bytes=... peak_rss_bytes=...
 *
 * Run the two allocators one after the other, alternating, for a comparison
 * (`system` is the C library's malloc, or what LD_PRELOAD puts there).
 * POOL_RETAIN=BYTES in the environment sets the pool's retain_bytes.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tlalloc.h"

#define BATCH 256
#define MAX_BATCHES 64

typedef struct batch {
    struct batch *next;
    void *p[BATCH];
    size_t n[BATCH];
} batch_t;

static int use_pool;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static batch_t *stack;
static int depth;
static _Atomic int stop;
static _Atomic int64_t live, max_live;
static _Atomic uint64_t ops;

static void *xalloc(size_t n) { return use_pool ? tl_pool_malloc(n) : malloc(n); }
static void xfree(void *p) {
    if (use_pool) tl_pool_free(p);
    else free(p);
}

static void note_live(int64_t d) {
    int64_t v = atomic_fetch_add_explicit(&live, d, memory_order_relaxed) + d;
    int64_t m = atomic_load_explicit(&max_live, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak_explicit(&max_live, &m, v, memory_order_relaxed,
                                                           memory_order_relaxed)) {
    }
}

static void *producer(void *arg) {
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 7;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        batch_t *b = malloc(sizeof *b); /* bookkeeping: always the C library */
        if (!b) abort();
        int64_t bytes = 0;
        for (int i = 0; i < BATCH; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            size_t n = (x >> 58) == 0 ? 8 + (size_t)((x >> 20) % 32768) : 8 + (size_t)((x >> 20) % 2040);
            char *p = xalloc(n);
            if (!p) abort();
            p[0] = 1;
            b->p[i] = p;
            b->n[i] = n;
            bytes += (int64_t)n;
        }
        note_live(bytes);
        atomic_fetch_add_explicit(&ops, BATCH, memory_order_relaxed);
        pthread_mutex_lock(&mu);
        while (depth >= MAX_BATCHES && !atomic_load(&stop)) pthread_cond_wait(&cv, &mu);
        b->next = stack;
        stack = b;
        depth++;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (!stack && !atomic_load(&stop)) pthread_cond_wait(&cv, &mu);
        batch_t *b = stack;
        if (b) {
            stack = b->next;
            depth--;
            pthread_cond_broadcast(&cv);
        }
        pthread_mutex_unlock(&mu);
        if (!b) return NULL;
        int64_t bytes = 0;
        for (int i = 0; i < BATCH; i++) {
            bytes += (int64_t)b->n[i];
            xfree(b->p[i]);
        }
        note_live(-bytes);
        free(b);
    }
}

static long vm_hwm_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &v) == 1) break;
    if (f) fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "pool") && strcmp(argv[1], "system"))) {
        fprintf(stderr, "usage: pool_xthread pool|system THREADS SECONDS\n");
        return 2;
    }
    use_pool = strcmp(argv[1], "pool") == 0;
    const char *retain = getenv("POOL_RETAIN");
    if (use_pool && retain) {
        tl_pool_options o = {.cache = 1, .retain_bytes = strtoull(retain, NULL, 10)};
        if (tl_pool_configure(&o) != 0) return 2;
    }
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]);
    if (threads < 2 || threads > 256 || !(seconds > 0)) {
        fprintf(stderr, "pool_xthread: THREADS in [2, 256], SECONDS > 0\n");
        return 2;
    }
    int np = threads / 2, nc = threads - np;
    pthread_t t[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < np; i++) pthread_create(&t[i], NULL, producer, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < nc; i++) pthread_create(&t[np + i], NULL, consumer, NULL);
    struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&stop, 1);
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < np; i++) pthread_join(t[i], NULL);
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < nc; i++) pthread_join(t[np + i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    /* blocks left in the stack */
    for (batch_t *b = stack, *n; b; b = n) {
        n = b->next;
        for (int i = 0; i < BATCH; i++) xfree(b->p[i]);
        free(b);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
    printf("allocator=%s threads=%d ops_per_sec=%.0f cpu_ns_per_op=%.1f max_live_bytes=%lld "
           "peak_rss_bytes=%ld",
           argv[1], threads, (double)ops / el, cpu / (double)ops, (long long)max_live,
           vm_hwm_kib() * 1024);
    if (use_pool) {
        tl_pool_stats s;
        tl_pool_get_stats(&s);
        printf(" pool_peak_bytes=%llu pool_reserved_bytes=%llu", (unsigned long long)s.peak_bytes,
               (unsigned long long)s.reserved_bytes);
    }
    printf("\n");
    return 0;
}
