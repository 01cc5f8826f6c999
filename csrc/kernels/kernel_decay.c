/* kernel_decay.c: decay of memory strengths with age.
 *
 *   exponential: s * exp(-age / tau)       = s * 2^(age * (-log2(e) / tau))
 *   half-life:   s * 2 ** (-age / h)       = s * 2^(age * (-1 / h))
 *   power:       s * (1 + age / tau) ** (-alpha) = s * 2^(-alpha * log2(1 + age / tau))
 *
 * Float32 work runs one fused pass with a vectorised exp2 (and log2 for the
 * power model): Cephes-style polynomials, within 1e-6 relative, with AVX-512 or AVX2
 * chosen at run time; the portable path calls libm's exp2f/log2f. Float64 work
 * calls libm's exp/exp2/pow per element. Inputs that are not contiguous
 * float32 (or float64 for float64 work) are converted in blocks of
 * TL_DECAY_BLOCK elements through scratch.
 */
#include <float.h>
#include <math.h>

#include "kernels_internal.h"

#if TL_HAVE_X86
#include <immintrin.h>
#endif

#define TL_DECAY_BLOCK 1024
/* Elements between two polls for interruption (tl_kernels_set_poll): about
 * 50 us of float32 work, a multiple of TL_DECAY_BLOCK. */
#define TL_DECAY_CHUNK ((size_t)1 << 16)

/* Per-call constants of the float32 path: factor = 2^(c * age) or, for the
 * power model, 2^(nalpha * log2(1 + inv_tau * age)). */
typedef struct tl_decay32 {
    int power;
    float c;       /* exponential models: exponent per second of age, ... */
    float c_lo;    /* ... plus the part of it that float32 c cannot hold */
    float inv_tau; /* power model */
    float nalpha;  /* power model: -alpha */
} tl_decay32;

typedef void (*tl_decay32_fn)(const float *s, const float *a, float *out, size_t n,
                              const tl_decay32 *k);

/* Cephes exp2f on [-0.5, 0.5] and logf on [sqrt(1/2)-1, sqrt(2)-1]. */
#define TL_EXP2_P0 1.535336188319500e-4f
#define TL_EXP2_P1 1.339887440266574e-3f
#define TL_EXP2_P2 9.618437357674640e-3f
#define TL_EXP2_P3 5.550332471162809e-2f
#define TL_EXP2_P4 2.402264791363012e-1f
#define TL_EXP2_P5 6.931472028550421e-1f
#define TL_LOG_P0 7.0376836292e-2f
#define TL_LOG_P1 -1.1514610310e-1f
#define TL_LOG_P2 1.1676998740e-1f
#define TL_LOG_P3 -1.2420140846e-1f
#define TL_LOG_P4 1.4249322787e-1f
#define TL_LOG_P5 -1.6668057665e-1f
#define TL_LOG_P6 2.0000714765e-1f
#define TL_LOG_P7 -2.4999993993e-1f
#define TL_LOG_P8 3.3333331174e-1f
#define TL_LOG2E_F 1.44269504088896341f

static void tl_decay32_portable(const float *s, const float *a, float *out, size_t n,
                                const tl_decay32 *k) {
    if (k->power) {
        for (size_t i = 0; i < n; i++)
            out[i] = s[i] * exp2f(k->nalpha * log2f(1.0f + a[i] * k->inv_tau));
    } else {
        for (size_t i = 0; i < n; i++) /* s times the factor in double: no subnormal factor */
            out[i] = (float)((double)s[i] * exp2((double)a[i] * ((double)k->c + (double)k->c_lo)));
    }
}

/* Power model with alpha = 0: (1 + age / tau) ** 0 = 1 for every age. */
static void tl_decay32_unit(const float *s, const float *a, float *out, size_t n,
                            const tl_decay32 *k) {
    (void)a;
    (void)k;
    for (size_t i = 0; i < n; i++) out[i] = s[i];
}

#if TL_HAVE_X86
/* ---- AVX-512 ---- */
/* s * 2^(x + xlo), |xlo| tiny: the low part carries the rounding error of x. s
 * is applied before the power of two, so a result that is a normal float is
 * one even when the factor alone would be subnormal (s = 1e30, factor 1e-40). */
