/* demo/huffman.h: block-parallel Huffman coding over three allocators.
 *
 * The input is cut into blocks (default 1024 bytes). Every block gets its own
 * canonical Huffman code, built from a tree whose every node is one small
 * allocation, so that the coder is an allocation-heavy workload: many small
 * allocations from many threads, which measures what an allocator lock costs.
 *
 * Threads: `threads` worker threads (default 20) code the blocks in batches; in
 * batch b, worker w codes block b*threads + w (one block at a time), and the
 * next batch starts when the whole batch is done. The output does not depend on
 * the number of threads or on the allocator: every run on the same input and
 * block size produces the same bytes.
 *
 * Allocators (tree nodes, frequency tables, code tables and the block's output
 * buffer come from it):
 *   TL_HUFF_GLOBAL_LOCK  one fixed heap (default 2 MiB), first-fit free list
 *                        behind one mutex: every allocation and every free
 *                        takes the lock once.
 *   TL_HUFF_POOLED       every worker carves a pool (default 32 KiB) from that
 *                        heap once (one locked allocation), bumps in it without
 *                        a lock and falls back to the locked heap when the pool
 *                        is full; pools are recycled between batches; a free
 *                        of pool memory is a no-op, a free of heap memory
 *                        takes the lock.
 *   TL_HUFF_TLALLOC      the worker's thread arena (tl_thread_arena), reset
 *                        after each block; no lock on the allocation path.
 * Lock acquisitions are counted exactly (under the lock itself).
 *
 * Stream format (all integers little-endian):
 *   offset  size
 *   0       4     magic "TLHF"
 *   4       1     version (1)
 *   5       3     reserved, zero
 *   8       4     block size (1 .. TL_HUFF_MAX_BLOCK_SIZE)
 *   12      8     original size in bytes (>= 1)
 *   20      4     number of blocks = ceil(original size / block size)
 *   24      4     CRC-32 of bytes [0, 24) followed by the block index
 *   28      8*N   block index: per block, u32 encoded length, u32 CRC-32 of
 *                 the block's original bytes
 *   ...           the encoded blocks, back to back, in order
 * An encoded block:
 *   32 bytes      bitmap of the symbols present (bit s%8 of byte s/8)
 *   k bytes       code length (1 .. TL_HUFF_MAX_CODE_LEN) of each present
 *                 symbol, in increasing symbol order
 *   rest          the block's codes, most significant bit first, padded with
 *                 zero bits to a whole byte
 * Codes are canonical: shorter codes first, ties in symbol order. A block with
 * one distinct symbol codes it as the one-bit code 0.
 *
 * The decoder checks every length and offset before it reads, rejects code
 * tables that are not complete prefix codes, and checks each block's CRC-32,
 * so a corrupted or truncated stream is reported, never read out of bounds.
 */
#ifndef TLALLOC_HUFFMAN_H
#define TLALLOC_HUFFMAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TL_HUFF_DEFAULT_BLOCK_SIZE ((size_t)1024)
#define TL_HUFF_MAX_BLOCK_SIZE ((size_t)1 << 24) /* 16 MiB: keeps codes <= 34 bits */
#define TL_HUFF_DEFAULT_THREADS 20u
#define TL_HUFF_MAX_THREADS 1024u
#define TL_HUFF_DEFAULT_HEAP_BYTES ((size_t)2 << 20) /* the global-lock heap */
#define TL_HUFF_DEFAULT_POOL_BYTES ((size_t)32 << 10)
#define TL_HUFF_MAX_HEAP_BYTES ((size_t)1 << 36)
#define TL_HUFF_MAX_CODE_LEN 40
#define TL_HUFF_HEADER_SIZE 28u
#define TL_HUFF_INDEX_ENTRY_SIZE 8u

typedef enum tl_huff_allocator {
    TL_HUFF_GLOBAL_LOCK = 0,
    TL_HUFF_POOLED = 1,
    TL_HUFF_TLALLOC = 2
} tl_huff_allocator;
#define TL_HUFF_NUM_ALLOCATORS 3

