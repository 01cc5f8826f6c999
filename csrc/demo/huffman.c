/* huffman.c: block-parallel canonical Huffman coding (format in huffman.h).
 *
 * Work is cut into blocks; `threads` workers code them in batches (worker w
 * codes block b*threads + w of batch b), and the coordinating thread waits for
 * the whole batch before the next one starts (a batch job: 20 threads a batch
 * by default). All memory a block needs while it is coded (frequency
 * table, queue, every tree node, code table, traversal stack, output buffer)
 * comes from the run's allocator (huffman_internal.h), so the three allocators
 * run exactly the same sequence of requests.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "huffman_internal.h"

/* ---- small helpers --------------------------------------------------------- */

/* CRC-32 by slicing eight bytes at a time (about 1 cycle per byte instead of
 * about 6 for the byte-wise table), so that the checksum stays a small part of
 * the coder's work. The tables are built once. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = crc_table[0][crc_table[t - 1][i] & 0xFFu] ^ (crc_table[t - 1][i] >> 8);
}

uint32_t tl_huff_crc32(uint32_t crc, const uint8_t *p, size_t n) {
    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        crc = crc_table[7][lo & 0xFFu] ^ crc_table[6][(lo >> 8) & 0xFFu] ^
              crc_table[5][(lo >> 16) & 0xFFu] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xFFu] ^ crc_table[2][(hi >> 8) & 0xFFu] ^
              crc_table[1][(hi >> 16) & 0xFFu] ^ crc_table[0][hi >> 24];
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *const allocator_names[TL_HUFF_NUM_ALLOCATORS] = {"global-lock", "pooled",
                                                                     "tlalloc"};

const char *tl_huff_allocator_name(tl_huff_allocator a) {
    return (unsigned)a < TL_HUFF_NUM_ALLOCATORS ? allocator_names[a] : NULL;
}

int tl_huff_allocator_parse(const char *name, tl_huff_allocator *out) {
    for (int i = 0; i < TL_HUFF_NUM_ALLOCATORS; i++) {
        if (name != NULL && strcmp(name, allocator_names[i]) == 0) {
            *out = (tl_huff_allocator)i;
            return 0;
        }
    }
    return -1;
}

/* Bytes of an encoded block besides its payload: bitmap and at most 256 lengths. */
#define HF_BITMAP_BYTES 32u
#define HF_BLOCK_OVERHEAD (HF_BITMAP_BYTES + 256u)

/* ---- the per-block data structures ---------------------------------------- */

/* A tree node: one allocation each (what makes the coder allocation-heavy).
 * Nodes are ordered by (weight, order); leaves have order = symbol, internal
 * nodes 256 + their creation index, so the tree (and the code) never depends
 * on addresses. */
typedef struct hf_node {
    uint64_t weight;
    struct hf_node *left, *right; /* both NULL for a leaf */
    uint32_t order;
    uint32_t symbol;
} hf_node;

typedef struct hf_codes {
    uint64_t code[256];
    uint8_t len[256]; /* 0 = symbol absent */
} hf_codes;

typedef struct hf_frame {
    hf_node *node;
    uint32_t depth;
} hf_frame;

static inline int node_less(const hf_node *a, const hf_node *b) {
    return a->weight < b->weight || (a->weight == b->weight && a->order < b->order);
}

static void heap_push(hf_node **q, unsigned *n, hf_node *x) {
    unsigned i = (*n)++;
    while (i > 0) {
        unsigned parent = (i - 1) / 2;
        if (!node_less(x, q[parent])) break;
        q[i] = q[parent];
        i = parent;
    }
    q[i] = x;
}

static hf_node *heap_pop(hf_node **q, unsigned *n) {
    hf_node *top = q[0];
    hf_node *last = q[--(*n)];
    unsigned i = 0, m = *n;
    for (;;) {
        unsigned c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && node_less(q[c + 1], q[c])) c++;
        if (!node_less(q[c], last)) break;
        q[i] = q[c];
        i = c;
    }
    if (m > 0) q[i] = last;
    return top;
}

/* Canonical codes from lengths: shorter first, ties in symbol order. */
static void canonical_codes(hf_codes *ct) {
    uint32_t count[TL_HUFF_MAX_CODE_LEN + 1] = {0};
    uint64_t next[TL_HUFF_MAX_CODE_LEN + 2] = {0};
    for (int s = 0; s < 256; s++) count[ct->len[s]]++;
    count[0] = 0;
    uint64_t code = 0;
    for (int len = 1; len <= TL_HUFF_MAX_CODE_LEN; len++) {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
    }
    for (int s = 0; s < 256; s++)
        if (ct->len[s]) ct->code[s] = next[ct->len[s]]++;
}

static tl_huff_status out_of_memory(tl_halloc *a, tl_huff_error *err, size_t block,
                                    size_t block_len) {
    if (a->kind == TL_HUFF_TLALLOC)
        return tl_huff_fail(err, TL_HUFF_ENOMEM,
                            "block %zu: the thread arena (%zu bytes) ran out while coding "
                            "%zu bytes; raise TLALLOC_ARENA_SIZE or lower block_size",
                            block, a->arena->capacity, block_len);
    return tl_huff_fail(err, TL_HUFF_ENOMEM,
                        "block %zu: the %s heap (%zu bytes) ran out; raise heap_bytes or "
                        "lower threads or block_size",
                        block, tl_huff_allocator_name(a->kind), a->heap->size);
}

