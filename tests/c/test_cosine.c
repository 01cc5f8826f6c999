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
    /* every tail of the in-cache group (16 lanes x 4 rows), then longer rows */
    static const size_t ds[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17,  18,  19, 20,
                                21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37,  38,  39, 40,
                                41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,  58,  59, 60,
                                61, 62, 63, 64, 65, 79, 80, 81, 95, 96, 97, 100, 127, 128, 129, 257, 768};
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
                        /* without vdpbf16ps: bfloat16 rows in the order of AVX2 (see test_bf16_dot_instruction) */
                        int prev_ext = tl_kernels_set_ext(tl_kernels_best_ext() & ~(unsigned)TL_EXT_AVX512_BF16);
                        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
                        CHECK(tl_cosine_batch(&s, &qm, cs[t], nn, outs[k], N * 4, 4) == TL_K_OK);
                        tl_scratch_end(&s);
                        tl_kernels_set_ext((unsigned)prev_ext);
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

/* bfloat16 rows through vdpbf16ps (AVX512_BF16): the documented arithmetic
 * (products exact, float32 sums in the pair order) is within
 *   tol(d) = (4 * (d / 16 + 6) + 8) * 2^-24
 * of a float64 reference and of the paths without the instruction (AVX-512
 * and AVX2: each within half of it); within the path, one query, batched,
 * streaming and given norms (dots only) give the same bits. Every tail of the
 * in-cache group (32 elements x 4 rows), row counts around the group of 4 and
 * the batched tile of 3 queries; rows of 1e-30 (squares underflow) score 1
 * against themselves. */
static double ref_cos(const float *q, const uint16_t *c, size_t d) {
    double dot = 0, qq = 0, cc = 0;
    for (size_t j = 0; j < d; j++) {
        uint32_t b = (uint32_t)c[j] << 16;
        float x;
        memcpy(&x, &b, 4);
        dot += (double)q[j] * x, qq += (double)q[j] * q[j], cc += (double)x * x;
    }
    if (!(qq > 0) || !(cc > 0)) return 0.0;
    return dot / sqrt(qq) / sqrt(cc);
}

