/* cosine_isa: the cosine kernels under each instruction set, side by side.
 *
 *   build/c/bench/cosine_isa [incache|batch|dram|all|single] [--rounds R]
 *
 * Each cell runs the same call under every ISA the CPU has (portable is left
 * out: it is not a contender), interleaved round by round so that load on a
 * shared machine falls on all of them alike, and prints per ISA the best and
 * the median thread CPU time of one call over R rounds, and the ratio of the
 * AVX2 time to the others' (medians). Cells (d = 768, float32 queries):
 *   incache  1 query against 300 rows of float32 (900 KiB: from L2), and
 *            against 1,000 rows of float32, float16, bfloat16 (3 MiB /
 *            1.5 MiB: from L3), with norms computed;
 *   batch    16, 64 and 256 queries against 100,000 float32 rows with cached
 *            norms (given), the form compared with NumPy's `Q @ C.T / norms`;
 *   dram     1 query against 1,000,000 float32 rows (3 GiB, from DRAM): GB/s.
 * The scores of every ISA are checked against each other (within 1e-5) so a
 * fast wrong kernel cannot win. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels_internal.h"
#include "tlalloc.h"

enum { DIM = 768 };

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (float)((double)((rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0) - 0.5);
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint16_t to_half(float f) { /* round to nearest even, normal range only (enough here) */
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u;
    int e = (int)((b >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)sign;
    uint32_t man = b & 0x7fffffu, h = sign | ((uint32_t)e << 10) | (man >> 13), rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)h;
}

static uint16_t to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

typedef struct cell {
    const char *name;
    tl_mat q, c;
    const tl_vec *norms;
    float *out;  /* one output per ISA, q.rows * c.rows floats each */
    double bytes; /* corpus bytes per call, for GB/s (0: none printed) */
} cell;

static int n_isa;
static tl_isa isas[3];
static const char *isa_name[3] = {"portable", "avx2", "avx512"};

static void run_cell(cell *ce, int rounds) {
    const size_t per = ce->q.rows * ce->c.rows;
    double *t = malloc(sizeof(double) * (size_t)rounds * (size_t)n_isa);
    float *out = malloc(sizeof(float) * per * (size_t)n_isa);
    if (!t || !out) abort();
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < n_isa; k++) {
            int ki = (r & 1) ? n_isa - 1 - k : k; /* alternate which ISA goes first */
            tl_kernels_set_isa(isas[ki]);
            tl_scratch s;
            tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL);
            double t0 = cpu_now();
            int rc = tl_cosine_batch(&s, &ce->q, &ce->c, ce->norms, out + (size_t)ki * per,
                                     (ptrdiff_t)(ce->c.rows * sizeof(float)), sizeof(float));
            t[(size_t)ki * (size_t)rounds + (size_t)r] = cpu_now() - t0;
            tl_scratch_end(&s);
            if (rc != TL_K_OK) {
                fprintf(stderr, "%s: rc %d\n", ce->name, rc);
                exit(1);
            }
        }
    double maxdiff = 0;
    for (int k = 1; k < n_isa; k++)
        for (size_t i = 0; i < per; i++) {
            double dd = fabs((double)out[(size_t)k * per + i] - (double)out[i]);
            maxdiff = dd > maxdiff ? dd : maxdiff;
        }
    double med[3] = {0, 0, 0};
    printf("%-34s", ce->name);
    for (int k = 0; k < n_isa; k++) {
        double *tk = t + (size_t)k * (size_t)rounds;
        qsort(tk, (size_t)rounds, sizeof(double), cmp_d);
        med[k] = tk[rounds / 2];
        printf("  %s %8.3f ms (best %8.3f)", isa_name[isas[k]], med[k] * 1e3, tk[0] * 1e3);
        if (ce->bytes > 0) printf(" %5.1f GB/s", ce->bytes / med[k] / 1e9);
    }
    if (n_isa > 1) printf("  avx2/avx512 %.2fx", med[0] / med[n_isa - 1]);
    printf("  maxdiff %.1e\n", maxdiff);
    fflush(stdout);
    if (maxdiff > 1e-5) {
        fprintf(stderr, "%s: the ISAs disagree by %g\n", ce->name, maxdiff);
        exit(1);
    }
    free(t), free(out);
}