/* Encode in[0, len) into dst (room for HF_BLOCK_OVERHEAD + len bytes).
 * Requests, in order: frequency table, queue, k leaves, k-1 internal nodes,
 * code table, traversal stack, output buffer (2k + 4 for k distinct symbols),
 * and as many frees. On failure the block's memory is not given back: the run
 * ends and its heap is discarded. */
static tl_huff_status encode_block(tl_halloc *a, const uint8_t *in, size_t len, uint8_t *dst,
                                   size_t *dst_len, size_t block, tl_huff_error *err) {
    uint32_t *freq = tl_halloc_alloc(a, 256 * sizeof *freq);
    if (freq == NULL) return out_of_memory(a, err, block, len);
    memset(freq, 0, 256 * sizeof *freq);
    for (size_t i = 0; i < len; i++) freq[in[i]]++;
    unsigned k = 0;
    for (int s = 0; s < 256; s++) k += freq[s] != 0;
    tl_assert(k >= 1);

    hf_node **q = tl_halloc_alloc(a, k * sizeof *q);
    if (q == NULL) return out_of_memory(a, err, block, len);
    unsigned qn = 0;
    for (uint32_t s = 0; s < 256; s++) {
        if (freq[s] == 0) continue;
        hf_node *leaf = tl_halloc_alloc(a, sizeof *leaf);
        if (leaf == NULL) return out_of_memory(a, err, block, len);
        leaf->weight = freq[s];
        leaf->left = leaf->right = NULL;
        leaf->order = s;
        leaf->symbol = s;
        heap_push(q, &qn, leaf);
    }
    uint32_t order = 256;
    while (qn > 1) {
        hf_node *x = heap_pop(q, &qn);
        hf_node *y = heap_pop(q, &qn);
        hf_node *parent = tl_halloc_alloc(a, sizeof *parent);
        if (parent == NULL) return out_of_memory(a, err, block, len);
        parent->weight = x->weight + y->weight;
        parent->left = x;
        parent->right = y;
        parent->order = order++;
        parent->symbol = 0;
        heap_push(q, &qn, parent);
    }
    hf_node *root = q[0];

    hf_codes *ct = tl_halloc_alloc(a, sizeof *ct);
    if (ct == NULL) return out_of_memory(a, err, block, len);
    memset(ct->len, 0, sizeof ct->len);
    hf_frame *stack = tl_halloc_alloc(a, (2 * (size_t)k - 1) * sizeof *stack);
    if (stack == NULL) return out_of_memory(a, err, block, len);
    /* Depth-first walk: record leaf depths and free every node once visited.
     * The stack never holds more than the number of nodes, 2k - 1. */
    size_t sp = 0;
    int too_deep = 0;
    stack[sp++] = (hf_frame){root, 0};
    while (sp > 0) {
        hf_frame f = stack[--sp];
        if (f.node->left == NULL) {
            uint32_t depth = f.depth ? f.depth : 1; /* a lone symbol gets the code 0 */
            if (depth > TL_HUFF_MAX_CODE_LEN) too_deep = 1;
            ct->len[f.node->symbol] = (uint8_t)(depth > TL_HUFF_MAX_CODE_LEN ? 1 : depth);
        } else {
            tl_assert(sp + 2 <= 2 * (size_t)k - 1);
            stack[sp++] = (hf_frame){f.node->right, f.depth + 1};
            stack[sp++] = (hf_frame){f.node->left, f.depth + 1};
        }
        tl_halloc_free(a, f.node);
    }
    if (too_deep) /* impossible for blocks <= TL_HUFF_MAX_BLOCK_SIZE (Fibonacci bound) */
        return tl_huff_fail(err, TL_HUFF_EINVAL, "block %zu: a code is longer than %d bits",
                            block, TL_HUFF_MAX_CODE_LEN);
    canonical_codes(ct);

    uint8_t *out = tl_halloc_alloc(a, HF_BITMAP_BYTES + k + len);
    if (out == NULL) return out_of_memory(a, err, block, len);
    memset(out, 0, HF_BITMAP_BYTES);
    size_t o = HF_BITMAP_BYTES;
    for (int s = 0; s < 256; s++) {
        if (ct->len[s] == 0) continue;
        out[s >> 3] |= (uint8_t)(1u << (s & 7));
        out[o++] = ct->len[s];
    }
    /* Payload: at most 8 bits per symbol (an 8-bit fixed code is a prefix
     * code, and Huffman's is no longer), so `len` bytes are always enough.
     * The accumulator holds < 8 pending bits plus one code of <= 40 bits.
     * The input is read again here: if another thread changed it since the
     * frequencies were counted, a symbol may have no code or the payload may
     * outgrow its bound. Two predictable tests per symbol catch both, so a
     * concurrent writer gets an error, never a write past `out`. */
    const size_t cap = HF_BITMAP_BYTES + k + len;
    uint64_t acc = 0;
    unsigned nacc = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t sym = in[i];
        unsigned l = ct->len[sym];
        if (TL_UNLIKELY(l == 0)) goto changed;
        acc = (acc << l) | ct->code[sym];
        nacc += l;
        while (nacc >= 8) {
            nacc -= 8;
            if (TL_UNLIKELY(o == cap)) goto changed;
            out[o++] = (uint8_t)(acc >> nacc);
        }
    }
    if (nacc > 0) {
        if (TL_UNLIKELY(o == cap)) goto changed;
        out[o++] = (uint8_t)(acc << (8 - nacc));
    }
    tl_assert(o <= HF_BITMAP_BYTES + k + len);
    memcpy(dst, out, o);
    *dst_len = o;

    tl_halloc_free(a, out);
    tl_halloc_free(a, stack);
    tl_halloc_free(a, ct);
    tl_halloc_free(a, q);
    tl_halloc_free(a, freq);
    return TL_HUFF_OK;