TL_TARGET_AVX512 static inline __m512 tl_exp2_512(__m512 s, __m512 x, __m512 xlo) {
    /* Outside the finite range the low part is meaningless (and may be huge). */
    xlo = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(128.0f), _CMP_LT_OQ), xlo);
    /* [-300, 300]: beyond it every finite s gives 0 or inf, as the exact factor would */
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-300.0f)), _mm512_set1_ps(300.0f));
    __m512 nf = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_add_ps(_mm512_sub_ps(x, nf), xlo);
    __m512 p = _mm512_set1_ps(TL_EXP2_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TL_EXP2_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TL_EXP2_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TL_EXP2_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TL_EXP2_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(TL_EXP2_P5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(_mm512_mul_ps(s, p), nf); /* s*p * 2^nf, one rounding at the end */
}

/* log2(t) for t >= 1 (t = inf gives inf). */
TL_TARGET_AVX512 static inline __m512 tl_log2_512(__m512 t) {
    __m512i bits = _mm512_castps_si512(t);
    __m512 e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(127)));
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffff)),
                                                   _mm512_set1_epi32(0x3f800000)));
    __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    e = _mm512_mask_add_ps(e, big, e, _mm512_set1_ps(1.0f));
    __m512 x = _mm512_sub_ps(m, _mm512_set1_ps(1.0f));
    __m512 z = _mm512_mul_ps(x, x);
    __m512 y = _mm512_set1_ps(TL_LOG_P0);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P1));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P2));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P3));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P4));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P5));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P6));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P7));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(TL_LOG_P8));
    y = _mm512_mul_ps(_mm512_mul_ps(y, x), z);
    y = _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), z, y); /* ln(1+x) - x */
    __m512 ln = _mm512_add_ps(x, y);
    __m512 r = _mm512_fmadd_ps(ln, _mm512_set1_ps(TL_LOG2E_F), e);
    __mmask16 inf = _mm512_cmp_ps_mask(t, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_mov_ps(r, inf, t);
}

TL_TARGET_AVX512 static void tl_decay32_avx512(const float *s, const float *a, float *out, size_t n,
                                               const tl_decay32 *k) {
    const __m512 c = _mm512_set1_ps(k->c), c_lo = _mm512_set1_ps(k->c_lo);
    const __m512 inv_tau = _mm512_set1_ps(k->inv_tau), zero = _mm512_setzero_ps();
    const __m512 nalpha = _mm512_set1_ps(k->nalpha), one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 av = _mm512_maskz_loadu_ps(m, a + i);
        __m512 sv = _mm512_maskz_loadu_ps(m, s + i);
        __m512 x, xlo = zero;
        if (k->power) {
            x = _mm512_mul_ps(nalpha, tl_log2_512(_mm512_fmadd_ps(av, inv_tau, one)));
        } else { /* x + xlo = a * (c + c_lo), the product's rounding error kept by FMA */
            x = _mm512_mul_ps(av, c);
            xlo = _mm512_fmadd_ps(av, c_lo, _mm512_fmsub_ps(av, c, x));
            xlo = _mm512_mask_mov_ps(xlo, _mm512_cmp_ps_mask(xlo, xlo, _CMP_UNORD_Q), zero);
        }
        _mm512_mask_storeu_ps(out + i, m, tl_exp2_512(sv, x, xlo));
    }
}

/* ---- AVX2 + FMA ---- */
/* s * 2^(x + xlo); 2^k for integer k in [-378, 128] as three factors that are
 * each normal floats, applied after s (as in tl_exp2_512). */
