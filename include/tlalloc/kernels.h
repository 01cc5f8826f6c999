/* tlalloc/kernels.h: compute kernels whose scratch memory comes from a tl_scratch.
 *
 * cosine similarity, spreading activation over a CSR graph, and decay of
 * strengths. Their exact meaning is documented in docs/kernels.md. Every kernel
 * takes a begun tl_scratch (see tlalloc/scratch.h) for its temporary memory and
 * never fails for lack of arena space. They do not allocate their results: the
 * caller passes the output buffers.
 *
 * Arrays are described by a base pointer, an element type and byte strides, so
 * NumPy arrays of any layout can be passed without a copy; elements that are
 * not in the kernel's working type are converted in blocks through scratch.
 */
#ifndef TLALLOC_KERNELS_H
#define TLALLOC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tlalloc/scratch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types (native byte order). */
typedef enum tl_dtype {
    TL_F16 = 0, TL_F32, TL_F64,
    TL_I8, TL_I16, TL_I32, TL_I64,
    TL_U8, TL_U16, TL_U32, TL_U64,
    TL_BF16 /* bfloat16: the top 16 bits of a float32 (ml_dtypes.bfloat16) */
} tl_dtype;

/* Size in bytes of one element of `t`, 0 for an unknown type. */
size_t tl_dtype_size(tl_dtype t);

/* Return codes. */
enum {
    TL_K_OK = 0,
    TL_K_EINVAL = -1,  /* an argument the kernel cannot accept (dtype, shape) */
    TL_K_ENOMEM = -2,  /* the pool (or, for TL_SCRATCH_MALLOC, malloc) refused scratch memory */
    TL_K_EGRAPH = -3,  /* the graph or the seeds are malformed: see tl_spread_error */
    TL_K_EAGES = -4,   /* an age is negative or NaN: see tl_decay_error */
    TL_K_EINTR = -5    /* the thread's poll function asked the call to stop */
};

/* Interruption. A kernel call polls between chunks of work (a block of rows,
 * a spreading step, a chunk of elements: each well under a millisecond) by
 * calling the calling thread's poll function, if one is set; a nonzero answer
 * makes the call return TL_K_EINTR at once, with its output partly written.
 * The setting is per thread; NULL (the default) turns polling off. Cost: a
 * thread-local load and a predicted branch per chunk. */
typedef int (*tl_kernel_poll_fn)(void *ctx);
void tl_kernels_set_poll(tl_kernel_poll_fn fn, void *ctx);

/* Instruction set used by the vectorised paths, chosen at first use from what
 * the CPU supports (AVX-512 F+BW+VL+DQ, else AVX2+FMA+F16C, else portable C). */
typedef enum tl_isa { TL_ISA_PORTABLE = 0, TL_ISA_AVX2 = 1, TL_ISA_AVX512 = 2 } tl_isa;
tl_isa tl_kernels_isa(void);
/* Testing aid: force an instruction set for every thread. Returns the previous
 * one, or -1 (and changes nothing) if the CPU lacks `isa`. */
int tl_kernels_set_isa(tl_isa isa);
/* The best instruction set this CPU supports. */
tl_isa tl_kernels_best_isa(void);

/* Optional extensions a path uses where the CPU has them and the instruction
 * set in use allows (tl_kernels_isa): AVX512_VNNI (vpdpbusd on zmm) under
 * TL_ISA_AVX512, AVX-VNNI (vpdpbusd on ymm) under TL_ISA_AVX2 or above: the
 * int8 corpus kernels, results identical with and without (exact integer
 * sums). AVX512_BF16 (vdpbf16ps) under TL_ISA_AVX512: the float32 kernels for
 * a bfloat16 corpus, the same exact products summed in another order, so
 * within float32 rounding of the path without it (docs/kernels.md). */
enum { TL_EXT_AVX512_VNNI = 1u, TL_EXT_AVX_VNNI = 2u, TL_EXT_AVX512_BF16 = 4u };
unsigned tl_kernels_ext(void);
unsigned tl_kernels_best_ext(void);
/* Testing aid: use only the extensions in `ext` (a subset of
 * tl_kernels_best_ext()). Returns the previous set, or -1 (and changes
 * nothing) if the CPU lacks one of them. */
int tl_kernels_set_ext(unsigned ext);

/* ---- cosine similarity ---------------------------------------------------------- */

/* A strided vector: element i at (char *)data + i * stride. */
typedef struct tl_vec {
    const void *data;
    tl_dtype dtype;
    size_t n;
    ptrdiff_t stride; /* bytes */
} tl_vec;

