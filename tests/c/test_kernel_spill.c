/* Kernel scratch that does not fit the arena: served from the pool, the same
 * results bit for bit, counted per kernel with the arena size that fits.
 *
 * Each case runs a kernel once with an arena large enough for all of its
 * scratch (the reference, no spill), then with arenas too small for it (4 KiB,
 * and half of what the call needed), and compares the outputs byte for byte.
 * The per-kernel statistics must name the kernel, count the spills, and give a
 * capacity with which the same call no longer spills. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tl_test.h"
#include "tlalloc.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static double urand(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

/* ---- the cases ------------------------------------------------------------------ */

enum { CN = 3000, CD = 300, CM = 5, CK = 7 };
enum { GN = 30000, GDEG = 8 };
enum { DN = 5000 };

typedef struct inputs {
    float *cand32;       /* CN x CD */
    double *cand64;      /* CN x CD */
    float *q32;          /* CM x CD */
    int64_t *indptr;     /* GN + 1 */
    int32_t *indices;    /* GN * GDEG */
    float *weights;      /* GN * GDEG */
    uint16_t *strengths; /* DN float16 */
    double *ages;        /* DN, strided by 2 */
} inputs;

static inputs make_inputs(void) {
    inputs in;
    in.cand32 = malloc(sizeof(float) * CN * CD);
    in.cand64 = malloc(sizeof(double) * CN * CD);
    in.q32 = malloc(sizeof(float) * CM * CD);
    for (size_t i = 0; i < (size_t)CN * CD; i++) in.cand64[i] = (double)(in.cand32[i] = (float)urand() - 0.5f);
    for (size_t i = 0; i < (size_t)CM * CD; i++) in.q32[i] = (float)urand() - 0.5f;
    in.indptr = malloc(sizeof(int64_t) * (GN + 1));
    in.indices = malloc(sizeof(int32_t) * GN * GDEG);
    in.weights = malloc(sizeof(float) * GN * GDEG);
    for (size_t u = 0; u <= GN; u++) in.indptr[u] = (int64_t)(u * GDEG);
    for (size_t e = 0; e < (size_t)GN * GDEG; e++) {
        in.indices[e] = (int32_t)(rnd() % GN);
        in.weights[e] = 0.5f + (float)urand(); /* the pulse reaches far: many slots */
    }
    in.strengths = malloc(sizeof(uint16_t) * DN);
    in.ages = malloc(sizeof(double) * DN * 2);
    for (size_t i = 0; i < DN; i++) {
        in.strengths[i] = (uint16_t)(0x3c00u + (rnd() & 0x3ffu)); /* float16 in [1, 2) */
        in.ages[2 * i] = 1000.0 * urand();
    }
    return in;
}

static void free_inputs(inputs *in) {
    free(in->cand32), free(in->cand64), free(in->q32), free(in->indptr), free(in->indices), free(in->weights);
    free(in->strengths), free(in->ages);
}

enum { K_COS32, K_COS_TOPK, K_COS64, K_SPREAD_SPARSE, K_SPREAD_DENSE, K_SPREAD_TOPK, K_DECAY, K_NUM };
static const tl_scratch_kernel kernel_of[K_NUM] = {TL_SCRATCH_COSINE, TL_SCRATCH_COSINE, TL_SCRATCH_COSINE,
                                                   TL_SCRATCH_SPREAD, TL_SCRATCH_SPREAD, TL_SCRATCH_SPREAD,
                                                   TL_SCRATCH_DECAY};
static const char *const case_name[K_NUM] = {"cosine f32 batch", "cosine top-k",  "cosine f64",
                                             "spread sparse",    "spread dense",  "spread top-k",
                                             "decay f16 strided"};

/* Output buffer big enough for every case. */
#define OUT_BYTES ((size_t)CM * CN * sizeof(float) + (size_t)GN * sizeof(float) + 4096)

/* Run case k with scratch from `a` (NULL: the thread's arena); the output goes
 * to out (zeroed first). Returns the kernel's code; *s_out gets the bracket as
 * it was before tl_scratch_end, *need the arena bytes it took. */