TL_TARGET_AVX2 static inline __m256 tl_exp2_256(__m256 s, __m256 x, __m256 xlo) {
    /* Outside the finite range the low part is meaningless (and may be huge). */
    __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    xlo = _mm256_and_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(128.0f), _CMP_LT_OQ), xlo);
    /* Down to 2^-378 (three normal factors of >= 2^-126): every finite float32 s
     * (< 2^128) times 2^-378 rounds to 0, as the exact result does, so clamping
     * x there changes nothing, and a large s still gets its exact small result. */
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-378.0f)), _mm256_set1_ps(128.0f));
    __m256 nf = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_add_ps(_mm256_sub_ps(x, nf), xlo);
    __m256 p = _mm256_set1_ps(TL_EXP2_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TL_EXP2_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TL_EXP2_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TL_EXP2_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TL_EXP2_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(TL_EXP2_P5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* n = 2t + n3 with t = floor(n * 21845 / 2^16), about n / 3: for n in
     * [-378, 128], t lies in [-126, 42] and n3 in [-126, 44]. */
    __m256i ni = _mm256_cvtps_epi32(nf);
    __m256i ti = _mm256_srai_epi32(_mm256_mullo_epi32(ni, _mm256_set1_epi32(21845)), 16);
    __m256i n3 = _mm256_sub_epi32(ni, _mm256_add_epi32(ti, ti));
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ti, bias), 23));
    __m256 f3 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n3, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(s, p), f1), f1), f3);
}

TL_TARGET_AVX2 static inline __m256 tl_log2_256(__m256 t) {
    __m256i bits = _mm256_castps_si256(t);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffff)),
                                                   _mm256_set1_epi32(0x3f800000)));
    __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_add_ps(e, _mm256_and_ps(big, _mm256_set1_ps(1.0f)));
    __m256 x = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(TL_LOG_P0);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P1));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P2));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P3));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P4));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P5));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P6));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P7));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(TL_LOG_P8));
    y = _mm256_mul_ps(_mm256_mul_ps(y, x), z);
    y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, y);
    __m256 ln = _mm256_add_ps(x, y);
    __m256 r = _mm256_fmadd_ps(ln, _mm256_set1_ps(TL_LOG2E_F), e);
    __m256 inf = _mm256_cmp_ps(t, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ);
    return _mm256_blendv_ps(r, t, inf);
}

TL_TARGET_AVX2 static inline __m256 tl_decay_256(__m256 sv, __m256 av, const tl_decay32 *k) {
    __m256 x, xlo = _mm256_setzero_ps();
    if (k->power) {
        x = _mm256_mul_ps(_mm256_set1_ps(k->nalpha),
                          tl_log2_256(_mm256_fmadd_ps(av, _mm256_set1_ps(k->inv_tau), _mm256_set1_ps(1.0f))));
    } else { /* x + xlo = a * (c + c_lo), the product's rounding error kept by FMA */
        const __m256 c = _mm256_set1_ps(k->c);
        x = _mm256_mul_ps(av, c);
        xlo = _mm256_fmadd_ps(av, _mm256_set1_ps(k->c_lo), _mm256_fmsub_ps(av, c, x));
        xlo = _mm256_andnot_ps(_mm256_cmp_ps(xlo, xlo, _CMP_UNORD_Q), xlo); /* inf age: NaN -> 0 */
    }
    return tl_exp2_256(sv, x, xlo);
}

TL_TARGET_AVX2 static void tl_decay32_avx2(const float *s, const float *a, float *out, size_t n,
                                           const tl_decay32 *k) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, tl_decay_256(_mm256_loadu_ps(s + i), _mm256_loadu_ps(a + i), k));
    if (i < n) { /* tail through a padded copy: the same operations as the body */
        float sb[8] = {0}, ab[8] = {0}, ob[8];
        memcpy(sb, s + i, (n - i) * sizeof(float));
        memcpy(ab, a + i, (n - i) * sizeof(float));
        _mm256_storeu_ps(ob, tl_decay_256(_mm256_loadu_ps(sb), _mm256_loadu_ps(ab), k));
        memcpy(out + i, ob, (n - i) * sizeof(float));
    }
}
#endif /* TL_HAVE_X86 */

static tl_decay32_fn tl_decay32_pick(void) {
#if TL_HAVE_X86
    switch (tl_kernels_isa()) {
    case TL_ISA_AVX512: return tl_decay32_avx512;
    case TL_ISA_AVX2: return tl_decay32_avx2;
    case TL_ISA_PORTABLE: break;
    }
#endif
    return tl_decay32_portable;
}

/* ---- age check ------------------------------------------------------------------ */


/* Nonzero if any of n contiguous float32 ages is negative or NaN. Vectorised:
 * one compare and one OR per 16 (or 8) ages, no branch in the loop. */
typedef int (*tl_any_bad32_fn)(const float *a, size_t n);

