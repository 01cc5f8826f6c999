/* Unit tests of the kernels and the scratch strategies (no Python).
 *
 * Each kernel is checked against a straightforward reference written here from
 * the meaning in docs/kernels.md, for every instruction set the CPU has and
 * every scratch strategy; spreading activation must match its reference bit for
 * bit (same summation order), the others within float32 rounding. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "tl_test.h"
#include "tlalloc.h"

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static double urand(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

static uint16_t float_to_half(float f) { /* round-to-nearest for normal halves only */
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u;
    int e = (int)((b >> 23) & 0xff) - 127 + 15;
    uint32_t m = b & 0x7fffffu;
    if (e <= 0) return (uint16_t)sign;
    return (uint16_t)(sign | ((uint32_t)e << 10) | ((m + 0x1000u) >> 13));
}

static double ref_cos(const double *q, const double *c, size_t d) {
    double dot = 0, qq = 0, cc = 0;
    for (size_t j = 0; j < d; j++) dot += q[j] * c[j], qq += q[j] * q[j], cc += c[j] * c[j];
    double qn = sqrt(qq), cn = sqrt(cc);
    if (!(qn > 0) || !(cn > 0) || isinf(qn) || isinf(cn)) return 0.0;
    double v = dot / qn / cn;
    return v > 1 ? 1 : v < -1 ? -1 : v != v ? 0 : v;
}

static const tl_scratch_kind kinds[3] = {TL_SCRATCH_THREAD, TL_SCRATCH_SHARED, TL_SCRATCH_MALLOC};

/* ---- cosine ----------------------------------------------------------------------- */

static void test_cosine_matches_reference(void) {
    enum { N = 37, D = 77 };
    static float c32[N][D], q32[D];
    static double c64[N][D], q64[D];
    for (size_t j = 0; j < D; j++) q64[j] = q32[j] = (float)(urand() * 2 - 1);
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) c64[i][j] = c32[i][j] = (float)(urand() * 2 - 1);
    for (size_t j = 0; j < D; j++) c64[3][j] = c32[3][j] = 0.0f;  /* zero row */
    c64[5][7] = c32[5][7] = NAN;                                   /* NaN row */
    c64[6][0] = c32[6][0] = INFINITY;                              /* Inf row */
    memcpy(c32[9], q32, sizeof q32); /* identical: score 1 */
    for (size_t j = 0; j < D; j++) c64[9][j] = q32[j];
    for (size_t j = 0; j < D; j++) c64[10][j] = c32[10][j] = -q32[j]; /* opposite: -1 */
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        CHECK(prev >= 0);
        for (int k = 0; k < 3; k++) {
            tl_scratch s;
            CHECK(tl_scratch_begin(&s, kinds[k], NULL) == 0);
            tl_vec q = {q32, TL_F32, D, 4};
            tl_mat c = {c32, TL_F32, N, D, D * 4, 4};
            float out[N];
            CHECK(tl_cosine_similarity(&s, &q, &c, out, 4) == TL_K_OK);
            for (size_t i = 0; i < N; i++) {
                double r = ref_cos(q64, c64[i], D);
                if (i == 5 || i == 6) r = 0.0; /* non-finite norm */
                CHECK(fabs(out[i] - r) < 2e-6);
            }
            CHECK(out[9] == 1.0f && out[10] == -1.0f && out[3] == 0.0f);
            tl_scratch_end(&s);
        }
        tl_kernels_set_isa((tl_isa)prev);
    }
}

static void test_cosine_layouts(void) {
    /* float64, float16 and a transposed (column-major) view give the same scores. */
    enum { N = 20, D = 33 };
    static float c32[N][D], ct[D][N], q32[D];
    static double c64[N][D], q64[D];
    static uint16_t c16[N][D], q16[D];
    for (size_t j = 0; j < D; j++) {
        q32[j] = (float)(int)(urand() * 16 - 8) / 8.0f; /* exact in float16 */
        q64[j] = q32[j];
        q16[j] = float_to_half(q32[j]);
    }
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) {
            c32[i][j] = ct[j][i] = (float)(int)(urand() * 16 - 8) / 8.0f;
            c64[i][j] = c32[i][j];
            c16[i][j] = float_to_half(c32[i][j]);
        }
    float a[N], b[N], c[N], d[N];
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    tl_vec q = {q32, TL_F32, D, 4};
    tl_mat m = {c32, TL_F32, N, D, D * 4, 4};
    CHECK(tl_cosine_similarity(&s, &q, &m, a, 4) == 0);
    tl_mat mt = {ct, TL_F32, N, D, 4, N * 4};
    CHECK(tl_cosine_similarity(&s, &q, &mt, b, 4) == 0);
    tl_vec q6 = {q64, TL_F64, D, 8};
    tl_mat m6 = {c64, TL_F64, N, D, D * 8, 8};
    CHECK(tl_cosine_similarity(&s, &q6, &m6, c, 4) == 0);
    tl_vec qh = {q16, TL_F16, D, 2};
    tl_mat mh = {c16, TL_F16, N, D, D * 2, 2};
    CHECK(tl_cosine_similarity(&s, &qh, &mh, d, 4) == 0);
    for (size_t i = 0; i < N; i++) {
        double r = ref_cos(q64, c64[i], D);
        CHECK(a[i] == b[i]);       /* same float32 values, same operations */
        CHECK(a[i] == d[i]);       /* float16 widens exactly */
        CHECK(fabs(c[i] - r) < 1e-7);
        CHECK(fabs(a[i] - r) < 2e-6);
    }
    /* integer query: rejected */
    tl_vec qi = {q32, TL_I32, D, 4};
    CHECK(tl_cosine_similarity(&s, &qi, &m, a, 4) == TL_K_EINVAL);
    tl_vec qshort = {q32, TL_F32, D - 1, 4};
    CHECK(tl_cosine_similarity(&s, &qshort, &m, a, 4) == TL_K_EINVAL);
    tl_scratch_end(&s);
}

