/* kernel_spread.c: spreading activation over a CSR graph, frontier-driven.
 *
 * Meaning (docs/kernels.md), with f = exp(-decay_rate):
 *   pulse[seeds] += activation; total = pulse
 *   max_depth times: new[v] += pulse[u] * w * f for every edge u -> v (weight w)
 *                    of every u with pulse[u] >= threshold; total += new; pulse = new
 *
 * Two engines compute it (the second in two forms), all adding contributions
 * in exactly the order of the loop above (u ascending, edges in CSR order) in
 * float64, so the result is the reference's bit for bit:
 *
 * - dense, for graphs of at most TL_SPREAD_DENSE_MAX nodes: pulse, next pulse
 *   and total are plain arrays of n doubles in scratch (at most 96 KiB), and each
 *   step scans them in node order. O(n) per step, but n is bounded by a small
 *   constant, and an edge costs a load and an add with no indirection.
 * - sparse, for larger graphs: only touched nodes have state, a "slot" found
 *   through a hash table on the node id (open addressing, 4-byte entries,
 *   load <= 1/2). Each
 *   step collects the frontier (slots with pulse >= threshold) and sorts it by
 *   node id (radix sort), so the cost of a call grows with the edges the pulse
 *   crosses, never with n.
 *   A call for many seed sets (tl_spread_activation_many) may find the slots
 *   through a direct map of n slot numbers instead of the table ("indexed"):
 *   once a set has touched n / TL_MAP_FRACTION nodes, clearing 4n bytes once
 *   costs less than the work already done, and each edge then costs one map
 *   load instead of hash probes with compares.
 *
 * Nodes whose pulse is exactly 0 do not spread (they would only add zeros).
 *
 * Validation is lazy where it must be to stay sublinear: O(1) checks of the
 * lengths, every seed, and then each row when the pulse visits it (indptr
 * order and range), each edge when the pulse crosses it (index in range, weight
 * finite). Faults in rows the pulse never reaches cannot change the result and
 * are not looked for.
 */
#include <math.h>

#include "kernels_internal.h"

#if TL_HAVE_X86
#include <immintrin.h>
#endif

/* Touched nodes' state, one "slot" per node, as parallel arrays: the spreading
 * loop writes only `next` (8 bytes per node, so a step's targets stay in L1
 * longer), the top-k scan reads only `total`. */
typedef struct tl_spread_state {
    tl_scratch *s;
    size_t n;
    uint32_t *node; /* slot -> node id */
    double *cur;    /* pulse at this step */
    double *next;   /* pulse being accumulated for the next step */
    double *total;  /* sum of all pulses */
    size_t count, cap;     /* slots used; slots allocated */
    uint64_t *fr, *fr_tmp; /* this step's frontier keys: node << 32 | slot */
    int64_t *ra, *rb;      /* and their row ranges */
    size_t fcap;           /* frontier entries fr/ra have room for */
    uint32_t *table;       /* hash index: slot + 1, or 0 for empty */
    size_t tmask;
    unsigned tshift;
    uint32_t *slot_of;     /* or, instead of the table, n entries: node -> slot + 1, 0: untouched */
    int may_map;           /* reserve may replace the table with slot_of (many sets) */
} tl_spread_state;

/* ---- index: node id -> slot ------------------------------------------------------ */

static inline size_t tl_hash(uint32_t v, unsigned shift) {
    return (size_t)(((uint64_t)v * 0x9E3779B97F4A7C15ull) >> shift);
}

/* The slot of node v, -1 if untouched. */
static inline int64_t tl_slot_find(const tl_spread_state *st, uint32_t v) {
    if (st->slot_of) return (int64_t)st->slot_of[v] - 1;
    for (size_t h = tl_hash(v, st->tshift);; h = (h + 1) & st->tmask) {
        uint32_t e = st->table[h];
        if (e == 0) return -1;
        if (st->node[e - 1] == v) return (int64_t)(e - 1);
    }
}

/* The slot of node v, created if needed. Capacity is reserved beforehand, so
 * this never allocates. Cost: with the hash table, a multiply-shift hash, ~1.3
 * probes of a 4-byte table entry, each with a compare against the node array
 * (two dependent loads a probe); with `direct` (st->slot_of, the many-set
 * engine), one load of slot_of[v] and no compare. */
static inline __attribute__((always_inline)) uint32_t tl_slot_get(tl_spread_state *st, uint32_t v,
                                                                  int direct) {
    if (direct) {
        const uint32_t e = st->slot_of[v];
        if (e != 0) return e - 1;
        tl_assert(st->count < st->cap);
        const uint32_t ns = (uint32_t)st->count++;
        st->node[ns] = v;
        st->cur[ns] = st->next[ns] = st->total[ns] = 0.0;
        st->slot_of[v] = ns + 1;
        return ns;
    }
    for (size_t h = tl_hash(v, st->tshift);; h = (h + 1) & st->tmask) {
        uint32_t e = st->table[h];
        if (e == 0) {
            tl_assert(st->count < st->cap);
            uint32_t ns = (uint32_t)st->count++;
            st->node[ns] = v;
            st->cur[ns] = st->next[ns] = st->total[ns] = 0.0;
            st->table[h] = ns + 1;
            return ns;
        }
        if (st->node[e - 1] == v) return e - 1;
    }
}

