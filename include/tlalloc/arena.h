/* tlalloc/arena.h: bump arenas and thread-local arenas (public C API).
 *
 * An arena allocates from chunks of `capacity` bytes by bumping an offset; a
 * mark remembers the position and rewinding to it releases everything
 * allocated since, in O(1). Memory allocated since a mark can instead be
 * handed over (tl_arena_escape) and given back later from any thread.
 *
 * Threading model: an arena is used by one thread at a time (its owner). Its
 * statistics may be read from any thread at any time without blocking the
 * owner. The design (chunks, escapes, the bound on an arena's memory, thread
 * arenas): docs/arena.md.
 */
#ifndef TLALLOC_ARENA_H
#define TLALLOC_ARENA_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The branch hint of the inline fast paths below and in tlalloc/scratch.h (not
 * part of the API). */
#if defined(__GNUC__) || defined(__clang__)
#define TLALLOC_LIKELY_(x) __builtin_expect(!!(x), 1)
#else
#define TLALLOC_LIKELY_(x) (x)
#endif

/* Default alignment of arena allocations: one cache line. */
#define TL_DEFAULT_ALIGN 64u
/* Largest alignment an arena accepts (one page). */
#define TL_MAX_ALIGN 4096u
/* Bounds on an arena's capacity. */
#define TL_ARENA_MIN_CAPACITY ((size_t)4096)
#define TL_ARENA_MAX_CAPACITY ((size_t)1 << 40) /* 1 TiB of address space */
#define TL_ARENA_DEFAULT_CAPACITY ((size_t)8 << 20) /* docs/kernels.md: from the kernels' scratch */
/* Unused chunks an arena keeps mapped for reuse; more are unmapped. */
#define TL_ARENA_SPARE_CHUNKS 2

/* What happens when a request does not fit. */
typedef enum tl_overflow {
    TL_OVERFLOW_ERROR = 0,    /* return NULL; the caller raises */
    TL_OVERFLOW_FALLBACK = 1, /* serve from the heap; freed at the releasing reset/rewind */
    TL_OVERFLOW_PANIC = 2     /* print a diagnostic to stderr and abort() */
} tl_overflow;

/* Page kind backing a region. */
typedef enum tl_page_kind {
    TL_PAGES_DEFAULT = 0, /* ordinary 4 KiB pages */
    TL_PAGES_THP = 1,     /* transparent huge pages requested with madvise */
    TL_PAGES_HUGETLB = 2  /* mapped from the huge-page pool */
} tl_page_kind;

typedef enum tl_numa {
    TL_NUMA_OFF = 0,
    TL_NUMA_LOCAL = 1,
    TL_NUMA_INTERLEAVE = 2
} tl_numa;

/* Options for creating an arena. Zero-initialised means "defaults". */
typedef struct tl_arena_options {
    size_t capacity;        /* bytes; 0 = TL_ARENA_DEFAULT_CAPACITY */
    tl_overflow overflow;   /* policy for requests that do not fit */
    int zero_on_reset;      /* nonzero: zero released bytes on reset/rewind */
    tl_page_kind pages;     /* page kind requested */
    tl_numa numa;           /* NUMA placement requested */
    int prefault;           /* nonzero: populate the region at creation */
} tl_arena_options;

/* Counters. Written by the owning thread only (relaxed stores), read by anyone. */
typedef struct tl_arena_counters {
    _Atomic uint64_t num_allocations;
    _Atomic uint64_t num_overflows;
    _Atomic uint64_t fallback_bytes;      /* cumulative bytes served from the heap */
    _Atomic uint64_t fallback_live_bytes; /* heap bytes not yet released */
    _Atomic uint64_t num_resets;          /* resets and rewinds */
    _Atomic size_t peak_bytes;            /* peak of offset, folded in lazily */
} tl_arena_counters;

/* A snapshot of an arena's statistics (plain numbers). */
typedef struct tl_arena_stats {
    uint64_t capacity_bytes;
    uint64_t used_bytes;
    uint64_t peak_bytes;
    uint64_t num_allocations;
    uint64_t num_overflows;
    uint64_t fallback_bytes;
    uint64_t fallback_live_bytes;
    uint64_t num_resets;
    uint64_t escaped_bytes;  /* bytes handed over by escapes still held */
    uint64_t escaped_chunks; /* chunks held only by escapes (not in use by the owner) */
    uint64_t num_escapes;    /* escapes made (cumulative) */
    uint64_t num_chunks;     /* chunks mapped (in use, held, spare) */
    uint64_t spare_chunks;   /* of those, unused: kept for reuse, or given back by escapes
                                and not yet taken by the owner (its next slow path trims
                                them to TL_ARENA_SPARE_CHUNKS) */
} tl_arena_stats;

struct tl_fallback; /* heap block served under the fallback policy (arena/arena.c) */
struct tl_chunk;    /* one region of `capacity` bytes (arena/arena.c) */