static void test_cosine_topk(void) {
    enum { N = 300, D = 16 };
    static float c[N][D], q[D];
    for (size_t j = 0; j < D; j++) q[j] = (float)(urand() - 0.5);
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) c[i][j] = (float)(urand() - 0.5);
    memcpy(c[200], c[7], sizeof c[7]); /* ties: 7 before 200 */
    memcpy(c[100], q, sizeof q);
    memcpy(c[50], q, sizeof q);
    tl_vec qv = {q, TL_F32, D, 4};
    tl_mat m = {c, TL_F32, N, D, D * 4, 4};
    float all[N];
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    CHECK(tl_cosine_similarity(&s, &qv, &m, all, 4) == 0);
    for (size_t k = 0; k <= N + 5; k += (k < 10 ? 1 : 37)) {
        int64_t idx[N + 5];
        float sc[N + 5];
        size_t cnt = 99;
        CHECK(tl_cosine_topk(&s, &qv, &m, k, idx, sc, &cnt) == 0);
        CHECK(cnt == (k < N ? k : N));
        for (size_t i = 0; i < cnt; i++) {
            CHECK(sc[i] == all[idx[i]]);
            if (i > 0) CHECK(sc[i - 1] > sc[i] || (sc[i - 1] == sc[i] && idx[i - 1] < idx[i]));
        }
        if (cnt >= 2) CHECK(idx[0] == 50 && idx[1] == 100);
        /* nothing left out is better than the last one kept */
        if (cnt && cnt < N) {
            int seen[N] = {0};
            for (size_t i = 0; i < cnt; i++) seen[idx[i]] = 1;
            for (size_t i = 0; i < N; i++)
                if (!seen[i]) CHECK(all[i] < sc[cnt - 1] || (all[i] == sc[cnt - 1] && (int64_t)i > idx[cnt - 1]));
        }
    }
    tl_scratch_end(&s);
}

/* ---- spreading activation ------------------------------------------------------------ */

typedef struct graph {
    size_t n, nnz;
    int64_t *indptr;
    int32_t *indices;
    float *data;
} graph;

static graph random_graph(size_t n, size_t deg) {
    graph g = {n, n * deg, malloc((n + 1) * 8), malloc(n * deg * 4 + 4), malloc(n * deg * 4 + 4)};
    for (size_t u = 0; u <= n; u++) g.indptr[u] = (int64_t)(u * deg);
    for (size_t e = 0; e < n * deg; e++) {
        g.indices[e] = (int32_t)(rnd() % n);
        g.data[e] = (float)urand();
    }
    return g;
}
static void free_graph(graph *g) { free(g->indptr), free(g->indices), free(g->data); }

/* The meaning, literally: dense arrays, u ascending, edges in order. */
static void ref_spread(const graph *g, const int64_t *seeds, size_t ns, double act, double decay,
                       double thr, size_t depth, float *out) {
    size_t n = g->n;
    double *pulse = calloc(n, 8), *total = calloc(n, 8), *nw = calloc(n, 8);
    double f = exp(-decay);
    for (size_t j = 0; j < ns; j++) pulse[seeds[j]] += act;
    memcpy(total, pulse, n * 8);
    for (size_t it = 0; it < depth; it++) {
        memset(nw, 0, n * 8);
        for (size_t u = 0; u < n; u++)
            if (pulse[u] >= thr)
                for (int64_t e = g->indptr[u]; e < g->indptr[u + 1]; e++)
                    nw[g->indices[e]] += pulse[u] * (double)g->data[e] * f;
        for (size_t v = 0; v < n; v++) total[v] += nw[v];
        double *t = pulse;
        pulse = nw;
        nw = t;
    }
    for (size_t v = 0; v < n; v++) out[v] = (float)total[v];
    free(pulse), free(total), free(nw);
}

static tl_spread_engine engine = TL_SPREAD_AUTO;

static int run_spread(tl_scratch_kind kind, const graph *g, const int64_t *seeds, size_t ns,
                      double act, double decay, double thr, size_t depth, float *dense, size_t k,
                      int64_t *ti, float *tv, size_t *cnt, tl_spread_error *err) {
    tl_csr csr = {g->n, g->nnz, g->indptr, TL_I64, g->indices, TL_I32, g->data, TL_F32};
    tl_spread_params p = {decay, thr, depth, engine};
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, kind, NULL) == 0);
    int rc = tl_spread_activation(&s, &csr, seeds, ns, &act, 1, &p, dense, k, ti, tv, cnt, err);
    tl_scratch_end(&s);
    return rc;
}

