/* kernel_cosine_avx512.c: the AVX-512 row kernels of cosine similarity.
 *
 * The row arithmetic under TL_ISA_AVX512 (one sequence for every kernel here,
 * as in kernel_cosine_x86.c, so that a row's dot product and norm do not depend
 * on which kernel computed them): 16 float32 lanes, ONE accumulator per
 * quantity. A masked head (float32 rows sharing one misalignment: up to the
 * next 64-byte boundary, see tl_cos_plan), then full vectors in order, then a
 * masked tail, all into that accumulator; the result is tl_hsum16(acc). With
 * 32 vector registers, independent chains come from several rows (or queries)
 * at once instead of from a second accumulator per pair:
 *   - fused dot + norm, in cache: four adjacent rows (8 chains);
 *   - fused, streaming from DRAM: two rows from the two halves of a block
 *     (two sequential address streams, 4 chains);
 *   - norms only: the same two-stream order, norm chain only;
 *   - batched dots: a tile of 6 queries x 4 rows (24 chains; per 16 elements
 *     10 loads for 24 FMAs, where the 4 x 3 AVX2 tile loads 7 for 12).
 * Lane i of the one 16-lane chain sums what lane i of the AVX2 path's first
 * 8-lane accumulator (i < 8) or lane i - 8 of its second sums, in the same
 * order, wherever the two plans cut the row alike (see tl5_tail_at): then the
 * two ISAs give the same bits. Float32 rows 4 to 32 bytes past a 64-byte
 * boundary get a longer head here (aligned zmm loads matter more than ymm
 * ones) and differ from AVX2 in the last bits. Within this ISA the single,
 * batched and streaming forms always give the same bits.
 *
 * Elements are widened in registers: float16 with vcvtph2ps on zmm (exact),
 * bfloat16 by a 16-bit shift (exact). Heads and tails are masked loads
 * (AVX512BW for 16-bit elements): no stack copy, no read past the row.
 * With AVX512_BF16 (TL_EXT_AVX512_BF16), bfloat16 rows take the tl5p_
 * kernels below instead: another order, within float32 rounding.
 */
#include "kernels_internal.h"

#if TL_HAVE_X86
#include <immintrin.h>

#define TL_AI static inline __attribute__((always_inline))

TL_TARGET_AVX512 TL_AI __mmask16 tl5_mask(size_t n) { return (__mmask16)((1u << n) - 1u); } /* n <= 16 */

/* Fixed reduction order: halves, quarters, then as tl_hsum8. */
TL_TARGET_AVX512 TL_AI float tl5_hsum(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    __m128 sh = _mm_movehdup_ps(s);
    s = _mm_add_ps(s, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

/* tl5_hsum of eight vectors at once, the same additions in the same order
 * (IEEE addition is commutative, so a + b and b + a are the same bits): the
 * halves of pairs of vectors added in one zmm, then their quarters, then the
 * (0+1) + (2+3) of tl_hsum8 by two in-lane shuffles, twice. 18 shuffles and 9
 * adds where eight tl5_hsum take 32 and 32. out[2g] = sum of v[g], out[2g + 1]
 * = sum of v[g + 4], g < 4. */
TL_TARGET_AVX512 TL_AI void tl5_hsum8x(const __m512 *v, float *out) {
    __m512 h[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* h[i] = [lanes k + lanes k+8 of v[2i] | the same of v[2i+1]] */
        h[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    /* x: the four 128-bit sums (low + high half of h) of v[0..3]; y: of v[4..7] */
    __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(h[0], h[1], 0x88), _mm512_shuffle_f32x4(h[0], h[1], 0xDD));
    __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(h[2], h[3], 0x88), _mm512_shuffle_f32x4(h[2], h[3], 0xDD));
    /* per 128-bit lane g: [s0+s1, s2+s3] of v[g], then of v[g + 4] */
    __m512 p = _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x88), _mm512_shuffle_ps(x, y, 0xDD));
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(p, p, 0x88), _mm512_shuffle_ps(p, p, 0xDD));
    float t[16];
    _mm512_storeu_ps(t, r);
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) out[2 * g] = t[4 * g], out[2 * g + 1] = t[4 * g + 1];
}