/* A call for many sets replaces the hash table by a direct map once the
 * touched nodes reach n / TL_MAP_FRACTION. */
#define TL_MAP_FRACTION 16

/* Make room for `need` slots (need <= n). Arrays move to bigger scratch blocks;
 * the old ones stay until the end of the call (at most as much again). */
TL_NOINLINE static int tl_spread_reserve(tl_spread_state *st, size_t need) {
    if (need <= st->cap) return TL_K_OK;
    size_t cap = st->cap * 2 > need ? st->cap * 2 : need;
    if (cap > st->n) cap = st->n;
    tl_assert(cap >= need);
    tl_scratch *s = st->s;
    double *d = tl_scratch_alloc(s, 3 * cap * sizeof(double), TL_DEFAULT_ALIGN);
    uint32_t *node = tl_scratch_alloc(s, cap * sizeof(uint32_t), TL_DEFAULT_ALIGN);
    if (!d || !node) return TL_K_ENOMEM;
    if (st->count) {
        memcpy(node, st->node, st->count * sizeof(uint32_t));
        memcpy(d, st->cur, st->count * sizeof(double));
        memcpy(d + cap, st->next, st->count * sizeof(double));
        memcpy(d + 2 * cap, st->total, st->count * sizeof(double));
    }
    st->node = node;
    st->cur = d;
    st->next = d + cap;
    st->total = d + 2 * cap;
    st->cap = cap;
    if (!st->slot_of && st->may_map && cap >= st->n / TL_MAP_FRACTION) {
        /* Switch to the direct map for the rest of the call: 4n bytes to clear,
         * paid once, less than the work of the cap / 2 slots already made. */
        uint32_t *map = tl_scratch_alloc(s, st->n * sizeof(uint32_t), TL_DEFAULT_ALIGN);
        if (!map) return TL_K_ENOMEM;
        memset(map, 0, st->n * sizeof(uint32_t));
        for (size_t i = 0; i < st->count; i++) map[st->node[i]] = (uint32_t)i + 1;
        st->slot_of = map;
    }
    if (st->slot_of) return TL_K_OK; /* the direct map needs no rebuild */
    { /* rebuild the hash table at load <= 1/2 */
        size_t tsize = 16;
        unsigned bits = 4;
        while (tsize < 2 * cap) tsize <<= 1, bits++;
        uint32_t *table = tl_scratch_alloc(s, tsize * sizeof(uint32_t), TL_DEFAULT_ALIGN);
        if (!table) return TL_K_ENOMEM;
        memset(table, 0, tsize * sizeof(uint32_t));
        st->table = table;
        st->tmask = tsize - 1;
        st->tshift = 64 - bits;
        for (size_t i = 0; i < st->count; i++) {
            uint32_t v = st->node[i];
            size_t h = tl_hash(v, st->tshift);
            while (table[h] != 0) h = (h + 1) & st->tmask;
            table[h] = (uint32_t)i + 1;
        }
    }
    return TL_K_OK;
}

/* ---- frontier ordering -------------------------------------------------------------
 * Keys are node << 32 | slot and node ids are unique, so sorting the keys sorts
 * by node. Insertion sort for short frontiers, else LSD radix sort on the node
 * bits, 8 bits a pass (a pass whose digit is constant is skipped). */
