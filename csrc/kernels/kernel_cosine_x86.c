/* kernel_cosine_x86.c: the AVX2 + FMA row kernels of cosine similarity.
 *
 * The row arithmetic (the same in every kernel here, so that a row's dot
 * product and norm do not depend on which kernel computed them, nor on the
 * row's position): 8 float32 lanes, two accumulators per quantity. A masked
 * head (float32 rows sharing one misalignment, see tl_cos_plan) goes to
 * accumulator 0; then full vectors alternate 0, 1, 0, 1, ...; the masked tail
 * goes to accumulator 1; the result is hsum(acc0 + acc1). Every kernel follows
 * exactly that sequence of FMAs for each (query, row) pair, so
 *   - the fused dot+norm kernels (one row at a time, or three interleaved),
 *   - the norm-only kernel and the batched dot kernel
 * give the same bits for the same pair: the batched form equals the
 * single-query form row by row, and the streaming order equals the in-cache one.
 *
 * Elements are read in registers: float32 as is, float16 through F16C
 * (_mm256_cvtph_ps, exact), bfloat16 by a 16-bit shift (exact). A 16-bit tail
 * goes through an 8-element stack buffer (x86 has no masked 16-bit load).
 */
#include "kernels_internal.h"

#if TL_HAVE_X86
#include <immintrin.h>

#define TL_AI static inline __attribute__((always_inline))

static const int32_t tl_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

TL_TARGET_AVX2 TL_AI __m256i tl_mask8(size_t n) {
    return _mm256_loadu_si256((const __m256i *)(tl_mask_table + 8 - n));
}

TL_TARGET_AVX2 TL_AI float tl_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(s);
    s = _mm_add_ps(s, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

/* Eight elements of kind k from element j of row c, as float32. */
TL_TARGET_AVX2 TL_AI __m256 tl_ld8(const char *c, size_t j, int k) {
    if (k == TL_CK_F32) return _mm256_loadu_ps((const float *)c + j);
    __m128i h = _mm_loadu_si128((const __m128i *)(c + 2 * j));
    if (k == TL_CK_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* n < 8 elements from element j (lanes n.. are 0); msk = tl_mask8(n). */
TL_TARGET_AVX2 TL_AI __m256 tl_ld8_part(const char *c, size_t j, size_t n, __m256i msk, int k) {
    if (k == TL_CK_F32) return _mm256_maskload_ps((const float *)c + j, msk);
    uint16_t b[8] = {0};
    memcpy(b, c + 2 * j, 2 * n);
    return tl_ld8((const char *)b, 0, k);
}

/* Keeps v in a register: the compiler otherwise folds a vector used R times
 * into R FMAs as memory operands (R loads instead of one), which made the
 * batched tile load-bound (16 loads per 12 FMAs, at two loads a cycle). */
#define TL_IN_REG(v) __asm__("" : "+x"(v))

/* One step of the row arithmetic: the dot FMA, and (W: with norms) the norm
 * FMA. Without norms a row costs one FMA per 8 elements instead of two, which
 * is what lets a float16 corpus from DRAM run at memory speed on a core whose
 * FMA rate is below two per cycle (see bench/cosine_half_incache.py). */
#define TL_FMA_DN(D, N, qv, xv)                                  \
    do {                                                         \
        D = _mm256_fmadd_ps((qv), (xv), D);                      \
        if (W) N = _mm256_fmadd_ps((xv), (xv), N);               \
    } while (0)

/* Streaming 16-bit rows (PF): a software prefetch this far ahead in each row's
 * address stream. The conversion makes a 16-bit pass compute-bound enough that
 * the hardware prefetcher alone falls behind: from DRAM, 768 x 1M float16,
 * 170 -> 150 ms (bench/cosine_half_incache.py gives the in-cache rate); float32
 * passes got slower with it, so they do not prefetch. One prefetch per row per
 * 32 bytes (two per line: a load-port slot each, cheaper than a branch). */
#define TL_COS_PF_BYTES 1024

/* Dot and (W) norm of R rows (at c[0..R-1]) at once: 2R or 4R independent
 * chains; results to dot[o[i]] and (W) nrm[o[i]]. The dot chains are the same
 * FMAs in the same order with or without W: the same bits. */
TL_TARGET_AVX2 TL_AI void tl_dn_group(const float *q, const char *const *c, const size_t *o, const tl_cos_plan *p,
                                      float *dot, float *nrm, int k, int R, int W, int PF) {
    const __m256i hm = tl_mask8(p->head), tm = tl_mask8(p->rem);
    const size_t head = p->head, dm = p->dm, rem = p->rem;
    __m256 a[3][2], b[3][2];
#pragma GCC unroll 3
    for (int i = 0; i < R; i++) a[i][0] = a[i][1] = b[i][0] = b[i][1] = _mm256_setzero_ps();
    if (head) {
        __m256 qv = _mm256_maskload_ps(q, hm);
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) TL_FMA_DN(a[i][0], b[i][0], qv, tl_ld8_part(c[i], 0, head, hm, k));
    }
    size_t j = head;
    for (; j + 16 <= dm; j += 16) {
        __m256 qa = _mm256_loadu_ps(q + j), qb = _mm256_loadu_ps(q + j + 8);
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) {
            if (PF) _mm_prefetch(c[i] + 2 * j + TL_COS_PF_BYTES, _MM_HINT_T0);
            TL_FMA_DN(a[i][0], b[i][0], qa, tl_ld8(c[i], j, k));
            TL_FMA_DN(a[i][1], b[i][1], qb, tl_ld8(c[i], j + 8, k));
        }
    }
    if (j < dm) {
        __m256 qa = _mm256_loadu_ps(q + j);
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) TL_FMA_DN(a[i][0], b[i][0], qa, tl_ld8(c[i], j, k));
    }
    if (rem) {
        __m256 qv = _mm256_maskload_ps(q + dm, tm);
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) TL_FMA_DN(a[i][1], b[i][1], qv, tl_ld8_part(c[i], dm, rem, tm, k));
    }
