/* test_huffman.c: block-parallel Huffman coding over the three allocators:
 * round trips, identical encodings, exact lock counts, bad options. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl_test.h"
#include "demo/huffman.h"
#include "tlalloc.h"

static const tl_huff_allocator ALL[TL_HUFF_NUM_ALLOCATORS] = {TL_HUFF_GLOBAL_LOCK,
                                                              TL_HUFF_POOLED, TL_HUFF_TLALLOC};

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

/* Text-like bytes: words from a small vocabulary, skewed towards the first. */
static void fill_text(uint8_t *p, size_t n) {
    static const char *words[] = {"the ", "allocator ", "lock ", "of ", "a ", "thread ",
                                  "pool ", "and ", "memory, ", "arena.\n", "Huffman ", "block "};
    size_t o = 0;
    while (o < n) {
        uint64_t r = rng();
        const char *w = words[(r % 7) * (r % 13) % 12];
        for (size_t i = 0; w[i] && o < n; i++) p[o++] = (uint8_t)w[i];
    }
}

static tl_huff_options opts(tl_huff_allocator a, size_t bs, unsigned threads) {
    tl_huff_options o;
    memset(&o, 0, sizeof o);
    o.allocator = a;
    o.block_size = bs;
    o.threads = threads;
    return o;
}

/* Encode with `o`, decode with the same allocator, compare; return the
 * encoding (caller frees) for cross-allocator comparisons. */
static uint8_t *round_trip(const uint8_t *in, size_t n, tl_huff_options o, size_t *enc_len,
                           tl_huff_stats *st) {
    uint8_t *enc = NULL;
    tl_huff_error err;
    tl_huff_status s = tl_huff_encode(in, n, &o, &enc, enc_len, st, &err);
    CHECK(s == TL_HUFF_OK);
    if (s != TL_HUFF_OK) {
        fprintf(stderr, "encode: %s\n", err.message);
        return NULL;
    }
    uint64_t size = 0;
    CHECK(tl_huff_decoded_size(enc, *enc_len, &size, &err) == TL_HUFF_OK);
    CHECK(size == n);
    uint8_t *dec = malloc(n);
    size_t dec_len = 0;
    tl_huff_stats dst;
    s = tl_huff_decode(enc, *enc_len, dec, n, &dec_len, &o, &dst, &err);
    CHECK(s == TL_HUFF_OK);
    if (s != TL_HUFF_OK) fprintf(stderr, "decode: %s\n", err.message);
    CHECK(dec_len == n);
    CHECK(memcmp(dec, in, n) == 0);
    free(dec);
    return enc;
}

/* Every allocator, several thread counts: same bytes back, same encoding. */
static void check_all(const uint8_t *in, size_t n, size_t bs) {
    static const unsigned threads[] = {1, 3, 20};
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    for (int a = 0; a < TL_HUFF_NUM_ALLOCATORS; a++) {
        for (int t = 0; t < 3; t++) {
            size_t len = 0;
            tl_huff_stats st;
            uint8_t *enc = round_trip(in, n, opts(ALL[a], bs, threads[t]), &len, &st);
            if (enc == NULL) continue;
            CHECK(st.num_blocks == (n + bs - 1) / bs);
            CHECK(st.input_bytes == n && st.output_bytes == len);
            CHECK(st.num_allocations == st.num_frees);
            if (ref == NULL) {
                ref = enc;
                ref_len = len;
                continue;
            }
            CHECK(len == ref_len && memcmp(enc, ref, len) == 0);
            free(enc);
        }
    }
    free(ref);
}

static void test_edge_inputs(void) {
    uint8_t one = 'x';
    check_all(&one, 1, 1024);
    check_all(&one, 1, 1);

    uint8_t *same = malloc(5000);
    memset(same, 'a', 5000);
    check_all(same, 5000, 1024); /* one symbol, 4 full blocks and a short one */
    check_all(same, 5000, 1);
    free(same);

    uint8_t all[256 * 3];
    for (int i = 0; i < 256 * 3; i++) all[i] = (uint8_t)(i * 7);
    check_all(all, sizeof all, 1024); /* every symbol, equally often */
    check_all(all, sizeof all, 256);
    check_all(all, sizeof all, 100); /* blocks that do not divide the input */

    uint8_t skew[300]; /* Fibonacci-like weights give the deepest codes */
    size_t o = 0;
    uint32_t f0 = 1, f1 = 1;
    for (int s = 0; s < 12 && o < sizeof skew; s++) {
        for (uint32_t i = 0; i < f0 && o < sizeof skew; i++) skew[o++] = (uint8_t)s;
        uint32_t f2 = f0 + f1;
        f0 = f1;
        f1 = f2;
    }
    check_all(skew, o, 1024);
}

