/* kernel_int8.c: int8 corpora: per-row symmetric quantization, and cosine or
 * dot scores of float queries against an int8 corpus with exact int32 sums.
 *
 * Scheme (per row, symmetric, absmax: no calibration data, and the scales
 * cancel in a cosine): scale = max|x| / 127, q_j = round(x_j / scale) (to nearest, ties to even),
 * in [-127, 127]; a row of zeros has scale 0. The value it stands for is
 * q_j * scale. Each row also keeps sum_j q_j and sum_j q_j^2 (int32), so that
 * a score needs no second pass over the row.
 *
 * A query is quantized the same way on every call. Then for each row the dot
 * product of the two int8 vectors is summed exactly in int32, and
 *   dot    = idot * qscale * scale_r,
 *   cosine = idot / sqrt(sum q^2 * sumsq_r)   (the scales cancel),
 * computed in float64 and rounded once to float32. Both are the exact score of
 * the dequantized vectors, rounded once: the only error is the quantization.
 *
 * The integer dot products (one kernel per ISA; all give the same integers):
 *   - AVX512_VNNI: vpdpbusd on zmm, 64 bytes per instruction. It multiplies
 *     unsigned by signed bytes, so the query goes in biased, q + 128 in
 *     [1, 255], and 128 * sum_j c_j (the row sum, kept at quantization) is
 *     taken off afterwards: sum (q + 128) c - 128 sum c = sum q c;
 *   - AVX-VNNI: the same on ymm (32 bytes); the tail (d % 32) in scalar code;
 *   - AVX2: vpmaddubsw on |c| (unsigned, up to 128) and q with c's sign
 *     (vpsignb: q is never -128, so its negation fits), a pair of products at
 *     most 2 * 128 * 127 = 32512 < 2^15: no saturation; vpmaddwd widens;
 *   - portable C.
 * Bounds: d <= TL_I8_MAX_COLS = 65536 keeps every sum, biased or not, and
 * every sum of squares inside int32 (255 * 128 * 65536 < 2^31).
 */
#include <math.h>

#include "kernels_internal.h"

#if TL_HAVE_X86
#include <immintrin.h>
#endif

/* ---- quantization -------------------------------------------------------------- */

/* Quantize d doubles (finite) to dst; returns the scale, fills the sums. */
static float tl_i8_quantize_row(const double *x, size_t d, int8_t *dst, int32_t *sum, int32_t *sumsq) {
    double mx = 0.0;
    for (size_t j = 0; j < d; j++) mx = fabs(x[j]) > mx ? fabs(x[j]) : mx;
    int32_t s = 0, ss = 0;
    if (mx == 0.0) {
        memset(dst, 0, d);
    } else {
        const double inv = 127.0 / mx;
        for (size_t j = 0; j < d; j++) {
            double v = nearbyint(x[j] * inv); /* |x_j| * 127 / max <= 127 (+ rounding): clamp anyway */
            int q = v > 127.0 ? 127 : v < -127.0 ? -127 : (int)v;
            dst[j] = (int8_t)q;
            s += q;
            ss += q * q;
        }
    }
    *sum = s;
    *sumsq = ss;
    return (float)(mx / 127.0);
}

static int tl_all_finite(const double *x, size_t d) {
    int ok = 1;
    for (size_t j = 0; j < d; j++) ok &= isfinite(x[j]) != 0;
    return ok;
}

int tl_quantize_i8(tl_scratch *s, const tl_mat *src, int8_t *dst, ptrdiff_t dst_row_stride, float *scale,
                   int32_t *sum, int32_t *sumsq, size_t *bad_row) {
    tl_scratch_set_kernel(s, TL_SCRATCH_COSINE);
    const size_t n = src->rows, d = src->cols;
    if (!tl_dtype_is_float(src->dtype) || d > TL_I8_MAX_COLS) return TL_K_EINVAL;
    double *row = tl_scratch_alloc(s, d * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    if (!row) return TL_K_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((i & 1023) == 1023 && tl_k_interrupted()) return TL_K_EINTR;
        tl_convert_f64((const char *)src->data + (ptrdiff_t)i * src->row_stride, src->dtype, src->col_stride, d,
                       row);
        if (!tl_all_finite(row, d)) {
            if (bad_row) *bad_row = i;
            return TL_K_EINVAL;
        }
        scale[i] = tl_i8_quantize_row(row, d, dst + (ptrdiff_t)i * dst_row_stride, sum + i, sumsq + i);
    }
    return TL_K_OK;
}