/* A strided matrix: element (i, j) at data + i * row_stride + j * col_stride. */
typedef struct tl_mat {
    const void *data;
    tl_dtype dtype;
    size_t rows, cols;
    ptrdiff_t row_stride, col_stride; /* bytes */
} tl_mat;

/* score[i] = dot(q, c_i) / (|q| |c_i|) as float32, 0 where a norm is zero or not
 * finite, clamped to [-1, 1]. Writes rows scores at out + i * out_stride bytes.
 * Working precision: float64 if q or c is float64, float32 otherwise (float16
 * and bfloat16 widen exactly, in registers where the ISA allows). Float types
 * only; query->n must equal cand->cols. Cost: one pass over the candidates (dot
 * and norm fused); scratch only for the query and for converted blocks. */
int tl_cosine_similarity(tl_scratch *s, const tl_vec *query, const tl_mat *cand,
                         float *out, ptrdiff_t out_stride);

/* The k best rows, best first (ties to the lower index): writes min(k, rows)
 * indices and scores to the contiguous arrays idx and scores, and that count to
 * *count. Selection uses a bounded heap of k entries in scratch. */
int tl_cosine_topk(tl_scratch *s, const tl_vec *query, const tl_mat *cand, size_t k,
                   int64_t *idx, float *scores, size_t *count);

/* Batched form: m = queries->rows queries of queries->cols elements. Row i of
 * the result is exactly what the single-query form gives for query i (same
 * bits). The candidates are read once for all queries, in blocks that stay in
 * cache while every query passes; their norms are computed once per call.
 *
 * cand_norms: NULL, or n = cand->rows norms (TL_F32 or TL_F64, strided) used
 * instead of computing |c_i| (the caller vouches for them: finite, >= 0; a norm
 * that is not > 0 and finite gives 0). With norms given, row i's score is
 * dot(q, c_i) / (|q| * cand_norms[i]), clamped to [-1, 1].
 *
 * Scores of query i, row r go to out + i * out_row_stride + r * out_col_stride
 * (bytes). tl_cosine_topk_batch writes count = min(k, n) entries per query,
 * query i's at idx + i * count and scores + i * count. */
int tl_cosine_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                    float *out, ptrdiff_t out_row_stride, ptrdiff_t out_col_stride);
int tl_cosine_topk_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                         size_t k, int64_t *idx, float *scores, size_t *count);

/* ---- metrics and filters -------------------------------------------------------
 * The general form of the two calls above. With opts NULL (or zeroed) it is
 * exactly tl_cosine_batch / tl_cosine_topk_batch. */
typedef enum tl_metric {
    TL_METRIC_COSINE = 0, /* dot(q, c) / (|q| |c|), clamped to [-1, 1]; higher is better */
    TL_METRIC_DOT = 1,    /* dot(q, c); higher is better */
    TL_METRIC_L2 = 2      /* |q - c|^2 (squared Euclidean, >= 0); LOWER is better */
} tl_metric;

typedef struct tl_score_opts {
    tl_metric metric;
    /* Nonzero: every candidate has unit norm; |c_i| is taken as 1 and never
     * read (cosine: dot / |q|; l2: |q|^2 + 1 - 2 dot; dot: no effect). Not
     * together with cand_norms. */
    int normalized;
    /* Filter (at most one of the two): only the chosen rows are scored and
     * ranked. allow_ids: n_allow distinct row ids in [0, rows), any order;
     * allow_mask: rows bytes at allow_mask + i * mask_stride, nonzero keeps row
     * i. Only chosen rows are read (runs of adjacent rows go through the row
     * kernels together, so a mask that keeps every row costs what no filter
     * does); the mask itself is read once per call. */
    const int64_t *allow_ids;
    size_t n_allow;
    const uint8_t *allow_mask;
    ptrdiff_t mask_stride;
} tl_score_opts;

/* Scores of every query against the chosen rows: query i's score for the
 * j-th chosen row (allow_ids[j], or the j-th kept row of the mask in
 * ascending order; row j without a filter) goes to out + i * out_row_stride +
 * j * out_col_stride. A chosen row's score has the same bits as without a
 * filter.
 *
 * Precision: cosine as tl_cosine_batch. dot: the float32 (float64 for any
 * float64 input) dot product of the cosine kernels, the same bits, rounded
 * once to float32. l2, float32 working precision: |q|^2 + |c|^2 - 2 q.c in
 * float64 from the float32 dot and squared norms of the cosine kernels,
 * clamped at 0, rounded once to float32; its absolute error is within
 * (d + 2) * 2^-23 * (|q|^2 + |c|^2) (each float32 sum errs by at most d * 2^-24
 * of its magnitude; cancellation: small distances between long vectors lose
 * relative precision); dot likewise within d * 2^-24 * |q| |c| plus the final
 * rounding; float64 working precision: the sum of
 * (q_j - c_j)^2 directly (the expansion with cand_norms or normalized).
 * Unlike cosine, dot and l2 take no range-edge slow path: sums that under- or
 * overflow the working precision give what it gives (0, inf).
 * TL_K_EINVAL also for an unknown metric, normalized with cand_norms, both
 * filters, or an allow_ids entry out of range or repeated (tl_allow_check). */