static void test_bf16_dot_instruction(void) {
    if (!(tl_kernels_best_ext() & TL_EXT_AVX512_BF16)) return;
    enum { N = 11, M = 7, DMAX = 161 };
    static float q[M * DMAX], out[4][M * N], one[N], st[N], gn[M * N], gn1[N];
    static uint16_t c[N * DMAX];
    static double nv[N];
    const unsigned all = tl_kernels_best_ext(), plain = all & ~(unsigned)TL_EXT_AVX512_BF16;
    const int prev_isa = tl_kernels_set_isa(TL_ISA_AVX512), prev_ext = tl_kernels_set_ext(all);
    for (size_t d = 0; d <= DMAX; d++) {
        for (size_t i = 0; i < M * d; i++) q[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
        for (size_t i = 0; i < N * d; i++) c[i] = to_bf16((float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5));
        if (d) memcpy(c + 6 * d, c + 2 * d, 2 * d); /* a tie */
        for (size_t r = 0; r < N; r++) {
            double a = 0;
            for (size_t j = 0; j < d; j++) {
                uint32_t b = (uint32_t)c[r * d + j] << 16;
                float x;
                memcpy(&x, &b, 4);
                a += (double)x * x;
            }
            nv[r] = sqrt(a);
        }
        const double tol = (4.0 * ((double)d / 16 + 6) + 8) * 0x1p-24;
        for (size_t n = 1; n <= N; n++) { /* every row count around the group of 4 */
            tl_vec nvv = {nv, TL_F64, n, 8};
            tl_mat cm = {c, TL_BF16, n, d, (ptrdiff_t)(2 * d), 2};
            tl_mat qm = {q, TL_F32, M, d, (ptrdiff_t)(4 * d), 4};
            /* 0: vdpbf16ps, 1: AVX-512 without it, 2: AVX2 */
            for (int k = 0; k < 3; k++) {
                tl_kernels_set_isa(k == 2 ? TL_ISA_AVX2 : TL_ISA_AVX512);
                tl_kernels_set_ext(k == 0 ? all : plain);
                tl_scratch s;
                CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
                CHECK(tl_cosine_batch(&s, &qm, &cm, NULL, out[k], (ptrdiff_t)(n * 4), 4) == TL_K_OK);
                tl_scratch_end(&s);
            }
            tl_kernels_set_isa(TL_ISA_AVX512);
            tl_kernels_set_ext(all);
            tl_scratch s;
            CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
            CHECK(tl_cosine_batch(&s, &qm, &cm, &nvv, gn, (ptrdiff_t)(n * 4), 4) == TL_K_OK);
            for (size_t i = 0; i < M; i++) {
                tl_vec qv = {q + i * d, TL_F32, d, 4};
                tl_mat q1 = {q + i * d, TL_F32, 1, d, (ptrdiff_t)(4 * d), 4};
                CHECK(tl_cosine_similarity(&s, &qv, &cm, one, 4) == TL_K_OK);
                size_t old = tl_cosine_set_stream_bytes(0);
                CHECK(tl_cosine_similarity(&s, &qv, &cm, st, 4) == TL_K_OK);
                tl_cosine_set_stream_bytes(old);
                CHECK(tl_cosine_batch(&s, &q1, &cm, &nvv, gn1, (ptrdiff_t)(n * 4), 4) == TL_K_OK);
                for (size_t r = 0; r < n; r++) {
                    const float v = out[0][i * n + r];
                    CHECK(same_bits(v, one[r]) && same_bits(v, st[r]) && same_bits(gn[i * n + r], gn1[r]));
                    CHECK(fabs((double)v - ref_cos(q + i * d, c + r * d, d)) <= tol / 2);
                    CHECK(fabs((double)gn[i * n + r] - ref_cos(q + i * d, c + r * d, d)) <= tol / 2);
                    CHECK(fabsf(v - out[1][i * n + r]) <= tol && fabsf(v - out[2][i * n + r]) <= tol);
                    CHECK(same_bits(out[1][i * n + r], out[2][i * n + r])); /* the order of AVX2 */
                }
                if (d && n > 6) CHECK(same_bits(one[2], one[6])); /* equal rows, equal bits */
            }
            tl_scratch_end(&s);
        }
    }
    /* rows at every 2-byte offset from a 64-byte boundary, sharing it (row
     * stride a multiple of 64 bytes): the blocks start at the boundaries */
    static const size_t dsh[] = {1, 5, 31, 32, 33, 63, 64, 65, 100, 161};
    enum { NS = 9, MS = 4, RSH = 192 }; /* RSH: row stride in elements, 384 bytes */
    static uint16_t sh[NS * RSH + 64] __attribute__((aligned(64)));
    for (size_t off = 0; off < 32; off++)
        for (size_t di = 0; di < sizeof dsh / sizeof dsh[0]; di++) {
            const size_t d = dsh[di];
            uint16_t *cb = sh + off;
            for (size_t i = 0; i < NS * RSH; i++) cb[i] = to_bf16((float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5));
            for (size_t i = 0; i < MS * d; i++) q[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
            const double tol = (4.0 * ((double)d / 16 + 6) + 8) * 0x1p-24;
            tl_mat cm = {cb, TL_BF16, NS, d, 2 * RSH, 2}, qm = {q, TL_F32, MS, d, (ptrdiff_t)(4 * d), 4};
            tl_scratch s;
            CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
            CHECK(tl_cosine_batch(&s, &qm, &cm, NULL, out[0], NS * 4, 4) == TL_K_OK);
            for (size_t i = 0; i < MS; i++) {
                tl_vec qv = {q + i * d, TL_F32, d, 4};
                CHECK(tl_cosine_similarity(&s, &qv, &cm, one, 4) == TL_K_OK);
                size_t old = tl_cosine_set_stream_bytes(0);
                CHECK(tl_cosine_similarity(&s, &qv, &cm, st, 4) == TL_K_OK);
                tl_cosine_set_stream_bytes(old);
                for (size_t r = 0; r < NS; r++) {
                    CHECK(same_bits(out[0][i * NS + r], one[r]) && same_bits(one[r], st[r]));
                    CHECK(fabs((double)one[r] - ref_cos(q + i * d, cb + r * RSH, d)) <= tol / 2);
                }
            }
            tl_scratch_end(&s);
        }
    /* rows of 1e-30: their float32 squares underflow; the slow path scores them */
    enum { D = 40 };
    static float qs[D];
    static uint16_t cs[2][D];
    for (size_t j = 0; j < D; j++) {
        cs[0][j] = cs[1][j] = to_bf16(1e-30f * (float)(j + 1));
        uint32_t b = (uint32_t)cs[0][j] << 16;
        memcpy(&qs[j], &b, 4);
    }
    tl_vec qv = {qs, TL_F32, D, 4};
    tl_mat cm = {cs, TL_BF16, 2, D, 2 * D, 2};
    float o[2];
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    CHECK(tl_cosine_similarity(&s, &qv, &cm, o, 4) == TL_K_OK);
    CHECK(fabsf(o[0] - 1.0f) <= 1e-6f && fabsf(o[1] - 1.0f) <= 1e-6f);
    tl_scratch_end(&s);
    tl_kernels_set_ext((unsigned)prev_ext);
    tl_kernels_set_isa((tl_isa)prev_isa);
}

/* The extension bits: a subset of what the CPU has, BF16 only with AVX-512. */
static void test_ext_choice(void) {
    const unsigned best = tl_kernels_best_ext();
    if (best & TL_EXT_AVX512_BF16) CHECK(tl_kernels_best_isa() == TL_ISA_AVX512);
    CHECK((tl_kernels_ext() & ~best) == 0);
    if (!(best & TL_EXT_AVX512_BF16)) CHECK(tl_kernels_set_ext(best | TL_EXT_AVX512_BF16) == -1);
    int prev = tl_kernels_set_ext(0);
    CHECK(prev >= 0 && tl_kernels_ext() == 0);
    CHECK(tl_kernels_set_ext((unsigned)prev) == 0 && tl_kernels_ext() == (unsigned)prev);
}

/* ---- metrics and filters ---------------------------------------------------------- */

/* Reference dot, squared norms in float64 of the values as stored. */
static void ref64(const float *q, const float *c, size_t d, double *dot, double *qq, double *cc) {
    *dot = *qq = *cc = 0.0;
    for (size_t j = 0; j < d; j++) {
        *dot += (double)q[j] * c[j];
        *qq += (double)q[j] * q[j];
        *cc += (double)c[j] * c[j];
    }
}

/* dot and l2 against float64 within the stated bound, for float32, float16
 * and bfloat16 rows (values exact in all three), one query and batched, every
 * ISA; dot equals the cosine kernels' dot (cosine with unit norms times |q|
 * is not bit-exact, so the check is: normalized cosine == given norms of 1,
 * bit for bit); a filter changes no chosen row's bits. */
static void test_metrics_against_float64(void) {
    enum { N = 37, D = 45, M = 5 };
    static float c[N * D], q[M * D], out[M * N], out2[M * N];
    static uint16_t ch[N * D], cb[N * D];
    for (size_t i = 0; i < N * D; i++) {
        c[i] = small_exact();
        ch[i] = to_half(c[i]);
        cb[i] = to_bf16(c[i]);
    }
    for (size_t i = 0; i < M * D; i++) q[i] = small_exact();
    double ones[N];
    for (size_t r = 0; r < N; r++) ones[r] = 1.0;
    tl_vec onev = {ones, TL_F64, N, 8};
    const tl_mat cms[3] = {{c, TL_F32, N, D, D * 4, 4}, {ch, TL_F16, N, D, D * 2, 2}, {cb, TL_BF16, N, D, D * 2, 2}};
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        for (size_t k = 0; k < 3; k++)
            for (size_t m = 1; m <= M; m += M - 1) {
                tl_mat qm = {q, TL_F32, m, D, D * 4, 4};
                for (int metric = TL_METRIC_DOT; metric <= TL_METRIC_L2; metric++) {
                    tl_score_opts o = {(tl_metric)metric, 0, NULL, 0, NULL, 0};
                    CHECK(tl_score_batch(&s, &qm, &cms[k], NULL, &o, out, N * 4, 4) == TL_K_OK);
                    for (size_t i = 0; i < m; i++)
                        for (size_t r = 0; r < N; r++) {
                            double dt, qq, cc;
                            ref64(q + i * D, c + r * D, D, &dt, &qq, &cc);
                            double want = metric == TL_METRIC_DOT ? dt : qq + cc - 2 * dt;
                            double tol = (double)D * 0x1p-24 * (qq + cc) + fabs(want) * 0x1p-24;
                            CHECK(fabs(out[i * N + r] - want) <= tol);
                        }
                    /* a filter keeping every other row, in reverse: the same bits */
                    int64_t ids[N];
                    size_t nid = 0;
                    for (size_t r = N; r-- > 0;)
                        if (r % 2 == 0) ids[nid++] = (int64_t)r;
                    o.allow_ids = ids;
                    o.n_allow = nid;
                    CHECK(tl_score_batch(&s, &qm, &cms[k], NULL, &o, out2, N * 4, 4) == TL_K_OK);
                    for (size_t i = 0; i < m; i++)
                        for (size_t j = 0; j < nid; j++)
                            CHECK(same_bits(out2[i * N + j], out[i * N + (size_t)ids[j]]));
                }
                /* normalized cosine is cosine with given norms of 1 */
                tl_score_opts on = {TL_METRIC_COSINE, 1, NULL, 0, NULL, 0};
                CHECK(tl_score_batch(&s, &qm, &cms[k], NULL, &on, out, N * 4, 4) == TL_K_OK);
                CHECK(tl_cosine_batch(&s, &qm, &cms[k], &onev, out2, N * 4, 4) == TL_K_OK);
                CHECK(memcmp(out, out2, m * N * 4) == 0);
                /* normalized l2 is l2 with given norms of 1 */
                on.metric = TL_METRIC_L2;
                tl_score_opts ol = {TL_METRIC_L2, 0, NULL, 0, NULL, 0};
                CHECK(tl_score_batch(&s, &qm, &cms[k], NULL, &on, out, N * 4, 4) == TL_K_OK);
                CHECK(tl_score_batch(&s, &qm, &cms[k], &onev, &ol, out2, N * 4, 4) == TL_K_OK);
                CHECK(memcmp(out, out2, m * N * 4) == 0);
                /* normalized with given norms is refused */
                CHECK(tl_score_batch(&s, &qm, &cms[k], &onev, &on, out, N * 4, 4) == TL_K_EINVAL);
            }
        /* the float64 path: dot and l2 directly */
        static double c64[N * D];
        for (size_t i = 0; i < N * D; i++) c64[i] = c[i];
        tl_mat cm64 = {c64, TL_F64, N, D, D * 8, 8}, qm = {q, TL_F32, M, D, D * 4, 4};
        for (int metric = TL_METRIC_DOT; metric <= TL_METRIC_L2; metric++) {
            tl_score_opts o = {(tl_metric)metric, 0, NULL, 0, NULL, 0};
            CHECK(tl_score_batch(&s, &qm, &cm64, NULL, &o, out, N * 4, 4) == TL_K_OK);
            for (size_t i = 0; i < M; i++)
                for (size_t r = 0; r < N; r++) {
                    double dt, qq, cc, l2 = 0;
                    ref64(q + i * D, c + r * D, D, &dt, &qq, &cc);
                    for (size_t j = 0; j < D; j++) l2 += ((double)q[i * D + j] - c[r * D + j]) * ((double)q[i * D + j] - c[r * D + j]);
                    CHECK(out[i * N + r] == (float)(metric == TL_METRIC_DOT ? dt : l2));
                }
        }
        tl_score_opts bad = {(tl_metric)3, 0, NULL, 0, NULL, 0};
        CHECK(tl_score_batch(&s, &qm, &cms[0], NULL, &bad, out, N * 4, 4) == TL_K_EINVAL);
        tl_scratch_end(&s);
        tl_kernels_set_isa((tl_isa)prev);
    }
}

/* top-k per metric: l2 returns the nearest first, dot and cosine the largest;
 * equal rows tie to the lower index; a mask keeping none, one or every row;
 * ids out of range or repeated are refused with their position; ld spaces
 * the rows of the result. */
static void test_topk_metrics_and_filters(void) {
    enum { N = 300, D = 20, K = 7 };
    static float c[N * D], q[2 * D];
    for (size_t i = 0; i < N * D; i++) c[i] = small_exact();
    for (size_t i = 0; i < 2 * D; i++) q[i] = small_exact();
    memcpy(c + 250 * D, c + 40 * D, D * 4); /* ties: rows 40 and 250, 41 and 251 */
    memcpy(c + 251 * D, c + 41 * D, D * 4);
    memcpy(c + 41 * D, q, D * 4); /* query 0's nearest: rows 41 and 251 (distance 0) */
    memcpy(c + 251 * D, q, D * 4);
    tl_mat cm = {c, TL_F32, N, D, D * 4, 4}, qm = {q, TL_F32, 2, D, D * 4, 4};
    static uint8_t mask[N];
    static float all[2 * N];
    for (int isa = 0; isa <= (int)tl_kernels_best_isa(); isa++) {
        int prev = tl_kernels_set_isa((tl_isa)isa);
        tl_scratch s;
        CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
        for (int metric = TL_METRIC_COSINE; metric <= TL_METRIC_L2; metric++) {
            tl_score_opts o = {(tl_metric)metric, 0, NULL, 0, NULL, 0};
            CHECK(tl_score_batch(&s, &qm, &cm, NULL, &o, all, N * 4, 4) == TL_K_OK);
            int64_t idx[2 * 10];
            float sc[2 * 10];
            size_t cnt = 0;
            CHECK(tl_score_topk_batch(&s, &qm, &cm, NULL, &o, K, idx, sc, 10, &cnt) == TL_K_OK && cnt == K);
            for (size_t i = 0; i < 2; i++) {
                const float sgn = metric == TL_METRIC_L2 ? -1.0f : 1.0f;
                for (size_t t = 0; t < K; t++) {
                    size_t id = (size_t)idx[i * 10 + t];
                    CHECK(same_bits(sc[i * 10 + t], all[i * N + id]));
                    /* everything outside is worse, or equal with a higher index */
                    size_t better = 0;
                    for (size_t r = 0; r < N; r++) {
                        float a = sgn * all[i * N + r], b = sgn * all[i * N + id];
                        better += a > b || (a == b && r < id);
                    }
                    CHECK(better == t);
                }
            }
            if (metric == TL_METRIC_L2) CHECK(idx[0] == 41 && idx[1] == 251 && sc[0] == 0.0f && sc[1] == 0.0f);
            /* masks: none, one, all */
            o.allow_mask = mask;
            o.mask_stride = 1;
            memset(mask, 0, N);
            CHECK(tl_score_topk_batch(&s, &qm, &cm, NULL, &o, K, idx, sc, 10, &cnt) == TL_K_OK && cnt == 0);
            mask[123] = 1;
            CHECK(tl_score_topk_batch(&s, &qm, &cm, NULL, &o, K, idx, sc, 10, &cnt) == TL_K_OK && cnt == 1);
            CHECK(idx[0] == 123 && idx[10] == 123 && same_bits(sc[0], all[123]) && same_bits(sc[10], all[N + 123]));
            float part[2 * N];
            CHECK(tl_score_batch(&s, &qm, &cm, NULL, &o, part, N * 4, 4) == TL_K_OK);
            CHECK(same_bits(part[0], all[123]) && same_bits(part[N], all[N + 123]));
            memset(mask, 1, N);
            int64_t idx2[2 * 10];
            float sc2[2 * 10];
            CHECK(tl_score_topk_batch(&s, &qm, &cm, NULL, &o, K, idx2, sc2, 10, &cnt) == TL_K_OK && cnt == K);
            o.allow_mask = NULL;
            CHECK(tl_score_topk_batch(&s, &qm, &cm, NULL, &o, K, idx, sc, 10, &cnt) == TL_K_OK && cnt == K);
            for (size_t t = 0; t < K; t++) CHECK(idx[t] == idx2[t] && same_bits(sc[t], sc2[t]));
            /* a sparse mask (every 37th row, plus a run) against the same ids */
            int64_t ids[N];
            size_t nid = 0;
            for (size_t r = 0; r < N; r++) {
                mask[r] = r % 37 == 5 || (r >= 200 && r < 212);
                if (mask[r]) ids[nid++] = (int64_t)r;
            }
            o.allow_mask = mask;
            CHECK(tl_score_batch(&s, &qm, &cm, NULL, &o, part, N * 4, 4) == TL_K_OK);
            for (size_t i = 0; i < 2; i++)
                for (size_t j = 0; j < nid; j++) CHECK(same_bits(part[i * N + j], all[i * N + (size_t)ids[j]]));
            o.mask_stride = 0; /* stride 0: mask[0] (0) for every row */
            CHECK(tl_score_topk_batch(&s, &qm, &cm, NULL, &o, K, idx, sc, 10, &cnt) == TL_K_OK && cnt == 0);
            o.mask_stride = 1;
            o.allow_mask = NULL;
            o.allow_ids = ids;
            o.n_allow = nid;
            CHECK(tl_score_topk_batch(&s, &qm, &cm, NULL, &o, K, idx, sc, 10, &cnt) == TL_K_OK && cnt == K);
            for (size_t t = 0; t < K; t++) CHECK(mask[idx[t]]);
        }
        /* mask counts: bytes of any nonzero value, every length around a word */
        for (size_t len = 0; len < 40; len++) {
            uint8_t mb[40];
            size_t want = 0;
            for (size_t i = 0; i < len; i++) {
                mb[i] = (uint8_t)(rnd() % 3 == 0 ? 0 : (rnd() % 255) + 1);
                want += mb[i] != 0;
            }
            CHECK(tl_allow_mask_count(mb, 1, len) == want);
            CHECK(tl_allow_mask_count(mb, 0, len) == (len && mb[0] ? len : 0));
        }
        int64_t bad[4] = {3, 9, 300, 1}, dupe[4] = {8, 2, 5, 2}, neg[2] = {0, -1};
        size_t pos = 99;
        int dup = -1;
        CHECK(tl_allow_check(&s, bad, 4, N, &pos, &dup) == TL_K_EINVAL && pos == 2 && dup == 0);
        CHECK(tl_allow_check(&s, dupe, 4, N, &pos, &dup) == TL_K_EINVAL && pos == 3 && dup == 1);
        CHECK(tl_allow_check(&s, neg, 2, N, &pos, &dup) == TL_K_EINVAL && pos == 1 && dup == 0);
        CHECK(tl_allow_check(&s, dupe, 3, N, &pos, &dup) == TL_K_OK);
        tl_score_opts o = {TL_METRIC_DOT, 0, dupe, 4, NULL, 0};
        float out[2 * N];
        CHECK(tl_score_batch(&s, &qm, &cm, NULL, &o, out, N * 4, 4) == TL_K_EINVAL);
        o.allow_mask = mask; /* both filters */
        o.n_allow = 3;
        CHECK(tl_score_batch(&s, &qm, &cm, NULL, &o, out, N * 4, 4) == TL_K_EINVAL);
        tl_scratch_end(&s);
        tl_kernels_set_isa((tl_isa)prev);
    }
}

int main(void) {
    RUN(test_batch_equals_single);
    RUN(test_stream_equals_interleaved);
    RUN(test_half_precision_rows);
    RUN(test_given_norms);
    RUN(test_given_norms_range_edges);
    RUN(test_empty_and_large_k);
    RUN(test_avx512_matches_avx2);
    RUN(test_bf16_dot_instruction);
    RUN(test_ext_choice);
    RUN(test_metrics_against_float64);
    RUN(test_topk_metrics_and_filters);
    tl_thread_arena_release_current();
    TEST_MAIN_END();
}