typedef struct tl_arena {
    /* --- hot: read on every allocation --- */
    char *base;               /* current chunk's start, page-aligned */
    _Atomic size_t offset;    /* bytes handed out in the current chunk; only the owner stores it */
    size_t capacity;          /* chunk size */
    tl_arena_counters c;
    /* --- chunks (arena.c; the owner's, except where noted) --- */
    struct tl_chunk **chain;  /* chain[0..chain_len-1]; the last is the current chunk */
    size_t chain_len, chain_cap;
    struct tl_chunk *chain_inline[4];
    struct tl_chunk *spare;   /* unused chunks kept for reuse */
    _Atomic size_t num_spare; /* owner writes; readers of the statistics load */
    int top_held;             /* the current chunk is held by an escape (no fresh chunk
                                 could be mapped): it is full until the next rewind */
    _Atomic(struct tl_chunk *) returned; /* chunks given back by escapes (any thread pushes) */
    _Atomic uint64_t returned_count;     /* any thread */
    _Atomic uint64_t escaped_bytes;      /* any thread (read-modify-write) */
    _Atomic uint64_t num_chunks;         /* written by the owner or the last reference */
    _Atomic uint64_t kept_bytes;         /* open-scope bytes in chunks below the current one */
    _Atomic uint64_t chain_count;        /* chain_len, for readers */
    _Atomic uint64_t num_escapes;
    /* --- cold --- */
    _Atomic uint64_t generation; /* changes on every reset or rewind */
    uint64_t epoch;           /* changes on every full reset (invalidates marks) */
    struct tl_fallback *fallback; /* newest first */
    tl_overflow overflow;
    int zero_on_reset;
    tl_page_kind pages_requested;
    tl_page_kind pages;       /* what the region really got */
    tl_numa numa;             /* policy applied */
    int numa_node;            /* node of the creating CPU, -1 if unknown */
    int prefaulted;
    size_t mapped;            /* bytes mapped per chunk (capacity rounded up to the page size) */
    /* Lifetime (thread arenas and Python wrappers share it). */
    _Atomic long refcount;
    int is_thread_arena;
    uint64_t thread_id;       /* OS thread id of the creator */
    char thread_name[64];
    struct tl_arena *reg_prev, *reg_next; /* registry links (arena/thread.c) */
} tl_arena;

/* A position to rewind to. */
typedef struct tl_mark {
    size_t offset;                /* in the chunk chain[index] */
    struct tl_fallback *fallback;
    uint64_t epoch;
    size_t index;                 /* position in the chain */
} tl_mark;

/* Memory handed over by tl_arena_escape. Plain data: the holder keeps it
 * wherever it likes and passes it to tl_arena_escape_release exactly once. */
typedef struct tl_escape {
    struct tl_arena *arena;       /* retained; NULL when nothing is held */
    struct tl_chunk *chunk;       /* the first chunk held */
    struct tl_chunk **more;       /* further chunks (malloc'd), n_more of them */
    size_t n_more;
    struct tl_fallback *fallback; /* heap blocks handed over (fallback policy) */
    uint64_t bytes;               /* counted in the arena's escaped_bytes */
} tl_escape;

/* ---- creation and lifetime ------------------------------------------------ */

/* Create an arena. Returns NULL and sets errno on failure (EINVAL for a bad
 * option, ENOMEM when the OS refuses the region). The new arena has refcount 1. */
tl_arena *tl_arena_create(const tl_arena_options *opts);
/* Reference counting: the arena is destroyed when the count reaches zero.
 * Safe to call from any thread. */
void tl_arena_retain(tl_arena *a);
void tl_arena_release(tl_arena *a);

/* ---- allocation ----------------------------------------------------------- */

/* Out of line: overflow handling (policy), zero-size requests at the end. */
void *tl_arena_alloc_slow(tl_arena *a, size_t size, size_t align);

/* Fast path: about 10 instructions, one predictable branch, no call, no lock.
 * `align` must be a power of two no larger than TL_MAX_ALIGN (checked by callers
 * that take user input; asserted in debug builds). Returns NULL when the request
 * does not fit (or size is 0), without applying the overflow policy and without
 * counting it: for callers that serve the rest another way and record it with
 * tl_arena_note_overflow. The comparison is written so that no sum can wrap: a
 * size near SIZE_MAX does not fit, it never wraps. */
static inline void *tl_arena_try_alloc(tl_arena *a, size_t size, size_t align) {
    size_t off = atomic_load_explicit(&a->offset, memory_order_relaxed);
    uintptr_t cur = (uintptr_t)a->base + off;
    size_t pad = (size_t)(-cur & (uintptr_t)(align - 1));
    size_t avail = a->capacity - off; /* off <= capacity is an invariant */
    if (TLALLOC_LIKELY_(pad <= avail && size <= avail - pad && size != 0)) {
        atomic_store_explicit(&a->offset, off + pad + size, memory_order_relaxed);
        uint64_t n = atomic_load_explicit(&a->c.num_allocations, memory_order_relaxed);
        atomic_store_explicit(&a->c.num_allocations, n + 1, memory_order_relaxed);
        return (void *)(cur + pad);
    }
    return NULL;
}

/* Allocate `size` bytes. The fast path is tl_arena_try_alloc; zero-size requests
 * and requests that do not fit go out of line, where the overflow policy applies.
 * Returns NULL only under the `error` policy (or when even the heap refuses). */