#pragma GCC unroll 3
    for (int i = 0; i < R; i++) {
        dot[o[i]] = tl_hsum8(_mm256_add_ps(a[i][0], a[i][1]));
        if (W) nrm[o[i]] = tl_hsum8(_mm256_add_ps(b[i][0], b[i][1]));
    }
}

/* Fused dot and norm of nrows rows, in one of two orders (same bits):
 * - from cache: three adjacent rows at a time (12 chains, 8 loads per 12
 *   FMAs: both FMA pipes busy);
 * - streaming (rows from DRAM): two rows far apart, row r of each half of the
 *   block, so that the memory sees two long sequential address streams, which
 *   the hardware prefetchers follow (adjacent rows interleaved measured up to
 *   1.5x slower from DRAM), with 8 chains (one row alone, 4 chains, is
 *   latency-bound: about 8 bytes a cycle of float16, too slow for a
 *   half-precision corpus on a busy core). */
TL_TARGET_AVX2 TL_AI void tl_dn_generic(const float *q, const char *rows, ptrdiff_t rs, size_t nrows,
                                        const tl_cos_plan *p, float *dot, float *nrm, int k, int stream, int W) {
    size_t r = 0;
    if (stream) {
        const size_t h = nrows / 2;
        for (; r < h; r++) {
            const char *c[2] = {rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + h) * rs};
            const size_t o[2] = {r, r + h};
            tl_dn_group(q, c, o, p, dot, nrm, k, 2, W, k != TL_CK_F32);
        }
        r = 2 * h;
    } else {
        for (; r + 3 <= nrows; r += 3) {
            const char *c[3] = {rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + 1) * rs, rows + (ptrdiff_t)(r + 2) * rs};
            const size_t o[3] = {r, r + 1, r + 2};
            tl_dn_group(q, c, o, p, dot, nrm, k, 3, W, 0);
        }
    }
    for (; r < nrows; r++) {
        const char *c[1] = {rows + (ptrdiff_t)r * rs};
        const size_t o[1] = {r};
        tl_dn_group(q, c, o, p, dot, nrm, k, 1, W, 0);
    }
}