/* ---- single: one query through the cache levels ---------------------------------
 * The row kernel alone (tl_cos_ops .dotnorm, in-cache order, norms computed) and
 * the whole call with top 10 (tl_cosine_topk: query conversion, scores, heap),
 * for corpora that live in L1 (8 rows, 24 KiB), L2 (200 rows, 600 KiB of float32),
 * L3 (1,000 rows, 3 MiB) and DRAM (100,000 rows, 307 MB; the kernel in its
 * streaming order), float32 / float16 / bfloat16. Each round times enough calls
 * for about 2 ms of CPU time (one call of 16 rows is under a microsecond),
 * every ISA in turn, alternating which goes first; the best and median rounds
 * per call, the corpus bytes per call over the median as GB/s and as bytes per
 * cycle of the core (clock measured by a chain of dependent adds). First, what
 * each level gives a plain read (bench_read), the ceiling to compare with. */
static double ghz;

static void calibrate_clock(void) {
    double best = 1e9;
    for (int t = 0; t < 5; t++) {
        uint64_t x = 0;
        const uint64_t n = 50000000;
        double t0 = cpu_now();
        for (uint64_t i = 0; i < n; i++) __asm__ volatile("add $1, %0" : "+r"(x)); /* 1 cycle each */
        double dt = cpu_now() - t0;
        best = dt < best ? dt : best;
    }
    ghz = 50000000.0 / best / 1e9;
}

typedef struct single_cell {
    const char *kind_name;
    tl_cos_kind kind;
    tl_dtype dtype;
    const void *rows;
    size_t nrows, es;
    const char *level;
} single_cell;

static double time_kernel(tl_isa isa, const single_cell *sc, const float *q, size_t reps, float *dot, float *nrm) {
    tl_cos_ops ops;
    int have = isa == TL_ISA_AVX512 ? tl_cos_ops_avx512(sc->kind, &ops) : tl_cos_ops_avx2(sc->kind, &ops);
    if (!have) abort();
    const tl_cos_plan plan = ops.plan ? ops.plan(DIM, 0) : tl_cos_plan_make(DIM, 0, ops.lanes);
    const int stream = sc->nrows * DIM * sc->es > ((size_t)4 << 20);
    float qk[DIM + 64];
    if (ops.query) { /* the kernels' own query layout, as the call makes it */
        ops.query(q, &plan, qk);
        q = qk;
    }
    double t0 = cpu_now();
    for (size_t i = 0; i < reps; i++)
        ops.dotnorm(q, (const char *)sc->rows, (ptrdiff_t)(DIM * sc->es), sc->nrows, &plan, dot, nrm, stream);
    return (cpu_now() - t0) / (double)reps;
}

static double time_call(tl_isa isa, const single_cell *sc, const float *q, size_t reps, int64_t *idx, float *sco) {
    tl_kernels_set_isa(isa);
    tl_vec qv = {q, TL_F32, DIM, 4};
    tl_mat c = {sc->rows, sc->dtype, sc->nrows, DIM, (ptrdiff_t)(DIM * sc->es), (ptrdiff_t)sc->es};
    size_t count;
    double t0 = cpu_now();
    for (size_t i = 0; i < reps; i++) {
        tl_scratch s;
        tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL);
        if (tl_cosine_topk(&s, &qv, &c, 10, idx, sco, &count) != TL_K_OK) abort();
        tl_scratch_end(&s);
    }
    return (cpu_now() - t0) / (double)reps;
}