static inline void *tl_arena_alloc(tl_arena *a, size_t size, size_t align) {
    void *p = tl_arena_try_alloc(a, size, align);
    if (TLALLOC_LIKELY_(p != NULL)) return p;
    return tl_arena_alloc_slow(a, size, align);
}

/* Record a request that did not fit and that the caller served elsewhere (one
 * allocation, one overflow, `bytes` of fallback): keeps kernels' overflows
 * visible in the arena's statistics. Owner thread only. */
void tl_arena_note_overflow(tl_arena *a, size_t bytes);

/* ---- marks, rewind, reset ------------------------------------------------- */

static inline tl_mark tl_arena_mark(const tl_arena *a) {
    tl_mark m;
    m.offset = atomic_load_explicit(&a->offset, memory_order_relaxed);
    m.fallback = a->fallback;
    m.epoch = a->epoch;
    m.index = a->chain_len - 1;
    return m;
}

/* Release everything allocated since `m`: O(1) for arena memory, plus one
 * free() per fallback block released (and one step per chunk left, after
 * escapes). Returns 0, or -1 if the mark is stale (taken before a reset, or
 * beyond the current position); a stale mark changes nothing. */
int tl_arena_rewind(tl_arena *a, tl_mark m);
/* Release everything. O(1) plus the fallback blocks (and the zeroing if enabled). */
void tl_arena_reset(tl_arena *a);

/* Hand everything allocated since `m` over to `e` instead of releasing it:
 * the chunks it lies in (and fallback blocks) stay valid until
 * tl_arena_escape_release(e), and the arena goes on in a fresh chunk, as if
 * rewound to `m` there. Owner thread only. Returns 0 (e->arena is NULL when
 * nothing had been allocated since `m`: there is nothing to hold), or -1 for a
 * stale mark (nothing changes, nothing is held). If no fresh chunk can be
 * mapped, the memory is still held and the arena is full until the next
 * rewind below `m`; allocations there apply the overflow policy. */
int tl_arena_escape(tl_arena *a, tl_mark m, tl_escape *e);
/* Give the memory back. Any thread, no lock; at most one call per escape. A
 * chunk nobody else holds returns to its arena for reuse (or is unmapped with
 * the arena, whose reference the escape held). */
void tl_arena_escape_release(tl_escape *e);

/* ---- inspection ----------------------------------------------------------- */

/* May be called from any thread. */
void tl_arena_get_stats(const tl_arena *a, tl_arena_stats *out);
/* Bytes used in the current chunk (what a mark taken now would record). */
static inline size_t tl_arena_used(const tl_arena *a) {
    return atomic_load_explicit(&a->offset, memory_order_relaxed);
}
static inline uint64_t tl_arena_generation(const tl_arena *a) {
    return atomic_load_explicit(&a->generation, memory_order_relaxed);
}
/* Nonzero if p lies inside the arena's current chunk. */
static inline int tl_arena_contains(const tl_arena *a, const void *p) {
    return (const char *)p >= a->base && (const char *)p < a->base + a->capacity;
}

/* ---- thread-local arenas (arena/thread.c) --------------------------------------- */

/* Default options for thread arenas created from now on (copied). */
void tl_set_thread_arena_options(const tl_arena_options *opts);
void tl_get_thread_arena_options(tl_arena_options *out);

/* The calling thread's arena, or NULL if it has none yet. No lock, no call
 * beyond a TLS read. */
tl_arena *tl_thread_arena_peek(void);
/* The calling thread's arena, created on first use (registered, named `name`
 * if not NULL). Returns NULL with errno set if the region cannot be created.
 * The thread holds one reference, dropped at thread exit; the arena is
 * destroyed when its last reference goes. */
tl_arena *tl_thread_arena(const char *name);
/* Drop the calling thread's reference now (as thread exit would). */
void tl_thread_arena_release_current(void);

/* Registry-wide statistics: sums over live thread arenas plus the totals of
 * released ones. capacity/used/peak of released arenas are not included. */
typedef struct tl_registry_stats {
    tl_arena_stats total;
    uint64_t num_arenas;  /* live thread arenas */
    uint64_t num_threads; /* thread arenas ever created */
    uint64_t max_peak_bytes; /* largest peak of any thread arena, live or released */
} tl_registry_stats;
void tl_registry_get_stats(tl_registry_stats *out);

/* Per-arena snapshot for every live thread arena. Fills at most `max` entries
 * and returns the number of live thread arenas (which may exceed max). */
typedef struct tl_thread_stats {
    tl_arena_stats stats;
    uint64_t thread_id;
    int alive; /* owning thread still running */
    char thread_name[64];
    tl_page_kind pages;
    tl_page_kind pages_requested;
    tl_numa numa;
    int numa_node;
} tl_thread_stats;
size_t tl_registry_list(tl_thread_stats *out, size_t max);

/* OS thread id of the caller (gettid on Linux). */
uint64_t tl_current_thread_id(void);

#ifdef __cplusplus
}
#endif
#endif /* TLALLOC_ARENA_H */
