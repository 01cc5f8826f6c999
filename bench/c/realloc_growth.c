/* realloc growth by small steps: a buffer grown by 4,100 bytes
 * 2,400 times (to 9.8 MB), on the pool and on the C library's realloc,
 * alternating, with time and minor page faults per run.
 *
 *   make bench && build/c/bench/realloc_growth [rounds]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tlalloc.h"

static long minflt(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_minflt;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void run(int pool) {
    enum { STEP = 4100, STEPS = 2400 };
    long f0 = minflt();
    double t0 = now();
    char *p = NULL;
    size_t n = 0;
    for (int i = 0; i < STEPS; i++) {
        char *q = pool ? tl_pool_realloc(p, n + STEP) : realloc(p, n + STEP);
        if (!q) {
            fprintf(stderr, "realloc failed\n");
            exit(1);
        }
        memset(q + n, i, STEP);
        p = q;
        n += STEP;
    }
    double t = now() - t0;
    printf("%-5s %zu bytes: %.4f s, %ld minor faults\n", pool ? "pool" : "libc", n, t, minflt() - f0);
    if (pool) tl_pool_free(p);
    else free(p);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    for (int r = 0; r < rounds; r++) {
        run(r % 2 == 0);
        run(r % 2 != 0);
    }
    return 0;
}