static void check_spread_engine(const graph *g, const int64_t *seeds, size_t ns, double thr, size_t depth) {
    size_t n = g->n;
    float *want = malloc(n * 4), *got = malloc(n * 4);
    int64_t *ti = malloc(n * 8 + 8);
    float *tv = malloc(n * 4 + 4);
    ref_spread(g, seeds, ns, 1.0, 0.7, thr, depth, want);
    for (int k = 0; k < 3; k++) {
        memset(got, 0, n * 4);
        CHECK(run_spread(kinds[k], g, seeds, ns, 1.0, 0.7, thr, depth, got, 0, NULL, NULL, NULL, NULL) == 0);
        CHECK(memcmp(got, want, n * 4) == 0); /* bit for bit */
    }
    size_t kk = n < 12 ? n : 12, cnt = 0;
    CHECK(run_spread(TL_SCRATCH_THREAD, g, seeds, ns, 1.0, 0.7, thr, depth, NULL, kk, ti, tv, &cnt, NULL) == 0);
    CHECK(cnt == kk);
    for (size_t i = 0; i < cnt; i++) {
        CHECK(tv[i] == want[ti[i]]);
        if (i) CHECK(tv[i - 1] > tv[i] || (tv[i - 1] == tv[i] && ti[i - 1] < ti[i]));
    }
    free(want), free(got), free(ti), free(tv);
}

/* Every engine (auto, dense, sparse, indexed) and every instruction set (the
 * top-k scan is vectorised), bit for bit. */
static void check_spread_case(const graph *g, const int64_t *seeds, size_t ns, double thr, size_t depth) {
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        for (int e = 0; e < 4; e++) {
            engine = (tl_spread_engine)e;
            check_spread_engine(g, seeds, ns, thr, depth);
        }
        tl_kernels_set_isa((tl_isa)prev);
    }
    engine = TL_SPREAD_AUTO;
}

static void test_spread_matches_reference(void) {
    graph small = random_graph(1000, 10); /* direct index */
    int64_t seeds[3] = {5, 17, 5};        /* duplicate seed adds up */
    check_spread_case(&small, seeds, 3, 0.01, 4);
    check_spread_case(&small, seeds, 1, 0.01, 0);   /* max_depth 0: just the seeds */
    check_spread_case(&small, seeds, 2, 100.0, 4);  /* threshold above every pulse */
    check_spread_case(&small, seeds, 2, -1.0, 3);   /* threshold below zero */
    free_graph(&small);
    graph big = random_graph(20000, 6); /* hash index, frontier sorting by radix */
    int64_t s2[2] = {19999, 3};
    check_spread_case(&big, s2, 2, 0.001, 5);
    free_graph(&big);
}

static void test_spread_small_graphs(void) {
    /* cycle 0->1->2->0, self-loop on 3, isolated 4 */
    int64_t indptr[6] = {0, 1, 2, 3, 4, 4};
    int32_t indices[4] = {1, 2, 0, 3};
    float data[4] = {0.5f, 0.5f, 0.5f, 1.0f};
    graph g = {5, 4, indptr, indices, data};
    int64_t seeds[3] = {0, 3, 4};
    check_spread_case(&g, seeds, 3, 0.0, 6);
    check_spread_case(&g, seeds, 3, 0.01, 2);
    /* top_k larger than n returns all n, zeros in id order after positives */
    int64_t ti[5];
    float tv[5];
    size_t cnt = 0;
    int64_t one = 4;
    CHECK(run_spread(TL_SCRATCH_THREAD, &g, &one, 1, 1.0, 0.7, 0.01, 3, NULL, 9, ti, tv, &cnt, NULL) == 0);
    CHECK(cnt == 5 && ti[0] == 4 && tv[0] == 1.0f);
    CHECK(ti[1] == 0 && ti[2] == 1 && ti[3] == 2 && ti[4] == 3 && tv[4] == 0.0f);
    /* empty graph */
    int64_t ip0[1] = {0};
    graph e = {0, 0, ip0, indices, data};
    CHECK(run_spread(TL_SCRATCH_THREAD, &e, NULL, 0, 1.0, 0.7, 0.01, 3, NULL, 3, ti, tv, &cnt, NULL) == 0);
    CHECK(cnt == 0);
}