/* Sixteen elements of kind k from element j of row c, as float32. */
TL_TARGET_AVX512 TL_AI __m512 tl5_ld(const char *c, size_t j, int k) {
    if (k == TL_CK_F32) return _mm512_loadu_ps((const float *)c + j);
    __m256i h = _mm256_loadu_si256((const __m256i *)(c + 2 * j));
    if (k == TL_CK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* The elements of mask m from element j (other lanes 0; masked lanes are not
 * read, so a tail never touches memory past the row). */
TL_TARGET_AVX512 TL_AI __m512 tl5_ld_part(const char *c, ptrdiff_t j, __mmask16 m, int k) {
    if (k == TL_CK_F32) return _mm512_maskz_loadu_ps(m, (const float *)c + j);
    __m256i h = _mm256_maskz_loadu_epi16(m, c + 2 * j);
    if (k == TL_CK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Where the tail goes: the AVX2 path adds a tail of rem < 8 elements to its
 * second accumulator, lanes 0..rem-1, which hold what lanes 8..15 hold here;
 * loading from 8 elements before the tail with the mask moved up by 8 puts
 * the tail in those lanes (lanes 0..7 are masked: not read). With that, a row
 * whose head is the same in both plans (every 16-bit row; float32 rows at a
 * 64-byte boundary or 36 to 60 bytes past one) gets the AVX2 path's bits: AVX2's
 * two 8-lane accumulators are this path's two halves, added first by
 * tl5_hsum, and tl5_hsum continues as tl_hsum8. Returns the element offset of
 * the load; *m its mask. */
TL_TARGET_AVX512 TL_AI ptrdiff_t tl5_tail_at(const tl_cos_plan *p, __mmask16 *m) {
    if (p->rem < 8) {
        *m = (__mmask16)(((1u << p->rem) - 1u) << 8);
        return (ptrdiff_t)p->dm - 8;
    }
    *m = tl5_mask(p->rem);
    return (ptrdiff_t)p->dm;
}

/* Keeps v in a register (see TL_IN_REG in kernel_cosine_x86.c); "v" admits
 * zmm16-31. */
#define TL5_IN_REG(v) __asm__("" : "+v"(v))

/* Software prefetch distance for streaming 16-bit rows (as TL_COS_PF_BYTES). */
#define TL5_PF_BYTES 1024

/* Dot (D) and norm (W) chains of R rows at c[0..R-1]: results to dot[o[i]],
 * nrm[o[i]]. The dot chain is the same FMAs with or without W, and the norm
 * chain the same with or without D: the same bits. */
TL_TARGET_AVX512 TL_AI void tl5_group(const float *q, const char *const *c, const size_t *o, const tl_cos_plan *p,
                                      float *dot, float *nrm, int k, int R, int D, int W, int PF) {
    const size_t head = p->head, dm = p->dm, rem = p->rem;
    __m512 a[4], b[4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) a[i] = b[i] = _mm512_setzero_ps();
    if (head) {
        const __mmask16 hm = tl5_mask(head);
        __m512 qv = D ? _mm512_maskz_loadu_ps(hm, q) : _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 x = tl5_ld_part(c[i], 0, hm, k);
            if (D) a[i] = _mm512_fmadd_ps(qv, x, a[i]);
            if (W) b[i] = _mm512_fmadd_ps(x, x, b[i]);
        }
    }
    for (size_t j = head; j + 16 <= dm; j += 16) {
        __m512 qv = D ? _mm512_loadu_ps(q + j) : _mm512_setzero_ps();
        /* One load of each vector: unpinned, GCC folds the query and the row
         * into each FMA that reads them as a memory operand (2R + R loads for
         * 2R FMAs instead of R + 1), which held four rows in L1 at 44 bytes a
         * cycle; pinned, 51 (bench/c/cosine_isa.c single, 16 rows). */
        if (D && R > 1) TL5_IN_REG(qv);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            if (PF) _mm_prefetch(c[i] + 2 * j + TL5_PF_BYTES, _MM_HINT_T0);
            __m512 x = tl5_ld(c[i], j, k);
            if (D && W) TL5_IN_REG(x);
            if (D) a[i] = _mm512_fmadd_ps(qv, x, a[i]);
            if (W) b[i] = _mm512_fmadd_ps(x, x, b[i]);
        }
    }
    if (rem) {
        __mmask16 tm;
        const ptrdiff_t t = tl5_tail_at(p, &tm);
        __m512 qv = D ? _mm512_maskz_loadu_ps(tm, q + t) : _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512 x = tl5_ld_part(c[i], t, tm, k);
            if (D) a[i] = _mm512_fmadd_ps(qv, x, a[i]);
            if (W) b[i] = _mm512_fmadd_ps(x, x, b[i]);
        }
    }
    if (R == 4 && D && W) { /* the in-cache group: eight sums at once */
        const __m512 v[8] = {a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]};
        float t[8];
        tl5_hsum8x(v, t);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) dot[o[i]] = t[2 * i], nrm[o[i]] = t[2 * i + 1];
        return;
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        if (D) dot[o[i]] = tl5_hsum(a[i]);
        if (W) nrm[o[i]] = tl5_hsum(b[i]);
    }
}