static void tl_sort_keys(uint64_t *a, uint64_t *tmp, size_t m, unsigned node_bits) {
    if (m <= 48) {
        for (size_t i = 1; i < m; i++) {
            uint64_t x = a[i];
            size_t j = i;
            while (j > 0 && a[j - 1] > x) a[j] = a[j - 1], j--;
            a[j] = x;
        }
        return;
    }
    uint64_t *src = a, *dst = tmp;
    for (unsigned shift = 32; shift < 32 + node_bits; shift += 8) {
        size_t cnt[256] = {0};
        for (size_t i = 0; i < m; i++) cnt[(src[i] >> shift) & 255]++;
        if (cnt[(src[0] >> shift) & 255] == m) continue;
        size_t sum = 0;
        for (size_t b = 0; b < 256; b++) {
            size_t c = cnt[b];
            cnt[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < m; i++) dst[cnt[(src[i] >> shift) & 255]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, m * sizeof(uint64_t));
}

/* ---- typed access ------------------------------------------------------------------ */

static inline int64_t tl_ld_int(const void *p, int is64, size_t i) {
    return is64 ? ((const int64_t *)p)[i] : (int64_t)((const int32_t *)p)[i];
}

/* One edge's checks: index in range and weight finite. Out of line on failure. */
TL_NOINLINE TL_COLD static int tl_edge_fault(tl_spread_error *err, int64_t e, int64_t v, double w,
                                             uint64_t n) {
    err->pos = e;
    if ((uint64_t)v >= n) {
        err->fault = TL_FAULT_INDEX;
        err->ivalue = v;
    } else {
        err->fault = TL_FAULT_WEIGHT;
        err->fvalue = w;
    }
    return TL_K_EGRAPH;
}

/* How far ahead (edges) the direct map's entries are fetched, and (frontier
 * rows) the rows' lines in the direct map's loop. */
#define TL_MAP_AHEAD 32
#ifndef TL_ROW_AHEAD
#define TL_ROW_AHEAD 10
#endif

/* Prefetch slot_of[v] for any v (integer arithmetic: a v out of range forms no
 * out-of-bounds pointer; the prefetch of a wild address does not fault). */
static inline void tl_prefetch_map(const uint32_t *slot_of, uint64_t v) {
    __builtin_prefetch((const void *)((uintptr_t)slot_of + (uintptr_t)(v * sizeof(uint32_t))));
}

/* Spread the pulse of every frontier row (sparse engine). Specialised per index
 * and weight type and per slot index (hash table, or `direct` map) by
 * always_inline with constant flags. Per edge: two loads, one combined check,
 * a slot lookup (hash probes, or one map load fetched ahead) and an add. */
static inline __attribute__((always_inline)) int
tl_spread_rows(tl_spread_state *st, const tl_csr *g, size_t F, double f, int idx64, int w64,
               int direct, tl_spread_error *err) {
    const uint64_t n = st->n;
    for (size_t i = 0; i < F; i++) {
        if (TL_UNLIKELY((i & 4095) == 4095) && tl_k_interrupted()) return TL_K_EINTR;
        /* Rows of big graphs are cache misses: fetch ahead. The direct map's
         * loop, whose edges cost less, reads row i + 2's targets now (below), so
         * it fetches rows further ahead, their first and last lines. */
        if (!direct && i + 4 < F) {
            __builtin_prefetch((const char *)g->indices + st->ra[i + 4] * (idx64 ? 8 : 4));
            __builtin_prefetch((const char *)g->data + st->ra[i + 4] * (w64 ? 8 : 4));
        }
        if (direct && i + TL_ROW_AHEAD < F) {
            const int64_t a = st->ra[i + TL_ROW_AHEAD], b = st->rb[i + TL_ROW_AHEAD];
            __builtin_prefetch((const char *)g->indices + a * (idx64 ? 8 : 4));
            __builtin_prefetch((const char *)g->data + a * (w64 ? 8 : 4));
            if (b > a) {
                __builtin_prefetch((const char *)g->indices + (b - 1) * (idx64 ? 8 : 4));
                __builtin_prefetch((const char *)g->data + (b - 1) * (w64 ? 8 : 4));
            }
        }
        /* The direct map's entries (L2, a dependent load each) for the first
         * TL_MAP_AHEAD targets of row i + 2, and in a long row for the target
         * TL_MAP_AHEAD edges ahead. An index out of range only prefetches a
         * useless line: no check here (the edge loop checks it). */
        if (direct && i + 2 < F) {
            const int64_t a2 = st->ra[i + 2];
            const int64_t b2 = st->rb[i + 2] - a2 > TL_MAP_AHEAD ? a2 + TL_MAP_AHEAD : st->rb[i + 2];
            for (int64_t e = a2; e < b2; e++)
                tl_prefetch_map(st->slot_of, (uint64_t)tl_ld_int(g->indices, idx64, (size_t)e));
        }
        const uint32_t su = (uint32_t)st->fr[i];
        const double p = st->cur[su];
        for (int64_t e = st->ra[i]; e < st->rb[i]; e++) {
            if (direct && e + TL_MAP_AHEAD < st->rb[i])
                tl_prefetch_map(st->slot_of, (uint64_t)tl_ld_int(g->indices, idx64, (size_t)(e + TL_MAP_AHEAD)));
            int64_t v = tl_ld_int(g->indices, idx64, (size_t)e);
            double w = w64 ? ((const double *)g->data)[e] : (double)((const float *)g->data)[e];
            if (TL_UNLIKELY(((uint64_t)v >= n) | !isfinite(w))) return tl_edge_fault(err, e, v, w, n);
            uint32_t sv = tl_slot_get(st, (uint32_t)v, direct);
            st->next[sv] += p * w * f;
        }
    }
    return TL_K_OK;
}

/* Dense engine: one step over every node in id order. Returns TL_K_OK with
 * *spread set if any node spread, or TL_K_EGRAPH. */
static inline __attribute__((always_inline)) int
tl_dense_step(const tl_csr *g, const double *cur, double *next, double thr, double f, int ip64,
              int idx64, int w64, int *spread, tl_spread_error *err) {
    const uint64_t n = g->n;
    int any = 0;
    for (size_t u = 0; u < n; u++) {
        if (TL_UNLIKELY((u & 65535) == 65535) && tl_k_interrupted()) return TL_K_EINTR;
        const double p = cur[u];
        if (!(p >= thr) || p == 0.0) continue;
        any = 1;
        int64_t a = tl_ld_int(g->indptr, ip64, u), b = tl_ld_int(g->indptr, ip64, u + 1);
        if (TL_UNLIKELY(a < 0 || a > b || b > (int64_t)g->nnz)) {
            err->fault = TL_FAULT_INDPTR;
            err->pos = (int64_t)u;
            err->ivalue = a;
            err->ivalue2 = b;
            return TL_K_EGRAPH;
        }
        for (int64_t e = a; e < b; e++) {
            int64_t v = tl_ld_int(g->indices, idx64, (size_t)e);
            double w = w64 ? ((const double *)g->data)[e] : (double)((const float *)g->data)[e];
            if (TL_UNLIKELY(((uint64_t)v >= n) | !isfinite(w))) return tl_edge_fault(err, e, v, w, n);
            next[v] += p * w * f;
        }
    }
    *spread = any;
    return TL_K_OK;
}

/* ---- output ------------------------------------------------------------------------- */

/* Push totals into the bounded heap h (k > 0); returns its size. Node ids come
 * from `node`, or are the positions when it is NULL; zeros are skipped when
 * `skip_zero` (the sparse engine ranks untouched nodes' zeros separately).
 * Once the heap is full, a block of totals is converted to float32 and compared
 * with the root in one vector step, and only the (rare) qualifying ones are
 * pushed: about one cycle per node instead of a conversion, a compare and a
 * branch each (this halved the sparse engine's top-k time). A NaN root
 * (possible only with fewer than k numbers) falls back to the scalar loop; NaN
 * totals pass the vector filter and the scalar code orders them last. */
static inline void tl_topk_offer(tl_topk_item *h, size_t *hs, size_t k, double t, int64_t id,
                                 int skip_zero) {
    float v = (float)t;
    if ((v != 0.0f || !skip_zero) && (tl_topk_may_enter(h, *hs, k, v) || v != v))
        tl_topk_push(h, hs, k, v, id);
}

#define TL_ID(i) (node ? (int64_t)node[i] : (int64_t)(i))

#if TL_HAVE_X86
TL_TARGET_AVX512 static size_t tl_topk_scan_avx512(const double *total, const uint32_t *node,
                                                   size_t count, tl_topk_item *h, size_t k,
                                                   int skip_zero) {
    size_t hs = 0, i = 0;
    for (; i < count && hs < k; i++) tl_topk_offer(h, &hs, k, total[i], TL_ID(i), skip_zero);
    for (; i + 8 <= count; i += 8) {
        if (h[0].val != h[0].val) break;
        __m256 v = _mm512_cvtpd_ps(_mm512_loadu_pd(total + i));
        int m = _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(h[0].val), _CMP_NLT_UQ));
        while (m) {
            size_t j = i + (size_t)__builtin_ctz((unsigned)m);
            m &= m - 1;
            tl_topk_offer(h, &hs, k, total[j], TL_ID(j), skip_zero);
        }
    }
    for (; i < count; i++) tl_topk_offer(h, &hs, k, total[i], TL_ID(i), skip_zero);
    return hs;
}