static void test_spread_faults_one_engine(void) {
    int64_t indptr[4] = {0, 2, 1, 3};
    int32_t indices[3] = {1, 2, 0};
    float data[3] = {1, 1, 1};
    graph g = {3, 3, indptr, indices, data};
    tl_spread_error err;
    float out[3] = {0};
    int64_t seed = 0, bad_seed = 3;
    CHECK(run_spread(TL_SCRATCH_THREAD, &g, &bad_seed, 1, 1, 0.7, 0.01, 2, out, 0, 0, 0, 0, &err) == TL_K_EGRAPH);
    CHECK(err.fault == TL_FAULT_SEED && err.pos == 0 && err.ivalue == 3);
    /* row 1 has indptr[1] = 2 > indptr[2] = 1: found when the pulse visits row 1 */
    CHECK(run_spread(TL_SCRATCH_THREAD, &g, &seed, 1, 1, 0.7, 0.01, 2, out, 0, 0, 0, 0, &err) == TL_K_EGRAPH);
    CHECK(err.fault == TL_FAULT_INDPTR && err.pos == 1 && err.ivalue == 2 && err.ivalue2 == 1);
    CHECK(out[0] == 0 && out[1] == 0 && out[2] == 0); /* nothing written */
    indptr[1] = 1;
    indptr[2] = 2;
    indices[1] = 7;
    CHECK(run_spread(TL_SCRATCH_THREAD, &g, &seed, 1, 1, 0.7, 0.01, 3, out, 0, 0, 0, 0, &err) == TL_K_EGRAPH);
    CHECK(err.fault == TL_FAULT_INDEX && err.pos == 1 && err.ivalue == 7);
    indices[1] = 2;
    data[1] = NAN;
    CHECK(run_spread(TL_SCRATCH_THREAD, &g, &seed, 1, 1, 0.7, 0.01, 3, out, 0, 0, 0, 0, &err) == TL_K_EGRAPH);
    CHECK(err.fault == TL_FAULT_WEIGHT && err.pos == 1 && isnan(err.fvalue));
    data[1] = 1;
    indptr[3] = 2; /* indptr[n] != nnz */
    CHECK(run_spread(TL_SCRATCH_THREAD, &g, &seed, 1, 1, 0.7, 0.01, 3, out, 0, 0, 0, 0, &err) == TL_K_EGRAPH);
    CHECK(err.fault == TL_FAULT_SHAPE && err.ivalue2 == 2);
    indptr[3] = 3;
    CHECK(run_spread(TL_SCRATCH_THREAD, &g, &seed, 1, 1, 0.7, 0.01, 3, out, 0, 0, 0, 0, &err) == 0);
    CHECK(out[0] > 1.0f && out[1] > 0 && out[2] > 0);
}

/* Many seed sets in one call: each set's result is the single call's (default
 * engine), bit for bit, with every engine and scratch kind; empty sets in
 * between; a bad seed names its set and its position there, before any output
 * is written. */
static void test_spread_many_sets(void) {
    enum { N = 20000, SETS = 6 };
    graph g = random_graph(N, 6);
    tl_csr csr = {g.n, g.nnz, g.indptr, TL_I64, g.indices, TL_I32, g.data, TL_F32};
    int64_t seeds[] = {5, 17, 5, /* empty */ 19999, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 42};
    size_t ptr[SETS + 1] = {0, 3, 3, 4, 14, 15, 16};
    double act[16];
    for (int i = 0; i < 16; i++) act[i] = 0.25 * (i % 5) - 0.25;
    const tl_scratch_kind kinds[3] = {TL_SCRATCH_THREAD, TL_SCRATCH_SHARED, TL_SCRATCH_MALLOC};
    float *dense = calloc((size_t)SETS * N, 4), *one = calloc(N, 4);
    int64_t ti[SETS * 12], ti1[12];
    float tv[SETS * 12], tv1[12];
    size_t cnt[SETS], cnt1;
    for (int e = 0; e < 4; e++) {
        for (int kk = 0; kk < 3; kk++) {
            tl_spread_params p = {0.5, 0.002, 5, (tl_spread_engine)e};
            const tl_spread_params p1 = {0.5, 0.002, 5, TL_SPREAD_AUTO};
            tl_scratch s;
            memset(dense, 0, (size_t)SETS * N * 4);
            CHECK(tl_scratch_begin(&s, kinds[kk], NULL) == 0);
            CHECK(tl_spread_activation_many(&s, &csr, seeds, ptr, SETS, act, 16, &p, dense, 0, NULL, NULL,
                                            NULL, NULL) == TL_K_OK);
            CHECK(tl_spread_activation_many(&s, &csr, seeds, ptr, SETS, act, 16, &p, NULL, 12, ti, tv, cnt,
                                            NULL) == TL_K_OK);
            tl_scratch_end(&s);
            for (int i = 0; i < SETS; i++) {
                memset(one, 0, N * 4);
                CHECK(tl_scratch_begin(&s, kinds[kk], NULL) == 0);
                CHECK(tl_spread_activation(&s, &csr, seeds + ptr[i], ptr[i + 1] - ptr[i], act + ptr[i],
                                           ptr[i + 1] - ptr[i] ? ptr[i + 1] - ptr[i] : 1, &p1, one, 0,
                                           NULL, NULL, NULL, NULL) == TL_K_OK);
                CHECK(tl_spread_activation(&s, &csr, seeds + ptr[i], ptr[i + 1] - ptr[i], act + ptr[i],
                                           ptr[i + 1] - ptr[i] ? ptr[i + 1] - ptr[i] : 1, &p1, NULL, 12,
                                           ti1, tv1, &cnt1, NULL) == TL_K_OK);
                tl_scratch_end(&s);
                CHECK(memcmp(one, dense + (size_t)i * N, N * 4) == 0);
                CHECK(cnt[i] == cnt1 && cnt1 == 12);
                CHECK(memcmp(ti1, ti + i * 12, sizeof ti1) == 0 && memcmp(tv1, tv + i * 12, sizeof tv1) == 0);
            }
        }
    }
    /* a bad seed: set 3, position 2; nothing written */
    seeds[6] = N;
    tl_spread_error err;
    tl_spread_params p = {0.5, 0.002, 5, TL_SPREAD_AUTO};
    tl_scratch s;
    memset(dense, 0, (size_t)SETS * N * 4);
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    CHECK(tl_spread_activation_many(&s, &csr, seeds, ptr, SETS, act, 1, &p, dense, 0, NULL, NULL, NULL, &err) ==
          TL_K_EGRAPH);
    CHECK(err.fault == TL_FAULT_SEED && err.set == 3 && err.pos == 2 && err.ivalue == N);
    for (size_t i = 0; i < (size_t)SETS * N; i++) CHECK(dense[i] == 0.0f);
    /* set boundaries out of order, or not starting at 0 */
    size_t bad[3] = {0, 5, 4};
    CHECK(tl_spread_activation_many(&s, &csr, seeds, bad, 2, act, 1, &p, dense, 0, NULL, NULL, NULL, &err) ==
          TL_K_EINVAL);
    size_t bad0[2] = {1, 4};
    CHECK(tl_spread_activation_many(&s, &csr, seeds, bad0, 1, act, 1, &p, dense, 0, NULL, NULL, NULL, &err) ==
          TL_K_EINVAL);
    tl_scratch_end(&s);
    free(dense), free(one);
    free_graph(&g);
}

