/* kernel_cosine.c: cosine similarity of one query against n candidate rows.
 *
 * One fused pass per row computes dot(q, c) and dot(c, c) together, four rows at
 * a time (eight independent FMA chains, enough to keep two FMA pipes busy) with
 * the query reused from L1. Every row goes through exactly the same sequence of
 * operations whether it is in a group of four or in the tail, so a row's score
 * does not depend on its position: equal rows get bit-identical scores, which is
 * what makes "ties to the lower index" meaningful.
 *
 * Layouts other than contiguous float32 rows (float16, float64, any strides)
 * are converted block by block into scratch; float64 inputs switch the working
 * precision to float64.
 */
#include <math.h>

#include "kernels_internal.h"

#if TL_HAVE_X86
#include <immintrin.h>
#endif

/* dot[r] = q . row_r, nrm[r] = row_r . row_r for nrows rows at rows + r * rs.
 * `mis` is the rows' address modulo 64, the same for every row: the elements
 * before the first vector boundary are taken with a masked load, so that the
 * main loop's loads do not straddle cache lines (a split load costs twice).
 * Every row goes through the same operations, so equal rows get equal results. */
typedef void (*tl_dotnorm32_fn)(const float *q, const char *rows, ptrdiff_t rs, size_t nrows,
                                size_t d, size_t mis, float *dot, float *nrm);

/* Portable: four partial sums per quantity (independent add chains, so the
 * loop is not bound by the latency of one chain), combined in a fixed order. */
static void tl_dotnorm32_portable(const float *q, const char *rows, ptrdiff_t rs, size_t nrows,
                                  size_t d, size_t mis, float *dot, float *nrm) {
    (void)mis;
    const size_t d4 = d & ~(size_t)3;
    for (size_t r = 0; r < nrows; r++) {
        const float *c = (const float *)(rows + (ptrdiff_t)r * rs);
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f;
        for (size_t j = 0; j < d4; j += 4) {
            a0 += q[j] * c[j], b0 += c[j] * c[j];
            a1 += q[j + 1] * c[j + 1], b1 += c[j + 1] * c[j + 1];
            a2 += q[j + 2] * c[j + 2], b2 += c[j + 2] * c[j + 2];
            a3 += q[j + 3] * c[j + 3], b3 += c[j + 3] * c[j + 3];
        }
        for (size_t j = d4; j < d; j++) a0 += q[j] * c[j], b0 += c[j] * c[j];
        dot[r] = (a0 + a1) + (a2 + a3);
        nrm[r] = (b0 + b1) + (b2 + b3);
    }
}

#if TL_HAVE_X86
/* ---- AVX-512: 16 lanes, masked head and tail ---- */
#define TL_DN512_STEP(k, qv, ptr)                                        \
    do {                                                                 \
        __m512 x_ = _mm512_loadu_ps(ptr);                                \
        d##k = _mm512_fmadd_ps((qv), x_, d##k);                          \
        n##k = _mm512_fmadd_ps(x_, x_, n##k);                            \
    } while (0)
#define TL_DN512_MASKED(k, qv, ptr, msk)                                 \
    do {                                                                 \
        __m512 x_ = _mm512_maskz_loadu_ps((msk), (ptr));                 \
        d##k = _mm512_fmadd_ps((qv), x_, d##k);                          \
        n##k = _mm512_fmadd_ps(x_, x_, n##k);                            \
    } while (0)

/* Cost per group of four rows: d/16 iterations of 5 loads and 8 FMAs (eight
 * independent chains), then 8 horizontal sums. */