changed: /* the run ends: its memory goes with the heap, as for out_of_memory */
    return tl_huff_fail(err, TL_HUFF_EINVAL,
                        "block %zu of the input changed while it was being encoded", block);
}

/* Decoding tables of one block: canonical decoding by code length (as in
 * zlib's puff.c), one allocation. */
typedef struct hf_dtab {
    uint16_t count[TL_HUFF_MAX_CODE_LEN + 1];
    uint16_t offs[TL_HUFF_MAX_CODE_LEN + 2];
    uint8_t symbol[256]; /* symbols sorted by (length, symbol) */
} hf_dtab;

/* Decode src[0, src_len) into dst[0, dst_len), checking everything.
 *
 * src may be caller memory that another thread writes meanwhile (the binding
 * releases the GIL). So the code table (bitmap and lengths, at most 288 bytes)
 * is copied once and only the copy is validated and used: a concurrent writer
 * can then only make the payload decode to other symbols or fail a check,
 * never index a table with an unvalidated value. Every payload read is at a
 * position below `limit`, which comes from src_len, not from src's bytes. */
static tl_huff_status decode_block(tl_halloc *a, const uint8_t *src, size_t src_len,
                                   uint8_t *dst, size_t dst_len, uint32_t crc, size_t block,
                                   tl_huff_error *err) {
    if (src_len < HF_BITMAP_BYTES + 1)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: block %zu is %zu bytes, too short for its code table",
                            block, src_len);
    uint8_t bitmap[HF_BITMAP_BYTES], lens[256];
    memcpy(bitmap, src, HF_BITMAP_BYTES);
    unsigned k = 0;
    for (unsigned i = 0; i < HF_BITMAP_BYTES; i++)
        for (unsigned b = 0; b < 8; b++) k += (bitmap[i] >> b) & 1u;
    if (k == 0)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT, "corrupt stream: block %zu has no symbols",
                            block);
    if (src_len < HF_BITMAP_BYTES + k)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: block %zu is truncated inside its code table",
                            block);
    memcpy(lens, src + HF_BITMAP_BYTES, k);
    hf_dtab *t = tl_halloc_alloc(a, sizeof *t);
    if (t == NULL) return out_of_memory(a, err, block, dst_len);
    memset(t->count, 0, sizeof t->count);
    for (unsigned j = 0; j < k; j++) {
        if (lens[j] == 0 || lens[j] > TL_HUFF_MAX_CODE_LEN) {
            tl_halloc_free(a, t);
            return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                                "corrupt stream: block %zu has a code length of %u", block,
                                lens[j]);
        }
        t->count[lens[j]]++;
    }
    /* The lengths must describe a complete prefix code (Kraft sum exactly 1),
     * or the single one-bit code of a one-symbol block. */
    uint64_t kraft = 0;
    for (int l = 1; l <= TL_HUFF_MAX_CODE_LEN; l++)
        kraft += (uint64_t)t->count[l] << (TL_HUFF_MAX_CODE_LEN - l);
    int ok = k == 1 ? lens[0] == 1 : kraft == (uint64_t)1 << TL_HUFF_MAX_CODE_LEN;
    if (!ok) {
        tl_halloc_free(a, t);
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: block %zu's code lengths are not a complete "
                            "prefix code",
                            block);
    }
    t->offs[1] = 0;
    for (int l = 1; l <= TL_HUFF_MAX_CODE_LEN; l++)
        t->offs[l + 1] = (uint16_t)(t->offs[l] + t->count[l]);
    {
        uint16_t fill[TL_HUFF_MAX_CODE_LEN + 2];
        memcpy(fill, t->offs, sizeof fill);
        unsigned j = 0;
        for (unsigned s = 0; s < 256; s++)
            if ((bitmap[s >> 3] >> (s & 7)) & 1u) t->symbol[fill[lens[j++]]++] = (uint8_t)s;
        tl_assert(j == k);
    }

    const uint8_t *p = src + HF_BITMAP_BYTES + k;
    size_t nbytes = src_len - HF_BITMAP_BYTES - k;
    uint64_t limit = (uint64_t)nbytes * 8, pos = 0;
    for (size_t i = 0; i < dst_len; i++) {
        uint64_t code = 0, first = 0;
        unsigned index = 0;
        int l;
        for (l = 1; l <= TL_HUFF_MAX_CODE_LEN; l++) {
            if (pos >= limit) {
                tl_halloc_free(a, t);
                return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                                    "corrupt stream: block %zu is truncated (%zu of %zu "
                                    "symbols decoded)",
                                    block, i, dst_len);
            }
            code |= (p[pos >> 3] >> (7 - (pos & 7))) & 1u;
            pos++;
            uint64_t c = t->count[l];
            if (code - first < c) {
                dst[i] = t->symbol[index + (unsigned)(code - first)];
                break;
            }
            index += (unsigned)c;
            first = (first + c) << 1;
            code <<= 1;
        }
        if (l > TL_HUFF_MAX_CODE_LEN) { /* only reachable for the one-symbol code */
            tl_halloc_free(a, t);
            return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                                "corrupt stream: block %zu has an invalid code", block);
        }
    }
    tl_halloc_free(a, t);
    if ((pos + 7) / 8 != nbytes)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: block %zu has %zu bytes after its last code",
                            block, nbytes - (size_t)((pos + 7) / 8));
    if ((pos & 7) && (p[nbytes - 1] & (0xFFu >> (pos & 7))))
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: block %zu has nonzero padding bits", block);
    if (tl_huff_crc32(0, dst, dst_len) != crc)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: block %zu fails its CRC-32 check", block);
    return TL_HUFF_OK;
}