/* A call for many sets starts with the hash table and moves to the direct map
 * once a set has touched n / 16 nodes (here in the third set, mid-way through
 * its steps); sets before, during and after the move match the reference. The
 * same sets with int64 indices and float64 weights (the other specialisations
 * of the direct map's loop), on the indexed engine from the start. */
static void test_spread_many_moves_to_the_direct_map(void) {
    enum { N = 20000, SETS = 5 };
    graph g = random_graph(N, 6);
    for (size_t u = 0; u <= N; u++) /* nodes 0..99 have no edges */
        g.indptr[u] = u < 100 ? 0 : (int64_t)((u - 100) * 6);
    g.nnz = (size_t)g.indptr[N];
    int64_t seeds[] = {0, 1, 2, 500, 9000, 3, 4000};
    size_t ptr[SETS + 1] = {0, 1, 3, 5, 6, 7};
    const double act = 1.0;
    int64_t *ix64 = malloc(g.nnz * 8);
    double *w64 = malloc(g.nnz * 8);
    for (size_t e = 0; e < g.nnz; e++) ix64[e] = g.indices[e], w64[e] = g.data[e];
    const tl_csr forms[2] = {{g.n, g.nnz, g.indptr, TL_I64, g.indices, TL_I32, g.data, TL_F32},
                             {g.n, g.nnz, g.indptr, TL_I64, ix64, TL_I64, w64, TL_F64}};
    float *dense = calloc((size_t)SETS * N, 4), *want = calloc(N, 4);
    int64_t ti[SETS * 8];
    float tv[SETS * 8];
    size_t cnt[SETS];
    for (int form = 0; form < 2; form++) {
        tl_spread_params p = {0.5, 0.002, 5, form ? TL_SPREAD_INDEXED : TL_SPREAD_AUTO};
        tl_scratch s;
        memset(dense, 0, (size_t)SETS * N * 4);
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        CHECK(tl_spread_activation_many(&s, &forms[form], seeds, ptr, SETS, &act, 1, &p, dense, 0, NULL, NULL,
                                        NULL, NULL) == TL_K_OK);
        CHECK(tl_spread_activation_many(&s, &forms[form], seeds, ptr, SETS, &act, 1, &p, NULL, 8, ti, tv, cnt,
                                        NULL) == TL_K_OK);
        tl_scratch_end(&s);
        size_t reached = 0;
        for (int i = 0; i < SETS; i++) {
            ref_spread(&g, seeds + ptr[i], ptr[i + 1] - ptr[i], 1.0, 0.5, 0.002, 5, want);
            CHECK(memcmp(want, dense + (size_t)i * N, N * 4) == 0);
            size_t touched = 0;
            for (size_t v = 0; v < N; v++) touched += want[v] != 0.0f;
            if (i < 2) CHECK(touched == ptr[i + 1] - ptr[i]); /* isolated seeds */
            if (i == 2) reached = touched;
            CHECK(cnt[i] == 8);
            for (int j = 0; j < 8; j++) CHECK(tv[i * 8 + j] == want[ti[i * 8 + j]]);
        }
        CHECK(reached >= N / 16); /* the third set did move the state to the map */
    }
    free(dense), free(want), free(ix64), free(w64);
    free_graph(&g);
}

static void test_spread_faults(void) {
    for (int e = 0; e < 4; e++) {
        engine = (tl_spread_engine)e;
        test_spread_faults_one_engine();
    }
    engine = TL_SPREAD_AUTO;
}

/* ---- decay ------------------------------------------------------------------------------ */

