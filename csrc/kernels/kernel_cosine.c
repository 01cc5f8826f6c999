/* kernel_cosine.c: cosine similarity of m queries against n candidate rows.
 *
 * Working precision float32 (float32, float16 and bfloat16 inputs) or float64
 * (any float64 input). In float32, a row's dot product and squared norm are
 * computed by one fixed sequence of operations per (query, row) pair, whatever
 * kernel runs it (see kernel_cosine_x86.c for the AVX2 one,
 * kernel_cosine_avx512.c for the AVX-512 one, below for the
 * portable one): equal rows get bit-identical scores (which makes "ties to the
 * lower index" meaningful), the batched form equals the single-query form row
 * by row, and the loop order chosen by size does not change a bit. (The
 * vdpbf16ps kernels for bfloat16 rows have their own sequence, the same in all
 * their forms; tl_cos_ops.query and .plan give their query layout and cut.)
 *
 * Memory traffic is the cost that matters from DRAM:
 *   - one query: dot and norm fused, one pass; rows read three at a time from
 *     cache, one at a time (one address stream) when the matrix is larger than
 *     the caches (tl_cos_stream_bytes);
 *   - m queries: per block of rows, the norms once, then every query against
 *     the block while it sits in L1/L2 (three rows by four queries per
 *     register tile with AVX2, four rows by six with AVX-512), so each row
 *     comes from memory once;
 *   - float16 / bfloat16 rows are widened in registers (F16C, shift), no
 *     scratch copy: half the bytes of float32.
 * Other layouts (strided columns, unaligned rows, no vector ISA for the kind)
 * are converted block by block into scratch (64 KiB of rows at a time).
 */
#include <math.h>
#include <stdatomic.h>

#include "kernels_internal.h"

#if TL_HAVE_X86
#include <immintrin.h>
#endif

/* ---- portable float32 kernels ------------------------------------------------------
 * Four partial sums per quantity (independent add chains), combined in a fixed
 * order; dot-only and norm-only are the same chains as the fused loop, so all
 * three give the same bits. Rows are contiguous float32 (other kinds are
 * converted into scratch first). */
static void tl_dots_portable(const float *q0, ptrdiff_t qs, size_t m, const char *rows, ptrdiff_t rs,
                             size_t nrows, const tl_cos_plan *p, float *dot, size_t ldd);