int tl_score_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                   const tl_score_opts *opts, float *out, ptrdiff_t out_row_stride, ptrdiff_t out_col_stride);

/* The k best chosen rows per query, best first (l2: the nearest; ties to the
 * lower row id; NaN last): count = min(k, chosen rows) entries per query,
 * query i's at idx + i * ld and scores + i * ld (ld: elements, 0 means count;
 * else at least count). idx holds row ids of cand. */
int tl_score_topk_batch(tl_scratch *s, const tl_mat *queries, const tl_mat *cand, const tl_vec *cand_norms,
                        const tl_score_opts *opts, size_t k, int64_t *idx, float *scores, size_t ld,
                        size_t *count);

/* The rows a mask keeps: bytes at mask + i * stride for i < n that are not 0.
 * A contiguous mask is counted eight bytes per step. */
size_t tl_allow_mask_count(const uint8_t *mask, ptrdiff_t stride, size_t n);

/* Check n row ids for tl_score_opts.allow_ids against `rows`: TL_K_OK, or
 * TL_K_EINVAL with *bad_pos the first id out of [0, rows) (*dup 0) or the
 * first repeat of an earlier id (*dup 1). Cost: O(n) when the ids ascend,
 * else a bitmap of rows bits in scratch. */
int tl_allow_check(tl_scratch *s, const int64_t *ids, size_t n, size_t rows, size_t *bad_pos, int *dup);

/* Testing aid: single-query calls whose candidates span more than `bytes`
 * read one row at a time (the order that keeps DRAM streaming), smaller ones
 * three rows interleaved (faster from cache). Both give the same bits. Returns
 * the previous threshold; (size_t)-1 queries it without a change. */
size_t tl_cosine_set_stream_bytes(size_t bytes);

/* ---- int8 corpora ---------------------------------------------------------------
 * Scheme (per row, symmetric, absmax; docs/kernels.md compares it with others):
 * scale = max_j |x_j| / 127 (as float32), q_j = round(x_j * 127 / max_j |x_j|)
 * to nearest, ties to even, in [-127, 127]; the row stands for q_j * scale. A
 * row of zeros gets scale 0 and zeros. With each row go sum_j q_j and
 * sum_j q_j^2 (int32): the integer kernels need them and read no other pass.
 * Columns: at most TL_I8_MAX_COLS (every integer sum then fits int32). */
#define TL_I8_MAX_COLS 65536

/* An int8 corpus: rows x cols values, row i at data + i * row_stride bytes
 * (elements contiguous), with per-row scale, sum and sumsq as quantized by
 * tl_quantize_i8 (any int8 values in [-128, 127] are accepted, with their
 * true sums). */
typedef struct tl_i8_mat {
    const int8_t *data;
    size_t rows, cols;
    ptrdiff_t row_stride;
    const float *scale;
    const int32_t *sum, *sumsq;
} tl_i8_mat;

/* Quantize src (any float dtype, any strides) row by row into dst (row i at
 * dst + i * dst_row_stride), scale[i], sum[i], sumsq[i]. TL_K_EINVAL for a
 * non-float dtype, more than TL_I8_MAX_COLS columns, or a non-finite element
 * (its row in *bad_row when bad_row is not NULL; rows before it are written).
 * Cost: one pass in float64 (exact for every input dtype); scratch: one row of
 * doubles. */
int tl_quantize_i8(tl_scratch *s, const tl_mat *src, int8_t *dst, ptrdiff_t dst_row_stride, float *scale,
                   int32_t *sum, int32_t *sumsq, size_t *bad_row);

typedef enum tl_i8_metric {
    TL_I8_COSINE = 0, /* idot / sqrt(sum q^2 * sumsq_r): the cosine of the dequantized vectors, in [-1, 1] */
    TL_I8_DOT = 1     /* idot * qscale * scale_r: their inner product */
} tl_i8_metric;

