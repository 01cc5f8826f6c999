/* Unit tests of the batched, half-precision and given-norm forms of cosine
 * similarity (no Python), for every instruction set the CPU has.
 *
 * The batched form must equal the single-query form bit for bit (one row
 * arithmetic for every kernel); the streaming loop order must equal the
 * in-cache one; float16 and bfloat16 rows, widened in registers, must equal the
 * same values given as float32; given norms must give dot / (|q| * norm). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tl_test.h"
#include "tlalloc.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
/* A value exact in float16 and bfloat16: k / 8 for k in [-8, 8). */
static float small_exact(void) { return (float)((int)(rnd() % 16) - 8) / 8.0f; }

static uint16_t to_half(float f) { /* exact for small_exact() values */
    if (f == 0.0f) return 0;
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u;
    int e = (int)((b >> 23) & 0xff) - 127 + 15;
    return (uint16_t)(sign | ((uint32_t)e << 10) | ((b & 0x7fffffu) >> 13));
}
static uint16_t to_bf16(float f) { /* truncation: exact for small_exact() values */
    uint32_t b;
    memcpy(&b, &f, 4);
    return (uint16_t)(b >> 16);
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Batched == single query, row by row, for many shapes; top-k too. */
static void test_batch_equals_single(void) {
    static const size_t ds[] = {0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 33, 100, 257};
    static const size_t ms[] = {1, 2, 3, 4, 5, 7, 9};
    enum { N = 40, MMAX = 9, DMAX = 257 }; /* N % 3 == 1: the batched tile's row remainder */
    float *c = malloc(sizeof(float) * N * DMAX + 64), *q = malloc(sizeof(float) * MMAX * DMAX);
    float *out = malloc(sizeof(float) * MMAX * N), one[N];
    int64_t idx[MMAX * N], idx1[N];
    float sc[MMAX * N], sc1[N];
    CHECK(c && q && out);
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
            size_t d = ds[di];
            for (size_t off = 0; off < 2; off++) { /* aligned rows, and rows 4 bytes off */
                float *cb = c + off;
                for (size_t i = 0; i < N * d; i++) cb[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
                if (d) memcpy(cb + 5 * d, cb + 2 * d, d * sizeof(float)); /* a tie */
                for (size_t i = 0; i < MMAX * d; i++) q[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
                tl_mat cm = {cb, TL_F32, N, d, (ptrdiff_t)(d * 4), 4};
                for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                    size_t m = ms[mi];
                    tl_mat qm = {q, TL_F32, m, d, (ptrdiff_t)(d * 4), 4};
                    tl_scratch s;
                    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
                    CHECK(tl_cosine_batch(&s, &qm, &cm, NULL, out, (ptrdiff_t)(N * 4), 4) == TL_K_OK);
                    size_t cnt = 0;
                    CHECK(tl_cosine_topk_batch(&s, &qm, &cm, NULL, 6, idx, sc, &cnt) == TL_K_OK && cnt == 6);
                    for (size_t i = 0; i < m; i++) {
                        tl_vec qv = {q + i * d, TL_F32, d, 4};
                        CHECK(tl_cosine_similarity(&s, &qv, &cm, one, 4) == TL_K_OK);
                        for (size_t r = 0; r < N; r++) CHECK(same_bits(out[i * N + r], one[r]));
                        size_t c1 = 0;
                        CHECK(tl_cosine_topk(&s, &qv, &cm, 6, idx1, sc1, &c1) == TL_K_OK && c1 == 6);
                        for (size_t t = 0; t < 6; t++) CHECK(idx[i * 6 + t] == idx1[t] && same_bits(sc[i * 6 + t], sc1[t]));
                    }
                    tl_scratch_end(&s);
                }
            }
        }
        tl_kernels_set_isa((tl_isa)prev);
    }
    free(c), free(q), free(out);
}

/* The streaming order (one row at a time) gives the bits of the in-cache one. */
static void test_stream_equals_interleaved(void) {
    enum { N = 301, D = 97 };
    static float c[N][D], q[D], a[N], b[N];
    for (size_t j = 0; j < D; j++) q[j] = small_exact() + 0.01f * (float)j;
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) c[i][j] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
    tl_vec qv = {q, TL_F32, D, 4};
    tl_mat cm = {c, TL_F32, N, D, D * 4, 4};
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        size_t old = tl_cosine_set_stream_bytes(0);
        CHECK(tl_cosine_set_stream_bytes((size_t)-1) == 0);
        CHECK(tl_cosine_similarity(&s, &qv, &cm, a, 4) == TL_K_OK);
        tl_cosine_set_stream_bytes(SIZE_MAX - 1);
        CHECK(tl_cosine_similarity(&s, &qv, &cm, b, 4) == TL_K_OK);
        tl_cosine_set_stream_bytes(old);
        for (size_t i = 0; i < N; i++) CHECK(same_bits(a[i], b[i]));
        tl_scratch_end(&s);
        tl_kernels_set_isa((tl_isa)prev);
    }
}