TL_TARGET_AVX512 static void tl_dotnorm32_avx512(const float *q, const char *rows, ptrdiff_t rs,
                                                 size_t nrows, size_t d, size_t mis, float *dot,
                                                 float *nrm) {
    size_t head = ((64 - mis) & 63) / 4;
    if (head > d) head = d;
    const __mmask16 hm = (__mmask16)((1u << head) - 1u);
    const size_t dm = head + ((d - head) & ~(size_t)15);
    const __mmask16 tm = (__mmask16)((1u << ((d - head) & 15)) - 1u);
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const float *c0 = (const float *)(rows + (ptrdiff_t)r * rs);
        const float *c1 = (const float *)((const char *)c0 + rs);
        const float *c2 = (const float *)((const char *)c1 + rs);
        const float *c3 = (const float *)((const char *)c2 + rs);
        __m512 d0 = _mm512_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
        __m512 n0 = d0, n1 = d0, n2 = d0, n3 = d0;
        if (hm) {
            __m512 qv = _mm512_maskz_loadu_ps(hm, q);
            TL_DN512_MASKED(0, qv, c0, hm);
            TL_DN512_MASKED(1, qv, c1, hm);
            TL_DN512_MASKED(2, qv, c2, hm);
            TL_DN512_MASKED(3, qv, c3, hm);
        }
        for (size_t j = head; j < dm; j += 16) {
            __m512 qv = _mm512_loadu_ps(q + j);
            TL_DN512_STEP(0, qv, c0 + j);
            TL_DN512_STEP(1, qv, c1 + j);
            TL_DN512_STEP(2, qv, c2 + j);
            TL_DN512_STEP(3, qv, c3 + j);
        }
        if (tm) {
            __m512 qv = _mm512_maskz_loadu_ps(tm, q + dm);
            TL_DN512_MASKED(0, qv, c0 + dm, tm);
            TL_DN512_MASKED(1, qv, c1 + dm, tm);
            TL_DN512_MASKED(2, qv, c2 + dm, tm);
            TL_DN512_MASKED(3, qv, c3 + dm, tm);
        }
        dot[r] = _mm512_reduce_add_ps(d0), nrm[r] = _mm512_reduce_add_ps(n0);
        dot[r + 1] = _mm512_reduce_add_ps(d1), nrm[r + 1] = _mm512_reduce_add_ps(n1);
        dot[r + 2] = _mm512_reduce_add_ps(d2), nrm[r + 2] = _mm512_reduce_add_ps(n2);
        dot[r + 3] = _mm512_reduce_add_ps(d3), nrm[r + 3] = _mm512_reduce_add_ps(n3);
    }
    for (; r < nrows; r++) { /* same operations, one row */
        const float *c0 = (const float *)(rows + (ptrdiff_t)r * rs);
        __m512 d0 = _mm512_setzero_ps(), n0 = d0;
        if (hm) {
            __m512 qv = _mm512_maskz_loadu_ps(hm, q);
            TL_DN512_MASKED(0, qv, c0, hm);
        }
        for (size_t j = head; j < dm; j += 16) {
            __m512 qv = _mm512_loadu_ps(q + j);
            TL_DN512_STEP(0, qv, c0 + j);
        }
        if (tm) {
            __m512 qv = _mm512_maskz_loadu_ps(tm, q + dm);
            TL_DN512_MASKED(0, qv, c0 + dm, tm);
        }
        dot[r] = _mm512_reduce_add_ps(d0), nrm[r] = _mm512_reduce_add_ps(n0);
    }
}