static void test_random_and_text(void) {
    static const size_t sizes[] = {2, 1023, 1024, 1025, 3000, 20000};
    static const size_t blocks[] = {1024, 7, 4096, 1};
    for (int i = 0; i < 6; i++) {
        for (int b = 0; b < 4; b++) {
            if (blocks[b] == 1 && sizes[i] > 3000) continue;
            uint8_t *p = malloc(sizes[i]);
            for (size_t j = 0; j < sizes[i]; j++) p[j] = (uint8_t)rng();
            check_all(p, sizes[i], blocks[b]);
            fill_text(p, sizes[i]);
            check_all(p, sizes[i], blocks[b]);
            free(p);
        }
    }
}

/* "aaaabbc" in blocks of 4: "aaaa" (k = 1 symbol) and "bbc" (k = 2). Encoding a
 * block of k symbols makes 2k + 4 requests (frequency table, queue, k leaves,
 * k - 1 internal nodes, code table, stack, output buffer) and as many frees:
 * 6 + 8 = 14 allocations, 14 frees. */
static void test_exact_lock_counts(void) {
    const uint8_t in[] = "aaaabbc";
    const size_t n = 7;
    uint8_t *enc;
    size_t len;
    tl_huff_stats st;
    tl_huff_options o = opts(TL_HUFF_GLOBAL_LOCK, 4, 2);

    /* global-lock: every allocation and every free takes the lock once. */
    CHECK(tl_huff_encode(in, n, &o, &enc, &len, &st, NULL) == TL_HUFF_OK);
    free(enc);
    CHECK(st.num_blocks == 2 && st.num_threads == 2 && st.num_batches == 1);
    CHECK(st.num_allocations == 14 && st.num_frees == 14);
    CHECK(st.heap_allocations == 14);
    CHECK(st.lock_acquisitions == 28);

    /* pooled: one lock to carve each worker's pool and one to give it back. */
    o.allocator = TL_HUFF_POOLED;
    CHECK(tl_huff_encode(in, n, &o, &enc, &len, &st, NULL) == TL_HUFF_OK);
    free(enc);
    CHECK(st.num_allocations == 14 && st.pool_allocations == 14 && st.heap_allocations == 0);
    CHECK(st.lock_acquisitions == 4);

    /* one worker, two batches: still one pool, recycled between the batches. */
    o.threads = 1;
    CHECK(tl_huff_encode(in, n, &o, &enc, &len, &st, NULL) == TL_HUFF_OK);
    free(enc);
    CHECK(st.num_batches == 2 && st.num_threads == 1);
    CHECK(st.lock_acquisitions == 2);

    /* pooled with a 16-byte pool: only the 16-byte queue fits (k = 1: 8 bytes,
     * k = 2: 16 bytes, rounded to 16); everything else falls back to the heap:
     * 5 + 7 = 12 heap allocations, 12 heap frees, plus 2 for the pools. */
    o.threads = 2;
    o.pool_bytes = 16;
    CHECK(tl_huff_encode(in, n, &o, &enc, &len, &st, NULL) == TL_HUFF_OK);
    free(enc);
    CHECK(st.pool_allocations == 2 && st.heap_allocations == 12);
    CHECK(st.lock_acquisitions == 12 + 12 + 4);

    /* tlalloc: no lock at all; the arena is reset after each block. */
    o = opts(TL_HUFF_TLALLOC, 4, 2);
    CHECK(tl_huff_encode(in, n, &o, &enc, &len, &st, NULL) == TL_HUFF_OK);
    free(enc);
    CHECK(st.lock_acquisitions == 0 && st.num_allocations == 14 && st.arena_resets == 2);
    CHECK(st.heap_bytes == 0);
}

/* A text of 64 blocks: pooled takes 2 locks per worker, global-lock 2 per request. */
static void test_lock_reduction(void) {
    size_t n = 64 * 1024;
    uint8_t *p = malloc(n);
    fill_text(p, n);
    tl_huff_stats g, q, t;
    size_t len;
    uint8_t *enc;
    tl_huff_options o = opts(TL_HUFF_GLOBAL_LOCK, 0, 0);
    CHECK(tl_huff_encode(p, n, &o, &enc, &len, &g, NULL) == TL_HUFF_OK);
    free(enc);
    o.allocator = TL_HUFF_POOLED;
    CHECK(tl_huff_encode(p, n, &o, &enc, &len, &q, NULL) == TL_HUFF_OK);
    free(enc);
    o.allocator = TL_HUFF_TLALLOC;
    CHECK(tl_huff_encode(p, n, &o, &enc, &len, &t, NULL) == TL_HUFF_OK);
    free(enc);
    CHECK(g.num_blocks == 64 && g.num_threads == 20 && g.num_batches == 4);
    CHECK(g.lock_acquisitions == g.num_allocations + g.num_frees);
    CHECK(q.num_allocations == g.num_allocations);
    CHECK(q.heap_allocations == 0);
    CHECK(q.lock_acquisitions == 2 * 20);
    CHECK(q.lock_acquisitions * 100 <= g.lock_acquisitions); /* >= 99% fewer */
    CHECK(t.lock_acquisitions == 0 && t.arena_resets == 64);
    CHECK(g.heap_bytes == TL_HUFF_DEFAULT_HEAP_BYTES);
    CHECK(g.heap_peak_bytes > 0 && g.heap_peak_bytes <= g.heap_bytes);
    free(p);
}