/* nrows rows: four adjacent at a time (in cache), or rows r and r + h of the
 * block's two halves (stream: two sequential address streams for the
 * prefetchers); the same bits either way. */
/* The row loop both row kernels share: GROUP(c, o, R, S) runs one group of R
 * rows at addresses c[] whose results go to o[]; S is 1 for the two halves'
 * streaming pairs, 0 otherwise. Expands in a function with rows, rs, nrows
 * and stream in scope. */
#define TL5_ROW_GROUPS(GROUP)                                                                  \
    do {                                                                                       \
        size_t r = 0;                                                                          \
        if (stream) {                                                                          \
            const size_t h = nrows / 2;                                                        \
            for (; r < h; r++) {                                                               \
                const char *c[2] = {rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + h) * rs}; \
                const size_t o[2] = {r, r + h};                                                \
                GROUP(c, o, 2, 1);                                                             \
            }                                                                                  \
            r = 2 * h;                                                                         \
        } else {                                                                               \
            for (; r + 4 <= nrows; r += 4) {                                                   \
                const char *c[4] = {rows + (ptrdiff_t)r * rs, rows + (ptrdiff_t)(r + 1) * rs,  \
                                    rows + (ptrdiff_t)(r + 2) * rs,                            \
                                    rows + (ptrdiff_t)(r + 3) * rs};                           \
                const size_t o[4] = {r, r + 1, r + 2, r + 3};                                  \
                GROUP(c, o, 4, 0);                                                             \
            }                                                                                  \
        }                                                                                      \
        for (; r < nrows; r++) {                                                               \
            const char *c[1] = {rows + (ptrdiff_t)r * rs};                                     \
            const size_t o[1] = {r};                                                           \
            GROUP(c, o, 1, 0);                                                                 \
        }                                                                                      \
    } while (0)

TL_TARGET_AVX512 TL_AI void tl5_rows(const float *q, const char *rows, ptrdiff_t rs, size_t nrows,
                                     const tl_cos_plan *p, float *dot, float *nrm, int k, int stream, int D, int W) {
    /* streaming pairs of 16-bit rows prefetch ahead (tl5_group's PF) */
#define TL5_GROUP(c, o, R, S) tl5_group(q, c, o, p, dot, nrm, k, R, D, W, (S) && k != TL_CK_F32)
    TL5_ROW_GROUPS(TL5_GROUP);
#undef TL5_GROUP
}

/* Dot products of Q <= 6 queries (at q + i * qs floats) with R <= 4 rows: one
 * chain per pair, the same FMAs in the same order as tl5_group's dot chain.
 * Registers: 24 accumulators, 4 row vectors, 1 query vector. */
TL_TARGET_AVX512 TL_AI void tl5_tile(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs,
                                     const tl_cos_plan *p, float *dot, size_t ldd, int k, int Q, int R) {
    const size_t head = p->head, dm = p->dm, rem = p->rem;
    __m512 a[6][4], x[4];
#pragma GCC unroll 6
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) a[i][r] = _mm512_setzero_ps();
    if (head) {
        const __mmask16 hm = tl5_mask(head);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) x[r] = tl5_ld_part(rows + r * rs, 0, hm, k);