TL_TARGET_AVX2 static size_t tl_topk_scan_avx2(const double *total, const uint32_t *node,
                                               size_t count, tl_topk_item *h, size_t k,
                                               int skip_zero) {
    size_t hs = 0, i = 0;
    for (; i < count && hs < k; i++) tl_topk_offer(h, &hs, k, total[i], TL_ID(i), skip_zero);
    for (; i + 4 <= count; i += 4) {
        if (h[0].val != h[0].val) break;
        __m128 v = _mm256_cvtpd_ps(_mm256_loadu_pd(total + i));
        int m = _mm_movemask_ps(_mm_cmp_ps(v, _mm_set1_ps(h[0].val), _CMP_NLT_UQ));
        while (m) {
            size_t j = i + (size_t)__builtin_ctz((unsigned)m);
            m &= m - 1;
            tl_topk_offer(h, &hs, k, total[j], TL_ID(j), skip_zero);
        }
    }
    for (; i < count; i++) tl_topk_offer(h, &hs, k, total[i], TL_ID(i), skip_zero);
    return hs;
}
#endif

static size_t tl_topk_scan(const double *total, const uint32_t *node, size_t count, tl_topk_item *h,
                           size_t k, int skip_zero) {
#if TL_HAVE_X86
    switch (tl_kernels_isa()) {
    case TL_ISA_AVX512: return tl_topk_scan_avx512(total, node, count, h, k, skip_zero);
    case TL_ISA_AVX2: return tl_topk_scan_avx2(total, node, count, h, k, skip_zero);
    case TL_ISA_PORTABLE: break;
    }
#endif
    size_t hs = 0;
    for (size_t i = 0; i < count; i++) tl_topk_offer(h, &hs, k, total[i], TL_ID(i), skip_zero);
    return hs;
}
#undef TL_ID

