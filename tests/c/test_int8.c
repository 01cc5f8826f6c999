/* Unit tests of int8 corpora: the quantization scheme, the exact int32 dot
 * products under every instruction set and extension the CPU has (AVX512_VNNI,
 * AVX-VNNI, AVX2, portable), and the scores against a float64 reference
 * computed from the dequantized values. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tl_test.h"
#include "tlalloc.h"

static uint64_t rng_state = 0x853C49E6748FEA9Bull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static double urand(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* Every (ISA, extension set) the CPU has: the paths to force one by one. */
typedef struct path {
    tl_isa isa;
    unsigned ext;
} path;

static size_t all_paths(path *p) {
    size_t n = 0;
    const unsigned best = tl_kernels_best_ext();
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++)
        for (unsigned e = 0; e < 4; e++)
            if ((e & ~best) == 0) p[n++] = (path){(tl_isa)isa, e};
    return n;
}

static void use_path(path p) {
    CHECK(tl_kernels_set_isa(p.isa) >= 0);
    CHECK(tl_kernels_set_ext(p.ext) >= 0);
}

static void restore_paths(void) {
    tl_kernels_set_isa(tl_kernels_best_isa());
    tl_kernels_set_ext(tl_kernels_best_ext());
}

/* The scheme: max |x| -> +-127, others within half a step, sums exact; a zero
 * row gets scale 0; float16 / float64 / strided inputs; non-finite refused. */
static void test_quantize_scheme(void) {
    enum { N = 9, D = 37 };
    static double x[N][D];
    static int8_t q[N][D + 3];
    float scale[N];
    int32_t sum[N], sumsq[N];
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) x[i][j] = (urand() - 0.5) * (double)(i + 1) * 3.0;
    for (size_t j = 0; j < D; j++) x[2][j] = 0.0;
    x[4][5] = -100.0; /* the maximum is negative: -> -127 */
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    tl_mat m = {x, TL_F64, N, D, D * 8, 8};
    CHECK(tl_quantize_i8(&s, &m, &q[0][0], D + 3, scale, sum, sumsq, NULL) == TL_K_OK);
    for (size_t i = 0; i < N; i++) {
        double mx = 0;
        int32_t s1 = 0, s2 = 0;
        int hit = 0;
        for (size_t j = 0; j < D; j++) mx = fabs(x[i][j]) > mx ? fabs(x[i][j]) : mx;
        CHECK(scale[i] == (float)(mx / 127.0));
        for (size_t j = 0; j < D; j++) {
            int v = q[i][j];
            CHECK(v >= -127 && v <= 127);
            s1 += v, s2 += v * v;
            if (mx > 0) {
                double exact = x[i][j] * 127.0 / mx;
                CHECK(fabs(exact - v) <= 0.5 + 1e-12);
                hit |= abs(v) == 127 && fabs(x[i][j]) == mx;
            } else {
                CHECK(v == 0);
            }
        }
        CHECK(sum[i] == s1 && sumsq[i] == s2);
        CHECK(mx == 0 ? scale[i] == 0.0f : hit);
    }
    CHECK(q[4][5] == -127);
    /* float16 input (exact values k / 4), every other element of a wider row */
    static uint16_t h[2][2 * 4];
    const uint16_t vals[4] = {0x3c00 /* 1 */, 0xbc00 /* -1 */, 0x3800 /* 0.5 */, 0x0000};
    for (size_t j = 0; j < 4; j++) h[0][2 * j] = vals[j], h[1][2 * j] = vals[3 - j];
    tl_mat hm = {h, TL_F16, 2, 4, 16, 4};
    int8_t qh[2][4];
    CHECK(tl_quantize_i8(&s, &hm, &qh[0][0], 4, scale, sum, sumsq, NULL) == TL_K_OK);
    CHECK(qh[0][0] == 127 && qh[0][1] == -127 && qh[0][2] == 64 && qh[0][3] == 0); /* 63.5 -> 64 (ties to even) */
    CHECK(scale[0] == (float)(1.0 / 127.0) && sum[0] == 64 && sumsq[0] == 127 * 127 * 2 + 64 * 64);
    /* non-finite: refused, its row named */
    size_t bad = 99;
    x[6][3] = NAN;
    CHECK(tl_quantize_i8(&s, &m, &q[0][0], D + 3, scale, sum, sumsq, &bad) == TL_K_EINVAL && bad == 6);
    x[6][3] = INFINITY;
    bad = 99;
    CHECK(tl_quantize_i8(&s, &m, &q[0][0], D + 3, scale, sum, sumsq, &bad) == TL_K_EINVAL && bad == 6);
    tl_mat im = {x, TL_I64, N, D, D * 8, 8};
    CHECK(tl_quantize_i8(&s, &im, &q[0][0], D + 3, scale, sum, sumsq, NULL) == TL_K_EINVAL);
    tl_mat wide = {x, TL_F64, 1, TL_I8_MAX_COLS + 1, 8, 8};
    CHECK(tl_quantize_i8(&s, &wide, &q[0][0], 0, scale, sum, sumsq, NULL) == TL_K_EINVAL);
    tl_scratch_end(&s);
}