#pragma GCC unroll 6
        for (int i = 0; i < Q; i++) {
            __m512 qv = _mm512_maskz_loadu_ps(hm, q + i * qs);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) a[i][r] = _mm512_fmadd_ps(qv, x[r], a[i][r]);
        }
    }
    for (size_t j = head; j + 16 <= dm; j += 16) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            x[r] = tl5_ld(rows + r * rs, j, k);
            TL5_IN_REG(x[r]);
        }
#pragma GCC unroll 6
        for (int i = 0; i < Q; i++) {
            __m512 qv = _mm512_loadu_ps(q + i * qs + j);
            TL5_IN_REG(qv);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) a[i][r] = _mm512_fmadd_ps(qv, x[r], a[i][r]);
        }
    }
    if (rem) {
        __mmask16 tm;
        const ptrdiff_t t = tl5_tail_at(p, &tm);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) x[r] = tl5_ld_part(rows + r * rs, t, tm, k);
#pragma GCC unroll 6
        for (int i = 0; i < Q; i++) {
            __m512 qv = _mm512_maskz_loadu_ps(tm, q + i * qs + t);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) a[i][r] = _mm512_fmadd_ps(qv, x[r], a[i][r]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) dot[(size_t)i * ldd + (size_t)r] = tl5_hsum(a[i][r]);
}

/* Q queries against every row of the block, four rows at a time. */
TL_TARGET_AVX512 TL_AI void tl5_tile_rows(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs,
                                          size_t nrows, const tl_cos_plan *p, float *dot, size_t ldd, int k,
                                          int Q) {
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) tl5_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, p, dot + r, ldd, k, Q, 4);
    switch (nrows - r) {
    case 3: tl5_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, p, dot + r, ldd, k, Q, 3); break;
    case 2: tl5_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, p, dot + r, ldd, k, Q, 2); break;
    case 1: tl5_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, p, dot + r, ldd, k, Q, 1); break;
    default: break;
    }
}

/* All m queries against a block of rows (sized by the caller to stay in L2):
 * six queries at a time (6 x 3 KiB at d = 768: they stay in L1) meet every
 * row of the block in turn; the block comes from L2 once per six queries. */
TL_TARGET_AVX512 TL_AI void tl5_dots(const float *q, ptrdiff_t qs, size_t m, const char *rows, ptrdiff_t rs,
                                     size_t nrows, const tl_cos_plan *p, float *dot, size_t ldd, int k) {
    size_t i = 0;
    for (; i + 6 <= m; i += 6) tl5_tile_rows(q + (ptrdiff_t)i * qs, qs, rows, rs, nrows, p, dot + i * ldd, ldd, k, 6);
    const float *qi = q + (ptrdiff_t)i * qs;
    float *o = dot + i * ldd;
    switch (m - i) {
    case 5: tl5_tile_rows(qi, qs, rows, rs, nrows, p, o, ldd, k, 5); break;
    case 4: tl5_tile_rows(qi, qs, rows, rs, nrows, p, o, ldd, k, 4); break;
    case 3: tl5_tile_rows(qi, qs, rows, rs, nrows, p, o, ldd, k, 3); break;
    case 2: tl5_tile_rows(qi, qs, rows, rs, nrows, p, o, ldd, k, 2); break;
    case 1: tl5_tile_rows(qi, qs, rows, rs, nrows, p, o, ldd, k, 1); break;
    default: break;
    }
}