static void test_decay_models(void) {
    enum { N = 1000 };
    static float s[N], a[N], out[N];
    static double s64[N], a64[N], out64[N];
    for (size_t i = 0; i < N; i++) {
        s[i] = (float)(urand() * 10);
        a[i] = (float)(urand() * 1e6);
        s64[i] = s[i];
        a64[i] = a[i];
    }
    a[0] = a64[0] = 0;
    a[1] = a64[1] = INFINITY;
    a[2] = a64[2] = 1e30f;
    tl_decay_params ps[4] = {{TL_DECAY_EXP, 86400.0, 0}, {TL_DECAY_HALF_LIFE, 3600.0, 0},
                             {TL_DECAY_POWER, 86400.0, 0.5}, {TL_DECAY_POWER, 10.0, 0.0}};
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        for (int m = 0; m < 4; m++) {
            for (size_t n = 0; n <= N; n += (n < 40 ? 1 : 480)) { /* every tail length */
                tl_scratch sc;
                CHECK(tl_scratch_begin(&sc, TL_SCRATCH_THREAD, NULL) == 0);
                CHECK(tl_decay(&sc, s, TL_F32, 4, a, TL_F32, 4, out, TL_F32, 4, n, &ps[m]) == 0);
                CHECK(tl_decay(&sc, s64, TL_F64, 8, a64, TL_F64, 8, out64, TL_F64, 8, n, &ps[m]) == 0);
                for (size_t i = 0; i < n; i++) {
                    double r;
                    switch (ps[m].model) {
                    case TL_DECAY_EXP: r = s64[i] * exp(-a64[i] / ps[m].scale); break;
                    case TL_DECAY_HALF_LIFE: r = s64[i] * exp2(-a64[i] / ps[m].scale); break;
                    default: r = s64[i] * pow(1 + a64[i] / ps[m].scale, -ps[m].alpha); break;
                    }
                    CHECK(fabs(out[i] - r) <= 1e-6 * fabs(r) + 1e-37); /* about 8 ulp */
                    CHECK(out64[i] == r);
                }
                tl_scratch_end(&sc);
            }
        }
        tl_kernels_set_isa((tl_isa)prev);
    }
}

static void test_decay_layouts_and_ages(void) {
    enum { N = 2500 };
    static float s[N], out[N], out2[N];
    static int64_t ai[N];
    static float af[N];
    static double sd[2 * N];
    for (size_t i = 0; i < N; i++) {
        s[i] = (float)urand();
        sd[2 * i] = s[i];
        ai[i] = (int64_t)(rnd() % 1000000);
        af[i] = (float)ai[i];
    }
    tl_decay_params p = {TL_DECAY_EXP, 1000.0, 0};
    tl_scratch sc;
    CHECK(tl_scratch_begin(&sc, TL_SCRATCH_THREAD, NULL) == 0);
    CHECK(tl_decay(&sc, s, TL_F32, 4, af, TL_F32, 4, out, TL_F32, 4, N, &p) == 0);
    /* int64 ages and strided float64 strengths take the block path: same values */
    CHECK(tl_decay(&sc, sd, TL_F64, 16, ai, TL_I64, 8, out2, TL_F32, 4, N, &p) == 0);
    CHECK(memcmp(out, out2, sizeof out) == 0);
    /* in place */
    memcpy(out2, s, sizeof s);
    CHECK(tl_decay(&sc, out2, TL_F32, 4, af, TL_F32, 4, out2, TL_F32, 4, N, &p) == 0);
    CHECK(memcmp(out, out2, sizeof out) == 0);
    tl_scratch_end(&sc);
    size_t bad = 0;
    CHECK(tl_decay_check_ages(af, TL_F32, 4, N, &bad) == TL_K_OK);
    af[1234] = -0.5f;
    CHECK(tl_decay_check_ages(af, TL_F32, 4, N, &bad) == TL_K_EAGES && bad == 1234);
    af[1234] = NAN;
    CHECK(tl_decay_check_ages(af, TL_F32, 4, N, &bad) == TL_K_EAGES && bad == 1234);
    af[1234] = -0.0f; /* not negative */
    CHECK(tl_decay_check_ages(af, TL_F32, 4, N, &bad) == TL_K_OK);
    ai[7] = -1;
    CHECK(tl_decay_check_ages(ai, TL_I64, 8, N, &bad) == TL_K_EAGES && bad == 7);
    CHECK(tl_decay_check_ages(ai, TL_U64, 8, N, &bad) == TL_K_OK);
}

/* ---- scratch strategies --------------------------------------------------------------- */

static void test_scratch_overflow_is_counted(void) {
    /* A 4 KiB arena cannot hold a 64 KiB conversion block: the kernel still
     * gives the right answer and the arena counts the overflow. */
    tl_arena_options o = {.capacity = 4096, .overflow = TL_OVERFLOW_ERROR};
    tl_arena *a = tl_arena_create(&o);
    CHECK(a != NULL);
    enum { N = 64, D = 300 };
    static double c[N][D], q[D];
    for (size_t j = 0; j < D; j++) q[j] = urand();
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) c[i][j] = urand();
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, a) == 0);
    tl_vec qv = {q, TL_F64, D, 8};
    tl_mat m = {c, TL_F64, N, D, D * 8, 8};
    float out[N];
    CHECK(tl_cosine_similarity(&s, &qv, &m, out, 4) == 0);
    CHECK(s.num_overflows > 0);
    tl_scratch_end(&s);
    for (size_t i = 0; i < N; i++) CHECK(fabs(out[i] - ref_cos(q, c[i], D)) < 1e-6);
    tl_arena_stats st;
    tl_arena_get_stats(a, &st);
    CHECK(st.num_overflows > 0 && st.fallback_bytes > 0 && st.used_bytes == 0);
    tl_arena_release(a);
}