static void test_bad_options(void) {
    uint8_t in[64] = {1, 2, 3};
    uint8_t *enc = (uint8_t *)1;
    size_t len = 99;
    tl_huff_error err;
    tl_huff_options o = opts(TL_HUFF_TLALLOC, 0, 0);
    CHECK(tl_huff_encode(in, 0, &o, &enc, &len, NULL, &err) == TL_HUFF_EINVAL);
    CHECK(enc == NULL && len == 0 && strstr(err.message, "empty") != NULL);
    CHECK(tl_huff_encode(NULL, 5, &o, &enc, &len, NULL, &err) == TL_HUFF_EINVAL);
    o.block_size = TL_HUFF_MAX_BLOCK_SIZE + 1;
    CHECK(tl_huff_encode(in, 64, &o, &enc, &len, NULL, &err) == TL_HUFF_EINVAL);
    CHECK(strstr(err.message, "block_size=16777217") != NULL);
    o = opts(TL_HUFF_TLALLOC, 0, TL_HUFF_MAX_THREADS + 1);
    CHECK(tl_huff_encode(in, 64, &o, &enc, &len, NULL, &err) == TL_HUFF_EINVAL);
    CHECK(strstr(err.message, "threads=1025") != NULL);
    o = opts((tl_huff_allocator)7, 0, 0);
    CHECK(tl_huff_encode(in, 64, &o, &enc, &len, NULL, &err) == TL_HUFF_EINVAL);
    o = opts(TL_HUFF_GLOBAL_LOCK, 0, 0);
    o.heap_bytes = 100;
    CHECK(tl_huff_encode(in, 64, &o, &enc, &len, NULL, &err) == TL_HUFF_EINVAL);
    CHECK(tl_huff_encode(in, 64, &o, NULL, &len, NULL, &err) == TL_HUFF_EINVAL);

    /* A heap too small for the tree: a clean ENOMEM, no leak (ASan checks). */
    uint8_t *text = malloc(8192);
    fill_text(text, 8192);
    o.heap_bytes = 4096;
    CHECK(tl_huff_encode(text, 8192, &o, &enc, &len, NULL, &err) == TL_HUFF_ENOMEM);
    CHECK(enc == NULL && strstr(err.message, "heap_bytes") != NULL);
    o.allocator = TL_HUFF_POOLED;
    o.heap_bytes = 8192;
    o.pool_bytes = 6000; /* the second pool does not fit */
    CHECK(tl_huff_encode(text, 8192, &o, &enc, &len, NULL, &err) == TL_HUFF_ENOMEM);
    CHECK(strstr(err.message, "pool") != NULL);

    /* A thread arena too small for a block (error policy): ENOMEM, not a crash. */
    tl_arena_options saved, small;
    tl_get_thread_arena_options(&saved);
    small = saved;
    small.capacity = 4096;
    small.overflow = TL_OVERFLOW_ERROR;
    tl_set_thread_arena_options(&small);
    o = opts(TL_HUFF_TLALLOC, 0, 2);
    CHECK(tl_huff_encode(text, 8192, &o, &enc, &len, NULL, &err) == TL_HUFF_ENOMEM);
    CHECK(strstr(err.message, "TLALLOC_ARENA_SIZE") != NULL);
    tl_set_thread_arena_options(&saved);
    free(text);

    CHECK(strcmp(tl_huff_allocator_name(TL_HUFF_POOLED), "pooled") == 0);
    CHECK(tl_huff_allocator_name((tl_huff_allocator)3) == NULL);
    tl_huff_allocator a;
    CHECK(tl_huff_allocator_parse("global-lock", &a) == 0 && a == TL_HUFF_GLOBAL_LOCK);
    CHECK(tl_huff_allocator_parse("malloc", &a) == -1);
    CHECK(tl_huff_crc32(0, (const uint8_t *)"123456789", 9) == 0xCBF43926u);
    CHECK(tl_huff_max_encoded_size(1024, 1024) == 28 + 8 + 288 + 1024);
}

static void test_decode_output_too_small(void) {
    uint8_t in[100];
    fill_text(in, sizeof in);
    uint8_t *enc, out[99];
    size_t len, dec_len = 5;
    tl_huff_error err;
    CHECK(tl_huff_encode(in, sizeof in, NULL, &enc, &len, NULL, NULL) == TL_HUFF_OK);
    CHECK(tl_huff_decode(enc, len, out, sizeof out, &dec_len, NULL, NULL, &err) ==
          TL_HUFF_EINVAL);
    CHECK(dec_len == 0 && strstr(err.message, "smaller") != NULL);
    free(enc);
}

int main(void) {
    RUN(test_edge_inputs);
    RUN(test_random_and_text);
    RUN(test_exact_lock_counts);
    RUN(test_lock_reduction);
    RUN(test_bad_options);
    RUN(test_decode_output_too_small);
    TEST_MAIN_END();
}