/* ---- bfloat16 rows with vdpbf16ps (AVX512_BF16) -------------------------------------
 * A 32-bit word of a bfloat16 row holds elements 2i (low half) and 2i + 1
 * (high half): word << 16 is element 2i as float32, word & 0xffff0000 element
 * 2i + 1, two cheap integer operations instead of a widening shuffle and a
 * shift per 16 elements. Blocks of 32 elements start at 64-byte boundaries:
 * the row is read as if it began o = p->head elements earlier (o = its
 * address modulo 64, over 2; rows that share one misalignment, see
 * tl_cos_plan), block t covering elements 32t - o .. 32t - o + 31, the lanes
 * outside the row masked (not read, taken as 0). A 64-byte load that crosses a
 * cache line costs twice: NumPy's large arrays start 16 bytes past a boundary,
 * where the unaligned blocks took 1.28x the time (1,000 x 768). The query
 * comes in the matching "pair layout" (tl5p_query): per block, the 16 even
 * elements, then the 16 odd ones, of the same 32 (zero outside the query).
 * Per block of a row:
 *   dot:  ae += qe * xe, ao += qo * xo (two FMA chains), dot = hsum(ae + ao);
 *   norm: b = vdpbf16ps(b, x, x): lane i adds x[2i+1]^2, then x[2i]^2, each
 *         product exact (8-bit significands), each sum rounded to nearest even,
 *         with bfloat16 subnormal inputs and float32 subnormal sums taken as 0
 *         (what the instruction defines; a norm that small takes the slow path,
 *         see tl_nrm32_ok). norm = hsum(b).
 * The dot is the FMA arithmetic of the other paths in another order, and the
 * norm sums the same exact squares in another order: both within float32
 * rounding of the other paths, not their bits (docs/kernels.md). Single,
 * batched and streaming forms share this order, hence their bits. */
#define TL_TARGET_AVX512BF16 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))

/* Lanes of block t whose elements (32t - o + lane) lie in [0, d). */
TL_AI uint32_t tl5p_lanes(ptrdiff_t start, size_t d) {
    const ptrdiff_t lo = start < 0 ? -start : 0, n = (ptrdiff_t)d - start;
    const uint32_t below = n >= 32 ? 0xffffffffu : n <= 0 ? 0u : (1u << n) - 1u;
    return below & ~((1u << lo) - 1u); /* lo < 32: start > -32 */
}

/* Blocks of a row of d elements read from o elements before it. */
TL_AI size_t tl5p_blocks(size_t d, size_t o) { return d ? (o + d + 31) / 32 : 0; }

/* The query in the pair layout of plan p (two vpermt2ps per block); the
 * buffer holds 32 * tl5p_blocks floats. Once per query and call. */
TL_TARGET_AVX512BF16 static void tl5p_query(const float *q, const tl_cos_plan *p, float *dst) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const size_t o = p->head, d = p->dm + p->rem, nb = tl5p_blocks(d, o);
    for (size_t t = 0; t < nb; t++) {
        const ptrdiff_t start = (ptrdiff_t)(32 * t) - (ptrdiff_t)o;
        const uint32_t m = tl5p_lanes(start, d);
        /* masked lanes are not read: the address may precede q (integer arithmetic) */
        const float *at = (const float *)((uintptr_t)q + (uintptr_t)(start * (ptrdiff_t)sizeof(float)));
        __m512 lo = _mm512_maskz_loadu_ps((__mmask16)(m & 0xffffu), at);
        __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), at + 16);
        _mm512_storeu_ps(dst + 32 * t, _mm512_permutex2var_ps(lo, ev, hi));
        _mm512_storeu_ps(dst + 32 * t + 16, _mm512_permutex2var_ps(lo, od, hi));
    }
}


TL_TARGET_AVX512BF16 TL_AI __m512 tl5p_even(__m512i x) { return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)); }
TL_TARGET_AVX512BF16 TL_AI __m512 tl5p_odd(__m512i x) {
    return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u)));
}

/* Which blocks of a row of d elements, read from lead elements before it, are
 * whole: [*lo, *hi); the others (first, last) are masked. */
TL_AI void tl5p_whole(size_t d, size_t lead, size_t *lo, size_t *hi) {
    *lo = lead ? 1 : 0;
    *hi = (lead + d) / 32;
    if (*hi < *lo) *hi = *lo;
}

/* Block t of a row whose blocks start at v (the row's address less 2 * lead
 * bytes, as an integer: it may precede the row): whole (W1) or masked. */
