/* kernels.c: what the kernels share: element types and their conversion, and
 * the run-time choice of instruction set (docs/kernels.md). */
#include <math.h>
#include <stdatomic.h>

#include "kernels_internal.h"

size_t tl_dtype_size(tl_dtype t) {
    switch (t) {
    case TL_I8: case TL_U8: return 1;
    case TL_F16: case TL_BF16: case TL_I16: case TL_U16: return 2;
    case TL_F32: case TL_I32: case TL_U32: return 4;
    case TL_F64: case TL_I64: case TL_U64: return 8;
    }
    return 0;
}

/* ---- interruption ---------------------------------------------------------------- */

_Thread_local tl_kernel_poll_fn tl_k_poll_fn;
_Thread_local void *tl_k_poll_ctx;

void tl_kernels_set_poll(tl_kernel_poll_fn fn, void *ctx) {
    tl_k_poll_fn = fn;
    tl_k_poll_ctx = ctx;
}

/* ---- instruction set ----------------------------------------------------------- */

static _Atomic int g_isa = -1; /* -1: not chosen yet */

tl_isa tl_kernels_best_isa(void) {
#if TL_HAVE_X86
    __builtin_cpu_init();
    /* libgcc also checks that the OS saves the wider registers (XCR0). */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return TL_ISA_AVX512;
    /* F16C comes with every AVX2 CPU (Haswell, Zen); checked all the same. */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return TL_ISA_AVX2;
#endif
    return TL_ISA_PORTABLE;
}

/* The choice held in *slot (-1: not made yet), made by best() on first use.
 * One relaxed load after the first call; a race on the first call stores the
 * same value twice. */
static inline int tl_chosen(_Atomic int *slot, int (*best)(void)) {
    int v = atomic_load_explicit(slot, memory_order_relaxed);
    if (TL_UNLIKELY(v < 0)) {
        v = best();
        atomic_store_explicit(slot, v, memory_order_relaxed);
    }
    return v;
}

static int tl_best_isa_int(void) { return (int)tl_kernels_best_isa(); }

tl_isa tl_kernels_isa(void) { return (tl_isa)tl_chosen(&g_isa, tl_best_isa_int); }

int tl_kernels_set_isa(tl_isa isa) {
    if ((int)isa < 0 || isa > tl_kernels_best_isa()) return -1;
    int prev = (int)tl_kernels_isa();
    atomic_store_explicit(&g_isa, (int)isa, memory_order_relaxed);
    return prev;
}

/* ---- optional extensions --------------------------------------------------------- */

static _Atomic int g_ext = -1; /* -1: not chosen yet */

unsigned tl_kernels_best_ext(void) {
    unsigned e = 0;
#if TL_HAVE_X86
    __builtin_cpu_init();
    if (tl_kernels_best_isa() == TL_ISA_AVX512 && __builtin_cpu_supports("avx512vnni")) e |= TL_EXT_AVX512_VNNI;
    if (tl_kernels_best_isa() >= TL_ISA_AVX2 && __builtin_cpu_supports("avxvnni")) e |= TL_EXT_AVX_VNNI;
    if (tl_kernels_best_isa() == TL_ISA_AVX512 && __builtin_cpu_supports("avx512bf16")) e |= TL_EXT_AVX512_BF16;
#endif
    return e;
}

static int tl_best_ext_int(void) { return (int)tl_kernels_best_ext(); }

unsigned tl_kernels_ext(void) { return (unsigned)tl_chosen(&g_ext, tl_best_ext_int); }

int tl_kernels_set_ext(unsigned ext) {
    if (ext & ~tl_kernels_best_ext()) return -1;
    int prev = (int)tl_kernels_ext();
    atomic_store_explicit(&g_ext, (int)ext, memory_order_relaxed);
    return prev;
}

/* ---- conversion ---------------------------------------------------------------- */

float tl_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        float f = (float)man * 5.9604644775390625e-8f; /* subnormal or zero: man * 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (man << 13); /* inf or NaN */
    else
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Loads go through memcpy so that unaligned strides are well defined; the
 * compiler turns each into a plain load. */
#define TL_CONVERT_LOOP(CTYPE, DST_T)                                       \
    for (size_t i = 0; i < n; i++) {                                        \
        CTYPE v;                                                            \
        memcpy(&v, p + (ptrdiff_t)i * stride, sizeof v);                    \
        dst[i] = (DST_T)v;                                                  \
    }                                                                       \
    break

void tl_convert_f32(const void *src, tl_dtype t, ptrdiff_t stride, size_t n, float *dst) {
    const char *p = (const char *)src;
    if (t == TL_F32 && stride == (ptrdiff_t)sizeof(float)) { /* a contiguous float32 query: a copy */
        memcpy(dst, p, n * sizeof(float)); /* the element loop below: 28% of a call over 16 rows, d = 768 */
        return;
    }
    switch (t) {
    case TL_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, p + (ptrdiff_t)i * stride, sizeof v);
            dst[i] = tl_half_to_float(v);
        }
        break;
    case TL_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, p + (ptrdiff_t)i * stride, sizeof v);
            dst[i] = tl_bf16_to_float(v);
        }
        break;
    case TL_F32: TL_CONVERT_LOOP(float, float);
    case TL_F64: TL_CONVERT_LOOP(double, float);
    case TL_I8: TL_CONVERT_LOOP(int8_t, float);
    case TL_I16: TL_CONVERT_LOOP(int16_t, float);
    case TL_I32: TL_CONVERT_LOOP(int32_t, float);
    case TL_I64: TL_CONVERT_LOOP(int64_t, float);
    case TL_U8: TL_CONVERT_LOOP(uint8_t, float);
    case TL_U16: TL_CONVERT_LOOP(uint16_t, float);
    case TL_U32: TL_CONVERT_LOOP(uint32_t, float);
    case TL_U64: TL_CONVERT_LOOP(uint64_t, float);
    }
}

void tl_convert_f64(const void *src, tl_dtype t, ptrdiff_t stride, size_t n, double *dst) {
    const char *p = (const char *)src;
    switch (t) {
    case TL_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, p + (ptrdiff_t)i * stride, sizeof v);
            dst[i] = (double)tl_half_to_float(v);
        }
        break;
    case TL_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, p + (ptrdiff_t)i * stride, sizeof v);
            dst[i] = (double)tl_bf16_to_float(v);
        }
        break;
    case TL_F32: TL_CONVERT_LOOP(float, double);
    case TL_F64: TL_CONVERT_LOOP(double, double);
    case TL_I8: TL_CONVERT_LOOP(int8_t, double);
    case TL_I16: TL_CONVERT_LOOP(int16_t, double);
    case TL_I32: TL_CONVERT_LOOP(int32_t, double);
    case TL_I64: TL_CONVERT_LOOP(int64_t, double);
    case TL_U8: TL_CONVERT_LOOP(uint8_t, double);
    case TL_U16: TL_CONVERT_LOOP(uint16_t, double);
    case TL_U32: TL_CONVERT_LOOP(uint32_t, double);
    case TL_U64: TL_CONVERT_LOOP(uint64_t, double);
    }
}
