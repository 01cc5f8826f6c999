/* bench_alloc.c: the allocation micro-benchmark (see bench_alloc.h). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "tlalloc/arena.h"
#include "bench_alloc.h"

typedef struct {
    tl_bench_strategy strategy;
    uint64_t n;
    size_t size;
    pthread_barrier_t *start;
    tl_arena *shared;
    pthread_mutex_t *lock;
    double t0, t1;
    uint64_t checksum;
    int failed;
} tl_bench_worker;

static double tl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Each allocation writes one byte (so the memory is really used) and folds the
 * address into a checksum. */
static void *tl_bench_run(void *arg) {
    tl_bench_worker *w = arg;
    uint64_t sum = 0;
    tl_arena *a = NULL;
    if (w->strategy == TL_BENCH_THREAD && !(a = tl_thread_arena("bench"))) {
        w->failed = 1;
    }
    pthread_barrier_wait(w->start);
    if (w->failed) return NULL;
    w->t0 = tl_now();
    switch (w->strategy) {
    case TL_BENCH_THREAD:
        for (uint64_t i = 0; i < w->n; i++) {
            char *p = tl_arena_alloc(a, w->size, TL_DEFAULT_ALIGN);
            if (TL_UNLIKELY(!p)) { /* full: start over, as a scratch user would */
                tl_arena_reset(a);
                p = tl_arena_alloc(a, w->size, TL_DEFAULT_ALIGN);
            }
            p[0] = (char)i;
            sum += (uintptr_t)p;
        }
        break;
    case TL_BENCH_SHARED:
        for (uint64_t i = 0; i < w->n; i++) {
            pthread_mutex_lock(w->lock);
            char *p = tl_arena_alloc(w->shared, w->size, TL_DEFAULT_ALIGN);
            if (TL_UNLIKELY(!p)) {
                tl_arena_reset(w->shared);
                p = tl_arena_alloc(w->shared, w->size, TL_DEFAULT_ALIGN);
            }
            pthread_mutex_unlock(w->lock);
            p[0] = (char)i;
            sum += (uintptr_t)p;
        }
        break;
    case TL_BENCH_MALLOC:
        for (uint64_t i = 0; i < w->n; i++) {
            char *p = malloc(w->size);
            if (!p) {
                w->failed = 1;
                break;
            }
            ((volatile char *)p)[0] = (char)i;
            sum += (uintptr_t)p;
            free(p);
        }
        break;
    }
    w->t1 = tl_now();
    w->checksum = sum;
    return NULL;
}

int tl_bench_alloc(tl_bench_strategy strategy, int nthreads, uint64_t allocs_per_thread,
                   size_t size, tl_bench_result *out) {
    if (nthreads < 1 || nthreads > 4096 || size == 0 || size > ((size_t)1 << 20) ||
        (unsigned)strategy > TL_BENCH_MALLOC) {
        errno = EINVAL;
        return -1;
    }
    memset(out, 0, sizeof *out);
    tl_bench_worker *ws = calloc((size_t)nthreads, sizeof *ws);
    pthread_t *ts = calloc((size_t)nthreads, sizeof *ts);
    pthread_barrier_t start;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    tl_arena *shared = NULL;
    int rc = -1;
    if (!ws || !ts) goto done;
    if (strategy == TL_BENCH_SHARED) {
        tl_arena_options o;
        tl_get_thread_arena_options(&o);
        o.overflow = TL_OVERFLOW_ERROR;
        if (!(shared = tl_arena_create(&o))) goto done;
    }
    pthread_barrier_init(&start, NULL, (unsigned)nthreads);
    int started = 0;
    for (int i = 0; i < nthreads; i++) {
        ws[i] = (tl_bench_worker){.strategy = strategy, .n = allocs_per_thread, .size = size,
                                  .start = &start, .shared = shared, .lock = &lock};
        if (pthread_create(&ts[i], NULL, tl_bench_run, &ws[i]) != 0) break;
        started++;
    }
    if (started != nthreads) {
        /* cannot release the barrier safely with fewer threads: abort the run */
        abort();
    }
    double first = 0, last = 0, per = 0;
    int failed = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ts[i], NULL);
        failed |= ws[i].failed;
        if (i == 0 || ws[i].t0 < first) first = ws[i].t0;
        if (ws[i].t1 > last) last = ws[i].t1;
        per += allocs_per_thread ? (ws[i].t1 - ws[i].t0) * 1e9 / (double)allocs_per_thread : 0;
        out->checksum ^= ws[i].checksum;
    }
    pthread_barrier_destroy(&start);
    if (failed) {
        errno = ENOMEM;
        goto done;
    }
    out->wall_seconds = last - first;
    out->total_allocations = allocs_per_thread * (uint64_t)nthreads;
    out->ns_per_alloc = per / nthreads;
    out->allocs_per_second =
        out->wall_seconds > 0 ? (double)out->total_allocations / out->wall_seconds : 0;
    rc = 0;
done:
    tl_arena_release(shared);
    free(ws);
    free(ts);
    return rc;
}