static int run_case(const inputs *in, int k, tl_arena *a, unsigned char *out, tl_scratch *s_out, size_t *used) {
    memset(out, 0, OUT_BYTES);
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, a) == 0);
    size_t start = tl_arena_used(s.arena);
    int rc = TL_K_EINVAL;
    tl_mat c32 = {in->cand32, TL_F32, CN, CD, CD * 4, 4};
    tl_mat c64 = {in->cand64, TL_F64, CN, CD, CD * 8, 8};
    tl_mat q = {in->q32, TL_F32, CM, CD, CD * 4, 4};
    tl_csr g = {GN, (size_t)GN * GDEG, in->indptr, TL_I64, in->indices, TL_I32, in->weights, TL_F32};
    int64_t seeds[4] = {11, 29000, 4711, 11};
    double act = 1.0;
    size_t count = 0;
    switch (k) {
    case K_COS32:
        rc = tl_cosine_batch(&s, &q, &c32, NULL, (float *)out, CN * 4, 4);
        break;
    case K_COS_TOPK:
        rc = tl_cosine_topk_batch(&s, &q, &c32, NULL, CK, (int64_t *)out, (float *)(out + CM * CK * 8), &count);
        CHECK(rc != 0 || count == CK);
        break;
    case K_COS64:
        rc = tl_cosine_batch(&s, &q, &c64, NULL, (float *)out, CN * 4, 4);
        break;
    case K_SPREAD_SPARSE:
    case K_SPREAD_DENSE: {
        tl_spread_params p = {0.3, 0.001, 4, k == K_SPREAD_DENSE ? TL_SPREAD_DENSE : TL_SPREAD_SPARSE};
        rc = tl_spread_activation(&s, &g, seeds, 4, &act, 1, &p, (float *)out, 0, NULL, NULL, NULL, NULL);
        break;
    }
    case K_SPREAD_TOPK: {
        tl_spread_params p = {0.3, 0.001, 4, TL_SPREAD_SPARSE};
        rc = tl_spread_activation(&s, &g, seeds, 4, &act, 1, &p, NULL, 100, (int64_t *)out,
                                  (float *)(out + 800), &count, NULL);
        CHECK(rc != 0 || count == 100);
        break;
    }
    case K_DECAY: {
        tl_decay_params p = {TL_DECAY_EXP, 300.0, 0.0};
        rc = tl_decay(&s, in->strengths, TL_F16, 2, in->ages, TL_F64, 16, out, TL_F32, 4, DN, &p);
        break;
    }
    }
    *used = tl_arena_used(s.arena) - start;
    *s_out = s;
    tl_scratch_end(&s);
    return rc;
}

static size_t page_round(size_t n) { return (n + 4095) & ~(size_t)4095; }

static tl_arena *arena_of(size_t capacity) {
    tl_arena_options o = {.capacity = capacity, .overflow = TL_OVERFLOW_ERROR};
    tl_arena *a = tl_arena_create(&o);
    CHECK(a != NULL);
    return a;
}

/* ---- tests ---------------------------------------------------------------------- */

static void check_case(const inputs *in, int k) {
    unsigned char *want = malloc(OUT_BYTES), *got = malloc(OUT_BYTES);
    tl_scratch s;
    size_t used;
    tl_arena *big = arena_of((size_t)64 << 20);
    tl_scratch_kernel_reset_stats();
    CHECK(run_case(in, k, big, want, &s, &used) == 0);
    CHECK(s.num_overflows == 0 && s.kernel == kernel_of[k]);
    tl_scratch_kernel_stats st;
    tl_scratch_kernel_get_stats(kernel_of[k], &st);
    /* Without a spill the need is exactly the arena bytes the call took. */
    CHECK(st.peak_need_bytes == used && used > 0);
    CHECK(st.num_spilled_calls == 0 && st.fit_capacity_bytes == 0);
    CHECK(used > 4096); /* so that the 4 KiB arena below spills */
    tl_arena_release(big);

    size_t caps[2] = {4096, page_round(used / 2)};
    for (int c = 0; c < 2; c++) {
        if (caps[c] >= used) continue;
        tl_arena *small = arena_of(caps[c]);
        tl_scratch_kernel_reset_stats();
        tl_pool_stats p0, p1;
        tl_pool_get_stats(&p0);
        size_t used_small;
        CHECK(run_case(in, k, small, got, &s, &used_small) == 0);
        tl_pool_get_stats(&p1);
        CHECK(memcmp(got, want, OUT_BYTES) == 0); /* bit for bit */
        CHECK(s.num_overflows > 0 && s.heap_bytes > 0);
        /* Every spilled block came from the pool and went back to it. */
        CHECK(p1.num_allocations - p0.num_allocations >= s.num_overflows);
        CHECK(p1.num_frees - p0.num_frees == p1.num_allocations - p0.num_allocations);
        tl_scratch_kernel_get_stats(kernel_of[k], &st);
        CHECK(st.num_spilled_calls == 1 && st.num_spills == s.num_overflows && st.spilled_bytes == s.heap_bytes);
        CHECK(st.spill_capacity_bytes == caps[c]);
        /* The need counts each spill with its worst padding: never below the real
         * need, at most 64 bytes over per request. */
        CHECK(st.peak_need_bytes >= used && st.peak_need_bytes <= used + 64 * s.num_allocations);
        CHECK(st.fit_capacity_bytes == st.peak_need_bytes); /* the arena was empty at the start */
        for (unsigned o = 0; o < TL_SCRATCH_NUM_KERNELS; o++) {
            tl_scratch_kernel_stats other;
            tl_scratch_kernel_get_stats((tl_scratch_kernel)o, &other);
            if (o != (unsigned)kernel_of[k]) CHECK(other.num_spilled_calls == 0);
        }
        /* The arena overflow count sees the same spills. */
        tl_arena_stats as;
        tl_arena_get_stats(small, &as);
        CHECK(as.num_overflows == s.num_overflows && as.used_bytes == 0);
        tl_arena_release(small);

        /* An arena of the recommended capacity holds the call whole. */
        tl_arena *fit = arena_of(page_round(st.fit_capacity_bytes));
        CHECK(run_case(in, k, fit, got, &s, &used_small) == 0);
        CHECK(s.num_overflows == 0 && memcmp(got, want, OUT_BYTES) == 0);
        tl_arena_release(fit);
    }
    free(want), free(got);
}