TL_TARGET_AVX512BF16 TL_AI __m512i tl5p_blk(uintptr_t v, size_t t, size_t d, size_t lead, int whole) {
    if (whole) return _mm512_loadu_si512((const void *)(v + 64 * t));
    return _mm512_maskz_loadu_epi16((__mmask32)tl5p_lanes((ptrdiff_t)(32 * t) - (ptrdiff_t)lead, d),
                                    (const void *)(v + 64 * t));
}

/* One block t of R rows: the dot chains (D) and the norm chain (W). */
#define TL5P_STEP(t, whole)                                                                       \
    do {                                                                                          \
        __m512 qe = _mm512_setzero_ps(), qo = _mm512_setzero_ps();                                \
        if (D) {                                                                                  \
            qe = _mm512_loadu_ps(q + 32 * (t));                                                   \
            qo = _mm512_loadu_ps(q + 32 * (t) + 16);                                              \
            TL5_IN_REG(qe);                                                                       \
            TL5_IN_REG(qo);                                                                       \
        }                                                                                         \
        _Pragma("GCC unroll 4") for (int i = 0; i < R; i++) {                                     \
            if (PF) _mm_prefetch((const char *)(v[i] + 64 * (t)) + TL5_PF_BYTES, _MM_HINT_T0);   \
            __m512i x = tl5p_blk(v[i], (t), d, lead, (whole));                                    \
            TL5_IN_REG(x);                                                                        \
            if (D) {                                                                              \
                ae[i] = _mm512_fmadd_ps(qe, tl5p_even(x), ae[i]);                                 \
                ao[i] = _mm512_fmadd_ps(qo, tl5p_odd(x), ao[i]);                                  \
            }                                                                                     \
            if (W) b[i] = _mm512_dpbf16_ps(b[i], (__m512bh)x, (__m512bh)x);                       \
        }                                                                                         \
    } while (0)

/* Dot (D) and norm (W) of R <= 4 rows at c[0..R-1]; q in the pair layout.
 * The masked first block (lead > 0), the whole ones, the masked last one. */
TL_TARGET_AVX512BF16 TL_AI void tl5p_group(const float *q, const char *const *c, const size_t *o, size_t d,
                                           size_t lead, float *dot, float *nrm, int R, int D, int W, int PF) {
    const size_t nblk = tl5p_blocks(d, lead);
    size_t lo, hi;
    tl5p_whole(d, lead, &lo, &hi);
    uintptr_t v[4];
    __m512 ae[4], ao[4], b[4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        ae[i] = ao[i] = b[i] = _mm512_setzero_ps();
        v[i] = (uintptr_t)c[i] - 2 * lead;
    }
    if (lo && nblk) TL5P_STEP(0, 0);
    for (size_t t = lo; t < hi; t++) TL5P_STEP(t, 1);
    if (hi < nblk) TL5P_STEP(hi, 0);
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        if (D) dot[o[i]] = tl5_hsum(_mm512_add_ps(ae[i], ao[i]));
        if (W) nrm[o[i]] = tl5_hsum(b[i]);
    }
}

/* As tl5_rows: four adjacent rows in cache, the two halves' rows streaming. */
TL_TARGET_AVX512BF16 TL_AI void tl5p_rows(const float *q, const char *rows, ptrdiff_t rs, size_t nrows, size_t d,
                                          size_t lead, float *dot, float *nrm, int stream, int D, int W) {
#define TL5P_GROUP(c, o, R, S) tl5p_group(q, c, o, d, lead, dot, nrm, R, D, W, S)
    TL5_ROW_GROUPS(TL5P_GROUP);
#undef TL5P_GROUP
}

/* Dots of Q <= 3 queries (pair layout, at q + i * qs floats) with R <= 4 rows:
 * per block the even products of every pair, then the odd ones (24
 * accumulators, 4 row vectors, 1 query vector), the same two chains per pair
 * as tl5p_group. */