/* float16 and bfloat16 rows (contiguous: widened in registers; strided:
 * converted) give the scores of the same values in float32. */
static void test_half_precision_rows(void) {
    enum { N = 29, D = 45 };
    static float c32[N][D], q[D], want[N], got[N];
    static uint16_t c16[N][D], cb16[N][D], wide16[N][2 * D];
    for (size_t j = 0; j < D; j++) q[j] = small_exact();
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) {
            c32[i][j] = small_exact();
            c16[i][j] = wide16[i][2 * j] = to_half(c32[i][j]);
            cb16[i][j] = to_bf16(c32[i][j]);
        }
    tl_vec qv = {q, TL_F32, D, 4};
    tl_mat m32 = {c32, TL_F32, N, D, D * 4, 4};
    tl_mat m16 = {c16, TL_F16, N, D, D * 2, 2};
    tl_mat mb = {cb16, TL_BF16, N, D, D * 2, 2};
    tl_mat ms = {wide16, TL_F16, N, D, 4 * D, 4}; /* every other element */
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        CHECK(tl_cosine_similarity(&s, &qv, &m32, want, 4) == TL_K_OK);
        const tl_mat *ins[3] = {&m16, &mb, &ms};
        for (int t = 0; t < 3; t++) {
            CHECK(tl_cosine_similarity(&s, &qv, ins[t], got, 4) == TL_K_OK);
            for (size_t i = 0; i < N; i++) CHECK(fabsf(got[i] - want[i]) <= 2e-7f);
        }
        /* bfloat16 query against float32 rows: the query widens exactly too */
        static uint16_t qb[D];
        for (size_t j = 0; j < D; j++) qb[j] = to_bf16(q[j]);
        tl_vec qbv = {qb, TL_BF16, D, 2};
        CHECK(tl_cosine_similarity(&s, &qbv, &m32, got, 4) == TL_K_OK);
        for (size_t i = 0; i < N; i++) CHECK(same_bits(got[i], want[i]));
        tl_scratch_end(&s);
        tl_kernels_set_isa((tl_isa)prev);
    }
}

/* Given norms replace |c_i|: scores scale by true / given; a zero norm gives 0;
 * the float64 path too; a norms vector of the wrong length or dtype is refused. */
static void test_given_norms(void) {
    enum { N = 17, D = 12, M = 3 };
    static float c[N][D], q[M][D], plain[M][N], got[M][N];
    static double c64[N][D], got64[M][N];
    static double norms[N];
    static float norms32[N];
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < D; j++) c64[i][j] = c[i][j] = small_exact() + 0.25f;
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < D; j++) q[i][j] = small_exact();
    for (size_t i = 0; i < N; i++) {
        double cc = 0;
        for (size_t j = 0; j < D; j++) cc += (double)c[i][j] * c[i][j];
        norms[i] = 2.0 * sqrt(cc); /* twice the true norm: half the score */
        norms32[i] = (float)norms[i];
    }
    norms[4] = norms32[4] = 0.0f;
    tl_mat qm = {q, TL_F32, M, D, D * 4, 4};
    tl_mat cm = {c, TL_F32, N, D, D * 4, 4};
    tl_mat cm64 = {c64, TL_F64, N, D, D * 8, 8};
    tl_vec nv = {norms, TL_F64, N, 8}, nv32 = {norms32, TL_F32, N, 4};
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        CHECK(tl_cosine_batch(&s, &qm, &cm, NULL, &plain[0][0], N * 4, 4) == TL_K_OK);
        CHECK(tl_cosine_batch(&s, &qm, &cm, &nv, &got[0][0], N * 4, 4) == TL_K_OK);
        for (size_t i = 0; i < M; i++)
            for (size_t r = 0; r < N; r++) CHECK(fabsf(got[i][r] - (r == 4 ? 0.0f : plain[i][r] / 2)) <= 3e-7f);
        /* one query with given norms reads dots only: the batched bits */
        for (size_t i = 0; i < M; i++) {
            float one[N];
            tl_mat q1 = {q[i], TL_F32, 1, D, D * 4, 4};
            CHECK(tl_cosine_batch(&s, &q1, &cm, &nv, one, N * 4, 4) == TL_K_OK);
            CHECK(memcmp(one, got[i], sizeof one) == 0);
        }
        CHECK(tl_cosine_batch(&s, &qm, &cm, &nv32, &got[0][0], N * 4, 4) == TL_K_OK);
        for (size_t i = 0; i < M; i++)
            for (size_t r = 0; r < N; r++) CHECK(fabsf(got[i][r] - (r == 4 ? 0.0f : plain[i][r] / 2)) <= 3e-7f);
        float g64[M][N];
        CHECK(tl_cosine_batch(&s, &qm, &cm64, &nv, &g64[0][0], N * 4, 4) == TL_K_OK);
        for (size_t i = 0; i < M; i++)
            for (size_t r = 0; r < N; r++) {
                got64[i][r] = g64[i][r];
                CHECK(fabs(got64[i][r] - (r == 4 ? 0.0 : plain[i][r] / 2.0)) <= 3e-7);
            }
        tl_vec short_n = {norms, TL_F64, N - 1, 8}, int_n = {norms, TL_I64, N, 8};
        CHECK(tl_cosine_batch(&s, &qm, &cm, &short_n, &got[0][0], N * 4, 4) == TL_K_EINVAL);
        CHECK(tl_cosine_batch(&s, &qm, &cm, &int_n, &got[0][0], N * 4, 4) == TL_K_EINVAL);
        tl_scratch_end(&s);
        tl_kernels_set_isa((tl_isa)prev);
    }
}