/* ---- integer dot products ---------------------------------------------------------
 * out[r] = sum_j q_j * row_r[j] for nrows rows. q: the signed query, qb: the
 * biased one (q + 128 as unsigned), both padded with zeros to a multiple of 64
 * bytes; rsum: the rows' sums (for the biased forms). */
typedef void (*tl_i8_dots_fn)(const int8_t *q, const uint8_t *qb, size_t d, const int8_t *rows, ptrdiff_t rs,
                              size_t nrows, const int32_t *rsum, int32_t *out);

static void tl_i8_dots_portable(const int8_t *q, const uint8_t *qb, size_t d, const int8_t *rows, ptrdiff_t rs,
                                size_t nrows, const int32_t *rsum, int32_t *out) {
    (void)qb, (void)rsum;
    for (size_t r = 0; r < nrows; r++) {
        const int8_t *c = rows + (ptrdiff_t)r * rs;
        int32_t a = 0;
        for (size_t j = 0; j < d; j++) a += (int32_t)q[j] * (int32_t)c[j];
        out[r] = a;
    }
}

/* The exact dot from a biased sum: sum (q + 128) c - 128 sum c, in unsigned
 * arithmetic (wraps as the hardware sums do; the true value fits int32). */
static inline int32_t tl_i8_unbias(uint32_t biased, int32_t rsum) {
    return (int32_t)(biased - 128u * (uint32_t)rsum);
}

#if TL_HAVE_X86
#define TL_AI static inline __attribute__((always_inline))
#define TL_TARGET_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2")))
#define TL_TARGET_AVXVNNI __attribute__((target("avxvnni,avx2")))

/* Sums of four int32 vectors' lanes: out[i] = sum of v[i] (exact in any order). */
TL_TARGET_VNNI512 TL_AI void tl_i8_hsum4(const __m512i *v, uint32_t *out) {
    __m256i s[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) s[i] = _mm256_add_epi32(_mm512_castsi512_si256(v[i]), _mm512_extracti64x4_epi64(v[i], 1));
    __m256i u = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    __m128i w = _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    _mm_storeu_si128((__m128i *)out, w);
}

/* R rows at a time, two accumulators each (even and odd 64-byte steps: 2R
 * independent chains, enough to cover vpdpbusd's latency); for a contiguous
 * corpus the R adjacent rows are one sequential address stream (what the
 * prefetchers follow best). Per 64 bytes of a row: one load and one vpdpbusd;
 * the query vector is shared by the R rows. */
TL_TARGET_VNNI512 TL_AI void tl_i8_vnni512_group(const uint8_t *qb, size_t d, const int8_t *const *c,
                                                 const int32_t *rsum, int32_t *out, int R) {
    __m512i a[4], b[4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) a[i] = b[i] = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 128 <= d; j += 128) {
        __m512i q0 = _mm512_loadu_si512((const void *)(qb + j)), q1 = _mm512_loadu_si512((const void *)(qb + j + 64));
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            a[i] = _mm512_dpbusd_epi32(a[i], q0, _mm512_loadu_si512((const void *)(c[i] + j)));
            b[i] = _mm512_dpbusd_epi32(b[i], q1, _mm512_loadu_si512((const void *)(c[i] + j + 64)));
        }
    }
    if (j + 64 <= d) {
        __m512i q0 = _mm512_loadu_si512((const void *)(qb + j));
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) a[i] = _mm512_dpbusd_epi32(a[i], q0, _mm512_loadu_si512((const void *)(c[i] + j)));
        j += 64;
    }
    if (j < d) { /* masked tail: the row's lanes past d are 0, so are their products */
        const __mmask64 m = (__mmask64)((1ull << (d - j)) - 1u); /* d - j < 64 */
        __m512i q1 = _mm512_loadu_si512((const void *)(qb + j)); /* padded */
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) b[i] = _mm512_dpbusd_epi32(b[i], q1, _mm512_maskz_loadu_epi8(m, c[i] + j));
    }
    if (R == 4) {
        uint32_t t[4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) a[i] = _mm512_add_epi32(a[i], b[i]);
        tl_i8_hsum4(a, t);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) out[i] = tl_i8_unbias(t[i], rsum[i]);
        return;
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
        out[i] = tl_i8_unbias((uint32_t)_mm512_reduce_add_epi32(_mm512_add_epi32(a[i], b[i])), rsum[i]);
}