static void tl_dn_portable(const float *q, const char *rows, ptrdiff_t rs, size_t nrows, const tl_cos_plan *p,
                           float *dot, float *nrm, int stream) {
    (void)stream;
    if (!nrm) { /* dots only: the same chains */
        tl_dots_portable(q, 0, 1, rows, rs, nrows, p, dot, 0);
        return;
    }
    const size_t d = p->dm + p->rem, d4 = d & ~(size_t)3;
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

static void tl_norms_portable(const char *rows, ptrdiff_t rs, size_t nrows, const tl_cos_plan *p, float *nrm) {
    const size_t d = p->dm + p->rem, d4 = d & ~(size_t)3;
    for (size_t r = 0; r < nrows; r++) {
        const float *c = (const float *)(rows + (ptrdiff_t)r * rs);
        float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f;
        for (size_t j = 0; j < d4; j += 4) {
            b0 += c[j] * c[j], b1 += c[j + 1] * c[j + 1];
            b2 += c[j + 2] * c[j + 2], b3 += c[j + 3] * c[j + 3];
        }
        for (size_t j = d4; j < d; j++) b0 += c[j] * c[j];
        nrm[r] = (b0 + b1) + (b2 + b3);
    }
}

static void tl_dots_portable(const float *q0, ptrdiff_t qs, size_t m, const char *rows, ptrdiff_t rs,
                             size_t nrows, const tl_cos_plan *p, float *dot, size_t ldd) {
    const size_t d = p->dm + p->rem, d4 = d & ~(size_t)3;
    for (size_t r = 0; r < nrows; r++) {
        const float *c = (const float *)(rows + (ptrdiff_t)r * rs);
        for (size_t i = 0; i < m; i++) {
            const float *q = q0 + (ptrdiff_t)i * qs;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (size_t j = 0; j < d4; j += 4) {
                a0 += q[j] * c[j], a1 += q[j + 1] * c[j + 1];
                a2 += q[j + 2] * c[j + 2], a3 += q[j + 3] * c[j + 3];
            }
            for (size_t j = d4; j < d; j++) a0 += q[j] * c[j];
            dot[i * ldd + r] = (a0 + a1) + (a2 + a3);
        }
    }
}

/* The kernels for rows of kind k under the current ISA; 0 if rows of that
 * kind must be converted to float32 first (portable float16 / bfloat16). */
static int tl_cos_ops_pick(tl_cos_kind k, tl_cos_ops *ops) {
    const tl_isa isa = tl_kernels_isa();
    if (isa == TL_ISA_AVX512 && tl_cos_ops_avx512(k, ops)) return 1;
    if (isa != TL_ISA_PORTABLE && tl_cos_ops_avx2(k, ops)) return 1;
    if (k != TL_CK_F32) return 0;
    *ops = (tl_cos_ops){tl_dn_portable, tl_norms_portable, tl_dots_portable, 8, NULL, NULL};
    return 1;
}

/* Candidates larger than this (bytes) stream one row at a time. Zen 4 has
 * 1 MiB of L2 per core; past a few MiB rows come from L3 or DRAM, where one
 * address stream beats interleaved ones. */
#define TL_COS_STREAM_BYTES_DEFAULT ((size_t)4 << 20)
static _Atomic size_t tl_cos_stream_bytes = TL_COS_STREAM_BYTES_DEFAULT;

size_t tl_cosine_set_stream_bytes(size_t bytes) {
    if (bytes == (size_t)-1) return atomic_load_explicit(&tl_cos_stream_bytes, memory_order_relaxed);
    return atomic_exchange_explicit(&tl_cos_stream_bytes, bytes, memory_order_relaxed);
}

/* ---- scores ------------------------------------------------------------------------ */

/* The score from a dot product and the two norms (not squared). */
static inline float tl_cos_score(double dot, double qn, double cn) {
    if (!(qn > 0.0) || !(cn > 0.0) || qn == INFINITY || cn == INFINITY) return 0.0f;
    double v = dot / qn / cn; /* two divisions: qn * cn could overflow */
    if (v > 1.0) return 1.0f;
    if (v < -1.0) return -1.0f;
    if (v != v) return 0.0f;
    return (float)v;
}

/* Scores of a block: score[r] = tl_cos_score(dot[r], qn, cn_r), with cn_r =
 * sqrt(nrm[r]) (nrm: squared float32 norms) or cn[r] (given norms, nrm NULL).
 * sqrt and division are correctly rounded in scalar and vector form alike, so
 * the vector paths give the same bits as the scalar one; they exist because one
 * sqrt and two divisions per row, done one at a time, cost about 15% of the
 * whole single-query kernel at d = 768. */
typedef void (*tl_scores32_fn)(const float *dot, const float *nrm, const double *cn, size_t nb, double qn,
                               float *score);

static void tl_scores32_portable(const float *dot, const float *nrm, const double *cn, size_t nb, double qn,
                                 float *score) {
    for (size_t r = 0; r < nb; r++)
        score[r] = tl_cos_score((double)dot[r], qn, nrm ? sqrt((double)nrm[r]) : cn[r]);
}

#if TL_HAVE_X86
TL_TARGET_AVX512 static void tl_scores32_avx512(const float *dot, const float *nrm, const double *cn, size_t nb,
                                                double qn, float *score) {
    size_t r = 0;
    if (qn > 0.0 && qn != INFINITY) { /* else every score is 0: the scalar tail says so */
        const __m512d q = _mm512_set1_pd(qn), zero = _mm512_setzero_pd();
        const __m512d one = _mm512_set1_pd(1.0), mone = _mm512_set1_pd(-1.0);
        const __m512d inf = _mm512_set1_pd(INFINITY);
        for (; r + 8 <= nb; r += 8) {
            __m512d d = _mm512_cvtps_pd(_mm256_loadu_ps(dot + r));
            __m512d c = nrm ? _mm512_sqrt_pd(_mm512_cvtps_pd(_mm256_loadu_ps(nrm + r))) : _mm512_loadu_pd(cn + r);
            __m512d v = _mm512_div_pd(_mm512_div_pd(d, q), c);
            __mmask8 ok = _mm512_cmp_pd_mask(c, zero, _CMP_GT_OQ) & _mm512_cmp_pd_mask(c, inf, _CMP_NEQ_OQ) &
                          _mm512_cmp_pd_mask(v, v, _CMP_ORD_Q);
            v = _mm512_max_pd(_mm512_min_pd(v, one), mone);
            _mm256_storeu_ps(score + r, _mm512_cvtpd_ps(_mm512_maskz_mov_pd(ok, v)));
        }
    }
    tl_scores32_portable(dot + r, nrm ? nrm + r : NULL, cn ? cn + r : NULL, nb - r, qn, score + r);
}

TL_TARGET_AVX2 static void tl_scores32_avx2(const float *dot, const float *nrm, const double *cn, size_t nb,
                                            double qn, float *score) {
    size_t r = 0;
    if (qn > 0.0 && qn != INFINITY) {
        const __m256d q = _mm256_set1_pd(qn), zero = _mm256_setzero_pd();
        const __m256d one = _mm256_set1_pd(1.0), mone = _mm256_set1_pd(-1.0);
        const __m256d inf = _mm256_set1_pd(INFINITY);
        for (; r + 4 <= nb; r += 4) {
            __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(dot + r));
            __m256d c = nrm ? _mm256_sqrt_pd(_mm256_cvtps_pd(_mm_loadu_ps(nrm + r))) : _mm256_loadu_pd(cn + r);
            __m256d v = _mm256_div_pd(_mm256_div_pd(d, q), c);
            __m256d ok = _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(c, zero, _CMP_GT_OQ),
                                                     _mm256_cmp_pd(c, inf, _CMP_NEQ_OQ)),
                                       _mm256_cmp_pd(v, v, _CMP_ORD_Q));
            v = _mm256_max_pd(_mm256_min_pd(v, one), mone);
            _mm_storeu_ps(score + r, _mm256_cvtpd_ps(_mm256_and_pd(ok, v)));
        }
    }
    tl_scores32_portable(dot + r, nrm ? nrm + r : NULL, cn ? cn + r : NULL, nb - r, qn, score + r);
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

