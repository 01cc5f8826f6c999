/* cosine_int8: one query against an int8 corpus and the same corpus in float32.
 *
 *   build/c/bench/cosine_int8 [--rows N] [--dim D] [--rounds R] [--topk K]
 *
 * Builds an (N, D) float32 corpus (default 1,000,000 x 768: 3 GiB, from DRAM),
 * quantizes it (tl_quantize_i8: 0.77 GiB), and times one-query calls (thread
 * CPU time, rounds interleaved): the float32 cosine (best ISA), and the int8
 * cosine under each integer path the CPU has (AVX512_VNNI, AVX-VNNI, AVX2).
 * With --topk K (default 10) the calls are top-K searches, and the int8
 * result's overlap with the float32 one is printed (recall@K on random
 * vectors: a smoke check, not a recall measurement; real embeddings are). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlalloc.h"

static uint64_t rng = 0xD1B54A32D192ED03ull;
static float frand(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (float)((double)((rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0) - 0.5);
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

enum { MAXK = 1000 };

int main(int argc, char **argv) {
    size_t n = 1000000, d = 768, k = 10;
    int rounds = 7;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rows")) n = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--dim")) d = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--topk")) k = strtoull(argv[i + 1], NULL, 10);
    }
    if (k < 1 || k > MAXK || n < k || rounds < 1) return 2;
    float *c = aligned_alloc(64, (n * d * 4 + 63) & ~(size_t)63), *q = malloc(d * 4), *scale = malloc(n * 4);
    int8_t *c8 = aligned_alloc(64, (n * d + 63) & ~(size_t)63);
    int32_t *sum = malloc(n * 4), *sumsq = malloc(n * 4);
    if (!c || !q || !c8 || !scale || !sum || !sumsq) return 1;
    for (size_t i = 0; i < n * d; i++) c[i] = frand();
    for (size_t j = 0; j < d; j++) q[j] = frand();
    tl_scratch s;
    tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL);
    tl_mat cm = {c, TL_F32, n, d, (ptrdiff_t)(d * 4), 4}, qm = {q, TL_F32, 1, d, (ptrdiff_t)(d * 4), 4};
    double t0 = cpu_now();
    if (tl_quantize_i8(&s, &cm, c8, (ptrdiff_t)d, scale, sum, sumsq, NULL) != TL_K_OK) return 1;
    printf("quantize %zu x %zu: %.0f ms\n", n, d, (cpu_now() - t0) * 1e3);
    tl_scratch_end(&s);
    tl_i8_mat c8m = {c8, n, d, (ptrdiff_t)d, scale, sum, sumsq};

    /* contenders: float32 (best ISA), then int8 per integer path */
    typedef struct path {
        const char *name;
        tl_isa isa;
        unsigned ext;
    } path;
    path paths[4];
    int np = 0;
    const unsigned best = tl_kernels_best_ext();
    if (best & TL_EXT_AVX512_VNNI) paths[np++] = (path){"int8 avx512-vnni", TL_ISA_AVX512, TL_EXT_AVX512_VNNI};
    if (best & TL_EXT_AVX_VNNI) paths[np++] = (path){"int8 avx-vnni", TL_ISA_AVX2, TL_EXT_AVX_VNNI};
    if (tl_kernels_best_isa() >= TL_ISA_AVX2) paths[np++] = (path){"int8 avx2", TL_ISA_AVX2, 0};
    else paths[np++] = (path){"int8 portable", TL_ISA_PORTABLE, 0};
    const int nc = np + 1;
    double *t = malloc(sizeof(double) * (size_t)nc * (size_t)rounds);
    static int64_t idx[5][MAXK];
    static float sc[5][MAXK];
    const tl_isa best_isa = tl_kernels_best_isa();
    for (int r = 0; r < rounds; r++)
        for (int ci0 = 0; ci0 < nc; ci0++) {
            int ci = (r & 1) ? nc - 1 - ci0 : ci0;
            size_t cnt = 0;
            tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL);
            int rc;
            if (ci == 0) {
                tl_kernels_set_isa(best_isa);
                tl_kernels_set_ext(best);
                t0 = cpu_now();
                rc = tl_cosine_topk_batch(&s, &qm, &cm, NULL, k, idx[0], sc[0], &cnt);
            } else {
                tl_kernels_set_isa(paths[ci - 1].isa);
                tl_kernels_set_ext(paths[ci - 1].ext);
                t0 = cpu_now();
                rc = tl_i8_topk_batch(&s, &qm, &c8m, TL_I8_COSINE, k, idx[ci], sc[ci], &cnt);
            }
            t[(size_t)ci * (size_t)rounds + (size_t)r] = cpu_now() - t0;
            tl_scratch_end(&s);
            if (rc != TL_K_OK || cnt != k) return 1;
        }
    tl_kernels_set_isa(best_isa);
    tl_kernels_set_ext(best);
    double f32med = 0;
    for (int ci = 0; ci < nc; ci++) {
        double *tc = t + (size_t)ci * (size_t)rounds;
        qsort(tc, (size_t)rounds, sizeof(double), cmp_d);
        double med = tc[rounds / 2];
        if (ci == 0) f32med = med;
        size_t hit = 0;
        for (size_t a = 0; a < k; a++)
            for (size_t b = 0; b < k; b++) hit += idx[ci][a] == idx[0][b];
        printf("%-18s %8.2f ms (best %8.2f)  %6.1f GB/s  f32/this %5.2fx  top-%zu overlap with f32 %zu/%zu\n",
               ci == 0 ? "float32" : paths[ci - 1].name, med * 1e3, tc[0] * 1e3,
               (double)n * (double)d * (ci == 0 ? 4.0 : 1.0) / med / 1e9, f32med / med, k, hit, k);
    }
    free(c), free(q), free(c8), free(scale), free(sum), free(sumsq), free(t);
    tl_thread_arena_release_current();
    return 0;
}