/* Cosine scores of a block from the integer sums, 8 rows per step: the same
 * correctly rounded float64 operations as tl_i8_scores' scalar loop (product,
 * sqrt, division, clamp), so the same bits. */
TL_TARGET_AVX512 static void tl_i8_cos_avx512(const int32_t *idot, const int32_t *sumsq, size_t nb, double qsq,
                                              float *score) {
    const __m512d qv = _mm512_set1_pd(qsq), one = _mm512_set1_pd(1.0), mone = _mm512_set1_pd(-1.0);
    size_t r = 0;
    for (; r + 8 <= nb; r += 8) {
        __m512d dd = _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(idot + r)));
        __m256i ssi = _mm256_loadu_si256((const __m256i *)(sumsq + r));
        __m512d v = _mm512_div_pd(dd, _mm512_sqrt_pd(_mm512_mul_pd(qv, _mm512_cvtepi32_pd(ssi))));
        __mmask8 ok = _mm256_cmpgt_epi32_mask(ssi, _mm256_setzero_si256());
        v = _mm512_maskz_mov_pd(ok, _mm512_max_pd(_mm512_min_pd(v, one), mone));
        _mm256_storeu_ps(score + r, _mm512_cvtpd_ps(v));
    }
    for (; r < nb; r++) {
        double v = sumsq[r] > 0 ? (double)idot[r] / sqrt(qsq * (double)sumsq[r]) : 0.0;
        score[r] = (float)(v > 1.0 ? 1.0 : v < -1.0 ? -1.0 : v);
    }
}

TL_TARGET_VNNI512 static void tl_i8_dots_vnni512(const int8_t *q, const uint8_t *qb, size_t d, const int8_t *rows, ptrdiff_t rs, size_t nrows,
                   const int32_t *rsum, int32_t *out) {
    (void)q;
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const int8_t *c[4] = {rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + 1) * rs, rows + (ptrdiff_t)(r + 2) * rs,
                              rows + (ptrdiff_t)(r + 3) * rs};
        tl_i8_vnni512_group(qb, d, c, rsum + r, out + r, 4);
    }
    for (; r < nrows; r++) {
        const int8_t *c[1] = {rows + (ptrdiff_t)r * rs};
        tl_i8_vnni512_group(qb, d, c, rsum + r, out + r, 1);
    }
}

TL_TARGET_AVXVNNI TL_AI int32_t tl_hsum_epi32x8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