/* Row sums as tl_quantize_i8 keeps them, for hand-made int8 rows. */
static void row_sums(const int8_t *c, size_t n, size_t d, ptrdiff_t rs, int32_t *sum, int32_t *sumsq) {
    for (size_t i = 0; i < n; i++) {
        int32_t a = 0, b = 0;
        for (size_t j = 0; j < d; j++) {
            int v = c[(ptrdiff_t)i * rs + (ptrdiff_t)j];
            a += v, b += v * v;
        }
        sum[i] = a, sumsq[i] = b;
    }
}

/* Integer dot products: exact on every path, for widths around every vector
 * size, with the saturating values -128 and 127 in the rows. */
static void test_exact_dots(void) {
    static const size_t ds[] = {1, 2, 3, 4, 15, 16, 17, 31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 200, 768, 1000};
    enum { N = 11, M = 3, DMAX = 1000, RS = DMAX + 5 };
    int8_t *c = malloc((size_t)N * RS), *q = malloc((size_t)M * DMAX);
    int32_t sum[N], sumsq[N], out[M][N];
    path paths[16];
    const size_t np = all_paths(paths);
    CHECK(c && q && np >= 1);
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        const size_t d = ds[di];
        for (size_t i = 0; i < (size_t)N * RS; i++) c[i] = (int8_t)(int)(rnd() % 256 - 128);
        for (size_t j = 0; j < d; j++) c[0 * RS + j] = -128, c[1 * RS + j] = 127; /* saturating rows */
        for (size_t j = 0; j < d; j++) c[2 * RS + j] = 0;                        /* a zero row */
        for (size_t i = 0; i < (size_t)M * d; i++) q[i] = (int8_t)(int)(rnd() % 255 - 127);
        for (size_t j = 0; j < d; j++) q[j] = 127;                               /* query 0: all 127 */
        for (size_t j = 0; j < d; j++) q[d + j] = -127;                          /* query 1: all -127 */
        row_sums(c, N, d, RS, sum, sumsq);
        tl_i8_mat cm = {c, N, d, RS, (const float *)sumsq /* unused by tl_i8_dots */, sum, sumsq};
        for (size_t pi = 0; pi < np; pi++) {
            use_path(paths[pi]);
            tl_scratch s;
            CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
            memset(out, 0x55, sizeof out);
            CHECK(tl_i8_dots(&s, q, M, (ptrdiff_t)d, &cm, &out[0][0], N) == TL_K_OK);
            for (size_t i = 0; i < M; i++)
                for (size_t r = 0; r < N; r++) {
                    int64_t ref = 0;
                    for (size_t j = 0; j < d; j++) ref += (int64_t)q[i * d + j] * c[r * RS + j];
                    CHECK(out[i][r] == ref);
                }
            tl_scratch_end(&s);
        }
    }
    restore_paths();
    /* -128 in a query is refused (its negation does not fit a byte) */
    q[0] = -128;
    tl_i8_mat cm = {c, N, 4, RS, (const float *)sumsq, sum, sumsq};
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    CHECK(tl_i8_dots(&s, q, 1, 4, &cm, &out[0][0], N) == TL_K_EINVAL);
    tl_scratch_end(&s);
    free(c), free(q);
}

/* The widest rows: every product at its extreme, d = TL_I8_MAX_COLS: the sums
 * (and the biased VNNI sums) stay inside int32 on every path. */