/* Norms only (batched form: once per row for all queries). This pass is the
 * one that brings a block from DRAM, so it reads like the streaming order of
 * tl_dn_generic: rows r and r + h of the two halves together (two sequential
 * address streams, 4 chains). Same sequence per row as tl_dn_group's b0/b1. */
TL_TARGET_AVX2 TL_AI void tl_norms_pair(const char *c0, const char *c1, const tl_cos_plan *p, float *n0, float *n1,
                                        int k, int R) {
    const __m256i hm = tl_mask8(p->head), tm = tl_mask8(p->rem);
    const size_t head = p->head, dm = p->dm, rem = p->rem;
    const char *c[2] = {c0, c1};
    float *o[2] = {n0, n1};
    __m256 a[2][2];
#pragma GCC unroll 2
    for (int i = 0; i < R; i++) a[i][0] = a[i][1] = _mm256_setzero_ps();
    if (head) {
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            __m256 x = tl_ld8_part(c[i], 0, head, hm, k);
            a[i][0] = _mm256_fmadd_ps(x, x, a[i][0]);
        }
    }
    size_t j = head;
    for (; j + 16 <= dm; j += 16) {
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            __m256 x = tl_ld8(c[i], j, k), y = tl_ld8(c[i], j + 8, k);
            a[i][0] = _mm256_fmadd_ps(x, x, a[i][0]);
            a[i][1] = _mm256_fmadd_ps(y, y, a[i][1]);
        }
    }
    if (j < dm) {
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            __m256 x = tl_ld8(c[i], j, k);
            a[i][0] = _mm256_fmadd_ps(x, x, a[i][0]);
        }
    }
    if (rem) {
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            __m256 x = tl_ld8_part(c[i], dm, rem, tm, k);
            a[i][1] = _mm256_fmadd_ps(x, x, a[i][1]);
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < R; i++) *o[i] = tl_hsum8(_mm256_add_ps(a[i][0], a[i][1]));
}

TL_TARGET_AVX2 TL_AI void tl_norms_generic(const char *rows, ptrdiff_t rs, size_t nrows, const tl_cos_plan *p,
                                           float *nrm, int k) {
    const size_t h = nrows / 2;
    for (size_t r = 0; r < h; r++)
        tl_norms_pair(rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + h) * rs, p, nrm + r, nrm + r + h, k, 2);
    if (nrows & 1)
        tl_norms_pair(rows + (ptrdiff_t)(nrows - 1) * rs, NULL, p, nrm + nrows - 1, NULL, k, 1);
}

/* Dot products of Q queries (Q <= 4, at q + i * qs floats) with R rows
 * (R <= 3, at rows + r * rs), in two passes over d with one accumulator per
 * pair each: pass 0 sums what the row arithmetic gives accumulator 0 (head and
 * the even full vectors), pass 1 accumulator 1 (the odd full vectors and the
 * tail); the pass-0 sums wait in a stack buffer. The same FMAs into the same
 * accumulator in the same order as tl_dn_group, so the same bits. Registers:
 * QR = 12 accumulators, R = 3 row vectors, 1 query vector: all 16. Per 8
 * elements Q + R = 7 loads for 12 FMAs (the FMA pipes, two a cycle, are the
 * limit; two passes keep the rows in L1 for the second). */
/* a[i][r] += q_i * x_r over the nn < 8 elements at j (masked). */
TL_TARGET_AVX2 TL_AI void tl_dots_part(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs, size_t j,
                                       size_t nn, __m256 a[4][3], int k, int Q, int R) {
    const __m256i msk = tl_mask8(nn);
    __m256 x[3];
#pragma GCC unroll 3
    for (int r = 0; r < R; r++) x[r] = tl_ld8_part(rows + r * rs, j, nn, msk, k);
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++) {
        __m256 qv = _mm256_maskload_ps(q + i * qs + j, msk);
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) a[i][r] = _mm256_fmadd_ps(qv, x[r], a[i][r]);
    }
}