/* The top-k heap of min(k, n) items: taken from scratch when the first set
 * ranks its totals, after its traversal (the order docs/kernels.md gives for a
 * call's scratch: state and frontier, then the heap), and kept for the others. */
static tl_topk_item *tl_spread_heap(tl_scratch *s, tl_topk_item **hp, size_t k) {
    if (!*hp) *hp = tl_scratch_alloc(s, k * sizeof(tl_topk_item), TL_DEFAULT_ALIGN);
    return *hp;
}

static int tl_spread_topk(tl_spread_state *st, tl_topk_item **hp, size_t k, int64_t *idx, float *val,
                          size_t *count) {
    if (k > st->n) k = st->n;
    *count = 0;
    if (k == 0) return TL_K_OK;
    tl_topk_item *h = tl_spread_heap(st->s, hp, k);
    if (!h) return TL_K_ENOMEM;
    size_t hs = tl_topk_scan(st->total, st->node, st->count, h, k, 1);
    tl_topk_finish(h, hs);
    size_t out = 0, hi = 0;
    while (out < k && hi < hs && h[hi].val > 0.0f) { /* positive totals */
        idx[out] = h[hi].idx;
        val[out++] = h[hi++].val;
    }
    for (uint64_t z = 0; out < k && z < st->n; z++) { /* zeros in id order */
        int64_t sl = tl_slot_find(st, (uint32_t)z);
        if (sl >= 0 && (float)st->total[sl] != 0.0f) continue;
        idx[out] = (int64_t)z;
        val[out++] = 0.0f;
    }
    while (out < k && hi < hs) { /* negative totals, then NaN */
        idx[out] = h[hi].idx;
        val[out++] = h[hi++].val;
    }
    *count = out;
    return TL_K_OK;
}

/* ---- the kernel ---------------------------------------------------------------------- */

static int tl_spread_fail(tl_spread_error *err, tl_graph_fault fault, int64_t pos, int64_t a,
                          int64_t b) {
    err->fault = fault;
    err->pos = pos;
    err->ivalue = a;
    err->ivalue2 = b;
    return TL_K_EGRAPH;
}

/* Dense engine for one seed set. `cur` holds 3 * n doubles of scratch (any
 * contents), reused from set to set by the many-set entry point, as is the
 * heap *hp (see tl_spread_heap). */
static int tl_spread_dense(tl_scratch *s, double *cur, tl_topk_item **hp, const tl_csr *g, const int64_t *seeds,
                           size_t nseeds, const double *activation, size_t nact,
                           const tl_spread_params *p, float *dense, size_t k, int64_t *top_idx,
                           float *top_val, size_t *count, tl_spread_error *err) {
    const size_t n = g->n;
    const int ip64 = g->indptr_dtype == TL_I64, idx64 = g->indices_dtype == TL_I64;
    const int w64 = g->data_dtype == TL_F64;
    double *next = cur + n, *total = next + n;
    memset(cur, 0, 2 * n * sizeof(double));
    for (size_t j = 0; j < nseeds; j++) cur[seeds[j]] += activation[nact == 1 ? 0 : j];
    memcpy(total, cur, n * sizeof(double));
    const double f = exp(-p->decay_rate), thr = p->threshold;
    for (size_t depth = 0; depth < p->max_depth; depth++) {
        if (depth != 0 && tl_k_interrupted()) return TL_K_EINTR;
        int any = 0, rc;
        switch (ip64 * 4 + idx64 * 2 + w64) {
        case 0: rc = tl_dense_step(g, cur, next, thr, f, 0, 0, 0, &any, err); break;
        case 1: rc = tl_dense_step(g, cur, next, thr, f, 0, 0, 1, &any, err); break;
        case 2: rc = tl_dense_step(g, cur, next, thr, f, 0, 1, 0, &any, err); break;
        case 3: rc = tl_dense_step(g, cur, next, thr, f, 0, 1, 1, &any, err); break;
        case 4: rc = tl_dense_step(g, cur, next, thr, f, 1, 0, 0, &any, err); break;
        case 5: rc = tl_dense_step(g, cur, next, thr, f, 1, 0, 1, &any, err); break;
        case 6: rc = tl_dense_step(g, cur, next, thr, f, 1, 1, 0, &any, err); break;
        default: rc = tl_dense_step(g, cur, next, thr, f, 1, 1, 1, &any, err); break;
        }
        if (rc != TL_K_OK) return rc;
        if (!any) break; /* nothing spreads now, nor at any later step */
        for (size_t v = 0; v < n; v++) total[v] += next[v];
        double *t = cur;
        cur = next;
        next = t;
        memset(next, 0, n * sizeof(double));
    }
    if (dense) {
        for (size_t v = 0; v < n; v++) dense[v] = (float)total[v];
        return TL_K_OK;
    }
    if (k > n) k = n;
    if (k == 0) return TL_K_OK;
    tl_topk_item *h = tl_spread_heap(s, hp, k);
    if (!h) return TL_K_ENOMEM;
    size_t hs = tl_topk_scan(total, NULL, n, h, k, 0);
    tl_topk_finish(h, hs);
    for (size_t i = 0; i < hs; i++) {
        top_idx[i] = h[i].idx;
        top_val[i] = h[i].val;
    }
    *count = hs;
    return TL_K_OK;
}