static int tl_any_bad32_portable(const float *a, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= !(a[i] >= 0.0f);
    return bad;
}

#if TL_HAVE_X86
TL_TARGET_AVX512 static int tl_any_bad32_avx512(const float *a, size_t n) {
    const __m512 z = _mm512_setzero_ps();
    __mmask16 bad = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) bad |= _mm512_cmp_ps_mask(_mm512_loadu_ps(a + i), z, _CMP_NGE_UQ);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        bad |= _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, a + i), z, _CMP_NGE_UQ);
    }
    return bad != 0;
}

TL_TARGET_AVX2 static int tl_any_bad32_avx2(const float *a, size_t n) {
    const __m256 z = _mm256_setzero_ps();
    __m256 bad = z;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_loadu_ps(a + i), z, _CMP_NGE_UQ));
    int r = _mm256_movemask_ps(bad);
    for (; i < n; i++) r |= !(a[i] >= 0.0f);
    return r != 0;
}
#endif

static tl_any_bad32_fn tl_any_bad32_pick(void) {
#if TL_HAVE_X86
    switch (tl_kernels_isa()) {
    case TL_ISA_AVX512: return tl_any_bad32_avx512;
    case TL_ISA_AVX2: return tl_any_bad32_avx2;
    case TL_ISA_PORTABLE: break;
    }
#endif
    return tl_any_bad32_portable;
}

#define TL_CHECK_LOOP(CTYPE, BAD)                                           \
    for (size_t i = 0; i < n; i++) {                                        \
        CTYPE v;                                                            \
        memcpy(&v, p + (ptrdiff_t)i * stride, sizeof v);                    \
        if (BAD) {                                                          \
            *bad_pos = i;                                                   \
            return TL_K_EAGES;                                              \
        }                                                                   \
    }                                                                       \
    return TL_K_OK

static int tl_decay_check_chunk(const void *ages, tl_dtype dtype, ptrdiff_t stride, size_t n,
                                size_t *bad_pos) {
    const char *p = (const char *)ages;
    switch (dtype) {
    case TL_F16: TL_CHECK_LOOP(uint16_t, !(tl_half_to_float(v) >= 0.0f));
    case TL_BF16: TL_CHECK_LOOP(uint16_t, !(tl_bf16_to_float(v) >= 0.0f));
    case TL_F32:
        if (tl_is_contig(ages, stride, 4)) {
            /* Fast scan (~0.03 ns per age); the slow loop below only locates a fault. */
            if (!tl_any_bad32_pick()((const float *)ages, n)) return TL_K_OK;
        }
        TL_CHECK_LOOP(float, !(v >= 0.0f));
    case TL_F64: TL_CHECK_LOOP(double, !(v >= 0.0));
    case TL_I8: TL_CHECK_LOOP(int8_t, v < 0);
    case TL_I16: TL_CHECK_LOOP(int16_t, v < 0);
    case TL_I32: TL_CHECK_LOOP(int32_t, v < 0);
    case TL_I64:
        if (tl_is_contig(ages, stride, 8)) { /* OR of all values: the sign bit tells */
            const int64_t *a = (const int64_t *)ages;
            uint64_t acc = 0;
            for (size_t i = 0; i < n; i++) acc |= (uint64_t)a[i];
            if (!(acc >> 63)) return TL_K_OK;
        }
        TL_CHECK_LOOP(int64_t, v < 0);
    case TL_U8: case TL_U16: case TL_U32: case TL_U64: return TL_K_OK;
    }
    return TL_K_EINVAL;
}

/* In chunks, polling for interruption between them (TL_K_EINTR). */
int tl_decay_check_ages(const void *ages, tl_dtype dtype, ptrdiff_t stride, size_t n,
                        size_t *bad_pos) {
    const size_t chunk = 16 * TL_DECAY_CHUNK; /* the check is ~20x cheaper than the decay */
    for (size_t i0 = 0; i0 < n; i0 += chunk) {
        if (i0 != 0 && tl_k_interrupted()) return TL_K_EINTR;
        size_t m = n - i0 < chunk ? n - i0 : chunk;
        int rc = tl_decay_check_chunk((const char *)ages + (ptrdiff_t)i0 * stride, dtype, stride, m,
                                      bad_pos);
        if (rc != TL_K_OK) {
            if (rc == TL_K_EAGES) *bad_pos += i0;
            return rc;
        }
    }
    return TL_K_OK;
}