/* ---- the batch runner ------------------------------------------------------ */

typedef struct hf_run hf_run;

/* A block of a stream being decoded, from the validated copy of its index. */
typedef struct hf_blockref {
    uint64_t offset;
    uint32_t len, crc;
} hf_blockref;

typedef struct hf_worker {
    hf_run *run;
    unsigned index;
    pthread_t tid;
    tl_halloc alloc;
    tl_huff_error err;   /* this worker's first failure */
    int setup_failed;    /* it happened while setting up the allocator */
    size_t err_block;    /* else: the block it happened in */
} hf_worker;

struct hf_run {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t batch;      /* 1 + index of the batch running (0: none yet) */
    unsigned pending;    /* workers not yet done with it */
    int quit;
    int failed;
    unsigned nworkers;
    size_t nblocks, block_size;
    int decoding;
    tl_huff_allocator kind;
    tl_hheap heap;
    int have_heap;
    size_t pool_bytes;
    hf_worker *workers;
    /* encoding */
    const uint8_t *in;
    size_t n;
    uint8_t *staging;    /* one slot per worker */
    size_t slot;
    size_t *enc_len;     /* per worker, of the block in its slot */
    uint32_t *crc;       /* per block */
    /* decoding */
    const uint8_t *enc;
    hf_blockref *blocks; /* per block: where it lies in enc, its CRC (validated copy) */
    uint8_t *out;
    uint64_t orig;
};

static void worker_block(hf_run *r, hf_worker *w, size_t b) {
    tl_halloc *a = &w->alloc;
    size_t start = b * r->block_size;
    tl_huff_status st;
    tl_halloc_recycle(a); /* a new batch: the pool starts over */
    if (!r->decoding) {
        size_t len = r->n - start < r->block_size ? r->n - start : r->block_size;
        r->crc[b] = tl_huff_crc32(0, r->in + start, len);
        st = encode_block(a, r->in + start, len, r->staging + (size_t)w->index * r->slot,
                          &r->enc_len[w->index], b, &w->err);
    } else {
        size_t len = r->orig - start < r->block_size ? (size_t)(r->orig - start) : r->block_size;
        const hf_blockref *e = &r->blocks[b];
        st = decode_block(a, r->enc + e->offset, e->len, r->out + start, len, e->crc, b,
                          &w->err);
    }
    tl_halloc_block_done(a); /* tlalloc: reset the arena */
    if (st != TL_HUFF_OK) w->err_block = b;
}

static void *worker_main(void *arg) {
    hf_worker *w = arg;
    hf_run *r = w->run;
    if (tl_halloc_init(&w->alloc, r->kind, &r->heap, r->pool_bytes, &w->err) != TL_HUFF_OK)
        w->setup_failed = 1;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->batch == seen && !r->quit) pthread_cond_wait(&r->go, &r->mu);
        if (r->batch == seen) { /* quit, and no batch left to do */
            pthread_mutex_unlock(&r->mu);
            break;
        }
        seen = r->batch;
        pthread_mutex_unlock(&r->mu);

        size_t b = (size_t)(seen - 1) * r->nworkers + w->index;
        if (b < r->nblocks && w->err.status == TL_HUFF_OK) worker_block(r, w, b);

        pthread_mutex_lock(&r->mu);
        if (w->err.status != TL_HUFF_OK) r->failed = 1;
        if (--r->pending == 0) pthread_cond_signal(&r->done);
        pthread_mutex_unlock(&r->mu);
    }
    tl_halloc_fini(&w->alloc);
    return NULL;
}

/* The failure to report: a setup failure first, else the lowest block's, so
 * that the message does not depend on thread timing. */
static tl_huff_status first_error(hf_run *r, unsigned started, tl_huff_error *err) {
    hf_worker *best = NULL;
    for (unsigned i = 0; i < started; i++) {
        hf_worker *w = &r->workers[i];
        if (w->err.status == TL_HUFF_OK) continue;
        if (best == NULL || (w->setup_failed && !best->setup_failed) ||
            (w->setup_failed == best->setup_failed && w->err_block < best->err_block))
            best = w;
    }
    if (best == NULL) return TL_HUFF_OK;
    if (err != NULL && err->status == TL_HUFF_OK) *err = best->err;
    return best->err.status;
}

typedef void (*hf_after_batch)(hf_run *r, size_t first, size_t end, void *ctx);

/* Start the workers, run every batch, call `after` between batches (workers
 * idle), join the workers. */