/* Results. Every failing call also writes a message into the error buffer. */
typedef enum tl_huff_status {
    TL_HUFF_OK = 0,
    TL_HUFF_EINVAL = 1,   /* a bad argument or option */
    TL_HUFF_ENOMEM = 2,   /* the heap, a pool fallback or an arena ran out */
    TL_HUFF_ECORRUPT = 3, /* the encoded stream is malformed or truncated */
    TL_HUFF_ETHREAD = 4   /* a worker thread could not be started */
} tl_huff_status;

#define TL_HUFF_ERRLEN 192
typedef struct tl_huff_error {
    tl_huff_status status;
    char message[TL_HUFF_ERRLEN];
} tl_huff_error;

/* Options; zero-initialised means the defaults. */
typedef struct tl_huff_options {
    size_t block_size;           /* 0 = TL_HUFF_DEFAULT_BLOCK_SIZE */
    unsigned threads;            /* workers = batch size; 0 = TL_HUFF_DEFAULT_THREADS */
    tl_huff_allocator allocator;
    size_t heap_bytes;           /* global heap; 0 = tl_huff_default_heap_bytes() */
    size_t pool_bytes;           /* per-worker pool (pooled); 0 = TL_HUFF_DEFAULT_POOL_BYTES */
} tl_huff_options;

/* What one encode or decode did. */
typedef struct tl_huff_stats {
    uint64_t input_bytes;
    uint64_t output_bytes;
    uint64_t num_blocks;
    uint64_t num_batches;
    uint64_t num_threads;        /* workers started */
    uint64_t lock_acquisitions;  /* allocator mutex acquisitions, exact */
    uint64_t lock_contended;     /* of those, how many found the mutex held */
    uint64_t num_allocations;    /* allocation requests served */
    uint64_t num_frees;          /* free requests (no-ops included) */
    uint64_t heap_allocations;   /* allocations served by the locked heap */
    uint64_t pool_allocations;   /* allocations served by a pool (pooled) */
    uint64_t arena_resets;       /* thread-arena resets (tlalloc) */
    uint64_t heap_bytes;         /* capacity of the locked heap (0 for tlalloc) */
    uint64_t heap_peak_bytes;    /* high-water mark of the heap's used bytes */
    uint64_t elapsed_ns;         /* wall time of the whole call */
} tl_huff_stats;

/* Name of an allocator ("global-lock", "pooled", "tlalloc"), NULL if unknown. */
const char *tl_huff_allocator_name(tl_huff_allocator a);
/* Parse an allocator name; returns 0 or -1. */
int tl_huff_allocator_parse(const char *name, tl_huff_allocator *out);

/* The heap size used when heap_bytes is 0: 2 MiB, or more when the batch
 * needs more (threads * (pool + worst-case per-block footprint)). */
size_t tl_huff_default_heap_bytes(size_t block_size, unsigned threads, size_t pool_bytes,
                                  tl_huff_allocator a);

/* Largest possible encoded size of `n` input bytes (0 if it would overflow). */
size_t tl_huff_max_encoded_size(size_t n, size_t block_size);

/* Encode in[0, n) (n >= 1). On success returns TL_HUFF_OK and stores a buffer
 * from malloc() in *out (the caller frees it) and its length in *out_len.
 * `stats` and `err` may be NULL. */
tl_huff_status tl_huff_encode(const uint8_t *in, size_t n, const tl_huff_options *opts,
                              uint8_t **out, size_t *out_len, tl_huff_stats *stats,
                              tl_huff_error *err);

/* Read and check the header and block index of an encoded stream and return
 * the decoded size in *size (the CRC of header and index is verified). */
tl_huff_status tl_huff_decoded_size(const uint8_t *in, size_t n, uint64_t *size,
                                    tl_huff_error *err);

/* Decode a stream into out[0, cap); cap must be at least the decoded size.
 * Only threads and allocator (and heap/pool sizes) of `opts` are used; opts may
 * be NULL. On success *out_len is the decoded size. On failure the contents of
 * `out` are unspecified. */
tl_huff_status tl_huff_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                              size_t *out_len, const tl_huff_options *opts,
                              tl_huff_stats *stats, tl_huff_error *err);

/* CRC-32 (IEEE 802.3, as zlib's crc32) of p[0, n), continuing from `crc`
 * (start with 0). */
uint32_t tl_huff_crc32(uint32_t crc, const uint8_t *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* TLALLOC_HUFFMAN_H */
