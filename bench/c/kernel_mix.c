/* kernel_mix: the Engram-style kernel mix in C, for one scratch strategy.
 *
 *   build/c/bench/kernel_mix [--strategy thread|shared|malloc] [--ops N] [--threads T]
 *                            [--kernel mix|cosine|spread|decay]
 *
 * One operation = cosine similarity of a 768-d float32 query against 1000
 * candidates (top 10) + spreading activation from one seed over a 1000-node
 * graph with 10 edges per node (top 10) + decay of 10,000 float32 strengths
 * with float64 ages (converted in blocks through scratch). The same workload as
 * `tlalloc bench`, without Python, so that cache simulation
 * (scripts/cachegrind.sh) sees the kernels and their scratch and nothing else.
 * Prints operations per second and a checksum (equal for every strategy).
 * --ops 0 only sets up the workload: a baseline to subtract in cache studies. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlalloc.h"

enum { DIM = 768, NCAND = 1000, NQ = 64, NODES = 1000, DEG = 10, NSTR = 10000, TOPK = 10 };

static float *cand, *queries, *weights, *strengths;
static double *ages;
static int64_t *indptr;
static int32_t *indices;
static tl_scratch_kind kind = TL_SCRATCH_THREAD;
static long ops_per_thread = 2000;
static int run_cos = 1, run_spread = 1, run_decay = 1;

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double urand(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct result {
    double checksum;
} result;

static void *worker(void *arg) {
    result *r = arg;
    float *out = malloc(NSTR * sizeof(float));
    int64_t idx[TOPK];
    float val[TOPK];
    size_t count;
    double act = 1.0, check = 0;
    tl_mat m = {cand, TL_F32, NCAND, DIM, DIM * sizeof(float), sizeof(float)};
    tl_csr g = {NODES, NODES * DEG, indptr, TL_I64, indices, TL_I32, weights, TL_F32};
    tl_spread_params sp = {0.7, 0.01, 4, TL_SPREAD_AUTO};
    tl_decay_params dp = {TL_DECAY_EXP, 86400.0, 0.5};
    for (long i = 0; i < ops_per_thread; i++) {
        tl_scratch s;
        if (run_cos) {
            if (tl_scratch_begin(&s, kind, NULL) != 0) abort();
            tl_vec q = {queries + (i % NQ) * DIM, TL_F32, DIM, sizeof(float)};
            tl_cosine_topk(&s, &q, &m, TOPK, idx, val, &count);
            check += val[0];
            tl_scratch_end(&s);
        }
        if (run_spread) {
            if (tl_scratch_begin(&s, kind, NULL) != 0) abort();
            int64_t seed = (int64_t)((i * 7919) % NODES);
            tl_spread_activation(&s, &g, &seed, 1, &act, 1, &sp, NULL, TOPK, idx, val, &count, NULL);
            check += val[0];
            tl_scratch_end(&s);
        }
        if (run_decay) {
            if (tl_scratch_begin(&s, kind, NULL) != 0) abort();
            tl_decay(&s, strengths, TL_F32, sizeof(float), ages, TL_F64, sizeof(double), out, TL_F32,
                     sizeof(float), NSTR, &dp);
            check += out[i % NSTR];
            tl_scratch_end(&s);
        }
    }
    free(out);
    r->checksum = check;
    tl_thread_arena_release_current();
    return NULL;
}

int main(int argc, char **argv) {
    int threads = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--strategy") && i + 1 < argc) {
            const char *s = argv[++i];
            kind = !strcmp(s, "thread") ? TL_SCRATCH_THREAD
                 : !strcmp(s, "shared") ? TL_SCRATCH_SHARED
                 : !strcmp(s, "malloc") ? TL_SCRATCH_MALLOC : (tl_scratch_kind)-1;
            if ((int)kind < 0) {
                fprintf(stderr, "unknown strategy %s (thread, shared, malloc)\n", s);
                return 2;
            }
        } else if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
            ops_per_thread = atol(argv[++i]);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--kernel") && i + 1 < argc) {
            const char *k = argv[++i];
            int mix = !strcmp(k, "mix");
            run_cos = mix || !strcmp(k, "cosine");
            run_spread = mix || !strcmp(k, "spread");
            run_decay = mix || !strcmp(k, "decay");
            if (!run_cos && !run_spread && !run_decay) {
                fprintf(stderr, "unknown kernel %s (mix, cosine, spread, decay)\n", k);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--strategy thread|shared|malloc] [--ops N] [--threads T] "
                            "[--kernel mix|cosine|spread|decay]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || threads > 1024 || ops_per_thread < 0) {
        fprintf(stderr, "--threads must be 1..1024 and --ops >= 0 (0: set up only)\n");
        return 2;
    }
    cand = malloc((size_t)NCAND * DIM * sizeof(float));
    queries = malloc((size_t)NQ * DIM * sizeof(float));
    indptr = malloc((NODES + 1) * sizeof(int64_t));
    indices = malloc(NODES * DEG * sizeof(int32_t));
    weights = malloc(NODES * DEG * sizeof(float));
    strengths = malloc(NSTR * sizeof(float));
    ages = malloc(NSTR * sizeof(double));
    for (size_t i = 0; i < (size_t)NCAND * DIM; i++) cand[i] = (float)(urand() * 2 - 1);
    for (size_t i = 0; i < (size_t)NQ * DIM; i++) queries[i] = (float)(urand() * 2 - 1);
    for (size_t u = 0; u <= NODES; u++) indptr[u] = (int64_t)(u * DEG);
    for (size_t e = 0; e < NODES * DEG; e++) {
        indices[e] = (int32_t)(urand() * NODES);
        weights[e] = (float)urand();
    }
    for (size_t i = 0; i < NSTR; i++) {
        strengths[i] = (float)urand();
        ages[i] = urand() * 30 * 86400;
    }
    pthread_t th[1024];
    result res[1024];
    double t0 = now();
    for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, worker, &res[t]);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    double dt = now() - t0;
    static const char *names[] = {"thread", "shared", "malloc"};
    printf("strategy %s threads %d ops %ld: %.0f ops/s, checksum %.6f\n", names[kind], threads,
           ops_per_thread * threads, dt > 0 ? (double)(ops_per_thread * threads) / dt : 0.0,
           res[0].checksum);
    free(cand), free(queries), free(indptr), free(indices), free(weights), free(strengths), free(ages);
    return 0;
}