static tl_huff_status run_batches(hf_run *r, hf_after_batch after, void *ctx,
                                  tl_huff_error *err) {
    unsigned started = 0;
    tl_huff_status st = TL_HUFF_OK;
    r->workers = calloc(r->nworkers, sizeof *r->workers);
    if (r->workers == NULL) return tl_huff_fail(err, TL_HUFF_ENOMEM, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->go, NULL);
    pthread_cond_init(&r->done, NULL);
    for (; started < r->nworkers; started++) {
        hf_worker *w = &r->workers[started];
        w->run = r;
        w->index = started;
        int rc = pthread_create(&w->tid, NULL, worker_main, w);
        if (rc != 0) {
            w->run = NULL;
            st = tl_huff_fail(err, TL_HUFF_ETHREAD, "could not start worker thread %u of %u: %s",
                              started + 1, r->nworkers, strerror(rc));
            break;
        }
    }
    if (st == TL_HUFF_OK) {
        size_t nbatches = (r->nblocks + r->nworkers - 1) / r->nworkers;
        for (size_t b = 0; b < nbatches; b++) {
            pthread_mutex_lock(&r->mu);
            r->pending = r->nworkers;
            r->batch = b + 1;
            pthread_cond_broadcast(&r->go);
            while (r->pending > 0) pthread_cond_wait(&r->done, &r->mu);
            int failed = r->failed;
            pthread_mutex_unlock(&r->mu);
            if (failed) break;
            if (after != NULL) {
                size_t first = b * r->nworkers;
                size_t end = first + r->nworkers < r->nblocks ? first + r->nworkers : r->nblocks;
                after(r, first, end, ctx);
            }
        }
    }
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_broadcast(&r->go);
    pthread_mutex_unlock(&r->mu);
    for (unsigned i = 0; i < started; i++) pthread_join(r->workers[i].tid, NULL);
    if (st == TL_HUFF_OK) st = first_error(r, started, err);
    pthread_cond_destroy(&r->done);
    pthread_cond_destroy(&r->go);
    pthread_mutex_destroy(&r->mu);
    return st;
}

/* ---- options, heap sizing, statistics -------------------------------------- */

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Heap bytes that one worker's requests can hold at once: encoding keeps at
 * most 511 nodes, the tables, the stack and the output buffer; decoding one
 * table. */
static size_t worker_footprint(size_t block_size, int decoding) {
    if (decoding) return tl_hheap_block_bytes(sizeof(hf_dtab));
    return tl_hheap_block_bytes(256 * sizeof(uint32_t)) +
           tl_hheap_block_bytes(256 * sizeof(hf_node *)) +
           511 * tl_hheap_block_bytes(sizeof(hf_node)) + tl_hheap_block_bytes(sizeof(hf_codes)) +
           tl_hheap_block_bytes(511 * sizeof(hf_frame)) +
           tl_hheap_block_bytes(HF_BLOCK_OVERHEAD + block_size);
}

static size_t default_heap(size_t block_size, unsigned workers, size_t pool_bytes,
                           tl_huff_allocator a, int decoding) {
    if (a == TL_HUFF_TLALLOC) return 0;
    size_t per = worker_footprint(block_size, decoding);
    if (a == TL_HUFF_POOLED) per += tl_hheap_block_bytes(pool_bytes);
    size_t need = (size_t)workers * per;
    need = round_up(need + need / 4, (size_t)64 << 10); /* a quarter for fragmentation */
    return need < TL_HUFF_DEFAULT_HEAP_BYTES ? TL_HUFF_DEFAULT_HEAP_BYTES : need;
}

size_t tl_huff_default_heap_bytes(size_t block_size, unsigned threads, size_t pool_bytes,
                                  tl_huff_allocator a) {
    if (block_size == 0 || block_size > TL_HUFF_MAX_BLOCK_SIZE)
        block_size = TL_HUFF_DEFAULT_BLOCK_SIZE;
    if (threads == 0 || threads > TL_HUFF_MAX_THREADS) threads = TL_HUFF_DEFAULT_THREADS;
    if (pool_bytes == 0 || pool_bytes > TL_HUFF_MAX_HEAP_BYTES)
        pool_bytes = TL_HUFF_DEFAULT_POOL_BYTES;
    return default_heap(block_size, threads, pool_bytes, a, 0);
}

size_t tl_huff_max_encoded_size(size_t n, size_t block_size) {
    if (block_size == 0) return 0;
    size_t nblocks = n / block_size + (n % block_size != 0);
    size_t per = TL_HUFF_INDEX_ENTRY_SIZE + HF_BLOCK_OVERHEAD;
    if (nblocks > (SIZE_MAX - TL_HUFF_HEADER_SIZE - n) / per) return 0;
    return TL_HUFF_HEADER_SIZE + nblocks * per + n;
}