/* One pass: accumulator 0 (pass 0: head, then full vectors 0, 2, 4, ...) or
 * accumulator 1 (pass 1: full vectors 1, 3, 5, ..., then tail). */
TL_TARGET_AVX2 TL_AI void tl_dots_pass(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs,
                                       const tl_cos_plan *p, __m256 a[4][3], int k, int Q, int R, int pass) {
    const size_t head = p->head, dm = p->dm, rem = p->rem;
    __m256 x[3];
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) a[i][r] = _mm256_setzero_ps();
    if (pass == 0 && head) tl_dots_part(q, qs, rows, rs, 0, head, a, k, Q, R);
    for (size_t j = head + (pass ? 8 : 0); j + 8 <= dm; j += 16) {
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) {
            x[r] = tl_ld8(rows + r * rs, j, k);
            TL_IN_REG(x[r]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < Q; i++) {
            __m256 qv = _mm256_loadu_ps(q + i * qs + j);
            TL_IN_REG(qv);
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) a[i][r] = _mm256_fmadd_ps(qv, x[r], a[i][r]);
        }
    }
    if (pass == 1 && rem) tl_dots_part(q, qs, rows, rs, dm, rem, a, k, Q, R);
}

TL_TARGET_AVX2 TL_AI void tl_dots_tile(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs,
                                       const tl_cos_plan *p, float *dot, size_t ldd, int k, int Q, int R) {
    __m256 a[4][3], a0[4][3];
    tl_dots_pass(q, qs, rows, rs, p, a, k, Q, R, 0);
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) a0[i][r] = a[i][r];
    tl_dots_pass(q, qs, rows, rs, p, a, k, Q, R, 1);
#pragma GCC unroll 4
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) dot[(size_t)i * ldd + (size_t)r] = tl_hsum8(_mm256_add_ps(a0[i][r], a[i][r]));
}

/* Q queries (1..4) against all rows, three at a time. */
TL_TARGET_AVX2 TL_AI void tl_dots_rows(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs, size_t nrows,
                                       const tl_cos_plan *p, float *dot, size_t ldd, int k, int Q) {
    size_t r = 0;
    for (; r + 3 <= nrows; r += 3) tl_dots_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, p, dot + r, ldd, k, Q, 3);
    if (nrows - r == 2) tl_dots_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, p, dot + r, ldd, k, Q, 2);
    if (nrows - r == 1) tl_dots_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, p, dot + r, ldd, k, Q, 1);
}

/* All m queries against nrows rows (a block the caller sized to stay in L2).
 * Queries go in chunks of qc (a multiple of 4) that fit L1 (about 20 KiB) next
 * to a row triple; for each chunk, row triples pass in order and meet every
 * query of the chunk, four at a time. Traffic per chunk: the block once from
 * L2, queries from L1. Without the chunks every row triple pulled all m
 * queries through L2 (m = 64, d = 768: at the limit of L2). */
TL_TARGET_AVX2 TL_AI void tl_dots_generic(const float *q, ptrdiff_t qs, size_t m, const char *rows, ptrdiff_t rs,
                                          size_t nrows, const tl_cos_plan *p, float *dot, size_t ldd, int k) {
    const size_t d = p->dm + p->rem;
    size_t qc = d ? ((size_t)20 << 10) / (d * sizeof(float)) / 4 * 4 : 4;
    if (qc < 4) qc = 4;
    for (size_t i0 = 0; i0 < m; i0 += qc) {
        const size_t i1 = m - i0 < qc ? m : i0 + qc;
        for (size_t r = 0; r < nrows; r += 3) {
            const size_t nr = nrows - r < 3 ? nrows - r : 3;
            const char *c = rows + (ptrdiff_t)r * rs;
            float *o = dot + r;
            size_t i = i0;
            for (; i + 4 <= i1; i += 4) tl_dots_rows(q + (ptrdiff_t)i * qs, qs, c, rs, nr, p, o + i * ldd, ldd, k, 4);
            if (i1 - i == 3) tl_dots_rows(q + (ptrdiff_t)i * qs, qs, c, rs, nr, p, o + i * ldd, ldd, k, 3);
            if (i1 - i == 2) tl_dots_rows(q + (ptrdiff_t)i * qs, qs, c, rs, nr, p, o + i * ldd, ldd, k, 2);
            if (i1 - i == 1) tl_dots_rows(q + (ptrdiff_t)i * qs, qs, c, rs, nr, p, o + i * ldd, ldd, k, 1);
        }
    }
}