/* ---- the kernel ------------------------------------------------------------------ */

static double tl_decay_one64(double s, double a, const tl_decay_params *p) {
    switch (p->model) {
    case TL_DECAY_EXP: return s * exp(-a / p->scale);
    case TL_DECAY_HALF_LIFE: return s * exp2(-a / p->scale);
    case TL_DECAY_POWER: return p->alpha == 0.0 ? s : s * pow(1.0 + a / p->scale, -p->alpha);
    }
    return s;
}

/* Parameters the float32 fast path computes within its error bound. Outside:
 * a time constant whose per-second exponent is not a normal float with room
 * for its low part (tau below ~1e-30 s or above ~1e30 s: decay(age=0,
 * tau=5e-324) gave 0), a power-law tau under one second (age / tau can
 * overflow float32 although the factor is a normal float), and |alpha| above 4
 * (1 + age/tau rounded to float32 costs alpha * 2^-24 in the factor; alpha =
 * 1e39 at age 0 gave 0). Such calls take tl_decay_libm. */
static int tl_decay32_params_ok(const tl_decay_params *p) {
    if (p->model == TL_DECAY_POWER) {
        if (p->alpha == 0.0) return 1;
        double inv = 1.0 / p->scale;
        return fabs(p->alpha) <= 4.0 && inv <= 1.0 && inv >= 0x1p-100;
    }
    double c = (p->model == TL_DECAY_EXP ? 1.4426950408889634 : 1.0) / p->scale;
    return c >= 0x1p-100 && c <= 0x1p+100;
}

/* The float64 formula per element (libm), stored as float64, or rounded once to
 * float32: the whole of float64 output, and the slow path of float32 output
 * (about 20x the fast path's time per element). */
TL_NOINLINE static int tl_decay_libm(tl_scratch *s, const void *sv, tl_dtype s_dtype,
                                     ptrdiff_t s_stride, const void *av, tl_dtype a_dtype,
                                     ptrdiff_t a_stride, void *out, tl_dtype out_dtype,
                                     ptrdiff_t out_stride, size_t n, const tl_decay_params *p) {
    double *buf = tl_scratch_alloc(s, 2 * TL_DECAY_BLOCK * sizeof(double), TL_DEFAULT_ALIGN);
    if (!buf) return TL_K_ENOMEM;
    for (size_t i0 = 0; i0 < n; i0 += TL_DECAY_BLOCK) {
        if (i0 % (TL_DECAY_CHUNK / 8) == 0 && i0 != 0 && tl_k_interrupted()) return TL_K_EINTR;
        size_t m = n - i0 < TL_DECAY_BLOCK ? n - i0 : TL_DECAY_BLOCK;
        tl_convert_f64((const char *)sv + (ptrdiff_t)i0 * s_stride, s_dtype, s_stride, m, buf);
        tl_convert_f64((const char *)av + (ptrdiff_t)i0 * a_stride, a_dtype, a_stride, m,
                       buf + TL_DECAY_BLOCK);
        for (size_t i = 0; i < m; i++) {
            double r = tl_decay_one64(buf[i], buf[TL_DECAY_BLOCK + i], p);
            char *dst = (char *)out + (ptrdiff_t)(i0 + i) * out_stride;
            if (out_dtype == TL_F64) {
                memcpy(dst, &r, sizeof r);
            } else {
                float f = (float)r;
                memcpy(dst, &f, sizeof f);
            }
        }
    }
    return TL_K_OK;
}