/* Where scores go: a strided (m, n) float32 array, or one top-k heap per query. */
typedef struct tl_cos_sink {
    float *out;
    ptrdiff_t out_rs, out_cs;
    tl_topk_item *heaps; /* query i's heap at heaps + i * k */
    size_t *sizes;
    size_t k;
    int lower_better; /* l2: the heaps keep -score, so the nearest rank first */
} tl_cos_sink;

/* Scores of query qi for the chosen rows at positions pos0 .. pos0 + nb - 1,
 * whose row ids are ids[r] (ids NULL: pos0 + r, no filter). */
static void tl_cos_emit(const tl_cos_sink *sk, size_t qi, size_t pos0, const int64_t *ids, const float *score,
                        size_t nb) {
    if (sk->heaps) {
        tl_topk_item *h = sk->heaps + qi * sk->k;
        size_t *size = sk->sizes + qi;
        if (!ids && !sk->lower_better) { /* the common case: one compare per row */
            for (size_t r = 0; r < nb; r++)
                if (tl_topk_may_enter(h, *size, sk->k, score[r]))
                    tl_topk_push(h, size, sk->k, score[r], (int64_t)(pos0 + r));
            return;
        }
        for (size_t r = 0; r < nb; r++) {
            float v = sk->lower_better ? -score[r] : score[r];
            if (tl_topk_may_enter(h, *size, sk->k, v))
                tl_topk_push(h, size, sk->k, v, ids ? ids[r] : (int64_t)(pos0 + r));
        }
        return;
    }
    char *o = (char *)sk->out + (ptrdiff_t)qi * sk->out_rs + (ptrdiff_t)pos0 * sk->out_cs;
    for (size_t r = 0; r < nb; r++) *(float *)(o + (ptrdiff_t)r * sk->out_cs) = score[r];
}

/* The chosen rows of a call: all rows, a list of ids, or a mask. */
typedef struct tl_rowsel {
    size_t n;           /* chosen rows */
    const int64_t *ids; /* allow_ids, or NULL */
    const uint8_t *mask;
    ptrdiff_t mask_stride;
    size_t rows; /* of the corpus */
    size_t next; /* mask: the next row to look at */
} tl_rowsel;

/* The next block of nb = min(B, n - pos) chosen rows, from position pos on
 * (blocks are taken in order): their row ids, or NULL for rows pos .. pos +
 * nb - 1 (no filter). A mask is scanned from where the last block stopped,
 * eight bytes at a time across zeros when it is contiguous. */