/* ---- interruption (tl_kernels_set_poll) and range edges ---------------------------------- */

static int poll_calls, poll_stop_after;
static int poll_fn(void *ctx) {
    CHECK(ctx == &poll_calls);
    return ++poll_calls >= poll_stop_after;
}

static void test_poll_stops_each_kernel(void) {
    enum { N = 100000, D = 16 };
    static float c[N * D], q[D], out[N], s[N], a[N];
    for (size_t i = 0; i < N * D; i++) c[i] = (float)urand();
    for (size_t j = 0; j < D; j++) q[j] = (float)urand();
    for (size_t i = 0; i < N; i++) s[i] = 1.0f, a[i] = (float)i;
    tl_vec qv = {q, TL_F32, D, 4};
    tl_mat m = {c, TL_F32, N, D, D * 4, 4};
    /* a ring of N nodes: every step crosses N edges */
    static int64_t ip[N + 1], ix[N];
    static double w[N];
    for (size_t i = 0; i < N; i++) ip[i] = (int64_t)i, ix[i] = (int64_t)((i + 1) % N), w[i] = 1.0;
    ip[N] = N;
    tl_csr g = {N, N, ip, TL_I64, ix, TL_I64, w, TL_F64};
    static int64_t seeds[N];
    for (size_t i = 0; i < N; i++) seeds[i] = (int64_t)i;
    double one = 1.0;
    tl_decay_params dp = {TL_DECAY_EXP, 86400.0, 0.5};
    for (int stop = 1; stop <= 3; stop++) {
        tl_scratch sc;
        CHECK(tl_scratch_begin(&sc, TL_SCRATCH_MALLOC, NULL) == 0);
        tl_kernels_set_poll(poll_fn, &poll_calls);
        poll_calls = 0, poll_stop_after = stop;
        CHECK(tl_cosine_similarity(&sc, &qv, &m, out, 4) == TL_K_EINTR && poll_calls == stop);
        poll_calls = 0;
        tl_spread_params sp = {0.0, 0.0, 1000000, TL_SPREAD_SPARSE};
        CHECK(tl_spread_activation(&sc, &g, seeds, N, &one, 1, &sp, out, 0, NULL, NULL, NULL, NULL) ==
              TL_K_EINTR);
        CHECK(poll_calls == stop);
        poll_calls = 0;
        sp.engine = TL_SPREAD_DENSE;
        CHECK(tl_spread_activation(&sc, &g, seeds, N, &one, 1, &sp, out, 0, NULL, NULL, NULL, NULL) ==
              TL_K_EINTR);
        poll_calls = 0;
        /* 4x the elements of one poll interval (TL_DECAY_CHUNK = 65536) */
        static float big_s[1 << 18], big_a[1 << 18], big_o[1 << 18];
        CHECK(tl_decay(&sc, big_s, TL_F32, 4, big_a, TL_F32, 4, big_o, TL_F32, 4, 1 << 18, &dp) ==
              TL_K_EINTR);
        tl_kernels_set_poll(NULL, NULL);
        tl_scratch_end(&sc);
    }
    /* without a poll function the same calls run to the end */
    tl_scratch sc;
    CHECK(tl_scratch_begin(&sc, TL_SCRATCH_MALLOC, NULL) == 0);
    CHECK(tl_cosine_similarity(&sc, &qv, &m, out, 4) == TL_K_OK);
    CHECK(tl_decay(&sc, s, TL_F32, 4, a, TL_F32, 4, out, TL_F32, 4, N, &dp) == TL_K_OK);
    tl_scratch_end(&sc);
}

static void test_range_edges(void) {
    /* identical float32 vectors of 1e-30 and 1e19: their squares under/overflow
     * float32, the score is still 1 (and -1 for the opposite vector) */
    const float scales[] = {1e-30f, 1e-40f, 1e19f, 3e38f};
    for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++) {
        float q[8], c[2][8], out[2];
        for (int j = 0; j < 8; j++) q[j] = c[0][j] = scales[k] * ((float)(j + 1) / 8.0f), c[1][j] = -q[j];
        tl_vec qv = {q, TL_F32, 8, 4};
        tl_mat m = {c, TL_F32, 2, 8, 32, 4};
        tl_scratch sc;
        CHECK(tl_scratch_begin(&sc, TL_SCRATCH_MALLOC, NULL) == 0);
        CHECK(tl_cosine_similarity(&sc, &qv, &m, out, 4) == 0);
        CHECK(out[0] == 1.0f && out[1] == -1.0f);
        tl_scratch_end(&sc);
    }
    /* decay at age 0 is the strength, whatever the parameters */
    const tl_decay_params ps[] = {{TL_DECAY_EXP, 5e-324, 0}, {TL_DECAY_HALF_LIFE, 1e300, 0},
                                  {TL_DECAY_POWER, 86400.0, 1e39}, {TL_DECAY_POWER, 1e-3, 0.5}};
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        float s1[3] = {2.0f, 2.0f, 2.0f}, a1[3] = {0.0f, 0.0f, 0.0f}, o1[3];
        tl_scratch sc;
        CHECK(tl_scratch_begin(&sc, TL_SCRATCH_MALLOC, NULL) == 0);
        CHECK(tl_decay(&sc, s1, TL_F32, 4, a1, TL_F32, 4, o1, TL_F32, 4, 3, &ps[k]) == 0);
        CHECK(o1[0] == 2.0f && o1[2] == 2.0f);
        tl_scratch_end(&sc);
    }
}