TL_TARGET_AVXVNNI TL_AI void tl_i8_avxvnni_group(const uint8_t *qb, size_t d, const int8_t *const *c,
                                                 const int32_t *rsum, int32_t *out, int R) {
    __m256i a[4], b[4]; /* two chains per row (even and odd 32-byte steps) */
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) a[i] = b[i] = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 64 <= d; j += 64) {
        __m256i q0 = _mm256_loadu_si256((const __m256i *)(qb + j)), q1 = _mm256_loadu_si256((const __m256i *)(qb + j + 32));
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            a[i] = _mm256_dpbusd_avx_epi32(a[i], q0, _mm256_loadu_si256((const __m256i *)(c[i] + j)));
            b[i] = _mm256_dpbusd_avx_epi32(b[i], q1, _mm256_loadu_si256((const __m256i *)(c[i] + j + 32)));
        }
    }
    if (j + 32 <= d) {
        __m256i q0 = _mm256_loadu_si256((const __m256i *)(qb + j));
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
            a[i] = _mm256_dpbusd_avx_epi32(a[i], q0, _mm256_loadu_si256((const __m256i *)(c[i] + j)));
        j += 32;
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        uint32_t t = (uint32_t)tl_hsum_epi32x8(_mm256_add_epi32(a[i], b[i]));
        for (size_t jj = j; jj < d; jj++) t += (uint32_t)((int32_t)qb[jj] * (int32_t)c[i][jj]); /* tail: biased too */
        out[i] = tl_i8_unbias(t, rsum[i]);
    }
}

TL_TARGET_AVXVNNI static void tl_i8_dots_avxvnni(const int8_t *q, const uint8_t *qb, size_t d, const int8_t *rows,
                                                 ptrdiff_t rs, size_t nrows, const int32_t *rsum, int32_t *out) {
    (void)q;
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const int8_t *c[4] = {rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + 1) * rs, rows + (ptrdiff_t)(r + 2) * rs,
                              rows + (ptrdiff_t)(r + 3) * rs};
        tl_i8_avxvnni_group(qb, d, c, rsum + r, out + r, 4);
    }
    for (; r < nrows; r++) {
        const int8_t *c[1] = {rows + (ptrdiff_t)r * rs};
        tl_i8_avxvnni_group(qb, d, c, rsum + r, out + r, 1);
    }
}

/* tl_i8_cos_avx512 with 4 rows per step (AVX2: no AVX-512 on the CPU, or forced). */
TL_TARGET_AVX2 static void tl_i8_cos_avx2(const int32_t *idot, const int32_t *sumsq, size_t nb, double qsq,
                                          float *score) {
    const __m256d qv = _mm256_set1_pd(qsq), one = _mm256_set1_pd(1.0), mone = _mm256_set1_pd(-1.0);
    size_t r = 0;
    for (; r + 4 <= nb; r += 4) {
        __m256d dd = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(idot + r)));
        __m128i ssi = _mm_loadu_si128((const __m128i *)(sumsq + r));
        __m256d v = _mm256_div_pd(dd, _mm256_sqrt_pd(_mm256_mul_pd(qv, _mm256_cvtepi32_pd(ssi))));
        __m256d ok = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpgt_epi32(ssi, _mm_setzero_si128())));
        v = _mm256_and_pd(ok, _mm256_max_pd(_mm256_min_pd(v, one), mone));
        _mm_storeu_ps(score + r, _mm256_cvtpd_ps(v));
    }
    for (; r < nb; r++) {
        double v = sumsq[r] > 0 ? (double)idot[r] / sqrt(qsq * (double)sumsq[r]) : 0.0;
        score[r] = (float)(v > 1.0 ? 1.0 : v < -1.0 ? -1.0 : v);
    }
}

TL_TARGET_AVX2 TL_AI void tl_i8_avx2_group(const int8_t *q, size_t d, const int8_t *const *c, int32_t *out, int R) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) a[i] = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 32 <= d; j += 32) {
        __m256i qv = _mm256_loadu_si256((const __m256i *)(q + j));
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256i cv = _mm256_loadu_si256((const __m256i *)(c[i] + j));
            __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(cv), _mm256_sign_epi8(qv, cv));
            a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(p, ones));
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a[i]), _mm256_extracti128_si256(a[i], 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
        int32_t t = _mm_cvtsi128_si32(s);
        for (size_t jj = j; jj < d; jj++) t += (int32_t)q[jj] * (int32_t)c[i][jj];
        out[i] = t;
    }
}

