/* bench_alloc.h: allocation micro-benchmark shared by the C benchmark program
 * (bench/c/alloc.c) and `tlalloc bench alloc` (through the extension), so that
 * both measure exactly the same loop. */
#ifndef TLALLOC_BENCH_ALLOC_H
#define TLALLOC_BENCH_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tl_bench_strategy {
    TL_BENCH_THREAD = 0, /* the calling thread's arena; reset when full */
    TL_BENCH_SHARED = 1, /* one arena for all threads behind a mutex; reset when full */
    TL_BENCH_MALLOC = 2  /* malloc + free for every request */
} tl_bench_strategy;

typedef struct tl_bench_result {
    double wall_seconds;        /* from the common start to the last thread's end */
    double ns_per_alloc;        /* mean over threads of (thread time / its allocations) */
    double allocs_per_second;   /* aggregate: all allocations / wall_seconds */
    uint64_t total_allocations;
    uint64_t checksum;          /* keeps the compiler from removing the work */
} tl_bench_result;

/* Run `allocs_per_thread` allocations of `size` bytes on each of `nthreads`
 * threads with the given strategy. Returns 0, or -1 with errno set. */
int tl_bench_alloc(tl_bench_strategy strategy, int nthreads, uint64_t allocs_per_thread,
                   size_t size, tl_bench_result *out);

#ifdef __cplusplus
}
#endif
#endif