/* Empty the touched set of a state for the next seed set, keeping its
 * capacity: each node's table entry is removed in the reverse order of
 * insertion (with linear probing, the entries a later key probed past were all
 * inserted before it, so they are still there when it is looked up), or the
 * whole table is cleared when that is cheaper (more than 1/8 of it in use). */
static void tl_spread_state_clear(tl_spread_state *st) {
    if (st->slot_of) { /* direct map: its touched entries, or all of it (4n bytes) */
        if (st->count * 16 >= st->n)
            memset(st->slot_of, 0, st->n * sizeof(uint32_t));
        else
            for (size_t i = 0; i < st->count; i++) st->slot_of[st->node[i]] = 0;
    } else if (st->count * 8 >= st->tmask + 1) {
        memset(st->table, 0, (st->tmask + 1) * sizeof(uint32_t));
    } else {
        for (size_t i = st->count; i-- > 0;) {
            size_t h = tl_hash(st->node[i], st->tshift);
            while (st->table[h] != i + 1) h = (h + 1) & st->tmask;
            st->table[h] = 0;
        }
    }
    st->count = 0;
}

/* Frontier arrays for F entries, kept from step to step and set to set. */
static int tl_spread_frontier_reserve(tl_spread_state *st, size_t F) {
    if (F <= st->fcap) return TL_K_OK;
    size_t cap = st->fcap * 2 > F ? st->fcap * 2 : F;
    st->fr = tl_scratch_alloc(st->s, 2 * cap * sizeof(uint64_t), TL_DEFAULT_ALIGN);
    st->ra = tl_scratch_alloc(st->s, 2 * cap * sizeof(int64_t), TL_DEFAULT_ALIGN);
    if (!st->fr || !st->ra) return TL_K_ENOMEM;
    st->fr_tmp = st->fr + cap;
    st->rb = st->ra + cap;
    st->fcap = cap;
    return TL_K_OK;
}