TL_TARGET_AVX512BF16 TL_AI void tl5p_tile_blk(const float *q, ptrdiff_t qs, const uintptr_t *v, size_t t, size_t d,
                                              size_t lead, int whole, __m512 ae[3][4], __m512 ao[3][4], int Q,
                                              int R) {
    __m512 x[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        x[r] = tl5p_even(tl5p_blk(v[r], t, d, lead, whole));
        TL5_IN_REG(x[r]);
    }
#pragma GCC unroll 3
    for (int i = 0; i < Q; i++) {
        __m512 qv = _mm512_loadu_ps(q + i * qs + 32 * t);
        TL5_IN_REG(qv);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) ae[i][r] = _mm512_fmadd_ps(qv, x[r], ae[i][r]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        x[r] = tl5p_odd(tl5p_blk(v[r], t, d, lead, whole));
        TL5_IN_REG(x[r]);
    }
#pragma GCC unroll 3
    for (int i = 0; i < Q; i++) {
        __m512 qv = _mm512_loadu_ps(q + i * qs + 32 * t + 16);
        TL5_IN_REG(qv);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) ao[i][r] = _mm512_fmadd_ps(qv, x[r], ao[i][r]);
    }
}

TL_TARGET_AVX512BF16 TL_AI void tl5p_tile(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs, size_t d,
                                          size_t lead, float *dot, size_t ldd, int Q, int R) {
    const size_t nblk = tl5p_blocks(d, lead);
    size_t lo, hi;
    tl5p_whole(d, lead, &lo, &hi);
    uintptr_t v[4];
    __m512 ae[3][4], ao[3][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) v[r] = (uintptr_t)(rows + r * rs) - 2 * lead;
#pragma GCC unroll 3
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) ae[i][r] = ao[i][r] = _mm512_setzero_ps();
    if (lo && nblk) tl5p_tile_blk(q, qs, v, 0, d, lead, 0, ae, ao, Q, R);
    for (size_t t = lo; t < hi; t++) tl5p_tile_blk(q, qs, v, t, d, lead, 1, ae, ao, Q, R);
    if (hi < nblk) tl5p_tile_blk(q, qs, v, hi, d, lead, 0, ae, ao, Q, R);
#pragma GCC unroll 3
    for (int i = 0; i < Q; i++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) dot[(size_t)i * ldd + (size_t)r] = tl5_hsum(_mm512_add_ps(ae[i][r], ao[i][r]));
}

TL_TARGET_AVX512BF16 TL_AI void tl5p_tile_rows(const float *q, ptrdiff_t qs, const char *rows, ptrdiff_t rs,
                                               size_t nrows, size_t d, size_t lead, float *dot, size_t ldd, int Q) {
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) tl5p_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, d, lead, dot + r, ldd, Q, 4);
    switch (nrows - r) {
    case 3: tl5p_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, d, lead, dot + r, ldd, Q, 3); break;
    case 2: tl5p_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, d, lead, dot + r, ldd, Q, 2); break;
    case 1: tl5p_tile(q, qs, rows + (ptrdiff_t)r * rs, rs, d, lead, dot + r, ldd, Q, 1); break;
    default: break;
    }
}

TL_TARGET_AVX512BF16 static void tl5p_dn(const float *q, const char *rows, ptrdiff_t rs, size_t nrows,
                                         const tl_cos_plan *p, float *dot, float *nrm, int stream) {
    const size_t d = p->dm + p->rem, o = p->head;
    if (nrm && stream)
        tl5p_rows(q, rows, rs, nrows, d, o, dot, nrm, 1, 1, 1);
    else if (nrm)
        tl5p_rows(q, rows, rs, nrows, d, o, dot, nrm, 0, 1, 1);
    else if (stream)
        tl5p_rows(q, rows, rs, nrows, d, o, dot, NULL, 1, 1, 0);
    else
        tl5p_rows(q, rows, rs, nrows, d, o, dot, NULL, 0, 1, 0);
}

TL_TARGET_AVX512BF16 static void tl5p_norms(const char *rows, ptrdiff_t rs, size_t nrows, const tl_cos_plan *p,
                                            float *nrm) {
    tl5p_rows(NULL, rows, rs, nrows, p->dm + p->rem, p->head, NULL, nrm, 1, 0, 1);
}