/* ---- AVX2 + FMA: 8 lanes, masked head and tail ---- */
TL_TARGET_AVX2 static inline float tl_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(s);
    s = _mm_add_ps(s, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

#define TL_DN256_STEP(k, qv, ptr)                                        \
    do {                                                                 \
        __m256 x_ = _mm256_loadu_ps(ptr);                                \
        d##k = _mm256_fmadd_ps((qv), x_, d##k);                          \
        n##k = _mm256_fmadd_ps(x_, x_, n##k);                            \
    } while (0)
#define TL_DN256_MASKED(k, qv, ptr, m)                                   \
    do {                                                                 \
        __m256 x_ = _mm256_maskload_ps((ptr), (m));                      \
        d##k = _mm256_fmadd_ps((qv), x_, d##k);                          \
        n##k = _mm256_fmadd_ps(x_, x_, n##k);                            \
    } while (0)

static const int32_t tl_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

TL_TARGET_AVX2 static void tl_dotnorm32_avx2(const float *q, const char *rows, ptrdiff_t rs,
                                             size_t nrows, size_t d, size_t mis, float *dot,
                                             float *nrm) {
    size_t head = ((32 - mis) & 31) / 4;
    if (head > d) head = d;
    const size_t dm = head + ((d - head) & ~(size_t)7);
    const size_t rem = (d - head) & 7;
    const __m256i hm = _mm256_loadu_si256((const __m256i *)(tl_mask_table + 8 - head));
    const __m256i m = _mm256_loadu_si256((const __m256i *)(tl_mask_table + 8 - rem));
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const float *c0 = (const float *)(rows + (ptrdiff_t)r * rs);
        const float *c1 = (const float *)((const char *)c0 + rs);
        const float *c2 = (const float *)((const char *)c1 + rs);
        const float *c3 = (const float *)((const char *)c2 + rs);
        __m256 d0 = _mm256_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
        __m256 n0 = d0, n1 = d0, n2 = d0, n3 = d0;
        if (head) {
            __m256 qv = _mm256_maskload_ps(q, hm);
            TL_DN256_MASKED(0, qv, c0, hm);
            TL_DN256_MASKED(1, qv, c1, hm);
            TL_DN256_MASKED(2, qv, c2, hm);
            TL_DN256_MASKED(3, qv, c3, hm);
        }
        for (size_t j = head; j < dm; j += 8) {
            __m256 qv = _mm256_loadu_ps(q + j);
            TL_DN256_STEP(0, qv, c0 + j);
            TL_DN256_STEP(1, qv, c1 + j);
            TL_DN256_STEP(2, qv, c2 + j);
            TL_DN256_STEP(3, qv, c3 + j);
        }
        if (rem) {
            __m256 qv = _mm256_maskload_ps(q + dm, m);
            TL_DN256_MASKED(0, qv, c0 + dm, m);
            TL_DN256_MASKED(1, qv, c1 + dm, m);
            TL_DN256_MASKED(2, qv, c2 + dm, m);
            TL_DN256_MASKED(3, qv, c3 + dm, m);
        }
        dot[r] = tl_hsum256(d0), nrm[r] = tl_hsum256(n0);
        dot[r + 1] = tl_hsum256(d1), nrm[r + 1] = tl_hsum256(n1);
        dot[r + 2] = tl_hsum256(d2), nrm[r + 2] = tl_hsum256(n2);
        dot[r + 3] = tl_hsum256(d3), nrm[r + 3] = tl_hsum256(n3);
    }
    for (; r < nrows; r++) {
        const float *c0 = (const float *)(rows + (ptrdiff_t)r * rs);
        __m256 d0 = _mm256_setzero_ps(), n0 = d0;
        if (head) {
            __m256 qv = _mm256_maskload_ps(q, hm);
            TL_DN256_MASKED(0, qv, c0, hm);
        }
        for (size_t j = head; j < dm; j += 8) {
            __m256 qv = _mm256_loadu_ps(q + j);
            TL_DN256_STEP(0, qv, c0 + j);
        }
        if (rem) {
            __m256 qv = _mm256_maskload_ps(q + dm, m);
            TL_DN256_MASKED(0, qv, c0 + dm, m);
        }
        dot[r] = tl_hsum256(d0), nrm[r] = tl_hsum256(n0);
    }
}
#endif /* TL_HAVE_X86 */

static tl_dotnorm32_fn tl_dotnorm32_pick(void) {
#if TL_HAVE_X86
    switch (tl_kernels_isa()) {
    case TL_ISA_AVX512: return tl_dotnorm32_avx512;
    case TL_ISA_AVX2: return tl_dotnorm32_avx2;
    case TL_ISA_PORTABLE: break;
    }
#endif
    return tl_dotnorm32_portable;
}

/* float64 working precision (any float64 input): portable, one row at a time. */
static void tl_dotnorm64(const double *q, const double *rows, size_t ld, size_t nrows, size_t d,
                         double *dot, double *nrm) {
    for (size_t r = 0; r < nrows; r++) {
        const double *c = rows + r * ld;
        double a = 0.0, b = 0.0;
        for (size_t j = 0; j < d; j++) {
            a += q[j] * c[j];
            b += c[j] * c[j];
        }
        dot[r] = a;
        nrm[r] = b;
    }
}