/* Fill in the defaults and check the ranges. */
static tl_huff_status check_options(const tl_huff_options *in, tl_huff_options *o,
                                    tl_huff_error *err) {
    if (in != NULL)
        *o = *in;
    else
        memset(o, 0, sizeof *o);
    if (o->block_size == 0) o->block_size = TL_HUFF_DEFAULT_BLOCK_SIZE;
    if (o->threads == 0) o->threads = TL_HUFF_DEFAULT_THREADS;
    if (o->pool_bytes == 0) o->pool_bytes = TL_HUFF_DEFAULT_POOL_BYTES;
    if (o->block_size > TL_HUFF_MAX_BLOCK_SIZE)
        return tl_huff_fail(err, TL_HUFF_EINVAL, "block_size=%zu is out of range (1 .. %zu)",
                            o->block_size, TL_HUFF_MAX_BLOCK_SIZE);
    if (o->threads > TL_HUFF_MAX_THREADS)
        return tl_huff_fail(err, TL_HUFF_EINVAL, "threads=%u is out of range (1 .. %u)",
                            o->threads, TL_HUFF_MAX_THREADS);
    if (tl_huff_allocator_name(o->allocator) == NULL)
        return tl_huff_fail(err, TL_HUFF_EINVAL, "allocator=%d is not a known allocator",
                            (int)o->allocator);
    if (o->heap_bytes != 0 && (o->heap_bytes < 4096 || o->heap_bytes > TL_HUFF_MAX_HEAP_BYTES))
        return tl_huff_fail(err, TL_HUFF_EINVAL, "heap_bytes=%zu is out of range (4096 .. %zu)",
                            o->heap_bytes, TL_HUFF_MAX_HEAP_BYTES);
    if (o->pool_bytes > TL_HUFF_MAX_HEAP_BYTES)
        return tl_huff_fail(err, TL_HUFF_EINVAL, "pool_bytes=%zu is out of range (1 .. %zu)",
                            o->pool_bytes, TL_HUFF_MAX_HEAP_BYTES);
    return TL_HUFF_OK;
}

/* Common part of a run: workers and the heap. */
static tl_huff_status run_setup(hf_run *r, const tl_huff_options *o, size_t nblocks,
                                size_t block_size, int decoding, tl_huff_error *err) {
    r->decoding = decoding;
    r->nblocks = nblocks;
    r->block_size = block_size;
    r->kind = o->allocator;
    r->pool_bytes = o->pool_bytes;
    r->nworkers = nblocks < o->threads ? (unsigned)nblocks : o->threads;
    if (r->kind != TL_HUFF_TLALLOC) {
        /* The largest block is no longer than the input. */
        size_t largest = nblocks == 1 && r->n != 0 && r->n < block_size ? r->n : block_size;
        size_t hb = o->heap_bytes ? o->heap_bytes
                                  : default_heap(largest, r->nworkers, r->pool_bytes, r->kind,
                                                 decoding);
        if (tl_hheap_init(&r->heap, hb) != 0)
            return tl_huff_fail(err, TL_HUFF_ENOMEM, "could not allocate a heap of %zu bytes",
                                hb);
        r->have_heap = 1;
    }
    return TL_HUFF_OK;
}

static void run_stats(hf_run *r, tl_huff_stats *s, uint64_t t0) {
    if (s == NULL) return;
    s->num_blocks = r->nblocks;
    s->num_batches = r->nworkers ? (r->nblocks + r->nworkers - 1) / r->nworkers : 0;
    for (unsigned i = 0; r->workers != NULL && i < r->nworkers; i++) {
        const tl_halloc *a = &r->workers[i].alloc;
        if (r->workers[i].run == NULL) continue; /* never started */
        s->num_threads++;
        s->num_allocations += a->num_allocs;
        s->num_frees += a->num_frees;
        s->heap_allocations += a->heap_allocs;
        s->pool_allocations += a->pool_allocs;
        s->arena_resets += a->arena_resets;
    }
    if (r->have_heap) {
        s->lock_acquisitions = r->heap.locks;
        s->lock_contended = r->heap.contended;
        s->heap_bytes = r->heap.size;
        s->heap_peak_bytes = r->heap.peak;
    }
    s->elapsed_ns = now_ns() - t0;
}

static void run_teardown(hf_run *r) {
    if (r->have_heap) tl_hheap_destroy(&r->heap);
    free(r->workers);
}

/* ---- encoding -------------------------------------------------------------- */

typedef struct hf_sink {
    uint8_t *p;
    size_t len, cap;
    uint32_t *blen; /* encoded length per block */
    int oom;
} hf_sink;

/* Between batches: move the batch's blocks from the staging slots to the end
 * of the stream (serial, while the workers wait). */
static void append_batch(hf_run *r, size_t first, size_t end, void *ctx) {
    hf_sink *k = ctx;
    for (size_t b = first; b < end && !k->oom; b++) {
        size_t w = b - first, len = r->enc_len[w];
        if (len > k->cap - k->len) {
            size_t cap = k->cap;
            while (len > cap - k->len) cap = cap < SIZE_MAX / 2 ? cap * 2 : SIZE_MAX;
            uint8_t *p = realloc(k->p, cap);
            if (p == NULL) {
                k->oom = 1;
                return;
            }
            k->p = p;
            k->cap = cap;
        }
        memcpy(k->p + k->len, r->staging + w * r->slot, len);
        k->len += len;
        k->blen[b] = (uint32_t)len;
    }
}