static void test_scratch_malloc_and_shared(void) {
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_MALLOC, NULL) == 0);
    for (size_t align = 1; align <= 4096; align *= 2) {
        char *p = tl_scratch_alloc(&s, 100, align);
        CHECK(p && ((uintptr_t)p % align) == 0);
        memset(p, 1, 100);
    }
    CHECK(s.num_allocations == 13 && s.heap_bytes == 1300);
    tl_scratch_end(&s);
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_SHARED, NULL) == 0);
    tl_scratch s2;
    CHECK(tl_scratch_begin(&s2, TL_SCRATCH_SHARED, NULL) == 0);
    char *p = tl_scratch_alloc(&s, 1000, 64), *q = tl_scratch_alloc(&s2, 1000, 64);
    CHECK(p && q && p != q);
    tl_arena_stats st;
    tl_scratch_shared_stats(&st);
    CHECK(st.used_bytes >= 2000);
    tl_scratch_end(&s);
    tl_scratch_shared_stats(&st);
    CHECK(st.used_bytes >= 2000); /* s2 still uses it */
    tl_scratch_end(&s2);
    tl_scratch_shared_stats(&st);
    CHECK(st.used_bytes == 0); /* reset by its last user */
    CHECK(tl_scratch_begin(&s, (tl_scratch_kind)7, NULL) == -1);
}

/* ---- threads: every strategy, every kernel, same results as one thread ---------------- */

typedef struct thread_arg {
    const graph *g;
    const float *cand, *q;
    const float *want_cos, *want_spread;
    tl_scratch_kind kind;
    int ok;
} thread_arg;

enum { TN = 200, TD = 64, TITER = 20 };

static void *thread_main(void *p) {
    thread_arg *t = p;
    t->ok = 1;
    float *out = malloc(t->g->n * 4);
    for (int it = 0; it < TITER; it++) {
        tl_scratch s;
        tl_scratch_begin(&s, t->kind, NULL);
        tl_vec qv = {t->q, TL_F32, TD, 4};
        tl_mat m = {t->cand, TL_F32, TN, TD, TD * 4, 4};
        int64_t idx[5];
        float sc[5];
        size_t cnt;
        tl_cosine_topk(&s, &qv, &m, 5, idx, sc, &cnt);
        for (size_t i = 0; i < cnt; i++) t->ok &= sc[i] == t->want_cos[idx[i]];
        tl_scratch_end(&s);
        memset(out, 0, t->g->n * 4);
        int64_t seed = it % 7;
        run_spread(t->kind, t->g, &seed, 1, 1.0, 0.7, 0.01, 4, out, 0, 0, 0, 0, NULL);
        if (seed == 0) t->ok &= memcmp(out, t->want_spread, t->g->n * 4) == 0;
    }
    free(out);
    tl_thread_arena_release_current();
    return NULL;
}

static void test_threads(void) {
    graph g = random_graph(500, 8);
    static float cand[TN * TD], q[TD], want_cos[TN];
    for (size_t i = 0; i < TN * TD; i++) cand[i] = (float)urand();
    for (size_t j = 0; j < TD; j++) q[j] = (float)urand();
    float *want_spread = malloc(g.n * 4);
    memset(want_spread, 0, g.n * 4);
    int64_t seed = 0;
    run_spread(TL_SCRATCH_THREAD, &g, &seed, 1, 1.0, 0.7, 0.01, 4, want_spread, 0, 0, 0, 0, NULL);
    tl_scratch s;
    tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL);
    tl_vec qv = {q, TL_F32, TD, 4};
    tl_mat m = {cand, TL_F32, TN, TD, TD * 4, 4};
    tl_cosine_similarity(&s, &qv, &m, want_cos, 4);
    tl_scratch_end(&s);
    for (int k = 0; k < 3; k++) {
        enum { T = 8 };
        pthread_t th[T];
        thread_arg args[T];
        for (int i = 0; i < T; i++) {
            args[i] = (thread_arg){&g, cand, q, want_cos, want_spread, kinds[k], 0};
            CHECK(pthread_create(&th[i], NULL, thread_main, &args[i]) == 0);
        }
        for (int i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            CHECK(args[i].ok);
        }
    }
    free(want_spread);
    free_graph(&g);
}

int main(void) {
    RUN(test_cosine_matches_reference);
    RUN(test_cosine_layouts);
    RUN(test_cosine_topk);
    RUN(test_spread_matches_reference);
    RUN(test_spread_small_graphs);
    RUN(test_spread_faults);
    RUN(test_spread_many_moves_to_the_direct_map);
    RUN(test_spread_many_sets);
    RUN(test_decay_models);
    RUN(test_decay_layouts_and_ages);
    RUN(test_scratch_overflow_is_counted);
    RUN(test_poll_stops_each_kernel);
    RUN(test_range_edges);
    RUN(test_scratch_malloc_and_shared);
    RUN(test_threads);
    tl_thread_arena_release_current();
    TEST_MAIN_END();
}