static void test_widest_rows(void) {
    const size_t d = TL_I8_MAX_COLS;
    int8_t *c = malloc(2 * d), *q = malloc(2 * d);
    int32_t sum[2], sumsq[2], out[2][2];
    path paths[16];
    const size_t np = all_paths(paths);
    CHECK(c && q);
    memset(c, 0x80, d);        /* row 0: -128 */
    memset(c + d, 127, d);     /* row 1: 127 */
    memset(q, 127, d);         /* query 0: 127 */
    memset(q + d, 0x81, d);    /* query 1: -127 */
    row_sums(c, 2, d, (ptrdiff_t)d, sum, sumsq);
    tl_i8_mat cm = {c, 2, d, (ptrdiff_t)d, (const float *)sumsq, sum, sumsq};
    for (size_t pi = 0; pi < np; pi++) {
        use_path(paths[pi]);
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        CHECK(tl_i8_dots(&s, q, 2, (ptrdiff_t)d, &cm, &out[0][0], 2) == TL_K_OK);
        CHECK(out[0][0] == -128 * 127 * (int64_t)d && out[0][1] == 127 * 127 * (int64_t)d);
        CHECK(out[1][0] == 128 * 127 * (int64_t)d && out[1][1] == -127 * 127 * (int64_t)d);
        tl_scratch_end(&s);
    }
    restore_paths();
    free(c), free(q);
}

/* Scores against float64 from the dequantized values (the query quantized by
 * the same scheme), cosine and dot, the same bits on every path; top-k order
 * and ties; zero rows and queries; a non-finite query. */
static void test_scores_match_dequantized(void) {
    static const size_t ds[] = {1, 5, 33, 64, 77, 768};
    enum { N = 23, M = 4, DMAX = 768 };
    float *x = malloc(sizeof(float) * N * DMAX), *qf = malloc(sizeof(float) * M * DMAX);
    int8_t *c = malloc((size_t)N * DMAX), *qq = malloc((size_t)M * DMAX);
    float scale[N], qscale[M], got[2][M][N], first[2][M][N];
    int32_t sum[N], sumsq[N], qsum[M], qsumsq[M];
    path paths[16];
    const size_t np = all_paths(paths);
    CHECK(x && qf && c && qq);
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        const size_t d = ds[di];
        for (size_t i = 0; i < (size_t)N * d; i++) x[i] = (float)(urand() - 0.5);
        for (size_t i = 0; i < (size_t)M * d; i++) qf[i] = (float)(urand() - 0.5);
        for (size_t j = 0; j < d; j++) x[3 * d + j] = 0.0f;         /* zero row */
        memcpy(x + 7 * d, x + 4 * d, d * sizeof(float));            /* tie: rows 4 and 7 */
        for (size_t j = 0; j < d; j++) qf[1 * d + j] = 0.0f;        /* zero query */
        memcpy(x + 9 * d, qf, d * sizeof(float));                   /* row 9 = query 0 */
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        tl_mat xm = {x, TL_F32, N, d, (ptrdiff_t)(d * 4), 4}, qm = {qf, TL_F32, M, d, (ptrdiff_t)(d * 4), 4};
        CHECK(tl_quantize_i8(&s, &xm, c, (ptrdiff_t)d, scale, sum, sumsq, NULL) == TL_K_OK);
        CHECK(tl_quantize_i8(&s, &qm, qq, (ptrdiff_t)d, qscale, qsum, qsumsq, NULL) == TL_K_OK);
        tl_i8_mat cm = {c, N, d, (ptrdiff_t)d, scale, sum, sumsq};
        for (size_t pi = 0; pi < np; pi++) {
            use_path(paths[pi]);
            for (int met = 0; met < 2; met++) {
                CHECK(tl_i8_score_batch(&s, &qm, &cm, (tl_i8_metric)met, &got[met][0][0], N * 4, 4) == TL_K_OK);
                for (size_t i = 0; i < M; i++)
                    for (size_t r = 0; r < N; r++) {
                        double dq = 0, nq = 0, nc = 0; /* float64 from the dequantized values */
                        for (size_t j = 0; j < d; j++) {
                            double a = qq[i * d + j] * (double)qscale[i], b = c[r * d + j] * (double)scale[r];
                            dq += a * b, nq += a * a, nc += b * b;
                        }
                        double ref = met == TL_I8_DOT ? dq : (nq > 0 && nc > 0 ? dq / sqrt(nq * nc) : 0.0);
                        double tol = met == TL_I8_DOT ? 1e-6 * (fabs(ref) + 1e-6) : 1e-6;
                        CHECK(fabs((double)got[met][i][r] - ref) <= tol);
                    }
                for (size_t r = 0; r < N; r++) CHECK(got[met][1][r] == 0.0f); /* zero query */
                for (size_t i = 0; i < M; i++) CHECK(got[met][i][3] == 0.0f);  /* zero row */
                if (pi == 0)
                    memcpy(first[met], got[met], sizeof got[met]);
                else
                    CHECK(memcmp(first[met], got[met], sizeof got[met]) == 0); /* same bits on every path */
            }
            CHECK(fabsf(got[TL_I8_COSINE][0][9] - 1.0f) <= 1e-6f); /* a row against itself */
            /* top-k: the order of the scores, ties to the lower index */
            int64_t idx[M * 8];
            float sc[M * 8];
            size_t cnt = 0;
            CHECK(tl_i8_topk_batch(&s, &qm, &cm, TL_I8_COSINE, 8, idx, sc, &cnt) == TL_K_OK && cnt == 8);
            for (size_t i = 0; i < M; i++) {
                for (size_t t = 0; t < 8; t++) {
                    CHECK(sc[i * 8 + t] == got[TL_I8_COSINE][i][idx[i * 8 + t]]);
                    if (t) {
                        float a = sc[i * 8 + t - 1], b = sc[i * 8 + t];
                        CHECK(a > b || (a == b && idx[i * 8 + t - 1] < idx[i * 8 + t]));
                    }
                }
                size_t better = 0; /* no row outside the top 8 beats the 8th */
                for (size_t r = 0; r < N; r++) better += got[TL_I8_COSINE][i][r] > sc[i * 8 + 7];
                CHECK(better <= 7);
            }
        }
        restore_paths();
        /* a non-finite query: cosine 0, dot NaN */
        qf[2 * d] = NAN;
        CHECK(tl_i8_score_batch(&s, &qm, &cm, TL_I8_COSINE, &got[0][0][0], N * 4, 4) == TL_K_OK);
        CHECK(tl_i8_score_batch(&s, &qm, &cm, TL_I8_DOT, &got[1][0][0], N * 4, 4) == TL_K_OK);
        for (size_t r = 0; r < N; r++) CHECK(got[0][2][r] == 0.0f && isnan(got[1][2][r]));
        /* refusals: query dtype, width, metric */
        tl_mat qi = {qf, TL_I32, M, d, (ptrdiff_t)(d * 4), 4}, qw = {qf, TL_F32, M, d + 1, (ptrdiff_t)(d * 4), 4};
        CHECK(tl_i8_score_batch(&s, &qi, &cm, TL_I8_COSINE, &got[0][0][0], N * 4, 4) == TL_K_EINVAL);
        CHECK(tl_i8_score_batch(&s, &qw, &cm, TL_I8_COSINE, &got[0][0][0], N * 4, 4) == TL_K_EINVAL);
        CHECK(tl_i8_score_batch(&s, &qm, &cm, (tl_i8_metric)7, &got[0][0][0], N * 4, 4) == TL_K_EINVAL);
        tl_scratch_end(&s);
    }
    free(x), free(qf), free(c), free(qq);
}