static void run_single(const single_cell *sc, const float *q, int rounds) {
    const double bytes = (double)(sc->nrows * DIM * sc->es);
    size_t reps = (size_t)(2e-3 * 30e9 / (bytes + 4096)); /* about 2 ms at 30 GB/s */
    if (reps < 1) reps = 1;
    float *dot = malloc(sizeof(float) * sc->nrows * 2 * 2), *nrm = dot + sc->nrows;
    int64_t idx[2][10] = {{0}};
    float sco[2][10] = {{0}};
    if (!dot) abort();
    for (int what = 0; what < 2; what++) {
        double *t = malloc(sizeof(double) * (size_t)rounds * (size_t)n_isa);
        if (!t) abort();
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < n_isa; k++) {
                int ki = (r & 1) ? n_isa - 1 - k : k;
                t[(size_t)ki * (size_t)rounds + (size_t)r] =
                    what == 0 ? time_kernel(isas[ki], sc, q, reps, dot + (size_t)ki * 2 * sc->nrows,
                                            nrm + (size_t)ki * 2 * sc->nrows)
                              : time_call(isas[ki], sc, q, reps, idx[ki], sco[ki]);
            }
        double med[3];
        printf("%-5s %6zu rows %-4s %-6s", sc->kind_name, sc->nrows, sc->level, what ? "topk10" : "kernel");
        for (int k = 0; k < n_isa; k++) {
            double *tk = t + (size_t)k * (size_t)rounds;
            qsort(tk, (size_t)rounds, sizeof(double), cmp_d);
            med[k] = tk[rounds / 2];
            printf("  %-6s %9.2f us (best %9.2f) %6.1f GB/s %5.1f B/cyc", isa_name[isas[k]], med[k] * 1e6, tk[0] * 1e6,
                   bytes / med[k] / 1e9, bytes / med[k] / 1e9 / ghz);
        }
        if (n_isa > 1) printf("  avx2/avx512 %.2fx", med[0] / med[n_isa - 1]);
        printf("\n");
        fflush(stdout);
        free(t);
    }
    if (n_isa > 1) { /* a fast wrong kernel must not win */
        const size_t kk = sc->nrows < 10 ? sc->nrows : 10;
        if (memcmp(idx[0], idx[n_isa - 1], kk * sizeof idx[0][0])) {
            fprintf(stderr, "%s %zu rows: the ISAs rank differently\n", sc->kind_name, sc->nrows);
            exit(1);
        }
        for (size_t i = 0; i < kk; i++)
            if (fabsf(sco[0][i] - sco[n_isa - 1][i]) > 1e-5f) {
                fprintf(stderr, "%s %zu rows: scores differ\n", sc->kind_name, sc->nrows);
                exit(1);
            }
    }
    free(dot);
}

