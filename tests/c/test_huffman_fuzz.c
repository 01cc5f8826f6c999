/* test_huffman_fuzz.c: the decoder on random and damaged streams. Every call
 * must either fail with TL_HUFF_ECORRUPT or return exactly the original bytes;
 * under `make test SAN=asan` this also shows that it never reads outside the
 * stream or writes outside the output.
 *
 * Damaged streams get their header CRC recomputed half of the time, so that
 * the fuzzing reaches the index and block checks behind it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl_test.h"
#include "demo/huffman.h"
#include "tlalloc.h"

static uint64_t rng_state = 0x243F6A8885A308D3u;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Recompute the header CRC if the stream is long enough to hold its index. */
static void fix_crc(uint8_t *p, size_t n) {
    if (n < TL_HUFF_HEADER_SIZE) return;
    uint64_t nb = get_u32(p + 20);
    if (nb > (n - TL_HUFF_HEADER_SIZE) / TL_HUFF_INDEX_ENTRY_SIZE) return;
    uint32_t crc = tl_huff_crc32(0, p, 24);
    crc = tl_huff_crc32(crc, p + TL_HUFF_HEADER_SIZE, (size_t)nb * TL_HUFF_INDEX_ENTRY_SIZE);
    put_u32(p + 24, crc);
}

static long n_rejected, n_accepted;

/* Decode a copy of p[0, n) that is exactly n bytes long (so that ASan sees any
 * read past its end) into an output exactly as large as claimed. */
static void try_decode(const uint8_t *p, size_t n, const uint8_t *orig, size_t orig_len,
                       tl_huff_allocator a) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    uint64_t size = 0;
    tl_huff_error err;
    tl_huff_status s = tl_huff_decoded_size(copy, n, &size, &err);
    if (s == TL_HUFF_OK) {
        CHECK(size >= 1 && size <= 8 * (uint64_t)n); /* bounded by the stream */
        uint8_t *out = malloc((size_t)size);
        size_t len = 0;
        tl_huff_options o;
        memset(&o, 0, sizeof o);
        o.allocator = a;
        o.threads = 1 + (unsigned)(rng() % 4);
        s = tl_huff_decode(copy, n, out, (size_t)size, &len, &o, NULL, &err);
        if (s == TL_HUFF_OK) {
            CHECK(orig != NULL && len == orig_len && memcmp(out, orig, len) == 0);
            n_accepted++;
        }
        free(out);
    }
    if (s != TL_HUFF_OK) {
        CHECK(s == TL_HUFF_ECORRUPT);
        CHECK(err.message[0] != '\0');
        n_rejected++;
    }
    free(copy);
}

static void test_random_bytes(void) {
    uint8_t buf[512];
    for (int it = 0; it < 20000; it++) {
        size_t n = (size_t)(rng() % sizeof buf);
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rng();
        if (n >= 8 && (it & 1)) { /* a plausible header, so that more checks run */
            memcpy(buf, "TLHF\1\0\0\0", 8);
            if (n >= 24 && (it & 2)) put_u32(buf + 20, (uint32_t)(rng() % 4));
            fix_crc(buf, n);
        }
        try_decode(buf, n, NULL, 0, (tl_huff_allocator)(it % TL_HUFF_NUM_ALLOCATORS));
    }
}

static void damage_stream(const uint8_t *orig, size_t n, size_t bs) {
    uint8_t *enc;
    size_t len;
    tl_huff_options o;
    memset(&o, 0, sizeof o);
    o.block_size = bs;
    CHECK(tl_huff_encode(orig, n, &o, &enc, &len, NULL, NULL) == TL_HUFF_OK);
    try_decode(enc, len, orig, n, TL_HUFF_TLALLOC); /* the undamaged stream decodes */
    uint8_t *buf = malloc(len + 16);
    for (size_t cut = 0; cut < len; cut++) /* every truncation */
        try_decode(enc, cut, orig, n, (tl_huff_allocator)(cut % TL_HUFF_NUM_ALLOCATORS));
    for (size_t i = 0; i < len; i++) { /* every byte, a few ways */
        static const uint8_t flips[] = {0x01, 0x80, 0xFF};
        for (int f = 0; f < 3; f++) {
            memcpy(buf, enc, len);
            buf[i] ^= flips[f];
            if (f == 2) fix_crc(buf, len);
            try_decode(buf, len, orig, n, (tl_huff_allocator)(i % TL_HUFF_NUM_ALLOCATORS));
        }
    }
    for (int it = 0; it < 3000; it++) { /* several random changes at once */
        memcpy(buf, enc, len);
        int k = 1 + (int)(rng() % 4);
        for (int j = 0; j < k; j++) buf[rng() % len] = (uint8_t)rng();
        size_t m = len;
        if (rng() % 4 == 0) m += rng() % 16; /* and trailing junk */
        for (size_t j = len; j < m; j++) buf[j] = (uint8_t)rng();
        if (rng() & 1) fix_crc(buf, m);
        try_decode(buf, m, orig, n, (tl_huff_allocator)(it % TL_HUFF_NUM_ALLOCATORS));
    }
    free(buf);
    free(enc);
}

static void test_damaged_streams(void) {
    uint8_t text[700];
    const char *s = "per-thread pools never wait for the lock; ";
    for (size_t i = 0; i < sizeof text; i++) text[i] = (uint8_t)s[i % strlen(s)];
    damage_stream(text, sizeof text, 256);
    uint8_t one[40];
    memset(one, 'z', sizeof one);
    damage_stream(one, sizeof one, 16); /* one-symbol blocks */
    uint8_t rnd[300];
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)rng();
    damage_stream(rnd, sizeof rnd, 300);
    CHECK(n_rejected > 0);
    printf("decoder fuzz: %ld streams rejected, %ld decoded exactly\n", n_rejected, n_accepted);
}

int main(void) {
    RUN(test_random_bytes);
    RUN(test_damaged_streams);
    TEST_MAIN_END();
}