/* Empty corpus and no queries write nothing; k > n keeps n. */
static void test_empty_and_large_k(void) {
    float q[2][3] = {{1, 0, 0}, {0, 1, 0}}, out[4] = {7, 7, 7, 7}, sc[6];
    int8_t c[2][3] = {{127, 0, 0}, {0, 127, 0}};
    float scale[2] = {1, 1};
    int32_t sum[2] = {127, 127}, sumsq[2] = {127 * 127, 127 * 127};
    int64_t idx[6];
    size_t cnt = 9;
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    tl_mat qm = {q, TL_F32, 2, 3, 12, 4}, q0 = {q, TL_F32, 0, 3, 12, 4};
    tl_i8_mat cm = {&c[0][0], 2, 3, 3, scale, sum, sumsq}, c0 = {&c[0][0], 0, 3, 3, scale, sum, sumsq};
    CHECK(tl_i8_score_batch(&s, &q0, &cm, TL_I8_COSINE, out, 8, 4) == TL_K_OK && out[0] == 7);
    CHECK(tl_i8_score_batch(&s, &qm, &c0, TL_I8_COSINE, out, 8, 4) == TL_K_OK && out[0] == 7);
    CHECK(tl_i8_topk_batch(&s, &qm, &c0, TL_I8_COSINE, 3, idx, sc, &cnt) == TL_K_OK && cnt == 0);
    CHECK(tl_i8_topk_batch(&s, &qm, &cm, TL_I8_DOT, 3, idx, sc, &cnt) == TL_K_OK && cnt == 2);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 1 && idx[3] == 0);
    tl_scratch_end(&s);
}