/* What the memory gives one core: float32 read and summed (8 independent add
 * chains), either as one sequential stream or as the kernels read a block,
 * four rows of DIM at a time (four streams), in 64-byte (zmm) loads, or 32-byte
 * (ymm) ones for the sequential case. Bytes per call / best time. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f"), noinline)) static float read_seq512(const float *p, size_t n) {
    __m512 a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_ps();
    for (size_t j = 0; j + 128 <= n; j += 128)
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) a[i] = _mm512_add_ps(a[i], _mm512_loadu_ps(p + j + 16 * (size_t)i));
    for (int i = 1; i < 8; i++) a[0] = _mm512_add_ps(a[0], a[i]);
    return _mm512_reduce_add_ps(a[0]);
}
__attribute__((target("avx2"), noinline)) static float read_seq256(const float *p, size_t n) {
    __m256 a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    for (size_t j = 0; j + 64 <= n; j += 64)
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) a[i] = _mm256_add_ps(a[i], _mm256_loadu_ps(p + j + 8 * (size_t)i));
    for (int i = 1; i < 8; i++) a[0] = _mm256_add_ps(a[0], a[i]);
    float o[8];
    _mm256_storeu_ps(o, a[0]);
    return o[0];
}
__attribute__((target("avx512f"), noinline)) static float read_rows4(const float *p, size_t n) {
    __m512 a[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_ps();
    for (size_t r = 0; r + 4 * DIM <= n; r += 4 * DIM)
        for (size_t j = 0; j < DIM; j += 32)
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                a[2 * i] = _mm512_add_ps(a[2 * i], _mm512_loadu_ps(p + r + (size_t)i * DIM + j));
                a[2 * i + 1] = _mm512_add_ps(a[2 * i + 1], _mm512_loadu_ps(p + r + (size_t)i * DIM + j + 16));
            }
    for (int i = 1; i < 8; i++) a[0] = _mm512_add_ps(a[0], a[i]);
    return _mm512_reduce_add_ps(a[0]);
}

static void bench_read(const float *c, int rounds) {
    static const size_t ns[] = {8, 200, 1000, 100000};
    static const char *lv[] = {"L1", "L2", "L3", "DRAM"};
    float (*fn[3])(const float *, size_t) = {read_seq256, read_seq512, read_rows4};
    static const char *nm[3] = {"1 stream ymm", "1 stream zmm", "4 rows zmm"};
    volatile float sink = 0;
    printf("read bandwidth of one core (float32 summed, best of %d rounds):\n", rounds);
    for (int i = 0; i < 4; i++) {
        const size_t n = ns[i] * DIM;
        const double bytes = (double)n * 4;
        size_t reps = (size_t)(2e-3 * 30e9 / bytes) + 1;
        printf("  %6zu rows %-4s", ns[i], lv[i]);
        for (int k = 0; k < 3; k++) {
            double best = 1e9;
            for (int r = 0; r < rounds; r++) {
                double t0 = cpu_now();
                for (size_t j = 0; j < reps; j++) sink = fn[k](c, n);
                double dt = (cpu_now() - t0) / (double)reps;
                best = dt < best ? dt : best;
            }
            printf("  %s %6.1f GB/s %5.1f B/cyc", nm[k], bytes / best / 1e9, bytes / best / 1e9 / ghz);
        }
        printf("\n");
    }
    (void)sink;
}
#else
static void bench_read(const float *c, int rounds) { (void)c, (void)rounds; }
#endif

static void bench_single(const float *q, int rounds) {
    const size_t N = 100000;
    float *c = aligned_alloc(64, sizeof(float) * N * DIM);
    uint16_t *h = aligned_alloc(64, 2 * N * DIM), *b = aligned_alloc(64, 2 * N * DIM);
    if (!c || !h || !b) abort();
    for (size_t i = 0; i < N * DIM; i++) {
        c[i] = frand();
        h[i] = to_half(c[i]);
        b[i] = to_bf16(c[i]);
    }
    calibrate_clock();
    printf("clock %.2f GHz (dependent adds); d = %d; per call: median of %d rounds\n", ghz, DIM, rounds);
    if (tl_kernels_best_isa() == TL_ISA_AVX512) bench_read(c, rounds > 15 ? 15 : rounds);
    static const size_t ns[] = {8, 200, 1000, 100000};
    static const char *lv[] = {"L1", "L2", "L3", "DRAM"};
    for (int kk = 0; kk < 3; kk++)
        for (int i = 0; i < 4; i++) {
            /* a 16-bit corpus of 200 rows is 300 KiB, of 1,000 rows 1.5 MiB */
            single_cell sc = {kk == 0 ? "f32" : kk == 1 ? "f16" : "bf16",
                              kk == 0 ? TL_CK_F32 : kk == 1 ? TL_CK_F16 : TL_CK_BF16,
                              kk == 0 ? TL_F32 : kk == 1 ? TL_F16 : TL_BF16,
                              kk == 0 ? (const void *)c : kk == 1 ? (const void *)h : (const void *)b,
                              ns[i], kk == 0 ? 4u : 2u, lv[i]};
            run_single(&sc, q, ns[i] >= 100000 ? (rounds > 15 ? 15 : rounds) : rounds);
        }
    free(c), free(h), free(b);
}