/* The score from a dot product and the two norms (not squared). */
static inline float tl_cos_score(double dot, double qn, double cn) {
    if (!(qn > 0.0) || !(cn > 0.0) || qn == INFINITY || cn == INFINITY) return 0.0f;
    double v = dot / qn / cn; /* two divisions: qn * cn could overflow */
    if (v > 1.0) return 1.0f;
    if (v < -1.0) return -1.0f;
    if (v != v) return 0.0f;
    return (float)v;
}

/* Scores of a block of float32 rows: score[r] = tl_cos_score(dot[r], qn,
 * sqrt(nrm[r])). sqrt and division are correctly rounded in scalar and vector
 * form alike, so the vector paths give the same bits as the scalar one; they
 * exist because one sqrt and two divisions per row, done one at a time, cost
 * about 15% of the whole kernel at d = 768. */
typedef void (*tl_scores32_fn)(const float *dot, const float *nrm, size_t nb, double qn, float *score);

static void tl_scores32_portable(const float *dot, const float *nrm, size_t nb, double qn, float *score) {
    for (size_t r = 0; r < nb; r++) score[r] = tl_cos_score((double)dot[r], qn, sqrt((double)nrm[r]));
}

#if TL_HAVE_X86
TL_TARGET_AVX512 static void tl_scores32_avx512(const float *dot, const float *nrm, size_t nb, double qn,
                                                float *score) {
    size_t r = 0;
    if (qn > 0.0 && qn != INFINITY) { /* else every score is 0: the scalar tail says so */
        const __m512d q = _mm512_set1_pd(qn), zero = _mm512_setzero_pd();
        const __m512d one = _mm512_set1_pd(1.0), mone = _mm512_set1_pd(-1.0);
        const __m512d inf = _mm512_set1_pd(INFINITY);
        for (; r + 8 <= nb; r += 8) {
            __m512d d = _mm512_cvtps_pd(_mm256_loadu_ps(dot + r));
            __m512d cn = _mm512_sqrt_pd(_mm512_cvtps_pd(_mm256_loadu_ps(nrm + r)));
            __m512d v = _mm512_div_pd(_mm512_div_pd(d, q), cn);
            __mmask8 ok = _mm512_cmp_pd_mask(cn, zero, _CMP_GT_OQ) & _mm512_cmp_pd_mask(cn, inf, _CMP_NEQ_OQ) &
                          _mm512_cmp_pd_mask(v, v, _CMP_ORD_Q);
            v = _mm512_max_pd(_mm512_min_pd(v, one), mone);
            _mm256_storeu_ps(score + r, _mm512_cvtpd_ps(_mm512_maskz_mov_pd(ok, v)));
        }
    }
    tl_scores32_portable(dot + r, nrm + r, nb - r, qn, score + r);
}

TL_TARGET_AVX2 static void tl_scores32_avx2(const float *dot, const float *nrm, size_t nb, double qn,
                                            float *score) {
    size_t r = 0;
    if (qn > 0.0 && qn != INFINITY) {
        const __m256d q = _mm256_set1_pd(qn), zero = _mm256_setzero_pd();
        const __m256d one = _mm256_set1_pd(1.0), mone = _mm256_set1_pd(-1.0);
        const __m256d inf = _mm256_set1_pd(INFINITY);
        for (; r + 4 <= nb; r += 4) {
            __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(dot + r));
            __m256d cn = _mm256_sqrt_pd(_mm256_cvtps_pd(_mm_loadu_ps(nrm + r)));
            __m256d v = _mm256_div_pd(_mm256_div_pd(d, q), cn);
            __m256d ok = _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(cn, zero, _CMP_GT_OQ),
                                                     _mm256_cmp_pd(cn, inf, _CMP_NEQ_OQ)),
                                       _mm256_cmp_pd(v, v, _CMP_ORD_Q));
            v = _mm256_max_pd(_mm256_min_pd(v, one), mone);
            _mm_storeu_ps(score + r, _mm256_cvtpd_ps(_mm256_and_pd(ok, v)));
        }
    }
    tl_scores32_portable(dot + r, nrm + r, nb - r, qn, score + r);
}
#endif