TL_TARGET_AVX2 static void tl_i8_dots_avx2(const int8_t *q, const uint8_t *qb, size_t d, const int8_t *rows,
                                           ptrdiff_t rs, size_t nrows, const int32_t *rsum, int32_t *out) {
    (void)qb, (void)rsum;
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const int8_t *c[4] = {rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + 1) * rs, rows + (ptrdiff_t)(r + 2) * rs,
                              rows + (ptrdiff_t)(r + 3) * rs};
        tl_i8_avx2_group(q, d, c, out + r, 4);
    }
    for (; r < nrows; r++) {
        const int8_t *c[1] = {rows + (ptrdiff_t)r * rs};
        tl_i8_avx2_group(q, d, c, out + r, 1);
    }
}
#endif /* TL_HAVE_X86 */

static tl_i8_dots_fn tl_i8_dots_pick(void) {
#if TL_HAVE_X86
    const tl_isa isa = tl_kernels_isa();
    const unsigned ext = tl_kernels_ext();
    if (isa == TL_ISA_AVX512 && (ext & TL_EXT_AVX512_VNNI)) return tl_i8_dots_vnni512;
    if (isa >= TL_ISA_AVX2 && (ext & TL_EXT_AVX_VNNI)) return tl_i8_dots_avxvnni;
    if (isa >= TL_ISA_AVX2) return tl_i8_dots_avx2;
#endif
    return tl_i8_dots_portable;
}

/* ---- entry points -------------------------------------------------------------- */

static int tl_i8_check(const tl_i8_mat *c) {
    if (c->cols > TL_I8_MAX_COLS) return TL_K_EINVAL;
    if (c->rows && (!c->data || !c->scale || !c->sum || !c->sumsq)) return TL_K_EINVAL;
    return TL_K_OK;
}

/* Padded query buffers: q (signed) and qb (biased) of dp = d rounded up to 64. */
static size_t tl_i8_padded(size_t d) { return (d + 63) & ~(size_t)63; }

static void tl_i8_bias(const int8_t *q, size_t d, size_t dp, uint8_t *qb) {
    for (size_t j = 0; j < d; j++) qb[j] = (uint8_t)(q[j] + 128);
    memset(qb + d, 0, dp - d);
}

/* Rows per block: a block's int32 dots and scores stay in L1, and polling
 * stays well under a millisecond (256 rows of 768 bytes: ~10 us from DRAM). */
#define TL_I8_BLOCK 256

int tl_i8_dots(tl_scratch *s, const int8_t *q, size_t m, ptrdiff_t q_row_stride, const tl_i8_mat *c,
               int32_t *out, ptrdiff_t out_row_stride) {
    tl_scratch_set_kernel(s, TL_SCRATCH_COSINE);
    int rc = tl_i8_check(c);
    if (rc != TL_K_OK) return rc;
    const size_t d = c->cols, dp = tl_i8_padded(d);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < d; j++)
            if (q[(ptrdiff_t)i * q_row_stride + (ptrdiff_t)j] == -128) return TL_K_EINVAL;
    const tl_i8_dots_fn dots = tl_i8_dots_pick();
    int8_t *qs = tl_scratch_alloc(s, 2 * dp + 1, 64);
    if (!qs) return TL_K_ENOMEM;
    uint8_t *qb = (uint8_t *)qs + dp;
    for (size_t i = 0; i < m; i++) {
        memcpy(qs, q + (ptrdiff_t)i * q_row_stride, d);
        memset(qs + d, 0, dp - d);
        tl_i8_bias(qs, d, dp, qb);
        dots(qs, qb, d, c->data, c->row_stride, c->rows, c->sum, out + (ptrdiff_t)i * out_row_stride);
    }
    return TL_K_OK;
}

/* Where scores go (as in kernel_cosine.c): a strided array or per-query heaps. */
typedef struct tl_i8_sink {
    float *out;
    ptrdiff_t out_rs, out_cs;
    tl_topk_item *heaps;
    size_t *sizes;
    size_t k;
} tl_i8_sink;