int main(int argc, char **argv) {
    const char *what = "all";
    int rounds = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else
            what = argv[i];
    }
    for (int k = TL_ISA_AVX2; k <= (int)tl_kernels_best_isa(); k++) isas[n_isa++] = (tl_isa)k;
    if (!n_isa) {
        printf("no vector ISA on this CPU\n");
        return 0;
    }
    int all = !strcmp(what, "all");
    if (!strcmp(what, "single")) { /* not part of all: it takes a while */
        float *q1 = malloc(sizeof(float) * DIM);
        for (size_t i = 0; i < DIM; i++) q1[i] = frand();
        bench_single(q1, rounds ? rounds : 41);
        free(q1);
        tl_thread_arena_release_current();
        return 0;
    }
    float *q = malloc(sizeof(float) * 256 * DIM);
    for (size_t i = 0; i < 256 * DIM; i++) q[i] = frand();
    if (all || !strcmp(what, "incache")) {
        enum { N = 1000 };
        float *c = aligned_alloc(64, sizeof(float) * N * DIM);
        uint16_t *h = aligned_alloc(64, 2 * N * DIM), *b = aligned_alloc(64, 2 * N * DIM);
        for (size_t i = 0; i < (size_t)N * DIM; i++) {
            c[i] = frand();
            h[i] = to_half(c[i]);
            b[i] = to_bf16(c[i]);
        }
        cell cs[4] = {
            {"1 query x 300 rows, f32 (L2)", {q, TL_F32, 1, DIM, DIM * 4, 4}, {c, TL_F32, 300, DIM, DIM * 4, 4}, NULL, NULL, 0},
            {"1 query x 1,000 rows, f32", {q, TL_F32, 1, DIM, DIM * 4, 4}, {c, TL_F32, N, DIM, DIM * 4, 4}, NULL, NULL, 0},
            {"1 query x 1,000 rows, f16", {q, TL_F32, 1, DIM, DIM * 4, 4}, {h, TL_F16, N, DIM, DIM * 2, 2}, NULL, NULL, 0},
            {"1 query x 1,000 rows, bf16", {q, TL_F32, 1, DIM, DIM * 4, 4}, {b, TL_BF16, N, DIM, DIM * 2, 2}, NULL, NULL, 0},
        };
        for (int i = 0; i < 4; i++) run_cell(&cs[i], rounds ? rounds : 2001);
        free(c), free(h), free(b);
    }
    if (all || !strcmp(what, "batch")) {
        enum { N = 100000 };
        float *c = aligned_alloc(64, sizeof(float) * (size_t)N * DIM);
        double *nv = malloc(sizeof(double) * N);
        for (size_t i = 0; i < (size_t)N * DIM; i++) c[i] = frand();
        for (size_t i = 0; i < N; i++) {
            double a = 0;
            for (size_t j = 0; j < DIM; j++) a += (double)c[i * DIM + j] * c[i * DIM + j];
            nv[i] = sqrt(a);
        }
        tl_vec norms = {nv, TL_F64, N, 8};
        static const size_t ms[] = {16, 64, 256};
        for (int i = 0; i < 3; i++) {
            char name[64];
            snprintf(name, sizeof name, "%zu queries x 100,000 rows, norms", ms[i]);
            cell ce = {name, {q, TL_F32, ms[i], DIM, DIM * 4, 4}, {c, TL_F32, N, DIM, DIM * 4, 4}, &norms, NULL, 0};
            run_cell(&ce, rounds ? rounds : (ms[i] == 256 ? 5 : 9));
        }
        free(c), free(nv);
    }
    if (all || !strcmp(what, "dram")) {
        const size_t N = 1000000;
        float *c = aligned_alloc(64, sizeof(float) * N * DIM);
        if (!c) return 1;
        for (size_t i = 0; i < N * DIM; i++) c[i] = frand();
        cell ce = {"1 query x 1,000,000 rows, f32", {q, TL_F32, 1, DIM, DIM * 4, 4}, {c, TL_F32, N, DIM, DIM * 4, 4},
                   NULL, NULL, (double)N * DIM * 4};
        run_cell(&ce, rounds ? rounds : 9);
        free(c);
    }
    free(q);
    tl_thread_arena_release_current();
    return 0;
}