static tl_scores32_fn tl_scores32_pick(void) {
#if TL_HAVE_X86
    switch (tl_kernels_isa()) {
    case TL_ISA_AVX512: return tl_scores32_avx512;
    case TL_ISA_AVX2: return tl_scores32_avx2;
    case TL_ISA_PORTABLE: break;
    }
#endif
    return tl_scores32_portable;
}

/* Where scores go: a strided float32 array, or the top-k heap. */
typedef struct tl_cos_sink {
    float *out;
    ptrdiff_t out_stride;
    tl_topk_item *heap;
    size_t heap_size, k;
} tl_cos_sink;

static inline void tl_cos_emit(tl_cos_sink *sk, size_t i, float score) {
    if (sk->heap)
        tl_topk_push(sk->heap, &sk->heap_size, sk->k, score, (int64_t)i);
    else
        *(float *)((char *)sk->out + (ptrdiff_t)i * sk->out_stride) = score;
}

/* ---- range edges (slow path) ------------------------------------------------------
 * The fast paths accumulate squares in the working precision. For float32 that
 * fails at the ends of the range although every norm is finite and non-zero:
 * squares of 1e-30 underflow (score 0 instead of 1) and squares of 1e19
 * overflow. A row (or query) whose squared norm is outside [lo, hi] below is
 * recomputed here: in float64 for float32 data (no float32 square can under- or
 * overflow a double sum), scaled by its largest magnitude for float64 data.
 * Inside the range the fast result is already within float32 rounding: each
 * square that underflowed errs by at most 2^-150, so d of them stay below
 * 2^-24 of a norm >= d * 2^-126; and a norm <= max / 2 keeps every product and
 * partial sum finite. Cost on the fast path: two compares per row. */
static inline int tl_nrm32_ok(float nrm, float lo) { return nrm >= lo && nrm <= 0x1p+127f; }
static inline int tl_nrm64_ok(double nrm, double lo) { return nrm >= lo && nrm <= 0x1p+1023; }

/* Sum of x_j * y_j / (sx * sy) over d doubles (a scale of 1 divides nothing away). */
static double tl_dot_scaled(const double *x, double sx, const double *y, double sy, size_t d) {
    double acc = 0.0;
    for (size_t j = 0; j < d; j++) acc += (x[j] / sx) * (y[j] / sy);
    return acc;
}

static double tl_max_abs(const double *x, size_t d) {
    double m = 0.0;
    for (size_t j = 0; j < d; j++) m = fabs(x[j]) > m ? fabs(x[j]) : m;
    return m;
}

/* The score of q and c (d doubles each) without under- or overflow. */
TL_NOINLINE static float tl_cos_score_scaled(const double *q, const double *c, size_t d) {
    double qm = tl_max_abs(q, d), cm = tl_max_abs(c, d);
    if (!(qm > 0.0) || !(cm > 0.0) || qm == INFINITY || cm == INFINITY) /* NaN, 0 or inf */
        return tl_cos_score(tl_dot_scaled(q, 1.0, c, 1.0, d), sqrt(tl_dot_scaled(q, 1.0, q, 1.0, d)),
                            sqrt(tl_dot_scaled(c, 1.0, c, 1.0, d)));
    return tl_cos_score(tl_dot_scaled(q, qm, c, cm, d), sqrt(tl_dot_scaled(q, qm, q, qm, d)),
                        sqrt(tl_dot_scaled(c, cm, c, cm, d)));
}

/* Rows per block: a block of converted rows fits TL_BLOCK_BYTES (at least one
 * row), and never more than 256 rows (the dot/norm buffers). */
static size_t tl_rows_per_block(size_t d, size_t wsize, size_t n) {
    size_t row = d * wsize;
    size_t b = row ? TL_BLOCK_BYTES / row : 256;
    if (b < 1) b = 1;
    if (b > 256) b = 256;
    if (b > n) b = n ? n : 1;
    return b;
}

