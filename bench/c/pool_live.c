/* pool_live.c: allocation cost as the live set grows.
 *
 *     pool_live [ROUNDS [LIVE...]]        e.g. pool_live 3 1000000 10000000 80000000
 *
 * For each LIVE count, rounds alternate between the tlalloc pool and the C
 * library's malloc (or whatever LD_PRELOAD puts there): one thread allocates
 * LIVE 32-byte blocks and keeps them all, then frees them. Printed per round:
 * thread CPU nanoseconds per allocation over the whole fill and over its last
 * tenth (where the live set is largest), the pool's refills and the pages they
 * looked at, and the ratio system / pool of the last tenth (> 1: pool faster).
 * Before the delayed-free fix each refill walked every full page, so the
 * last tenth of a fill of 80M blocks cost about 3x its first.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool/pool_internal.h" /* tl_pool_refill_counters */
#include "tlalloc.h"

static double thread_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef struct {
    double all_ns, tail_ns, free_ns; /* per operation */
} result_t;

static result_t fill(int pool, void **blocks, size_t n) {
    size_t tail_from = n - n / 10;
    double t0 = thread_ns(), t1 = t0;
    for (size_t i = 0; i < n; i++) {
        if (i == tail_from) t1 = thread_ns();
        void *p = pool ? tl_pool_malloc(32) : malloc(32);
        if (!p) {
            fprintf(stderr, "pool_live: out of memory at %zu blocks\n", i);
            exit(1);
        }
        *(uint64_t *)p = i; /* touch it, as a program would */
        blocks[i] = p;
    }
    double t2 = thread_ns();
    for (size_t i = 0; i < n; i++) {
        if (pool) tl_pool_free(blocks[i]);
        else free(blocks[i]);
    }
    double t3 = thread_ns();
    result_t r = {(t2 - t0) / (double)n, (t2 - t1) / (double)(n - tail_from), (t3 - t2) / (double)n};
    return r;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    size_t defaults[] = {1000000, 10000000};
    size_t nlive = argc > 2 ? (size_t)(argc - 2) : 2;
    if (rounds < 1) {
        fprintf(stderr, "usage: pool_live [ROUNDS [LIVE...]]\n");
        return 2;
    }
    for (size_t k = 0; k < nlive; k++) {
        size_t n = argc > 2 ? strtoull(argv[2 + k], NULL, 10) : defaults[k];
        if (n < 10) {
            fprintf(stderr, "pool_live: LIVE must be at least 10\n");
            return 2;
        }
        void **blocks = malloc(n * sizeof *blocks);
        if (!blocks) return 1;
        memset(blocks, 0, n * sizeof *blocks); /* fault the array in before timing */
        for (int r = 0; r < rounds; r++) {
            uint64_t r0, p0, r1, p1;
            /* alternate which goes first */
            int first = r % 2;
            result_t res[2];
            for (int j = 0; j < 2; j++) {
                int pool = j == 0 ? first : !first;
                if (pool) tl_pool_refill_counters(&r0, &p0);
                res[pool] = fill(pool, blocks, n);
                if (pool) tl_pool_refill_counters(&r1, &p1);
            }
            tl_pool_collect(1);
            printf("live=%zu round=%d pool_ns_per_alloc=%.1f pool_tail_ns=%.1f pool_free_ns=%.1f "
                   "system_ns_per_alloc=%.1f system_tail_ns=%.1f system_free_ns=%.1f "
                   "refills=%llu pages_looked=%llu tail_ratio_system_over_pool=%.2f\n",
                   n, r, res[1].all_ns, res[1].tail_ns, res[1].free_ns, res[0].all_ns, res[0].tail_ns,
                   res[0].free_ns, (unsigned long long)(r1 - r0), (unsigned long long)(p1 - p0),
                   res[0].tail_ns / res[1].tail_ns);
            fflush(stdout);
        }
        free(blocks);
    }
    return 0;
}