/* The poll function stops a scoring call between blocks of rows. */
static int poll_calls, poll_stop_after;
static int poll_fn(void *ctx) {
    (void)ctx;
    return ++poll_calls >= poll_stop_after;
}

static void test_poll_stops_scoring(void) {
    enum { N = 2000, D = 8 };
    static int8_t c[N * D];
    static float scale[N], out[N], q[D];
    static int32_t sum[N], sumsq[N];
    for (size_t i = 0; i < N * D; i++) c[i] = (int8_t)(int)(rnd() % 255 - 127);
    for (size_t j = 0; j < D; j++) q[j] = (float)urand();
    for (size_t i = 0; i < N; i++) scale[i] = 1.0f;
    row_sums(c, N, D, D, sum, sumsq);
    tl_i8_mat cm = {c, N, D, D, scale, sum, sumsq};
    tl_mat qm = {q, TL_F32, 1, D, D * 4, 4};
    for (int stop = 1; stop <= 3; stop++) {
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        tl_kernels_set_poll(poll_fn, NULL);
        poll_calls = 0, poll_stop_after = stop;
        CHECK(tl_i8_score_batch(&s, &qm, &cm, TL_I8_COSINE, out, 0, 4) == TL_K_EINTR && poll_calls == stop);
        tl_kernels_set_poll(NULL, NULL);
        CHECK(tl_i8_score_batch(&s, &qm, &cm, TL_I8_COSINE, out, 0, 4) == TL_K_OK);
        tl_scratch_end(&s);
    }
}

/* Threads scoring one corpus at once get what one thread gets. */
enum { TN = 700, TD = 100, TM = 3, TT = 4 };
static int8_t t_c[TN * TD];
static float t_scale[TN], t_q[TM * TD], t_want[TM * TN];
static int32_t t_sum[TN], t_sumsq[TN];

static void *thread_main(void *arg) {
    float *got = arg;
    tl_i8_mat cm = {t_c, TN, TD, TD, t_scale, t_sum, t_sumsq};
    tl_mat qm = {t_q, TL_F32, TM, TD, TD * 4, 4};
    for (int rep = 0; rep < 20; rep++) {
        tl_scratch s;
        if (tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) != 0) return NULL;
        int rc = tl_i8_score_batch(&s, &qm, &cm, TL_I8_COSINE, got, TN * 4, 4);
        tl_scratch_end(&s);
        if (rc != TL_K_OK || memcmp(got, t_want, sizeof t_want) != 0) return NULL;
    }
    tl_thread_arena_release_current();
    return arg;
}

static void test_threads(void) {
    static float x[TN * TD], got[TT][TM * TN];
    for (size_t i = 0; i < TN * TD; i++) x[i] = (float)(urand() - 0.5);
    for (size_t i = 0; i < TM * TD; i++) t_q[i] = (float)(urand() - 0.5);
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    tl_mat xm = {x, TL_F32, TN, TD, TD * 4, 4}, qm = {t_q, TL_F32, TM, TD, TD * 4, 4};
    CHECK(tl_quantize_i8(&s, &xm, t_c, TD, t_scale, t_sum, t_sumsq, NULL) == TL_K_OK);
    tl_i8_mat cm = {t_c, TN, TD, TD, t_scale, t_sum, t_sumsq};
    CHECK(tl_i8_score_batch(&s, &qm, &cm, TL_I8_COSINE, t_want, TN * 4, 4) == TL_K_OK);
    tl_scratch_end(&s);
    pthread_t th[TT];
    for (int i = 0; i < TT; i++) CHECK(pthread_create(&th[i], NULL, thread_main, got[i]) == 0);
    for (int i = 0; i < TT; i++) {
        void *r = NULL;
        CHECK(pthread_join(th[i], &r) == 0 && r == got[i]);
    }
}

int main(void) {
    RUN(test_quantize_scheme);
    RUN(test_exact_dots);
    RUN(test_widest_rows);
    RUN(test_scores_match_dequantized);
    RUN(test_empty_and_large_k);
    RUN(test_poll_stops_scoring);
    RUN(test_threads);
    tl_thread_arena_release_current();
    TEST_MAIN_END();
}