static void tl_i8_emit(const tl_i8_sink *sk, size_t qi, size_t i0, const float *score, size_t nb) {
    if (sk->heaps) {
        tl_topk_item *h = sk->heaps + qi * sk->k;
        size_t *size = sk->sizes + qi;
        for (size_t r = 0; r < nb; r++)
            if (tl_topk_may_enter(h, *size, sk->k, score[r])) tl_topk_push(h, size, sk->k, score[r], (int64_t)(i0 + r));
        return;
    }
    char *o = (char *)sk->out + (ptrdiff_t)qi * sk->out_rs + (ptrdiff_t)i0 * sk->out_cs;
    for (size_t r = 0; r < nb; r++) *(float *)(o + (ptrdiff_t)r * sk->out_cs) = score[r];
}

/* Scores of one block for one query (see the top of the file). Rows with
 * sumsq 0 (zero rows) and a query of zeros score 0 (cosine); a query with a
 * non-finite element scores 0 (cosine) or NaN (dot). */
static void tl_i8_scores(const int32_t *idot, const tl_i8_mat *c, size_t i0, size_t nb, tl_i8_metric metric,
                         double qscale, double qsq, int q_finite, float *score) {
    if (metric == TL_I8_DOT) {
        if (!q_finite) {
            for (size_t r = 0; r < nb; r++) score[r] = NAN;
            return;
        }
        for (size_t r = 0; r < nb; r++) score[r] = (float)((double)idot[r] * qscale * (double)c->scale[i0 + r]);
        return;
    }
    if (!q_finite || qsq == 0.0) {
        for (size_t r = 0; r < nb; r++) score[r] = 0.0f;
        return;
    }
#if TL_HAVE_X86
    const tl_isa isa = tl_kernels_isa();
    if (isa == TL_ISA_AVX512) { /* scalar: +20% time for 1,000 x 768 rows in cache */
        tl_i8_cos_avx512(idot, c->sumsq + i0, nb, qsq, score);
        return;
    }
    if (isa == TL_ISA_AVX2) {
        tl_i8_cos_avx2(idot, c->sumsq + i0, nb, qsq, score);
        return;
    }
#endif
    for (size_t r = 0; r < nb; r++) {
        const int32_t ss = c->sumsq[i0 + r];
        double v = ss > 0 ? (double)idot[r] / sqrt(qsq * (double)ss) : 0.0;
        score[r] = (float)(v > 1.0 ? 1.0 : v < -1.0 ? -1.0 : v);
    }
}