static int tl_cosine_run32(tl_scratch *s, const tl_vec *query, const tl_mat *cand, tl_cos_sink *sk) {
    const size_t n = cand->rows, d = cand->cols;
    tl_dotnorm32_fn fn = tl_dotnorm32_pick();
    /* Rows are read in place when they are contiguous, aligned float32. */
    const int direct = cand->dtype == TL_F32 && tl_is_contig(cand->data, cand->col_stride, 4) &&
                       (cand->row_stride % 4 == 0 || n <= 1);
    /* Rows that share one misalignment (row stride a multiple of 64 bytes) get
     * a masked head; the query copy (3 KiB for d = 768, always made) is placed
     * with the same misalignment so that its loads line up with the rows'. */
    size_t mis = 0;
    if (direct && (n <= 1 || cand->row_stride % 64 == 0)) mis = (uintptr_t)cand->data & 63;
    char *qraw = tl_scratch_alloc(s, d * sizeof(float) + 64, TL_DEFAULT_ALIGN);
    if (!qraw) return TL_K_ENOMEM;
    float *q = (float *)(qraw + mis);
    tl_convert_f32(query->data, query->dtype, query->stride, d, q);
    float qdot, qq;
    fn(q, (const char *)q, 0, 1, d, 0, &qdot, &qq);
    const double qn = sqrt((double)qq);
    const float lo = (float)d * 0x1p-100f; /* see tl_nrm32_ok */
    const int q_ok = tl_nrm32_ok(qq, lo);
    double *wide = NULL; /* q and one row in float64, for the slow path */

    const size_t B = tl_rows_per_block(d, sizeof(float), n);
    float *dot = tl_scratch_alloc(s, 3 * B * sizeof(float), TL_DEFAULT_ALIGN);
    float *blk = direct ? NULL : tl_scratch_alloc(s, B * d * sizeof(float) + 1, TL_DEFAULT_ALIGN);
    if (!dot || (!direct && !blk)) return TL_K_ENOMEM;
    float *nrm = dot + B, *score = dot + 2 * B;
    tl_scores32_fn scores = tl_scores32_pick();
    for (size_t i0 = 0; i0 < n; i0 += B) {
        if (i0 != 0 && tl_k_interrupted()) return TL_K_EINTR; /* a block: <= 64 KiB of rows */
        size_t nb = n - i0 < B ? n - i0 : B;
        const char *rows;
        ptrdiff_t rs;
        if (direct) {
            rows = (const char *)cand->data + (ptrdiff_t)i0 * cand->row_stride;
            rs = cand->row_stride;
        } else {
            for (size_t r = 0; r < nb; r++)
                tl_convert_f32((const char *)cand->data + (ptrdiff_t)(i0 + r) * cand->row_stride,
                               cand->dtype, cand->col_stride, d, blk + r * d);
            rows = (const char *)blk;
            rs = (ptrdiff_t)(d * sizeof(float));
        }
        fn(q, rows, rs, nb, d, mis, dot, nrm);
        scores(dot, nrm, nb, qn, score);
        int edge = !q_ok; /* one branch per block: the scan below vectorises */
        for (size_t r = 0; r < nb; r++) edge |= !tl_nrm32_ok(nrm[r], lo);
        for (size_t r = 0; TL_UNLIKELY(edge) && r < nb; r++) {
            if (!q_ok || !tl_nrm32_ok(nrm[r], lo)) { /* range edge: slow path */
                if (!wide) {
                    wide = tl_scratch_alloc(s, 2 * d * sizeof(double) + 1, TL_DEFAULT_ALIGN);
                    if (!wide) return TL_K_ENOMEM;
                    for (size_t j = 0; j < d; j++) wide[j] = (double)q[j];
                }
                const float *c = (const float *)(rows + (ptrdiff_t)r * rs);
                for (size_t j = 0; j < d; j++) wide[d + j] = (double)c[j];
                score[r] = tl_cos_score_scaled(wide, wide + d, d);
            }
        }
        for (size_t r = 0; r < nb; r++) tl_cos_emit(sk, i0 + r, score[r]);
    }
    return TL_K_OK;
}