int tl_decay(tl_scratch *s, const void *strengths, tl_dtype s_dtype, ptrdiff_t s_stride,
             const void *ages, tl_dtype a_dtype, ptrdiff_t a_stride, void *out,
             tl_dtype out_dtype, ptrdiff_t out_stride, size_t n, const tl_decay_params *p) {
    tl_scratch_set_kernel(s, TL_SCRATCH_DECAY);
    if (!tl_dtype_is_float(s_dtype) || tl_dtype_size(a_dtype) == 0 ||
        (out_dtype != TL_F32 && out_dtype != TL_F64) || !(p->scale > 0.0) ||
        p->scale == INFINITY || (int)p->model < 0 || p->model > TL_DECAY_POWER)
        return TL_K_EINVAL;
    if (n == 0) return TL_K_OK;
    if (out_dtype == TL_F64 || !tl_decay32_params_ok(p))
        return tl_decay_libm(s, strengths, s_dtype, s_stride, ages, a_dtype, a_stride, out,
                             out_dtype, out_stride, n, p);
    tl_decay32 k;
    memset(&k, 0, sizeof k);
    tl_decay32_fn fn = tl_decay32_pick();
    if (p->model == TL_DECAY_POWER && p->alpha == 0.0) {
        fn = tl_decay32_unit; /* factor 1, even for an infinite age */
    } else if (p->model == TL_DECAY_POWER) {
        k.power = 1;
        k.inv_tau = (float)(1.0 / p->scale);
        k.nalpha = (float)-p->alpha;
        /* A tau beyond float range must still send an infinite age to 0, not NaN. */
        if (k.inv_tau == 0.0f) k.inv_tau = FLT_TRUE_MIN;
    } else {
        double c = p->model == TL_DECAY_EXP ? -1.4426950408889634 / p->scale : -1.0 / p->scale;
        k.c = (float)c;
        k.c_lo = (float)(c - (double)k.c);
        if (k.c == 0.0f) k.c = -FLT_TRUE_MIN, k.c_lo = 0.0f;
    }
    /* Fast path: everything contiguous float32, one fused pass, no scratch. */
    if (s_dtype == TL_F32 && a_dtype == TL_F32 && tl_is_contig(strengths, s_stride, 4) &&
        tl_is_contig(ages, a_stride, 4) && tl_is_contig(out, out_stride, 4)) {
        /* In chunks of TL_DECAY_CHUNK (a multiple of every vector width, so the
         * results are those of one pass), polling for interruption between them. */
        for (size_t i0 = 0; i0 < n; i0 += TL_DECAY_CHUNK) {
            if (i0 != 0 && tl_k_interrupted()) return TL_K_EINTR;
            size_t m = n - i0 < TL_DECAY_CHUNK ? n - i0 : TL_DECAY_CHUNK;
            fn((const float *)strengths + i0, (const float *)ages + i0, (float *)out + i0, m, &k);
        }
        return TL_K_OK;
    }
    /* Blocks: convert what is not contiguous float32 into scratch. */
    float *buf = tl_scratch_alloc(s, 3 * TL_DECAY_BLOCK * sizeof(float), TL_DEFAULT_ALIGN);
    if (!buf) return TL_K_ENOMEM;
    float *sb = buf, *ab = buf + TL_DECAY_BLOCK, *ob = buf + 2 * TL_DECAY_BLOCK;
    const int s_direct = s_dtype == TL_F32 && tl_is_contig(strengths, s_stride, 4);
    const int a_direct = a_dtype == TL_F32 && tl_is_contig(ages, a_stride, 4);
    const int o_direct = tl_is_contig(out, out_stride, 4);
    for (size_t i0 = 0; i0 < n; i0 += TL_DECAY_BLOCK) {
        if (i0 % TL_DECAY_CHUNK == 0 && i0 != 0 && tl_k_interrupted()) return TL_K_EINTR;
        size_t m = n - i0 < TL_DECAY_BLOCK ? n - i0 : TL_DECAY_BLOCK;
        const float *sp = s_direct ? (const float *)strengths + i0 : sb;
        const float *ap = a_direct ? (const float *)ages + i0 : ab;
        float *op = o_direct ? (float *)out + i0 : ob;
        if (!s_direct)
            tl_convert_f32((const char *)strengths + (ptrdiff_t)i0 * s_stride, s_dtype, s_stride, m, sb);
        if (!a_direct)
            tl_convert_f32((const char *)ages + (ptrdiff_t)i0 * a_stride, a_dtype, a_stride, m, ab);
        fn(sp, ap, op, m, &k);
        if (!o_direct)
            for (size_t i = 0; i < m; i++)
                memcpy((char *)out + (ptrdiff_t)(i0 + i) * out_stride, &ob[i], sizeof(float));
    }
    return TL_K_OK;
}
