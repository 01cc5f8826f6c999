/* kernels_internal.h: helpers shared by the kernel files (not installed).
 *
 * Element conversion (strided, any tl_dtype, to float32 or float64), the
 * instruction-set target attributes, and the bounded top-k heap.
 */
#ifndef TLALLOC_KERNELS_INTERNAL_H
#define TLALLOC_KERNELS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "tlalloc/kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define TL_HAVE_X86 1
#define TL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
/* AVX512F with BW (masked 16-bit loads), VL and DQ: every AVX-512 CPU since
 * Skylake-SP and Zen 4 (tl_kernels_best_isa requires them). */
#define TL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#else
#define TL_HAVE_X86 0
#endif

/* Rows or elements per block when converting through scratch: keeps a block
 * within L1/L2 while amortising the per-block overhead. */
#define TL_BLOCK_BYTES ((size_t)64 << 10)

/* Convert n strided elements to contiguous float32 / float64 (exact for every
 * float16 and float32; integers and float64 round to nearest). */
void tl_convert_f32(const void *src, tl_dtype t, ptrdiff_t stride, size_t n, float *dst);
void tl_convert_f64(const void *src, tl_dtype t, ptrdiff_t stride, size_t n, double *dst);
float tl_half_to_float(uint16_t h);
static inline float tl_bf16_to_float(uint16_t h) { /* exact: bfloat16 is float32's top half */
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* The calling thread's poll function (tl_kernels_set_poll): nonzero if the
 * call should stop now with TL_K_EINTR. Called between chunks of work. */
extern _Thread_local tl_kernel_poll_fn tl_k_poll_fn;
extern _Thread_local void *tl_k_poll_ctx;
static inline int tl_k_interrupted(void) {
    return TL_UNLIKELY(tl_k_poll_fn != NULL) && tl_k_poll_fn(tl_k_poll_ctx) != 0;
}

static inline int tl_dtype_is_float(tl_dtype t) {
    return t == TL_F16 || t == TL_F32 || t == TL_F64 || t == TL_BF16;
}

/* Nonzero if `p` can be read as contiguous elements of `size` bytes in place. */
static inline int tl_is_contig(const void *p, ptrdiff_t stride, size_t size) {
    return stride == (ptrdiff_t)size && ((uintptr_t)p % size) == 0;
}

/* ---- cosine row kernels (kernel_cosine_x86.c, kernel_cosine_avx512.c) -----------
 * How a row of d float32 lanes is cut into vectors of `lanes` (8 or 16)
 * elements: a masked head of `head` elements up to the next 4 * lanes-byte
 * boundary (rows that share one misalignment `mis`, their address modulo 64),
 * full vectors up to dm, then a masked tail of rem elements. */
typedef struct tl_cos_plan {
    size_t head, dm, rem;
} tl_cos_plan;
tl_cos_plan tl_cos_plan_make(size_t d, size_t mis, size_t lanes);

/* Element kinds the vector kernels read in registers. */
typedef enum tl_cos_kind { TL_CK_F32 = 0, TL_CK_F16 = 1, TL_CK_BF16 = 2 } tl_cos_kind;

/* One instruction set's kernels for one element kind. q: float32 queries.
 * dotnorm: dot[r] = q . row_r and nrm[r] = row_r . row_r (stream: the order
 * for rows coming from DRAM; else several adjacent rows interleaved); nrm NULL: dots only
 * (given norms), the same dot bits. norms: nrm[r] only.
 * dots: dot[i * ldd + r] = q_i . row_r for m queries at q + i * qs floats. For
 * one (query, row) pair all three give the same bits. */
typedef struct tl_cos_ops {
    void (*dotnorm)(const float *q, const char *rows, ptrdiff_t rs, size_t nrows, const tl_cos_plan *p,
                    float *dot, float *nrm, int stream);
    void (*norms)(const char *rows, ptrdiff_t rs, size_t nrows, const tl_cos_plan *p, float *nrm);
    void (*dots)(const float *q, ptrdiff_t qs, size_t m, const char *rows, ptrdiff_t rs, size_t nrows,
                 const tl_cos_plan *p, float *dot, size_t ldd);
    size_t lanes; /* the plan these kernels read (tl_cos_plan_make) */
    /* NULL: the kernels read each query as its d float32. Else they read it
     * as query(q, plan, dst) lays it out in dst (up to d + 62 floats). */
    void (*query)(const float *q, const tl_cos_plan *p, float *dst);
    /* NULL: tl_cos_plan_make(d, mis, lanes). Else the kernels' own plan for
     * rows at mis bytes past a 64-byte boundary. */
    tl_cos_plan (*plan)(size_t d, size_t mis);
} tl_cos_ops;
/* Fill *ops and return 1 where the build has AVX2 (AVX-512) kernels (x86), else 0. */
int tl_cos_ops_avx2(tl_cos_kind k, tl_cos_ops *ops);
int tl_cos_ops_avx512(tl_cos_kind k, tl_cos_ops *ops);

/* ---- bounded top-k heap ---------------------------------------------------------
 * Keeps the k best (value, index) pairs seen so far. "Better" means a larger
 * value, or the same value and a lower index; NaN is worse than any number. The
 * root is the worst kept pair, so a new pair costs one comparison when it does
 * not qualify and O(log k) when it does. */
typedef struct tl_topk_item {
    float val;
    int64_t idx;
} tl_topk_item;

static inline int tl_topk_better(float av, int64_t ai, float bv, int64_t bi) {
    if (av != av) return bv != bv && ai < bi;
    if (bv != bv) return 1;
    return av > bv || (av == bv && ai < bi);
}

static inline void tl_topk_sift_down(tl_topk_item *h, size_t size, size_t i) {
    tl_topk_item x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= size) break;
        /* pick the worse child */
        if (c + 1 < size && tl_topk_better(h[c].val, h[c].idx, h[c + 1].val, h[c + 1].idx)) c++;
        if (!tl_topk_better(x.val, x.idx, h[c].val, h[c].idx)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static inline void tl_topk_push(tl_topk_item *h, size_t *size, size_t k, float val, int64_t idx) {
    if (*size < k) {
        size_t i = (*size)++;
        while (i > 0) { /* sift up while the parent is better than the new pair */
            size_t p = (i - 1) / 2;
            if (!tl_topk_better(h[p].val, h[p].idx, val, idx)) break;
            h[i] = h[p];
            i = p;
        }
        h[i].val = val;
        h[i].idx = idx;
    } else if (k > 0 && tl_topk_better(val, idx, h[0].val, h[0].idx)) {
        h[0].val = val;
        h[0].idx = idx;
        tl_topk_sift_down(h, *size, 0);
    }
}

/* Once the heap is full, a value below its root can never enter: callers that
 * scan many values test this first (one compare, well predicted; NaN fails it,
 * and NaN never enters a full heap). */
static inline int tl_topk_may_enter(const tl_topk_item *h, size_t size, size_t k, float val) {
    return size < k || val >= h[0].val;
}

/* Sort the heap in place, best first (heap sort: pop the worst to the end). */
static inline void tl_topk_finish(tl_topk_item *h, size_t size) {
    for (size_t m = size; m > 1; m--) {
        tl_topk_item t = h[0];
        h[0] = h[m - 1];
        h[m - 1] = t;
        tl_topk_sift_down(h, m - 1, 0);
    }
}

#endif