static int tl_i8_run(tl_scratch *s, const tl_mat *Q, const tl_i8_mat *C, tl_i8_metric metric,
                     const tl_i8_sink *sk) {
    const size_t n = C->rows, d = C->cols, m = Q->rows, dp = tl_i8_padded(d);
    int8_t *qs = tl_scratch_alloc(s, 2 * m * dp + 1, 64);
    double *qf = tl_scratch_alloc(s, (d + 3 * m) * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    int32_t *idot = tl_scratch_alloc(s, TL_I8_BLOCK * sizeof(int32_t), TL_DEFAULT_ALIGN);
    float *score = tl_scratch_alloc(s, TL_I8_BLOCK * sizeof(float), TL_DEFAULT_ALIGN);
    if (!qs || !qf || !idot || !score) return TL_K_ENOMEM;
    uint8_t *qb = (uint8_t *)qs + m * dp;
    double *qscale = qf + d, *qsq = qscale + m, *qfin = qsq + m;
    for (size_t i = 0; i < m; i++) { /* quantize the queries (the corpus scheme) */
        tl_convert_f64((const char *)Q->data + (ptrdiff_t)i * Q->row_stride, Q->dtype, Q->col_stride, d, qf);
        int8_t *qi = qs + i * dp;
        int32_t qsum, qss;
        qfin[i] = tl_all_finite(qf, d);
        if (qfin[i] != 0.0) {
            qscale[i] = (double)tl_i8_quantize_row(qf, d, qi, &qsum, &qss);
            qsq[i] = (double)qss;
        } else {
            memset(qi, 0, d);
            qscale[i] = qsq[i] = 0.0;
        }
        memset(qi + d, 0, dp - d);
        tl_i8_bias(qi, d, dp, qb + i * dp);
    }
    const tl_i8_dots_fn dots = tl_i8_dots_pick();
    for (size_t i0 = 0; i0 < n; i0 += TL_I8_BLOCK) {
        if (i0 != 0 && tl_k_interrupted()) return TL_K_EINTR;
        const size_t nb = n - i0 < TL_I8_BLOCK ? n - i0 : TL_I8_BLOCK;
        const int8_t *rows = C->data + (ptrdiff_t)i0 * C->row_stride;
        for (size_t i = 0; i < m; i++) { /* the block (<= 192 KiB at d = 768) stays in L2 across queries */
            dots(qs + i * dp, qb + i * dp, d, rows, C->row_stride, nb, C->sum + i0, idot);
            tl_i8_scores(idot, C, i0, nb, metric, qscale[i], qsq[i], qfin[i] != 0.0, score);
            tl_i8_emit(sk, i, i0, score, nb);
        }
    }
    return TL_K_OK;
}

static int tl_i8_check_all(const tl_mat *Q, const tl_i8_mat *C, tl_i8_metric metric) {
    if (!tl_dtype_is_float(Q->dtype) || Q->cols != C->cols) return TL_K_EINVAL;
    if (metric != TL_I8_COSINE && metric != TL_I8_DOT) return TL_K_EINVAL;
    return tl_i8_check(C);
}

int tl_i8_score_batch(tl_scratch *s, const tl_mat *queries, const tl_i8_mat *cand, tl_i8_metric metric,
                      float *out, ptrdiff_t out_row_stride, ptrdiff_t out_col_stride) {
    tl_scratch_set_kernel(s, TL_SCRATCH_COSINE);
    int rc = tl_i8_check_all(queries, cand, metric);
    if (rc != TL_K_OK) return rc;
    if (cand->rows == 0 || queries->rows == 0) return TL_K_OK;
    tl_i8_sink sk = {out, out_row_stride, out_col_stride, NULL, NULL, 0};
    return tl_i8_run(s, queries, cand, metric, &sk);
}

int tl_i8_topk_batch(tl_scratch *s, const tl_mat *queries, const tl_i8_mat *cand, tl_i8_metric metric, size_t k,
                     int64_t *idx, float *scores, size_t *count) {
    tl_scratch_set_kernel(s, TL_SCRATCH_COSINE);
    *count = 0;
    int rc = tl_i8_check_all(queries, cand, metric);
    if (rc != TL_K_OK) return rc;
    const size_t m = queries->rows;
    if (k > cand->rows) k = cand->rows;
    if (k == 0 || m == 0) {
        *count = k;
        return TL_K_OK;
    }
    if (m > SIZE_MAX / sizeof(tl_topk_item) / k) return TL_K_ENOMEM;
    tl_i8_sink sk = {NULL, 0, 0, NULL, NULL, k};
    sk.heaps = tl_scratch_alloc(s, m * k * sizeof(tl_topk_item), TL_DEFAULT_ALIGN);
    sk.sizes = tl_scratch_alloc(s, m * sizeof(size_t), TL_DEFAULT_ALIGN);
    if (!sk.heaps || !sk.sizes) return TL_K_ENOMEM;
    memset(sk.sizes, 0, m * sizeof(size_t));
    rc = tl_i8_run(s, queries, cand, metric, &sk);
    if (rc != TL_K_OK) return rc;
    for (size_t i = 0; i < m; i++) {
        tl_topk_item *h = sk.heaps + i * k;
        tl_topk_finish(h, sk.sizes[i]);
        for (size_t t = 0; t < sk.sizes[i]; t++) {
            idx[i * k + t] = h[t].idx;
            scores[i * k + t] = h[t].val;
        }
    }
    *count = k;
    return TL_K_OK;
}
