/* internal.h: compiler and atomic helpers shared by every folder of the C core
 * (not installed), and the platform layer's settings parser. */
#ifndef TLALLOC_INTERNAL_H
#define TLALLOC_INTERNAL_H

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Invariants: checked in debug builds (TLALLOC_DEBUG), compiled out otherwise. */
#ifdef TLALLOC_DEBUG
#define tl_assert(x) assert(x)
#else
#define tl_assert(x) ((void)0)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TL_LIKELY(x) __builtin_expect(!!(x), 1)
#define TL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TL_NOINLINE __attribute__((noinline))
#define TL_COLD __attribute__((cold))
/* Initial-exec TLS: one load off the thread pointer, no call into the dynamic
 * loader (whose __tls_get_addr may allocate), so usable from malloc itself in
 * libtlalloc.so and from the Python extension (a few bytes of static TLS). */
#define TL_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define TL_LIKELY(x) (x)
#define TL_UNLIKELY(x) (x)
#define TL_NOINLINE
#define TL_COLD
#define TL_TLS_MODEL
#endif

/* Owner-only counter update: a relaxed load and store, no read-modify-write
 * (a plain add on x86-64), so readers on other threads see a torn-free value
 * and the owner pays no lock prefix. */
#define TL_COUNTER_ADD(field, n)                                                   \
    atomic_store_explicit(&(field),                                                \
                          atomic_load_explicit(&(field), memory_order_relaxed) + (n), \
                          memory_order_relaxed)
#define TL_LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)
#define TL_STORE(field, v) atomic_store_explicit(&(field), (v), memory_order_relaxed)

static inline int tl_is_pow2(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

/* ---- settings as text (platform/env.c): the rules of tlalloc/_config.py, without allocating ---- */
enum {
    TL_PARSE_OK = 0,
    TL_PARSE_SYNTAX = -1,   /* not a number with a known unit (or not 0/1) */
    TL_PARSE_FRACTION = -2, /* a size that is not a whole number of bytes */
    TL_PARSE_RANGE = -3     /* a size beyond 2^64 - 1 */
};
/* A byte count such as "4096", "64MiB", "1.5KB" (see env.c). */
int tl_parse_size(const char *s, uint64_t *out);
/* A delay in milliseconds: "250", "250ms", "1.5s" (TL_PARSE_FRACTION: not whole ms). */
int tl_parse_delay_ms(const char *s, uint64_t *out);
/* A flag: "0" or "1", surrounding spaces ignored. */
int tl_parse_flag(const char *s, int *out);

/* Nonzero while this thread sets up the pool's own per-thread state (its heap,
 * the pthread key, the fork handlers). Those steps call into the C library
 * (pthread_once, pthread_atfork, pthread_setspecific), which may call malloc;
 * when the pool is the process's malloc (libtlalloc.so) that call comes back
 * into the pool, which then serves it from the locked global heap instead of
 * recursing into the setup (pool.c, tl_heap_resolve). Defined with the fork
 * handlers (platform/fork.c), whose registration sets it too. */
extern _Thread_local int tl_pool_bootstrapping TL_TLS_MODEL;

#endif