tl_huff_status tl_huff_encode(const uint8_t *in, size_t n, const tl_huff_options *opts,
                              uint8_t **out, size_t *out_len, tl_huff_stats *stats,
                              tl_huff_error *err) {
    uint64_t t0 = now_ns();
    tl_huff_options o;
    hf_run r;
    hf_sink k;
    tl_huff_status st;
    memset(&r, 0, sizeof r);
    memset(&k, 0, sizeof k);
    if (err != NULL) memset(err, 0, sizeof *err);
    if (stats != NULL) memset(stats, 0, sizeof *stats);
    if (out == NULL || out_len == NULL)
        return tl_huff_fail(err, TL_HUFF_EINVAL, "no place for the output was given");
    *out = NULL;
    *out_len = 0;
    if ((st = check_options(opts, &o, err)) != TL_HUFF_OK) return st;
    if (in == NULL || n == 0) return tl_huff_fail(err, TL_HUFF_EINVAL, "the input is empty");
    size_t nblocks = n / o.block_size + (n % o.block_size != 0);
    if (nblocks > UINT32_MAX)
        return tl_huff_fail(err, TL_HUFF_EINVAL,
                            "%zu bytes make %zu blocks of %zu bytes, more than a stream holds "
                            "(%u); raise block_size",
                            n, nblocks, o.block_size, (unsigned)UINT32_MAX);
    r.in = in;
    r.n = n;
    if ((st = run_setup(&r, &o, nblocks, o.block_size, 0, err)) != TL_HUFF_OK) goto done;
    r.slot = HF_BLOCK_OVERHEAD + (n < o.block_size ? n : o.block_size);
    r.staging = malloc(r.slot * r.nworkers);
    r.enc_len = calloc(r.nworkers, sizeof *r.enc_len);
    r.crc = malloc(nblocks * sizeof *r.crc);
    k.blen = malloc(nblocks * sizeof *k.blen);
    k.len = TL_HUFF_HEADER_SIZE + nblocks * TL_HUFF_INDEX_ENTRY_SIZE;
    k.cap = k.len + n / 2 + 4096; /* text shrinks by about half; grows if not */
    k.p = malloc(k.cap);
    if (r.staging == NULL || r.enc_len == NULL || r.crc == NULL || k.blen == NULL ||
        k.p == NULL) {
        st = tl_huff_fail(err, TL_HUFF_ENOMEM, "out of memory for the output of %zu bytes", n);
        goto done;
    }
    st = run_batches(&r, append_batch, &k, err);
    if (st == TL_HUFF_OK && k.oom)
        st = tl_huff_fail(err, TL_HUFF_ENOMEM, "out of memory for the output of %zu bytes", n);
    if (st == TL_HUFF_OK) {
        uint8_t *h = k.p;
        memcpy(h, "TLHF", 4);
        h[4] = 1;
        h[5] = h[6] = h[7] = 0;
        put_u32(h + 8, (uint32_t)o.block_size);
        put_u64(h + 12, n);
        put_u32(h + 20, (uint32_t)nblocks);
        for (size_t b = 0; b < nblocks; b++) {
            put_u32(h + TL_HUFF_HEADER_SIZE + 8 * b, k.blen[b]);
            put_u32(h + TL_HUFF_HEADER_SIZE + 8 * b + 4, r.crc[b]);
        }
        uint32_t crc = tl_huff_crc32(0, h, 24);
        crc = tl_huff_crc32(crc, h + TL_HUFF_HEADER_SIZE, nblocks * TL_HUFF_INDEX_ENTRY_SIZE);
        put_u32(h + 24, crc);
        uint8_t *shrunk = realloc(k.p, k.len);
        *out = shrunk != NULL ? shrunk : k.p;
        *out_len = k.len;
        k.p = NULL;
    }
done:
    run_stats(&r, stats, t0);
    if (stats != NULL) {
        stats->input_bytes = n;
        stats->output_bytes = *out_len;
    }
    run_teardown(&r);
    free(r.staging);
    free(r.enc_len);
    free(r.crc);
    free(k.blen);
    free(k.p);
    return st;
}

/* ---- decoding -------------------------------------------------------------- */

typedef struct hf_header {
    size_t block_size;
    uint64_t orig;
    size_t nblocks;
} hf_header;

/* Check the header and the block index of in[0, n) (every offset and length
 * against n) and, if `blocks` is given, store a malloc'd array of the blocks
 * (freed by the caller) there.
 *
 * `in` may change while this runs (caller memory, GIL released): the header
 * and the index are copied first and only the copies are checked and used, so
 * what is returned is consistent with itself whatever a writer does. */