/* Sparse engine for one seed set, in the (empty) state `st`. */
static int tl_spread_sparse(tl_spread_state *st_, tl_topk_item **hp, const tl_csr *g,
                            const int64_t *seeds, size_t nseeds, const double *activation,
                            size_t nact, const tl_spread_params *p, float *dense, size_t k,
                            int64_t *top_idx, float *top_val, size_t *count,
                            tl_spread_error *err) {
    const size_t n = g->n;
    const int ip64 = g->indptr_dtype == TL_I64, idx64 = g->indices_dtype == TL_I64;
    const int w64 = g->data_dtype == TL_F64;
    tl_spread_state st = *st_; /* a local copy (kept in registers), written back at the end */
    size_t cap0 = nseeds > 64 ? nseeds : 64;
    int rc = tl_spread_reserve(&st, cap0 < n ? cap0 : n);
    if (rc != TL_K_OK) goto out;
    for (size_t j = 0; j < nseeds; j++) { /* duplicate seeds add up, in order */
        uint32_t sl = tl_slot_get(&st, (uint32_t)seeds[j], st.slot_of != NULL);
        st.cur[sl] += activation[nact == 1 ? 0 : j];
    }
    memcpy(st.total, st.cur, st.count * sizeof(double));

    unsigned node_bits = 0;
    while (node_bits < 32 && ((uint64_t)1 << node_bits) < n) node_bits++;
    const double f = exp(-p->decay_rate);
    const double thr = p->threshold;
    for (size_t depth = 0; depth < p->max_depth; depth++) {
        if (depth != 0 && tl_k_interrupted()) {
            rc = TL_K_EINTR;
            goto out;
        }
        /* The frontier: O(touched). Its arrays are sized to it, in scratch (a
         * few bytes per frontier node; the slots and the table dominate). */
        size_t F = 0;
        for (size_t i = 0; i < st.count; i++) F += st.cur[i] >= thr && st.cur[i] != 0.0;
        if (F == 0) break;
        rc = tl_spread_frontier_reserve(&st, F);
        if (rc != TL_K_OK) goto out;
        F = 0;
        for (size_t i = 0; i < st.count; i++)
            if (st.cur[i] >= thr && st.cur[i] != 0.0) st.fr[F++] = ((uint64_t)st.node[i] << 32) | i;
        tl_sort_keys(st.fr, st.fr_tmp, F, node_bits);
        /* Visit the rows: check them, note their ranges, count their edges. */
        uint64_t edges = 0;
        for (size_t i = 0; i < F; i++) {
            if (i + 8 < F)
                __builtin_prefetch((const char *)g->indptr + (st.fr[i + 8] >> 32) * (ip64 ? 8 : 4));
            size_t u = (size_t)(st.fr[i] >> 32);
            int64_t a = tl_ld_int(g->indptr, ip64, u), b = tl_ld_int(g->indptr, ip64, u + 1);
            if (TL_UNLIKELY(a < 0 || a > b || b > (int64_t)g->nnz)) {
                rc = tl_spread_fail(err, TL_FAULT_INDPTR, (int64_t)u, a, b);
                goto out;
            }
            st.ra[i] = a;
            st.rb[i] = b;
            edges += (uint64_t)(b - a);
        }
        /* Room for every node this step could touch, so tl_slot_get never allocates. */
        uint64_t need = st.count + edges;
        if (need > n) need = n;
        if (need > st.cap) {
            rc = tl_spread_reserve(&st, (size_t)need);
            if (rc != TL_K_OK) goto out;
        }
        switch ((st.slot_of != NULL) * 4 + idx64 * 2 + w64) {
        case 0: rc = tl_spread_rows(&st, g, F, f, 0, 0, 0, err); break;
        case 1: rc = tl_spread_rows(&st, g, F, f, 0, 1, 0, err); break;
        case 2: rc = tl_spread_rows(&st, g, F, f, 1, 0, 0, err); break;
        case 3: rc = tl_spread_rows(&st, g, F, f, 1, 1, 0, err); break;
        case 4: rc = tl_spread_rows(&st, g, F, f, 0, 0, 1, err); break;
        case 5: rc = tl_spread_rows(&st, g, F, f, 0, 1, 1, err); break;
        case 6: rc = tl_spread_rows(&st, g, F, f, 1, 0, 1, err); break;
        default: rc = tl_spread_rows(&st, g, F, f, 1, 1, 1, err); break;
        }
        if (rc != TL_K_OK) goto out;
        for (size_t i = 0; i < st.count; i++) st.total[i] += st.next[i]; /* total += new */
        if (depth + 1 == p->max_depth) break; /* last step: only the totals are needed */
        double *t = st.cur; /* pulse = new; new = 0 */
        st.cur = st.next;
        st.next = t;
        memset(st.next, 0, st.count * sizeof(double));
    }

    if (dense) {
        for (size_t i = 0; i < st.count; i++) dense[st.node[i]] = (float)st.total[i];
    } else {
        rc = tl_spread_topk(&st, hp, k, top_idx, top_val, count);
    }
out:
    *st_ = st;
    return rc;
}

/* ---- entry points ---------------------------------------------------------------------- */

/* Checks shared by both entry points: dtypes, sizes and the graph's ends. */
static int tl_spread_check(const tl_csr *g, size_t nact, size_t nseeds, int want, tl_spread_error *err) {
    const size_t n = g->n;
    const int ip64 = g->indptr_dtype == TL_I64;
    if ((!ip64 && g->indptr_dtype != TL_I32) ||
        (g->indices_dtype != TL_I64 && g->indices_dtype != TL_I32) ||
        (g->data_dtype != TL_F64 && g->data_dtype != TL_F32) || n >= ((size_t)1 << 31) ||
        (nact != 1 && nact != nseeds) || (nseeds && nact == 0) || !want)
        return TL_K_EINVAL;
    int64_t first = tl_ld_int(g->indptr, ip64, 0), last = tl_ld_int(g->indptr, ip64, n);
    if (first != 0 || last != (int64_t)g->nnz) return tl_spread_fail(err, TL_FAULT_SHAPE, 0, first, last);
    return TL_K_OK;
}

/* Run nsets seed sets (set i: seeds[set_ptr[i] .. set_ptr[i+1])) with one
 * engine and one state, emptied between sets. */