/* Range edges with given norms: vectors of 1e-30 and 1e19 (their float32
 * squares under- or overflow) still score 1 against themselves. */
static void test_given_norms_range_edges(void) {
    enum { D = 16 };
    static const float scales[] = {1e-30f, 1e19f};
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        for (size_t t = 0; t < 2; t++) {
            float q[2][D], c[2][D], out[2][2];
            for (size_t j = 0; j < D; j++) q[0][j] = q[1][j] = c[0][j] = c[1][j] = scales[t] * (float)(j + 1);
            double nn = 0;
            for (size_t j = 0; j < D; j++) nn += (double)c[0][j] * c[0][j];
            double norms[2] = {sqrt(nn), sqrt(nn)};
            tl_mat qm = {q, TL_F32, 2, D, D * 4, 4}, cm = {c, TL_F32, 2, D, D * 4, 4};
            tl_vec nv = {norms, TL_F64, 2, 8};
            tl_scratch s;
            CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
            CHECK(tl_cosine_batch(&s, &qm, &cm, &nv, &out[0][0], 8, 4) == TL_K_OK);
            for (size_t i = 0; i < 4; i++) CHECK(fabsf((&out[0][0])[i] - 1.0f) <= 1e-6f);
            CHECK(tl_cosine_batch(&s, &qm, &cm, NULL, &out[0][0], 8, 4) == TL_K_OK);
            for (size_t i = 0; i < 4; i++) CHECK(fabsf((&out[0][0])[i] - 1.0f) <= 1e-6f);
            tl_scratch_end(&s);
        }
        tl_kernels_set_isa((tl_isa)prev);
    }
}

/* m = 0 and n = 0 write nothing and succeed; k > n keeps n per query. */
static void test_empty_and_large_k(void) {
    float q[2][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}}, c[3][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {1, 1, 0, 0}};
    float out[6] = {7, 7, 7, 7, 7, 7};
    int64_t idx[6];
    float sc[6];
    size_t cnt = 99;
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    tl_mat q0 = {q, TL_F32, 0, 4, 16, 4}, c0 = {c, TL_F32, 0, 4, 16, 4};
    tl_mat qm = {q, TL_F32, 2, 4, 16, 4}, cm = {c, TL_F32, 3, 4, 16, 4};
    CHECK(tl_cosine_batch(&s, &q0, &cm, NULL, out, 12, 4) == TL_K_OK && out[0] == 7);
    CHECK(tl_cosine_batch(&s, &qm, &c0, NULL, out, 0, 4) == TL_K_OK && out[0] == 7);
    CHECK(tl_cosine_topk_batch(&s, &qm, &c0, NULL, 5, idx, sc, &cnt) == TL_K_OK && cnt == 0);
    CHECK(tl_cosine_topk_batch(&s, &qm, &cm, NULL, 10, idx, sc, &cnt) == TL_K_OK && cnt == 3);
    CHECK(idx[0] == 0 && idx[1] == 2 && idx[2] == 1 && idx[3] == 1 && idx[4] == 2 && idx[5] == 0);
    tl_scratch_end(&s);
}

