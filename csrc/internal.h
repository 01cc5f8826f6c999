/* internal.h: helpers shared by the C core's files (not installed). */
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
#define TL_NOINLINE __attribute__((noinline))
#define TL_COLD __attribute__((cold))
#else
#define TL_NOINLINE
#define TL_COLD
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

/* ---- fork (thread.c holds the handlers and documents the lock order) ---- */
/* Register the core's pthread_atfork handlers (once; also done at load time). */
void tl_fork_init(void);
/* Each subsystem's part: take its locks (prepare), release them (parent and
 * child), and repair its state in the child once every lock is usable again. */
void tl_scratch_fork_lock(void);
void tl_scratch_fork_unlock(void);
void tl_scratch_fork_child(void);
void tl_pool_fork_lock(void);
void tl_pool_fork_unlock(void);
void tl_pool_fork_child(void);
void tl_large_fork_lock(void);
void tl_large_fork_unlock(void);
void tl_large_fork_child(void);

#endif
