/* core_rate: what one core of this machine computes, with the data in L1.
 *
 * Bounds a 16-bit cosine pass: from DRAM a float16 corpus cannot be faster
 * than the core widens (vcvtph2ps) and multiplies it with the rows in cache.
 * Prints, per second of thread CPU time:
 *   - FMA instructions (12 independent chains, registers only);
 *   - float32 elements of a dot product from L1 (8 chains);
 *   - float16 elements of a dot product from L1, widened by F16C (8 chains).
 *
 *   make bench && build/c/bench/core_rate [seconds per measurement, default 1]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma,f16c"), noinline))
enum { CH = 8, L1_ELEMS = 4096, REG_CHAINS = 12 };

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float hsum(__m256 v) TARGET;
static float hsum(__m256 v) {
    float o[8], s = 0.0f;
    _mm256_storeu_ps(o, v);
    for (int i = 0; i < 8; i++) s += o[i];
    return s;
}

/* REG_CHAINS FMA chains, `iters` FMAs each. */
static float fma_loop(long iters) TARGET;
static float fma_loop(long iters) {
    __m256 a[REG_CHAINS];
    const __m256 x = _mm256_set1_ps(0.9999f), y = _mm256_set1_ps(1e-5f);
    for (int i = 0; i < REG_CHAINS; i++) a[i] = _mm256_set1_ps((float)i * 1e-3f);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < REG_CHAINS; i++) {
            a[i] = _mm256_fmadd_ps(a[i], x, y);
            __asm__("" : "+x"(a[i])); /* keep each chain a real FMA */
        }
    }
    __m256 s = a[0];
    for (int i = 1; i < REG_CHAINS; i++) s = _mm256_add_ps(s, a[i]);
    return hsum(s);
}

/* Dot product of q with L1_ELEMS elements, `reps` times; half: float16 rows. */
static float dot_loop(const float *q, const void *row, int half, long reps) TARGET;
static float dot_loop(const float *q, const void *row, int half, long reps) {
    __m256 a[CH];
    for (int i = 0; i < CH; i++) a[i] = _mm256_setzero_ps();
    const uint16_t *h = row;
    const float *f = row;
    for (long r = 0; r < reps; r++)
        for (long j = 0; j < L1_ELEMS; j += 8 * CH) {
#pragma GCC unroll 8
            for (int i = 0; i < CH; i++) {
                __m256 x = half ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + j + 8 * i)))
                                : _mm256_loadu_ps(f + j + 8 * i);
                a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8 * i), x, a[i]);
            }
        }
    __m256 s = a[0];
    for (int i = 1; i < CH; i++) s = _mm256_add_ps(s, a[i]);
    return hsum(s);
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(secs > 0.0)) {
        fprintf(stderr, "core_rate: seconds must be > 0, got %s\n", argv[1]);
        return 2;
    }
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("core_rate: this CPU has no AVX2+FMA; nothing to measure\n");
        return 0;
    }
    static float q[L1_ELEMS], f32[L1_ELEMS];
    static uint16_t f16[L1_ELEMS];
    for (int i = 0; i < L1_ELEMS; i++) q[i] = 1e-3f, f32[i] = 1.0f, f16[i] = 0x3c00; /* 1.0 */
    float sink = 0.0f;
    /* calibrate each loop to about `secs` seconds, then time it */
    long iters = 1 << 20;
    double t = cpu_now();
    sink += fma_loop(iters);
    double dt = cpu_now() - t;
    iters = (long)((double)iters * secs / (dt > 1e-4 ? dt : 1e-4));
    t = cpu_now();
    sink += fma_loop(iters);
    dt = cpu_now() - t;
    printf("FMA instructions (256-bit, %d chains): %.2f G/s\n", REG_CHAINS, (double)iters * REG_CHAINS / dt / 1e9);
    for (int half = 0; half <= 1; half++) {
        long reps = 1 << 12;
        t = cpu_now();
        sink += dot_loop(q, half ? (const void *)f16 : (const void *)f32, half, reps);
        dt = cpu_now() - t;
        reps = (long)((double)reps * secs / (dt > 1e-4 ? dt : 1e-4));
        t = cpu_now();
        sink += dot_loop(q, half ? (const void *)f16 : (const void *)f32, half, reps);
        dt = cpu_now() - t;
        printf("dot product from L1, %s: %.2f G elements/s\n", half ? "float16 (F16C)" : "float32",
               (double)reps * L1_ELEMS / dt / 1e9);
    }
    return sink == 12345.0f; /* keep the results alive */
}

#else
int main(void) {
    printf("core_rate: x86 only\n");
    return 0;
}
#endif