/* All m queries against a block of rows: three queries at a time. */
TL_TARGET_AVX512BF16 static void tl5p_dots(const float *q, ptrdiff_t qs, size_t m, const char *rows, ptrdiff_t rs,
                                           size_t nrows, const tl_cos_plan *p, float *dot, size_t ldd) {
    const size_t d = p->dm + p->rem, o = p->head;
    size_t i = 0;
    for (; i + 3 <= m; i += 3) tl5p_tile_rows(q + (ptrdiff_t)i * qs, qs, rows, rs, nrows, d, o, dot + i * ldd, ldd, 3);
    if (m - i == 2) tl5p_tile_rows(q + (ptrdiff_t)i * qs, qs, rows, rs, nrows, d, o, dot + i * ldd, ldd, 2);
    if (m - i == 1) tl5p_tile_rows(q + (ptrdiff_t)i * qs, qs, rows, rs, nrows, d, o, dot + i * ldd, ldd, 1);
}

/* The plan of the pair kernels: head = o, the elements before the row that
 * its first block covers (0..31), dm + rem = d. */
static tl_cos_plan tl5p_plan(size_t d, size_t mis) {
    tl_cos_plan p = {(mis & 63) / 2, d, 0};
    return p;
}

#define TL5_INSTANCE(SUF, K)                                                                              \
    TL_TARGET_AVX512 static void tl5_dn_##SUF(const float *q, const char *rows, ptrdiff_t rs, size_t nrows, \
                                              const tl_cos_plan *p, float *dot, float *nrm, int stream) {   \
        if (nrm && stream)                                                                                \
            tl5_rows(q, rows, rs, nrows, p, dot, nrm, K, 1, 1, 1);                                        \
        else if (nrm)                                                                                     \
            tl5_rows(q, rows, rs, nrows, p, dot, nrm, K, 0, 1, 1);                                        \
        else if (stream)                                                                                  \
            tl5_rows(q, rows, rs, nrows, p, dot, NULL, K, 1, 1, 0);                                       \
        else                                                                                              \
            tl5_rows(q, rows, rs, nrows, p, dot, NULL, K, 0, 1, 0);                                       \
    }                                                                                                     \
    TL_TARGET_AVX512 static void tl5_norms_##SUF(const char *rows, ptrdiff_t rs, size_t nrows,            \
                                                 const tl_cos_plan *p, float *nrm) {                      \
        tl5_rows(NULL, rows, rs, nrows, p, NULL, nrm, K, 1, 0, 1);                                        \
    }                                                                                                     \
    TL_TARGET_AVX512 static void tl5_dots_##SUF(const float *q, ptrdiff_t qs, size_t m, const char *rows,  \
                                                ptrdiff_t rs, size_t nrows, const tl_cos_plan *p,          \
                                                float *dot, size_t ldd) {                                 \
        tl5_dots(q, qs, m, rows, rs, nrows, p, dot, ldd, K);                                              \
    }

TL5_INSTANCE(f32, TL_CK_F32)
TL5_INSTANCE(f16, TL_CK_F16)
TL5_INSTANCE(bf16, TL_CK_BF16)

int tl_cos_ops_avx512(tl_cos_kind k, tl_cos_ops *ops) {
    switch (k) {
    case TL_CK_F32: *ops = (tl_cos_ops){tl5_dn_f32, tl5_norms_f32, tl5_dots_f32, 16, NULL, NULL}; return 1;
    case TL_CK_F16: *ops = (tl_cos_ops){tl5_dn_f16, tl5_norms_f16, tl5_dots_f16, 16, NULL, NULL}; return 1;
    case TL_CK_BF16:
        if (tl_kernels_ext() & TL_EXT_AVX512_BF16)
            *ops = (tl_cos_ops){tl5p_dn, tl5p_norms, tl5p_dots, 16, tl5p_query, tl5p_plan};
        else
            *ops = (tl_cos_ops){tl5_dn_bf16, tl5_norms_bf16, tl5_dots_bf16, 16, NULL, NULL};
        return 1;
    }
    return 0;
}

#else

int tl_cos_ops_avx512(tl_cos_kind k, tl_cos_ops *ops) {
    (void)k, (void)ops;
    return 0;
}

#endif /* TL_HAVE_X86 */