static int tl_cosine_run64(tl_scratch *s, const tl_vec *query, const tl_mat *cand, tl_cos_sink *sk) {
    const size_t n = cand->rows, d = cand->cols;
    double *q = tl_scratch_alloc(s, d * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    if (!q) return TL_K_ENOMEM;
    tl_convert_f64(query->data, query->dtype, query->stride, d, q);
    double qdot, qq;
    tl_dotnorm64(q, q, 0, 1, d, &qdot, &qq);
    const double qn = sqrt(qq);
    const double lo = (double)d * 0x1p-960; /* as tl_nrm32_ok, for doubles */
    const int q_ok = tl_nrm64_ok(qq, lo);
    const size_t B = tl_rows_per_block(d, sizeof(double), n);
    double *dot = tl_scratch_alloc(s, 2 * B * sizeof(double), TL_DEFAULT_ALIGN);
    double *blk = tl_scratch_alloc(s, B * d * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    if (!dot || !blk) return TL_K_ENOMEM;
    double *nrm = dot + B;
    for (size_t i0 = 0; i0 < n; i0 += B) {
        if (i0 != 0 && tl_k_interrupted()) return TL_K_EINTR;
        size_t nb = n - i0 < B ? n - i0 : B;
        for (size_t r = 0; r < nb; r++)
            tl_convert_f64((const char *)cand->data + (ptrdiff_t)(i0 + r) * cand->row_stride,
                           cand->dtype, cand->col_stride, d, blk + r * d);
        tl_dotnorm64(q, blk, d, nb, d, dot, nrm);
        for (size_t r = 0; r < nb; r++) {
            float sc = TL_UNLIKELY(!q_ok || !tl_nrm64_ok(nrm[r], lo))
                           ? tl_cos_score_scaled(q, blk + r * d, d) /* range edge: slow path */
                           : tl_cos_score(dot[r], qn, sqrt(nrm[r]));
            tl_cos_emit(sk, i0 + r, sc);
        }
    }
    return TL_K_OK;
}

static int tl_cosine_check(const tl_vec *query, const tl_mat *cand) {
    if (!tl_dtype_is_float(query->dtype) || !tl_dtype_is_float(cand->dtype)) return TL_K_EINVAL;
    if (query->n != cand->cols) return TL_K_EINVAL;
    return TL_K_OK;
}

static int tl_cosine_dispatch(tl_scratch *s, const tl_vec *query, const tl_mat *cand,
                              tl_cos_sink *sk) {
    if (query->dtype == TL_F64 || cand->dtype == TL_F64) return tl_cosine_run64(s, query, cand, sk);
    return tl_cosine_run32(s, query, cand, sk);
}

int tl_cosine_similarity(tl_scratch *s, const tl_vec *query, const tl_mat *cand, float *out,
                         ptrdiff_t out_stride) {
    int rc = tl_cosine_check(query, cand);
    if (rc != TL_K_OK) return rc;
    if (cand->rows == 0) return TL_K_OK;
    tl_cos_sink sk = {out, out_stride, NULL, 0, 0};
    return tl_cosine_dispatch(s, query, cand, &sk);
}

int tl_cosine_topk(tl_scratch *s, const tl_vec *query, const tl_mat *cand, size_t k, int64_t *idx,
                   float *scores, size_t *count) {
    int rc = tl_cosine_check(query, cand);
    *count = 0;
    if (rc != TL_K_OK) return rc;
    if (k > cand->rows) k = cand->rows;
    if (k == 0) return TL_K_OK;
    tl_cos_sink sk = {NULL, 0, NULL, 0, k};
    sk.heap = tl_scratch_alloc(s, k * sizeof(tl_topk_item), TL_DEFAULT_ALIGN);
    if (!sk.heap) return TL_K_ENOMEM;
    rc = tl_cosine_dispatch(s, query, cand, &sk);
    if (rc != TL_K_OK) return rc;
    tl_topk_finish(sk.heap, sk.heap_size);
    for (size_t i = 0; i < sk.heap_size; i++) {
        idx[i] = sk.heap[i].idx;
        scores[i] = sk.heap[i].val;
    }
    *count = sk.heap_size;
    return TL_K_OK;
}