/* Scores of m = queries->rows float queries (any float dtype and strides)
 * against an int8 corpus. Each query is quantized by the corpus scheme on
 * every call; idot, its integer dot product with a row, is summed exactly in
 * int32 (AVX512_VNNI, AVX-VNNI, AVX2 or portable: the same integers), and the
 * score is computed in float64 from it and rounded once to float32. A query
 * or row of zeros scores 0 (cosine); a query with a non-finite element scores
 * 0 (cosine) or NaN (dot). Output and top-k forms as tl_cosine_batch and
 * tl_cosine_topk_batch (top-k: higher is better, ties to the lower index).
 * Cost: one pass over the corpus, 1 byte per element (4x less than float32);
 * blocks of 256 rows stay in L2 while every query passes. */
int tl_i8_score_batch(tl_scratch *s, const tl_mat *queries, const tl_i8_mat *cand, tl_i8_metric metric,
                      float *out, ptrdiff_t out_row_stride, ptrdiff_t out_col_stride);
int tl_i8_topk_batch(tl_scratch *s, const tl_mat *queries, const tl_i8_mat *cand, tl_i8_metric metric, size_t k,
                     int64_t *idx, float *scores, size_t *count);

/* The integer dot products themselves: out[i * out_row_stride + r] =
 * sum_j q[i * q_row_stride + j] * row_r[j] for m int8 queries of cand->cols
 * values in [-127, 127] (TL_K_EINVAL if one is -128). For tests and for
 * callers that quantize their own queries. */
int tl_i8_dots(tl_scratch *s, const int8_t *q, size_t m, ptrdiff_t q_row_stride, const tl_i8_mat *cand,
               int32_t *out, ptrdiff_t out_row_stride);

/* ---- spreading activation --------------------------------------------------------- */

/* CSR adjacency: row u's edges are indptr[u] .. indptr[u+1]-1; edge e goes
 * u -> indices[e] with weight data[e]. indptr/indices: TL_I32 or TL_I64,
 * contiguous; data: TL_F32 or TL_F64, contiguous. n < 2^31. */
typedef struct tl_csr {
    size_t n;   /* nodes: length of indptr minus one */
    size_t nnz; /* length of indices and of data */
    const void *indptr;
    tl_dtype indptr_dtype;
    const void *indices;
    tl_dtype indices_dtype;
    const void *data;
    tl_dtype data_dtype;
} tl_csr;

/* Which engine runs (results are identical; AUTO picks by size). */
typedef enum tl_spread_engine {
    TL_SPREAD_AUTO = 0,   /* DENSE for n <= TL_SPREAD_DENSE_MAX, else SPARSE */
    TL_SPREAD_DENSE = 1,  /* arrays of n doubles: O(n) per step */
    TL_SPREAD_SPARSE = 2, /* touched nodes only: O(edges crossed) */
    TL_SPREAD_INDEXED = 3 /* arrays of n doubles, never cleared, and bitmaps: O(edges crossed + n / 64) */
} tl_spread_engine;

typedef struct tl_spread_params {
    double decay_rate; /* f = exp(-decay_rate) */
    double threshold;  /* a node spreads while its pulse >= threshold */
    size_t max_depth;  /* number of spreading steps */
    tl_spread_engine engine;
} tl_spread_params;

/* What was wrong when tl_spread_activation returns TL_K_EGRAPH. */
typedef enum tl_graph_fault {
    TL_FAULT_NONE = 0,
    TL_FAULT_SEED,   /* seeds[pos] = ivalue is out of range */
    TL_FAULT_INDPTR, /* row pos: indptr[pos] = ivalue, indptr[pos+1] = ivalue2 not in order or range */
    TL_FAULT_INDEX,  /* indices[pos] = ivalue is out of range */
    TL_FAULT_WEIGHT, /* data[pos] = fvalue is not finite */
    TL_FAULT_SHAPE   /* indptr[0] != 0 or indptr[n] != nnz (ivalue, ivalue2) */
} tl_graph_fault;

typedef struct tl_spread_error {
    tl_graph_fault fault;
    int64_t set; /* tl_spread_activation_many: the seed set being run (SEED: holding the seed) */
    int64_t pos;
    int64_t ivalue, ivalue2;
    double fvalue;
} tl_spread_error;