static tl_huff_status parse_header(const uint8_t *in, size_t n, hf_header *h,
                                   hf_blockref **blocks, tl_huff_error *err) {
    uint8_t hd[TL_HUFF_HEADER_SIZE];
    if (blocks != NULL) *blocks = NULL;
    if (in == NULL || n < TL_HUFF_HEADER_SIZE)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "truncated stream: %zu bytes, shorter than the %u-byte header", n,
                            TL_HUFF_HEADER_SIZE);
    memcpy(hd, in, sizeof hd);
    if (memcmp(hd, "TLHF", 4) != 0)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "not a tlalloc Huffman stream (the magic bytes are not TLHF)");
    if (hd[4] != 1)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT, "unsupported stream version %u (expected 1)",
                            hd[4]);
    if (hd[5] | hd[6] | hd[7])
        return tl_huff_fail(err, TL_HUFF_ECORRUPT, "corrupt stream: reserved bytes are not zero");
    uint64_t bs = get_u32(hd + 8), orig = get_u64(hd + 12), nb = get_u32(hd + 20);
    if (bs == 0 || bs > TL_HUFF_MAX_BLOCK_SIZE)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: block size %llu is out of range",
                            (unsigned long long)bs);
    if (orig == 0 || orig / bs + (orig % bs != 0) != nb)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "corrupt stream: %llu blocks cannot hold %llu bytes in blocks of %llu",
                            (unsigned long long)nb, (unsigned long long)orig,
                            (unsigned long long)bs);
    if (nb > (n - TL_HUFF_HEADER_SIZE) / TL_HUFF_INDEX_ENTRY_SIZE)
        return tl_huff_fail(err, TL_HUFF_ECORRUPT,
                            "truncated stream: %zu bytes cannot hold the index of %llu blocks", n,
                            (unsigned long long)nb);
    size_t index_bytes = (size_t)nb * TL_HUFF_INDEX_ENTRY_SIZE;
    uint8_t *index = malloc(index_bytes);
    hf_blockref *refs = blocks != NULL ? malloc((size_t)nb * sizeof *refs) : NULL;
    if (index == NULL || (blocks != NULL && refs == NULL)) {
        free(index);
        free(refs);
        return tl_huff_fail(err, TL_HUFF_ENOMEM, "out of memory for a block index of %llu blocks",
                            (unsigned long long)nb);
    }
    memcpy(index, in + TL_HUFF_HEADER_SIZE, index_bytes);
    tl_huff_status st = TL_HUFF_OK;
    uint32_t crc = tl_huff_crc32(0, hd, 24);
    crc = tl_huff_crc32(crc, index, index_bytes);
    if (crc != get_u32(hd + 24)) {
        st = tl_huff_fail(err, TL_HUFF_ECORRUPT,
                          "corrupt stream: the header and block index fail their CRC-32 check");
        goto out;
    }
    /* Every block must lie inside the stream, and the blocks must fill it
     * exactly. A block of L bytes decodes to at most 8*(L - 33) symbols (one
     * bit per symbol at best), which bounds the claimed size by the input's. */
    uint64_t off = TL_HUFF_HEADER_SIZE + index_bytes;
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t len = get_u32(index + b * TL_HUFF_INDEX_ENTRY_SIZE);
        uint64_t want = b + 1 < nb ? bs : orig - b * bs;
        if (len > n - off) {
            st = tl_huff_fail(err, TL_HUFF_ECORRUPT,
                              "truncated stream: block %llu ends past the end of the stream",
                              (unsigned long long)b);
            goto out;
        }
        if (len < HF_BITMAP_BYTES + 1 || want > 8 * (len - HF_BITMAP_BYTES - 1)) {
            st = tl_huff_fail(err, TL_HUFF_ECORRUPT,
                              "corrupt stream: block %llu is %llu bytes, too short for %llu "
                              "symbols",
                              (unsigned long long)b, (unsigned long long)len,
                              (unsigned long long)want);
            goto out;
        }
        if (refs != NULL)
            refs[b] = (hf_blockref){off, (uint32_t)len,
                                    get_u32(index + b * TL_HUFF_INDEX_ENTRY_SIZE + 4)};
        off += len;
    }
    if (off != n) {
        st = tl_huff_fail(err, TL_HUFF_ECORRUPT, "corrupt stream: %llu bytes follow the last block",
                          (unsigned long long)(n - off));
        goto out;
    }
    if (orig > SIZE_MAX) {
        st = tl_huff_fail(err, TL_HUFF_ECORRUPT, "stream too large for this machine");
        goto out;
    }
    h->block_size = (size_t)bs;
    h->orig = orig;
    h->nblocks = (size_t)nb;
out:
    free(index);
    if (st == TL_HUFF_OK && blocks != NULL)
        *blocks = refs;
    else
        free(refs);
    return st;
}

tl_huff_status tl_huff_decoded_size(const uint8_t *in, size_t n, uint64_t *size,
                                    tl_huff_error *err) {
    hf_header h;
    if (err != NULL) memset(err, 0, sizeof *err);
    tl_huff_status st = parse_header(in, n, &h, NULL, err);
    if (size != NULL) *size = st == TL_HUFF_OK ? h.orig : 0;
    return st;
}

tl_huff_status tl_huff_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                              size_t *out_len, const tl_huff_options *opts,
                              tl_huff_stats *stats, tl_huff_error *err) {
    uint64_t t0 = now_ns();
    tl_huff_options o;
    hf_run r;
    hf_header h;
    tl_huff_status st;
    memset(&r, 0, sizeof r);
    if (err != NULL) memset(err, 0, sizeof *err);
    if (stats != NULL) memset(stats, 0, sizeof *stats);
    if (out_len != NULL) *out_len = 0;
    if ((st = check_options(opts, &o, err)) != TL_HUFF_OK) return st;
    /* The header and index are read once, into r.blocks: see parse_header. */
    if ((st = parse_header(in, n, &h, &r.blocks, err)) != TL_HUFF_OK) return st;
    if (out == NULL || cap < h.orig) {
        free(r.blocks);
        return tl_huff_fail(err, TL_HUFF_EINVAL,
                            "the output buffer (%zu bytes) is smaller than the decoded size "
                            "(%llu bytes)",
                            out == NULL ? (size_t)0 : cap, (unsigned long long)h.orig);
    }
    if ((st = run_setup(&r, &o, h.nblocks, h.block_size, 1, err)) != TL_HUFF_OK) goto done;
    r.enc = in;
    r.out = out;
    r.orig = h.orig;
    st = run_batches(&r, NULL, NULL, err);
    if (st == TL_HUFF_OK && out_len != NULL) *out_len = (size_t)h.orig;
done:
    run_stats(&r, stats, t0);
    if (stats != NULL) {
        stats->input_bytes = n;
        stats->output_bytes = st == TL_HUFF_OK ? h.orig : 0;
    }
    run_teardown(&r);
    free(r.blocks);
    return st;
}