static const int64_t *tl_rowsel_block(tl_rowsel *sel, size_t pos, size_t B, int64_t *buf, size_t *nb) {
    const size_t want = sel->n - pos < B ? sel->n - pos : B;
    *nb = want;
    if (sel->ids) return sel->ids + pos;
    if (!sel->mask) return NULL;
    size_t got = 0, i = sel->next;
    while (got < want && i < sel->rows) { /* the count says a kept row lies ahead */
        if (sel->mask_stride == 1)
            for (uint64_t w; i + 8 <= sel->rows; i += 8) {
                memcpy(&w, sel->mask + i, 8);
                if (w) break;
            }
        if (i < sel->rows && sel->mask[(ptrdiff_t)i * sel->mask_stride]) buf[got++] = (int64_t)i;
        i++;
    }
    /* Only a mask changed during the call (by another thread) runs out early:
     * its block is padded with row 0, so that every read and write stays
     * within the rows and the result counted at the start. */
    for (; got < want; got++) buf[got] = 0;
    sel->next = i;
    return buf;
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
 * partial sum finite. With given norms the same test applies to the square of
 * the given norm. Cost on the fast path: two compares per row. */
static inline int tl_nrm32_ok(float nrm, float lo) { return nrm >= lo && nrm <= 0x1p+127f; }
static inline int tl_nrm64_ok(double nrm, double lo) { return nrm >= lo && nrm <= 0x1p+1023; }
static inline int tl_cn32_ok(double cn, float lo) { return cn * cn >= (double)lo && cn * cn <= 0x1p+127; }

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

/* The score of q and c (d doubles each) without under- or overflow; cn < 0
 * computes |c|, else cn is the given norm of c. */
TL_NOINLINE static float tl_cos_score_scaled(const double *q, const double *c, size_t d, double cn) {
    double qm = tl_max_abs(q, d), cm = tl_max_abs(c, d);
    if (!(qm > 0.0) || !(cm > 0.0) || qm == INFINITY || cm == INFINITY) /* NaN, 0 or inf */
        return tl_cos_score(tl_dot_scaled(q, 1.0, c, 1.0, d), sqrt(tl_dot_scaled(q, 1.0, q, 1.0, d)),
                            cn < 0.0 ? sqrt(tl_dot_scaled(c, 1.0, c, 1.0, d)) : cn);
    return tl_cos_score(tl_dot_scaled(q, qm, c, cm, d), sqrt(tl_dot_scaled(q, qm, q, qm, d)),
                        cn < 0.0 ? sqrt(tl_dot_scaled(c, cm, c, cm, d)) : cn / cm);
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

/* Given norms of rows i0 .. i0 + nb - 1 as doubles. */
static void tl_cos_load_norms(const tl_vec *cn, size_t i0, size_t nb, double *dst) {
    tl_convert_f64((const char *)cn->data + (ptrdiff_t)i0 * cn->stride, cn->dtype, cn->stride, nb, dst);
}

/* l2 from a dot product and squared norms (float32 sums, float64 arithmetic):
 * |q|^2 + |c|^2 - 2 q.c, clamped at 0 (rounding can take a tiny distance
 * below), rounded once. |c|^2 is nrm[r], or cnd[r]^2 (given norms), or 1
 * (unit). NaN stays NaN. */
static void tl_l2_scores32(const float *dot, const float *nrm, const double *cnd, int unit, size_t nb, double qq,
                           float *score) {
    for (size_t r = 0; r < nb; r++) {
        double cc = unit ? 1.0 : nrm ? (double)nrm[r] : cnd[r] * cnd[r];
        double v = qq + cc - 2.0 * (double)dot[r];
        score[r] = v < 0.0 ? 0.0f : (float)v;
    }
}

/* Given norms of the chosen rows ids[r] (NULL: pos0 + r) as doubles. */
static void tl_cos_load_norms_at(const tl_vec *cn, size_t pos0, const int64_t *ids, size_t nb, double *dst) {
    if (!ids) {
        tl_cos_load_norms(cn, pos0, nb, dst);
        return;
    }
    for (size_t r = 0; r < nb; r++)
        tl_convert_f64((const char *)cn->data + (ptrdiff_t)ids[r] * cn->stride, cn->dtype, cn->stride, 1, dst + r);
}

/* ---- float32 working precision ---------------------------------------------------- */

static int tl_cosine_run32(tl_scratch *s, const tl_mat *Q, const tl_mat *C, const tl_vec *cn_in,
                           const tl_score_opts *o, tl_rowsel *sel, const tl_cos_sink *sk) {
    const size_t n = sel->n, d = C->cols, m = Q->rows;
    const tl_metric metric = o->metric;
    const int unit = o->normalized && metric != TL_METRIC_DOT;
    /* The row kernels compute squared norms only where a score needs them;
     * else they run dots only (one FMA per element, not two). */
    const int need_nrm = !cn_in && !unit && metric != TL_METRIC_DOT;
    /* cosine with norms from outside (given, or 1): cnd holds them */
    const int given = metric == TL_METRIC_COSINE && !need_nrm;
    /* Rows are read in place when they are contiguous and aligned, in a kind
     * the ISA reads in registers; else converted into scratch as float32. */
    const size_t es = tl_dtype_size(C->dtype);
    const tl_cos_kind kind = C->dtype == TL_F16 ? TL_CK_F16 : C->dtype == TL_BF16 ? TL_CK_BF16 : TL_CK_F32;
    tl_cos_ops ops, qops;
    int direct = tl_is_contig(C->data, C->col_stride, es) && (C->row_stride % (ptrdiff_t)es == 0 || C->rows <= 1);
    if (!direct || !tl_cos_ops_pick(kind, &ops)) {
        direct = 0;
        tl_cos_ops_pick(TL_CK_F32, &ops);
    }
    tl_cos_ops_pick(TL_CK_F32, &qops);
    const tl_dtype rows_dtype = direct ? C->dtype : TL_F32;
    /* Float32 rows that share one misalignment (row stride a multiple of 64
     * bytes) get a masked head, so the main loop's loads do not straddle cache
     * lines (a split load costs twice); the query copies are placed with the
     * same misalignment so that their loads line up with the rows'. */
    size_t mis = 0;
    if (direct && kind == TL_CK_F32 && (C->rows <= 1 || C->row_stride % 64 == 0)) mis = (uintptr_t)C->data & 63;
    /* Kernels with their own plan (16-bit rows through vdpbf16ps) align their
     * blocks to the rows' 64-byte boundaries themselves. */
    const size_t rmis = direct && (C->rows <= 1 || C->row_stride % 64 == 0) ? (uintptr_t)C->data & 63 : 0;
    const tl_cos_plan plan = ops.plan ? ops.plan(d, rmis) : tl_cos_plan_make(d, mis, ops.lanes);
    const tl_cos_plan plan0 = tl_cos_plan_make(d, 0, qops.lanes);

    /* Queries as float32, query i at qbuf + i * qs floats; their norms. */
    const size_t qs = ((d * sizeof(float) + 127) & ~(size_t)63) / sizeof(float);
    char *qraw = tl_scratch_alloc(s, m * qs * sizeof(float) + 64, TL_DEFAULT_ALIGN);
    double *qn = tl_scratch_alloc(s, m * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    unsigned char *q_ok = tl_scratch_alloc(s, m + 1, 1);
    double *qsq = metric == TL_METRIC_L2 ? tl_scratch_alloc(s, m * sizeof(double) + 1, TL_DEFAULT_ALIGN) : NULL;
    if (!qraw || !qn || !q_ok || (metric == TL_METRIC_L2 && !qsq)) return TL_K_ENOMEM;
    float *qbuf = (float *)(qraw + mis);
    const float lo = (float)d * 0x1p-100f; /* see tl_nrm32_ok */
    int any_q_edge = 0;
    for (size_t i = 0; i < m; i++) {
        float *qi = qbuf + i * qs, qdot, qq;
        tl_convert_f32((const char *)Q->data + (ptrdiff_t)i * Q->row_stride, Q->dtype, Q->col_stride, d, qi);
        qops.dotnorm(qi, (const char *)qi, 0, 1, &plan0, &qdot, &qq, 1);
        qn[i] = sqrt((double)qq);
        if (qsq) qsq[i] = (double)qq; /* l2 */
        q_ok[i] = (unsigned char)tl_nrm32_ok(qq, lo);
        any_q_edge |= !q_ok[i];
    }
    /* The queries as the row kernels read them: qbuf, or a copy in their own
     * layout (ops.query: the vdpbf16ps kernels), kqs floats apart. */
    const float *kq = qbuf;
    size_t kqs = qs;
    if (ops.query) {
        kqs = ((d + 63) & ~(size_t)31) + 16; /* + 16: queries not a power of two apart */
        float *qp = tl_scratch_alloc(s, m * kqs * sizeof(float) + 1, TL_DEFAULT_ALIGN);
        if (!qp) return TL_K_ENOMEM;
        for (size_t i = 0; i < m; i++) ops.query(qbuf + i * qs, &plan, qp + i * kqs);
        kq = qp;
    }
    double *wide = NULL; /* a query and a row in float64, for the slow path */

    /* Rows per block: for one query, up to 256 (polling and the score pass
     * amortised); for m queries a block must stay in L2 (256 KiB) while every
     * query passes over it. */
    size_t B = tl_rows_per_block(d, sizeof(float), n);
    if (direct) {
        size_t cap = m == 1 ? 256 : ((size_t)256 << 10) / (d * es + 1);
        B = n < cap ? n : cap;
        if (B < 2) B = n < 2 ? (n ? n : 1) : 2;
        if (B > 256) B = 256;
    }
    float *dot = tl_scratch_alloc(s, (m + 2) * B * sizeof(float), TL_DEFAULT_ALIGN);
    /* cnd: the given norms, 1 (unit), or (m > 1) sqrt of the computed ones,
     * taken once per row rather than once per (query, row): the same bits. */
    const int want_cnd = cn_in || unit || m > 1;
    double *cnd = want_cnd ? tl_scratch_alloc(s, B * sizeof(double), TL_DEFAULT_ALIGN) : NULL;
    float *blk = direct ? NULL : tl_scratch_alloc(s, B * d * sizeof(float) + 1, TL_DEFAULT_ALIGN);
    int64_t *idbuf = sel->mask ? tl_scratch_alloc(s, B * sizeof(int64_t), TL_DEFAULT_ALIGN) : NULL;
    if (!dot || (want_cnd && !cnd) || (!direct && !blk) || (sel->mask && !idbuf)) return TL_K_ENOMEM;
    float *nrm = dot + m * B, *score = nrm + B;
    const tl_scores32_fn scores = tl_scores32_pick();
    const int stream = m == 1 && n * d * es > tl_cosine_set_stream_bytes((size_t)-1);
    if (unit)
        for (size_t r = 0; r < B; r++) cnd[r] = 1.0;
    for (size_t pos = 0; pos < n; pos += B) {
        if (pos != 0 && tl_k_interrupted()) return TL_K_EINTR; /* a block: <= 256 rows */
        size_t nb;
        const int64_t *bid = tl_rowsel_block(sel, pos, B, idbuf, &nb);
        if (!direct)
            for (size_t r = 0; r < nb; r++)
                tl_convert_f32((const char *)C->data + (ptrdiff_t)(bid ? (size_t)bid[r] : pos + r) * C->row_stride,
                               C->dtype, C->col_stride, d, blk + r * d);
        /* The block's dots (and norms): one kernel call per run of adjacent
         * chosen rows (the whole block without a filter). */
        for (size_t r0 = 0, r1; r0 < nb; r0 = r1) {
            const char *rows;
            ptrdiff_t rs = C->row_stride;
            r1 = nb;
            if (!direct) {
                rows = (const char *)blk + (ptrdiff_t)(r0 * d * sizeof(float));
                rs = (ptrdiff_t)(d * sizeof(float));
            } else if (!bid) {
                rows = (const char *)C->data + (ptrdiff_t)pos * C->row_stride;
            } else {
                for (r1 = r0 + 1; r1 < nb && bid[r1] == bid[r1 - 1] + 1; r1++) {
                }
                rows = (const char *)C->data + (ptrdiff_t)bid[r0] * C->row_stride;
            }
            if (m == 1) {
                ops.dotnorm(kq, rows, rs, r1 - r0, &plan, dot + r0, need_nrm ? nrm + r0 : NULL, stream);
            } else {
                if (need_nrm) ops.norms(rows, rs, r1 - r0, &plan, nrm + r0);
                ops.dots(kq, (ptrdiff_t)kqs, m, rows, rs, r1 - r0, &plan, dot + r0, B);
            }
        }
        if (metric == TL_METRIC_DOT) { /* the dot products are the scores */
            for (size_t i = 0; i < m; i++) tl_cos_emit(sk, i, pos, bid, dot + i * B, nb);
            continue;
        }
        if (cn_in) tl_cos_load_norms_at(cn_in, pos, bid, nb, cnd);
        if (metric == TL_METRIC_L2) {
            for (size_t i = 0; i < m; i++) {
                tl_l2_scores32(dot + i * B, need_nrm ? nrm : NULL, cnd, unit, nb, qsq[i], score);
                tl_cos_emit(sk, i, pos, bid, score, nb);
            }
            continue;
        }
        int row_edge = 0; /* one branch per block: the scans below vectorise */
        if (given) {
            for (size_t r = 0; r < nb; r++) row_edge |= !tl_cn32_ok(cnd[r], lo);
        } else {
            for (size_t r = 0; r < nb; r++) row_edge |= !tl_nrm32_ok(nrm[r], lo);
            if (m > 1)
                for (size_t r = 0; r < nb; r++) cnd[r] = sqrt((double)nrm[r]);
        }
        for (size_t i = 0; i < m; i++) {
            scores(dot + i * B, given || m > 1 ? NULL : nrm, cnd, nb, qn[i], score);
            for (size_t r = 0; TL_UNLIKELY(row_edge || any_q_edge) && r < nb; r++) {
                int ok = q_ok[i] && (given ? tl_cn32_ok(cnd[r], lo) : tl_nrm32_ok(nrm[r], lo));
                if (ok) continue;
                if (!wide) { /* range edge: slow path */
                    wide = tl_scratch_alloc(s, 2 * d * sizeof(double) + 1, TL_DEFAULT_ALIGN);
                    if (!wide) return TL_K_ENOMEM;
                }
                const float *qi = qbuf + i * qs;
                for (size_t j = 0; j < d; j++) wide[j] = (double)qi[j];
                const char *row = !direct ? (const char *)(blk + r * d)
                                          : (const char *)C->data +
                                                (ptrdiff_t)(bid ? (size_t)bid[r] : pos + r) * C->row_stride;
                tl_convert_f64(row, rows_dtype, (ptrdiff_t)tl_dtype_size(rows_dtype), d, wide + d);
                score[r] = tl_cos_score_scaled(wide, wide + d, d, given ? cnd[r] : -1.0);
            }
            tl_cos_emit(sk, i, pos, bid, score, nb);
        }
    }
    return TL_K_OK;
}

/* ---- float64 working precision (any float64 input): portable --------------------- */

/* Fused: dot and norm of each row, one sequential sum each. The dot-only and
 * norm-only loops are the same sums, so the batched form gives the same bits. */
static void tl_dotnorm64(const double *q, const double *rows, size_t ld, size_t nrows, size_t d, double *dot,
                         double *nrm) {
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

static double tl_dot64(const double *x, const double *y, size_t d) {
    double a = 0.0;
    for (size_t j = 0; j < d; j++) a += x[j] * y[j];
    return a;
}

static double tl_l2_64(const double *x, const double *y, size_t d) {
    double a = 0.0;
    for (size_t j = 0; j < d; j++) a += (x[j] - y[j]) * (x[j] - y[j]);
    return a;
}

static int tl_cosine_run64(tl_scratch *s, const tl_mat *Q, const tl_mat *C, const tl_vec *cn_in,
                           const tl_score_opts *o, tl_rowsel *sel, const tl_cos_sink *sk) {
    const size_t n = sel->n, d = C->cols, m = Q->rows;
    const tl_metric metric = o->metric;
    const int unit = o->normalized && metric != TL_METRIC_DOT;
    const int given = cn_in || unit; /* norms from outside: cnd */
    double *q = tl_scratch_alloc(s, m * d * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    double *qn = tl_scratch_alloc(s, m * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    unsigned char *q_ok = tl_scratch_alloc(s, m + 1, 1);
    double *qsq = metric == TL_METRIC_L2 ? tl_scratch_alloc(s, m * sizeof(double) + 1, TL_DEFAULT_ALIGN) : NULL;
    if (!q || !qn || !q_ok || (metric == TL_METRIC_L2 && !qsq)) return TL_K_ENOMEM;
    const double lo = (double)d * 0x1p-960; /* as tl_nrm32_ok, for doubles */
    for (size_t i = 0; i < m; i++) {
        double *qi = q + i * d, qdot, qq;
        tl_convert_f64((const char *)Q->data + (ptrdiff_t)i * Q->row_stride, Q->dtype, Q->col_stride, d, qi);
        tl_dotnorm64(qi, qi, 0, 1, d, &qdot, &qq);
        qn[i] = sqrt(qq);
        if (qsq) qsq[i] = qq; /* l2 */
        q_ok[i] = (unsigned char)tl_nrm64_ok(qq, lo);
    }
    const size_t B = tl_rows_per_block(d, sizeof(double), n);
    double *dot = tl_scratch_alloc(s, 3 * B * sizeof(double), TL_DEFAULT_ALIGN);
    double *blk = tl_scratch_alloc(s, B * d * sizeof(double) + 1, TL_DEFAULT_ALIGN);
    float *score = tl_scratch_alloc(s, B * sizeof(float), TL_DEFAULT_ALIGN);
    int64_t *idbuf = sel->mask ? tl_scratch_alloc(s, B * sizeof(int64_t), TL_DEFAULT_ALIGN) : NULL;
    if (!dot || !blk || !score || (sel->mask && !idbuf)) return TL_K_ENOMEM;
    double *nrm = dot + B, *cnd = nrm + B;
    if (unit)
        for (size_t r = 0; r < B; r++) cnd[r] = 1.0;
    for (size_t pos = 0; pos < n; pos += B) {
        if (pos != 0 && tl_k_interrupted()) return TL_K_EINTR;
        size_t nb;
        const int64_t *bid = tl_rowsel_block(sel, pos, B, idbuf, &nb);
        for (size_t r = 0; r < nb; r++)
            tl_convert_f64((const char *)C->data + (ptrdiff_t)(bid ? (size_t)bid[r] : pos + r) * C->row_stride,
                           C->dtype, C->col_stride, d, blk + r * d);
        if (cn_in) tl_cos_load_norms_at(cn_in, pos, bid, nb, cnd);
        for (size_t i = 0; i < m; i++) {
            const double *qi = q + i * d;
            if (metric == TL_METRIC_DOT) {
                for (size_t r = 0; r < nb; r++) score[r] = (float)tl_dot64(qi, blk + r * d, d);
            } else if (metric == TL_METRIC_L2) {
                for (size_t r = 0; r < nb; r++) {
                    double v = given ? qsq[i] + cnd[r] * cnd[r] - 2.0 * tl_dot64(qi, blk + r * d, d)
                                     : tl_l2_64(qi, blk + r * d, d);
                    score[r] = v < 0.0 ? 0.0f : (float)v;
                }
            } else {
                if (m == 1 && !given) {
                    tl_dotnorm64(qi, blk, d, nb, d, dot, nrm);
                } else {
                    if (i == 0 && !given)
                        for (size_t r = 0; r < nb; r++) nrm[r] = tl_dot64(blk + r * d, blk + r * d, d);
                    for (size_t r = 0; r < nb; r++) dot[r] = tl_dot64(qi, blk + r * d, d);
                }
                for (size_t r = 0; r < nb; r++) {
                    double cn = given ? cnd[r] : sqrt(nrm[r]);
                    int ok = q_ok[i] && (given ? tl_nrm64_ok(cn * cn, lo) : tl_nrm64_ok(nrm[r], lo));
                    score[r] = TL_UNLIKELY(!ok) ? tl_cos_score_scaled(qi, blk + r * d, d, given ? cn : -1.0)
                                                : tl_cos_score(dot[r], qn[i], cn);
                }
            }
            tl_cos_emit(sk, i, pos, bid, score, nb);
        }
    }
    return TL_K_OK;
}

/* ---- entry points ------------------------------------------------------------------ */

int tl_allow_check(tl_scratch *s, const int64_t *ids, size_t n, size_t rows, size_t *bad_pos, int *dup) {
    size_t j = 0;
    for (; j < n; j++) { /* ascending ids: range and order in one pass */
        if (ids[j] < 0 || (uint64_t)ids[j] >= rows) goto bad_range;
        if (j && ids[j] <= ids[j - 1]) break;
    }
    if (j == n) return TL_K_OK;
    uint64_t *seen = tl_scratch_alloc(s, ((rows + 63) / 64) * sizeof(uint64_t) + 8, TL_DEFAULT_ALIGN);
    if (!seen) return TL_K_ENOMEM;
    memset(seen, 0, ((rows + 63) / 64) * sizeof(uint64_t));
    for (j = 0; j < n; j++) {
        if (ids[j] < 0 || (uint64_t)ids[j] >= rows) goto bad_range;
        uint64_t bit = (uint64_t)1 << (ids[j] & 63), *w = seen + (ids[j] >> 6);
        if (*w & bit) {
            *bad_pos = j;
            *dup = 1;
            return TL_K_EINVAL;
        }
        *w |= bit;
    }
    return TL_K_OK;
bad_range:
    *bad_pos = j;
    *dup = 0;
    return TL_K_EINVAL;
}

size_t tl_allow_mask_count(const uint8_t *mask, ptrdiff_t stride, size_t n) {
    size_t kept = 0, i = 0;
    if (stride == 1)
        for (; i + 8 <= n; i += 8) { /* each byte folded onto its low bit: 1 if it is not 0 */
            uint64_t w;
            memcpy(&w, mask + i, 8);
            w |= w >> 4;
            w |= w >> 2;
            w |= w >> 1;
            kept += (size_t)(((w & 0x0101010101010101ull) * 0x0101010101010101ull) >> 56); /* byte sum */
        }
    for (; i < n; i++) kept += mask[(ptrdiff_t)i * stride] != 0;
    return kept;
}

static int tl_cosine_check(const tl_mat *Q, const tl_mat *C, const tl_vec *cn) {
    if (!tl_dtype_is_float(Q->dtype) || !tl_dtype_is_float(C->dtype)) return TL_K_EINVAL;
    if (Q->cols != C->cols) return TL_K_EINVAL;
    if (cn && ((cn->dtype != TL_F32 && cn->dtype != TL_F64) || cn->n != C->rows)) return TL_K_EINVAL;
    return TL_K_OK;
}

/* Check a call and find its chosen rows. */
static int tl_score_setup(tl_scratch *s, const tl_mat *Q, const tl_mat *C, const tl_vec *cn, const tl_score_opts *o,
                          tl_rowsel *sel) {
    int rc = tl_cosine_check(Q, C, cn);
    if (rc != TL_K_OK) return rc;
    if ((unsigned)o->metric > TL_METRIC_L2 || (o->normalized && cn) || (o->allow_ids && o->allow_mask))
        return TL_K_EINVAL;
    *sel = (tl_rowsel){C->rows, NULL, NULL, 0, C->rows, 0};
    if (o->allow_ids) {
        size_t bad;
        int dup;
        rc = tl_allow_check(s, o->allow_ids, o->n_allow, C->rows, &bad, &dup);
        if (rc != TL_K_OK) return rc;
        sel->ids = o->allow_ids;
        sel->n = o->n_allow;
    } else if (o->allow_mask) {
        sel->mask = o->allow_mask; /* one pass over the mask (rows bytes), none over the corpus */
        sel->mask_stride = o->mask_stride;
        sel->n = tl_allow_mask_count(o->allow_mask, o->mask_stride, C->rows);
    }
    return TL_K_OK;
}

static int tl_cosine_dispatch(tl_scratch *s, const tl_mat *Q, const tl_mat *C, const tl_vec *cn,
                              const tl_score_opts *o, tl_rowsel *sel, const tl_cos_sink *sk) {
    if (Q->dtype == TL_F64 || C->dtype == TL_F64) return tl_cosine_run64(s, Q, C, cn, o, sel, sk);
    return tl_cosine_run32(s, Q, C, cn, o, sel, sk);
}

static const tl_score_opts tl_score_cosine = {TL_METRIC_COSINE, 0, NULL, 0, NULL, 0};

int tl_score_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                   const tl_score_opts *opts, float *out, ptrdiff_t out_row_stride, ptrdiff_t out_col_stride) {
    tl_scratch_set_kernel(s, TL_SCRATCH_COSINE);
    if (!opts) opts = &tl_score_cosine;
    tl_rowsel sel;
    int rc = tl_score_setup(s, queries, cand, cand_norms, opts, &sel);
    if (rc != TL_K_OK) return rc;
    if (sel.n == 0 || queries->rows == 0) return TL_K_OK;
    tl_cos_sink sk = {out, out_row_stride, out_col_stride, NULL, NULL, 0, 0};
    return tl_cosine_dispatch(s, queries, cand, cand_norms, opts, &sel, &sk);
}

int tl_score_topk_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                        const tl_score_opts *opts, size_t k, int64_t *idx, float *scores, size_t ld,
                        size_t *count) {
    tl_scratch_set_kernel(s, TL_SCRATCH_COSINE);
    if (!opts) opts = &tl_score_cosine;
    *count = 0;
    tl_rowsel sel;
    int rc = tl_score_setup(s, queries, cand, cand_norms, opts, &sel);
    if (rc != TL_K_OK) return rc;
    const size_t m = queries->rows;
    if (k > sel.n) k = sel.n;
    if (ld == 0) ld = k;
    if (ld < k) return TL_K_EINVAL;
    if (k == 0 || m == 0) {
        *count = k;
        return TL_K_OK;
    }
    if (m > SIZE_MAX / sizeof(tl_topk_item) / k) return TL_K_ENOMEM;
    const int lower = opts->metric == TL_METRIC_L2;
    tl_cos_sink sk = {NULL, 0, 0, NULL, NULL, k, lower};
    sk.heaps = tl_scratch_alloc(s, m * k * sizeof(tl_topk_item), TL_DEFAULT_ALIGN);
    sk.sizes = tl_scratch_alloc(s, m * sizeof(size_t), TL_DEFAULT_ALIGN);
    if (!sk.heaps || !sk.sizes) return TL_K_ENOMEM;
    memset(sk.sizes, 0, m * sizeof(size_t));
    rc = tl_cosine_dispatch(s, queries, cand, cand_norms, opts, &sel, &sk);
    if (rc != TL_K_OK) return rc;
    for (size_t i = 0; i < m; i++) {
        tl_topk_item *h = sk.heaps + i * k;
        tl_assert(sk.sizes[i] == k); /* every row enters until the heap holds k */
        tl_topk_finish(h, sk.sizes[i]);
        for (size_t t = 0; t < sk.sizes[i]; t++) {
            idx[i * ld + t] = h[t].idx;
            scores[i * ld + t] = lower ? -h[t].val : h[t].val;
        }
    }
    *count = k;
    return TL_K_OK;
}

int tl_cosine_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                    float *out, ptrdiff_t out_row_stride, ptrdiff_t out_col_stride) {
    return tl_score_batch(s, queries, cand, cand_norms, NULL, out, out_row_stride, out_col_stride);
}

int tl_cosine_topk_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                         size_t k, int64_t *idx, float *scores, size_t *count) {
    return tl_score_topk_batch(s, queries, cand, cand_norms, NULL, k, idx, scores, 0, count);
}

/* The single-query form is the batched form with one query. */
static tl_mat tl_cos_one(const tl_vec *query) {
    tl_mat q = {query->data, query->dtype, 1, query->n, 0, query->stride};
    return q;
}

int tl_cosine_similarity(tl_scratch *s, const tl_vec *query, const tl_mat *cand, float *out,
                         ptrdiff_t out_stride) {
    tl_mat q = tl_cos_one(query);
    return tl_cosine_batch(s, &q, cand, NULL, out, 0, out_stride);
}

int tl_cosine_topk(tl_scratch *s, const tl_vec *query, const tl_mat *cand, size_t k, int64_t *idx,
                   float *scores, size_t *count) {
    tl_mat q = tl_cos_one(query);
    return tl_cosine_topk_batch(s, &q, cand, NULL, k, idx, scores, count);
}