/* Spreading activation (docs/kernels.md): activation[j] (or activation[0] for
 * every seed when nact == 1) is added to seeds[j]; then max_depth steps, each
 * spreading pulse[u] * w * f from every node whose pulse is >= threshold. The
 * result is written either densely, as float32 totals to dense[0..n) (which the
 * caller must have zero-filled; only touched nodes are written), or, if dense is
 * NULL, as the k most activated nodes (best first, ties to the lower id) to
 * top_idx/top_val with the count in *count.
 *
 * Cost: proportional to the edges the pulse crosses (plus sorting each frontier),
 * not to n: the pulse, frontier and touched set live in scratch, indexed by a
 * hash table. Graphs of at most TL_SPREAD_DENSE_MAX nodes use plain arrays of n
 * doubles instead (a bounded O(n) per step, cheaper there than hashing).
 * Validation: O(1) checks of the lengths, every seed, and every row the pulse
 * visits (indptr order and range, indices in range, weights finite); a fault
 * anywhere returns TL_K_EGRAPH with *err filled and no output written. */
#define TL_SPREAD_DENSE_MAX 4096
int tl_spread_activation(tl_scratch *s, const tl_csr *g, const int64_t *seeds, size_t nseeds,
                         const double *activation, size_t nact, const tl_spread_params *p,
                         float *dense, size_t k, int64_t *top_idx, float *top_val,
                         size_t *count, tl_spread_error *err);

/* Spreading activation from nsets seed sets in one call: set i is
 * seeds[set_ptr[i] .. set_ptr[i+1]) (set_ptr[0] == 0, non-decreasing), with
 * activation[set_ptr[i] ..] (nact == set_ptr[nsets]) or activation[0] for every
 * seed (nact == 1). Set i's result is exactly tl_spread_activation's for those
 * seeds, written to dense + i * n (n floats, zero-filled by the caller) or, if
 * dense is NULL, to top_idx/top_val + i * min(k, n) with its count in count[i].
 *
 * Every seed of every set is checked before any work (TL_FAULT_SEED with
 * err->set and err->pos the set and the position within it; other faults name
 * the set in err->set). The sets run back to back in one engine whose state
 * (slots, hash table, frontier, heap) is emptied between sets (O(touched)) and
 * grown, never rebuilt from empty or freed, across them: the single call's
 * setup (argument checks, GIL hand-off, scratch bracket, growing the table from
 * 64 slots) is paid once. With TL_SPREAD_AUTO on a graph above
 * TL_SPREAD_DENSE_MAX nodes, the state replaces its hash table by a direct map
 * of n slot numbers (4n bytes of scratch, cleared once) as soon as a set has
 * touched n / 16 nodes; TL_SPREAD_INDEXED uses the map from the start.
 * Scratch: what the largest set needs, plus 4n bytes with the map. */
int tl_spread_activation_many(tl_scratch *s, const tl_csr *g, const int64_t *seeds,
                              const size_t *set_ptr, size_t nsets, const double *activation,
                              size_t nact, const tl_spread_params *p, float *dense, size_t k,
                              int64_t *top_idx, float *top_val, size_t *count,
                              tl_spread_error *err);

/* ---- decay ------------------------------------------------------------------------ */

typedef enum tl_decay_model {
    TL_DECAY_EXP = 0,       /* s * exp(-age / tau) */
    TL_DECAY_HALF_LIFE = 1, /* s * 2 ** (-age / half_life) */
    TL_DECAY_POWER = 2      /* s * (1 + age / tau) ** (-alpha) */
} tl_decay_model;

typedef struct tl_decay_params {
    tl_decay_model model;
    double scale; /* tau or half_life: finite, > 0 */
    double alpha; /* power model only */
} tl_decay_params;

/* Check n ages (any tl_dtype, strided): returns TL_K_OK, or TL_K_EAGES with
 * *bad_pos set to the first negative or NaN age. Reads only. */
int tl_decay_check_ages(const void *ages, tl_dtype dtype, ptrdiff_t stride, size_t n,
                        size_t *bad_pos);

/* out[i] = decayed strength of strengths[i] at ages[i] for n elements.
 * strengths: TL_F16, TL_F32 or TL_F64; out: TL_F32 or TL_F64 (the working
 * precision: float32 math for TL_F32 out, float64 for TL_F64). out may be the
 * same memory as strengths (same pointer and stride). Ages must have been
 * checked (tl_decay_check_ages). Float32 uses vectorised exp2/log2 (AVX2 or
 * AVX-512, within 1e-6 relative); float64 uses libm. */
int tl_decay(tl_scratch *s, const void *strengths, tl_dtype s_dtype, ptrdiff_t s_stride,
             const void *ages, tl_dtype a_dtype, ptrdiff_t a_stride, void *out,
             tl_dtype out_dtype, ptrdiff_t out_stride, size_t n, const tl_decay_params *p);

#ifdef __cplusplus
}
#endif
#endif /* TLALLOC_KERNELS_H */