/* AVX-512 against AVX2: the same bits where both cut a row alike (float32
 * rows at a 64-byte boundary or 36 to 60 bytes past one; every float16 /
 * bfloat16 row), within float32 rounding elsewhere (4 to 32 bytes past);
 * for every width around the 8- and 16-lane vectors and tails, one query and
 * batched (with given norms too). */
static void test_avx512_matches_avx2(void) {
    if (tl_kernels_best_isa() < TL_ISA_AVX512) return;
    static const size_t ds[] = {1, 3, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40, 47, 48, 100, 257, 768};
    enum { N = 13, M = 7, DMAX = 768 };
    float *c = aligned_alloc(64, sizeof(float) * (N * DMAX + 16)), *q = malloc(sizeof(float) * M * DMAX);
    uint16_t *h = aligned_alloc(64, 2 * N * DMAX), *b = aligned_alloc(64, 2 * N * DMAX);
    float *o2 = malloc(sizeof(float) * M * N), *o5 = malloc(sizeof(float) * M * N);
    double nv[N];
    CHECK(c && q && h && b && o2 && o5);
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        const size_t d = ds[di];
        for (size_t i = 0; i < M * d; i++) q[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
        for (size_t off = 0; off < 16; off++) { /* rows at every 4-byte offset from a 64-byte boundary */
            float *cb = c + off;
            const size_t rsd = (d + 15) & ~(size_t)15; /* row stride: a multiple of 64 bytes */
            for (size_t i = 0; i < N * rsd && off + i < N * DMAX + 16; i++)
                cb[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
            if (off + N * rsd > N * DMAX + 16) continue;
            for (size_t i = 0; i < N; i++) {
                double a = 0;
                for (size_t j = 0; j < d; j++) a += (double)cb[i * rsd + j] * cb[i * rsd + j];
                nv[i] = sqrt(a);
            }
            for (size_t i = 0; i < N; i++)
                for (size_t j = 0; j < d; j++) {
                    h[i * d + j] = to_half(small_exact());
                    b[i * d + j] = to_bf16((float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5));
                }
            const int same = off == 0 || off > 8; /* same head in both plans */
            tl_mat cm = {cb, TL_F32, N, d, (ptrdiff_t)(rsd * 4), 4};
            tl_mat hm = {h, TL_F16, N, d, (ptrdiff_t)(d * 2), 2}, bm = {b, TL_BF16, N, d, (ptrdiff_t)(d * 2), 2};
            tl_vec nvv = {nv, TL_F64, N, 8};
            const tl_mat *cs[3] = {&cm, &hm, &bm};
            for (int t = 0; t < 3; t++) {
                if (t && off) continue; /* 16-bit rows: once */
                for (int form = 0; form < 3; form++) { /* 1 query, M queries, M queries with norms */
                    tl_mat qm = {q, TL_F32, form ? M : 1, d, (ptrdiff_t)(d * 4), 4};
                    const tl_vec *nn = form == 2 && t == 0 ? &nvv : NULL;
                    float *outs[2] = {o2, o5};
                    for (int k = 0; k < 2; k++) {
                        tl_scratch s;
                        int prev = tl_kernels_set_isa(k ? TL_ISA_AVX512 : TL_ISA_AVX2);
                        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
                        CHECK(tl_cosine_batch(&s, &qm, cs[t], nn, outs[k], N * 4, 4) == TL_K_OK);
                        tl_scratch_end(&s);
                        tl_kernels_set_isa((tl_isa)prev);
                    }
                    for (size_t i = 0; i < qm.rows * N; i++) {
                        if (same || t) CHECK(same_bits(o2[i], o5[i]));
                        else CHECK(fabsf(o2[i] - o5[i]) <= 4e-7f);
                    }
                }
            }
        }
    }
    free(c), free(q), free(h), free(b), free(o2), free(o5);
}

int main(void) {
    RUN(test_batch_equals_single);
    RUN(test_stream_equals_interleaved);
    RUN(test_half_precision_rows);
    RUN(test_given_norms);
    RUN(test_given_norms_range_edges);
    RUN(test_empty_and_large_k);
    RUN(test_avx512_matches_avx2);
    tl_thread_arena_release_current();
    TEST_MAIN_END();
}