static int tl_spread_sets(tl_scratch *s, const tl_csr *g, const int64_t *seeds, const size_t *set_ptr,
                          size_t nsets, const double *activation, size_t nact,
                          const tl_spread_params *p, int engine, int many_auto, float *dense, size_t dense_stride,
                          size_t k, int64_t *top_idx, float *top_val, size_t top_stride,
                          size_t *count, tl_spread_error *err) {
    const size_t n = g->n;
    tl_topk_item *h = NULL;
    double *darr = NULL;
    tl_spread_state st;
    int rc = TL_K_OK;
    if (engine == TL_SPREAD_DENSE) {
        darr = tl_scratch_alloc(s, 3 * n * sizeof(double), TL_DEFAULT_ALIGN);
        if (!darr) return TL_K_ENOMEM;
    } else {
        memset(&st, 0, sizeof st);
        st.s = s;
        st.n = n;
        if (engine == TL_SPREAD_INDEXED) { /* the direct map, zeroed once per call */
            st.slot_of = tl_scratch_alloc(s, n * sizeof(uint32_t), TL_DEFAULT_ALIGN);
            if (!st.slot_of) return TL_K_ENOMEM;
            memset(st.slot_of, 0, n * sizeof(uint32_t));
        }
        st.may_map = many_auto;
    }
    for (size_t i = 0; i < nsets; i++) {
        if (i != 0 && tl_k_interrupted()) return TL_K_EINTR;
        const size_t a = set_ptr[i], ns = set_ptr[i + 1] - a;
        const double *act = nact == 1 ? activation : activation + a;
        const size_t na = nact == 1 ? 1 : ns;
        float *d = dense ? dense + i * dense_stride : NULL;
        int64_t *ti = dense ? NULL : top_idx + i * top_stride;
        float *tv = dense ? NULL : top_val + i * top_stride;
        size_t *c = dense ? NULL : count + i;
        if (c) *c = 0;
        if (engine == TL_SPREAD_DENSE)
            rc = tl_spread_dense(s, darr, &h, g, seeds + a, ns, act, na, p, d, k, ti, tv, c, err);
        else {
            rc = tl_spread_sparse(&st, &h, g, seeds + a, ns, act, na, p, d, k, ti, tv, c, err);
            tl_spread_state_clear(&st);
        }
        if (rc != TL_K_OK) {
            if (rc == TL_K_EGRAPH) err->set = (int64_t)i;
            return rc;
        }
    }
    return TL_K_OK;
}

int tl_spread_activation(tl_scratch *s, const tl_csr *g, const int64_t *seeds, size_t nseeds,
                         const double *activation, size_t nact, const tl_spread_params *p,
                         float *dense, size_t k, int64_t *top_idx, float *top_val,
                         size_t *count, tl_spread_error *err) {
    tl_spread_error dummy;
    tl_scratch_set_kernel(s, TL_SCRATCH_SPREAD);
    if (!err) err = &dummy;
    memset(err, 0, sizeof *err);
    if (count) *count = 0;
    const size_t n = g->n;
    int rc = tl_spread_check(g, nact, nseeds, dense || count, err);
    if (rc != TL_K_OK) return rc;
    for (size_t j = 0; j < nseeds; j++) /* every seed */
        if (seeds[j] < 0 || (uint64_t)seeds[j] >= n)
            return tl_spread_fail(err, TL_FAULT_SEED, (int64_t)j, seeds[j], 0);
    if (n == 0) return TL_K_OK;
    int engine = p->engine;
    if (engine == TL_SPREAD_AUTO) engine = n <= TL_SPREAD_DENSE_MAX ? TL_SPREAD_DENSE : TL_SPREAD_SPARSE;
    const size_t ptr[2] = {0, nseeds};
    rc = tl_spread_sets(s, g, seeds, ptr, 1, activation, nact, p, engine, 0, dense, 0, k, top_idx,
                        top_val, 0, count, err);
    err->set = 0;
    return rc;
}

int tl_spread_activation_many(tl_scratch *s, const tl_csr *g, const int64_t *seeds,
                              const size_t *set_ptr, size_t nsets, const double *activation,
                              size_t nact, const tl_spread_params *p, float *dense, size_t k,
                              int64_t *top_idx, float *top_val, size_t *count,
                              tl_spread_error *err) {
    tl_spread_error dummy;
    tl_scratch_set_kernel(s, TL_SCRATCH_SPREAD);
    if (!err) err = &dummy;
    memset(err, 0, sizeof *err);
    const size_t n = g->n, nseeds = nsets ? set_ptr[nsets] : 0;
    if (count)
        for (size_t i = 0; i < nsets; i++) count[i] = 0;
    if (nsets && set_ptr[0] != 0) return TL_K_EINVAL;
    for (size_t i = 0; i < nsets; i++)
        if (set_ptr[i + 1] < set_ptr[i]) return TL_K_EINVAL;
    int rc = tl_spread_check(g, nact, nseeds, dense || count, err);
    if (rc != TL_K_OK) return rc;
    for (size_t i = 0; i < nsets; i++) /* every seed of every set, before any work */
        for (size_t j = set_ptr[i]; j < set_ptr[i + 1]; j++)
            if (seeds[j] < 0 || (uint64_t)seeds[j] >= n) {
                rc = tl_spread_fail(err, TL_FAULT_SEED, (int64_t)(j - set_ptr[i]), seeds[j], 0);
                err->set = (int64_t)i;
                return rc;
            }
    if (n == 0 || nsets == 0) return TL_K_OK;
    int engine = p->engine;
    const int many_auto = engine == TL_SPREAD_AUTO && n > TL_SPREAD_DENSE_MAX;
    if (engine == TL_SPREAD_AUTO) engine = n <= TL_SPREAD_DENSE_MAX ? TL_SPREAD_DENSE : TL_SPREAD_SPARSE;
    const size_t kk = k < n ? k : n;
    return tl_spread_sets(s, g, seeds, set_ptr, nsets, activation, nact, p, engine, many_auto, dense, n, k,
                          top_idx, top_val, kk, count, err);
}