static inputs g_in;

static void test_spill_matches_in_arena(void) {
    for (int k = 0; k < K_NUM; k++) {
        int before = tl_test_failures;
        check_case(&g_in, k);
        if (tl_test_failures != before) fprintf(stderr, "  in case %s\n", case_name[k]);
    }
}

static void test_names(void) {
    CHECK(strcmp(tl_scratch_kernel_name(TL_SCRATCH_COSINE), "cosine") == 0);
    CHECK(strcmp(tl_scratch_kernel_name(TL_SCRATCH_SPREAD), "spread") == 0);
    CHECK(strcmp(tl_scratch_kernel_name(TL_SCRATCH_DECAY), "decay") == 0);
    CHECK(strcmp(tl_scratch_kernel_name(TL_SCRATCH_OTHER), "other") == 0);
    CHECK(tl_scratch_kernel_name(TL_SCRATCH_NUM_KERNELS) == NULL);
    /* A bracket charged to one kernel stays charged to it. */
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0);
    tl_scratch_set_kernel(&s, TL_SCRATCH_DECAY);
    tl_scratch_set_kernel(&s, TL_SCRATCH_COSINE);
    CHECK(s.kernel == TL_SCRATCH_DECAY);
    tl_scratch_end(&s);
}

/* Alignment of spilled blocks, and the worst-padding need they record. */
static void test_spill_alignment(void) {
    tl_arena *a = arena_of(4096);
    tl_scratch s;
    CHECK(tl_scratch_begin(&s, TL_SCRATCH_THREAD, a) == 0);
    size_t want_need = 0;
    for (size_t align = 1; align <= TL_MAX_ALIGN; align *= 2) {
        char *p = tl_scratch_alloc(&s, 5000, align);
        CHECK(p != NULL && (uintptr_t)p % align == 0 && !tl_arena_contains(a, p));
        memset(p, 0xab, 5000);
        want_need += 5000 + align - 1;
    }
    CHECK(s.num_overflows == 13 && s.heap_bytes == 13 * 5000 && s.spill_need == want_need);
    tl_scratch_end(&s);
    CHECK(s.heap == NULL);
    tl_arena_release(a);
}

/* Threads the test creates (no Python anywhere): each spills in its own small
 * arena at once; the counters add up. */
typedef struct spill_arg {
    int ok;
} spill_arg;

static void *spill_thread(void *p) {
    spill_arg *arg = p;
    unsigned char *want = malloc(OUT_BYTES), *got = malloc(OUT_BYTES);
    tl_scratch s;
    size_t used;
    tl_arena *big = arena_of((size_t)64 << 20), *small = arena_of(4096);
    arg->ok = run_case(&g_in, K_SPREAD_SPARSE, big, want, &s, &used) == 0 && s.num_overflows == 0;
    for (int r = 0; r < 3; r++)
        arg->ok &= run_case(&g_in, K_SPREAD_SPARSE, small, got, &s, &used) == 0 && s.num_overflows > 0 &&
                   memcmp(got, want, OUT_BYTES) == 0;
    tl_arena_release(big);
    tl_arena_release(small);
    free(want), free(got);
    return NULL;
}

static void test_spill_from_threads(void) {
    enum { T = 4 };
    tl_scratch_kernel_reset_stats();
    pthread_t th[T];
    spill_arg args[T];
    for (int i = 0; i < T; i++) CHECK(pthread_create(&th[i], NULL, spill_thread, &args[i]) == 0);
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].ok);
    }
    tl_scratch_kernel_stats st;
    tl_scratch_kernel_get_stats(TL_SCRATCH_SPREAD, &st);
    CHECK(st.num_spilled_calls == 3 * T);
}

/* A child of fork spills (the pool after fork) and gets the same bits. */
static void test_spill_after_fork(void) {
    unsigned char *want = malloc(OUT_BYTES);
    tl_scratch s;
    size_t used;
    tl_arena *big = arena_of((size_t)64 << 20);
    CHECK(run_case(&g_in, K_COS32, big, want, &s, &used) == 0);
    tl_arena_release(big);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        unsigned char *got = malloc(OUT_BYTES);
        tl_arena *small = arena_of(4096);
        int ok = run_case(&g_in, K_COS32, small, got, &s, &used) == 0 && s.num_overflows > 0 &&
                 memcmp(got, want, OUT_BYTES) == 0;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(want);
}

int main(void) {
    g_in = make_inputs();
    RUN(test_names);
    RUN(test_spill_alignment);
    RUN(test_spill_matches_in_arena);
    RUN(test_spill_from_threads);
    RUN(test_spill_after_fork);
    free_inputs(&g_in);
    tl_thread_arena_release_current();
    TEST_MAIN_END();
}