/* One instance of each kernel per element kind. */
#define TL_COS_INSTANCE(SUF, K)                                                                          \
    TL_TARGET_AVX2 static void tl_dn_##SUF(const float *q, const char *rows, ptrdiff_t rs, size_t nrows,   \
                                           const tl_cos_plan *p, float *dot, float *nrm, int stream) {   \
        if (nrm && stream)                                                                               \
            tl_dn_generic(q, rows, rs, nrows, p, dot, nrm, K, 1, 1);                                     \
        else if (nrm)                                                                                    \
            tl_dn_generic(q, rows, rs, nrows, p, dot, nrm, K, 0, 1);                                     \
        else if (stream)                                                                                 \
            tl_dn_generic(q, rows, rs, nrows, p, dot, NULL, K, 1, 0);                                    \
        else                                                                                             \
            tl_dn_generic(q, rows, rs, nrows, p, dot, NULL, K, 0, 0);                                    \
    }                                                                                                    \
    TL_TARGET_AVX2 static void tl_norms_##SUF(const char *rows, ptrdiff_t rs, size_t nrows,              \
                                              const tl_cos_plan *p, float *nrm) {                        \
        tl_norms_generic(rows, rs, nrows, p, nrm, K);                                                    \
    }                                                                                                    \
    TL_TARGET_AVX2 static void tl_dots_##SUF(const float *q, ptrdiff_t qs, size_t m, const char *rows,    \
                                             ptrdiff_t rs, size_t nrows, const tl_cos_plan *p, float *dot, \
                                             size_t ldd) {                                               \
        tl_dots_generic(q, qs, m, rows, rs, nrows, p, dot, ldd, K);                                      \
    }

TL_COS_INSTANCE(f32, TL_CK_F32)
TL_COS_INSTANCE(f16, TL_CK_F16)
TL_COS_INSTANCE(bf16, TL_CK_BF16)

int tl_cos_ops_avx2(tl_cos_kind k, tl_cos_ops *ops) {
    switch (k) {
    case TL_CK_F32: *ops = (tl_cos_ops){tl_dn_f32, tl_norms_f32, tl_dots_f32, 8, NULL, NULL}; return 1;
    case TL_CK_F16: *ops = (tl_cos_ops){tl_dn_f16, tl_norms_f16, tl_dots_f16, 8, NULL, NULL}; return 1;
    case TL_CK_BF16: *ops = (tl_cos_ops){tl_dn_bf16, tl_norms_bf16, tl_dots_bf16, 8, NULL, NULL}; return 1;
    }
    return 0;
}

#else

int tl_cos_ops_avx2(tl_cos_kind k, tl_cos_ops *ops) {
    (void)k, (void)ops;
    return 0;
}

#endif /* TL_HAVE_X86 */

tl_cos_plan tl_cos_plan_make(size_t d, size_t mis, size_t lanes) {
    tl_cos_plan p;
    const size_t vb = 4 * lanes; /* vector bytes: 32 or 64 */
    size_t head = ((vb - (mis & (vb - 1))) & (vb - 1)) / 4;
    if (head > d) head = d;
    p.head = head;
    p.dm = head + ((d - head) & ~(lanes - 1));
    p.rem = (d - head) & (lanes - 1);
    return p;
}
