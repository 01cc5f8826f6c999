/* tlalloc/pool.h: the size-class pool, a malloc-like allocator with per-thread
 * caches (public C API).
 *
 * Arenas serve scratch that dies all at once; the pool serves blocks that are
 * freed one by one, possibly by another thread.
 *
 * Blocks come from 4 MiB segments cut into pages of one size class, each page
 * owned by one thread's cache; blocks above TL_POOL_MAX_SMALL bytes are mapped
 * one by one and cached for reuse. Freed memory goes back to the OS after
 * purge_delay_ms (tl_pool_options). Every block of 16 bytes or more is 16-byte
 * aligned. The design, its bounds and the policy of large blocks: docs/pool.md.
 *
 * Thread safety: every function may be called from any thread. A block may be
 * freed by any thread, also after the thread that allocated it has exited.
 *
 * libtlalloc.so (csrc/pool/preload.c, `make preload`) is this pool as a
 * process's malloc through LD_PRELOAD; it exports the functions below too, so
 * a program running under it can read its own malloc's statistics.
 */
#ifndef TLALLOC_POOL_H
#define TLALLOC_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of entries of the class table, and the largest size served from a
 * class: 64 KiB (class 55). Larger requests are large blocks, whose cache is
 * shared by all threads and bounded (why classes stop there: docs/pool.md,
 * "Size classes"). The table's entries above TL_POOL_MAX_SMALL are unused. */
#define TL_POOL_NUM_CLASSES 61u
#define TL_POOL_MAX_SMALL ((size_t)64 << 10)
/* Every page starts on this boundary, so aligned requests up to it are served
 * from size classes; larger alignments (up to TL_POOL_MAX_ALIGN) are mapped. */
#define TL_POOL_PAGE_ALIGN 4096u
#define TL_POOL_MAX_ALIGN ((size_t)1 << 30)
/* Alignment of every block of 16 bytes or more. */
#define TL_POOL_MIN_ALIGN 16u
/* Default for tl_pool_options.retain_bytes. */
#define TL_POOL_DEFAULT_RETAIN ((size_t)8 << 20)
/* Defaults and limits of the large-block cache (see "large blocks" above). */
#define TL_POOL_DEFAULT_LARGE_CACHE ((size_t)1 << 30)
#define TL_POOL_MAX_LARGE_CACHE ((size_t)1 << 40)
#define TL_POOL_DEFAULT_PURGE_DELAY_MS 250u
#define TL_POOL_MAX_PURGE_DELAY_MS 3600000u
#define TL_POOL_UNMAP_DELAY_FACTOR 8u
#define TL_POOL_MIN_UNMAP_DELAY_MS 1000u

/* ---- allocation ----------------------------------------------------------- */

/* Allocate `size` bytes. size 0 gives a unique minimal block. Returns NULL with
 * errno = ENOMEM when the request cannot be served (including sizes above
 * PTRDIFF_MAX). Fast path: a TLS read, a table lookup and a list pop. */
void *tl_pool_malloc(size_t size);
/* `n * size` zeroed bytes; NULL with errno = ENOMEM if the product overflows. */
void *tl_pool_calloc(size_t n, size_t size);
/* Resize, keeping the contents up to the smaller size. realloc(NULL, n) is
 * malloc(n); realloc(p, 0) frees p and returns a minimal block. On failure
 * returns NULL (errno = ENOMEM) and p stays valid. */
void *tl_pool_realloc(void *p, size_t size);
/* Release a block from this pool (any thread). NULL is ignored. A double free or
 * a pointer that is not a block start aborts with a diagnostic in debug builds
 * (TLALLOC_DEBUG); in release builds it is undefined behaviour, as for free(). */
void tl_pool_free(void *p);
/* `size` bytes aligned to `align`. align must be a power of two no larger than
 * TL_POOL_MAX_ALIGN (1 GiB): otherwise NULL with errno = EINVAL. The block is freed
 * with tl_pool_free like any other. */
void *tl_pool_aligned_alloc(size_t align, size_t size);
/* Bytes usable in the block (at least what was asked for). */
size_t tl_pool_usable_size(const void *p);

/* ---- size classes --------------------------------------------------------- */

/* Block size of class c (0 for c >= TL_POOL_NUM_CLASSES). */
size_t tl_pool_class_size(unsigned c);
/* Size a request of `size` bytes really gets (its class size, or the mapped
 * size rounded to the OS page for large requests). */
size_t tl_pool_good_size(size_t size);

/* ---- settings ------------------------------------------------------------- */

typedef struct tl_pool_options {
    int cache;           /* nonzero: per-thread caches (default); 0: one locked heap */
    size_t retain_bytes; /* free resident bytes the depot keeps (beyond: given back
                            after purge_delay_ms; 0: none, at once) */
    size_t large_cache_bytes; /* bytes of freed large blocks kept mapped for reuse
                                 (0 to TL_POOL_MAX_LARGE_CACHE; 0: none) */
    unsigned purge_delay_ms;  /* a cached large block, or a depot page beyond
                                 retain_bytes, unused this long is purged
                                 (0 to TL_POOL_MAX_PURGE_DELAY_MS; 0: at once) */
} tl_pool_options;

/* The defaults, for initialising a tl_pool_options (or start from
 * tl_pool_get_options): fields left out of an initialiser are 0, which means
 * "no large cache" and "purge at once". */
#define TL_POOL_OPTIONS_DEFAULT                                                         \
    {                                                                                  \
        1, TL_POOL_DEFAULT_RETAIN, TL_POOL_DEFAULT_LARGE_CACHE, TL_POOL_DEFAULT_PURGE_DELAY_MS \
    }

/* Apply options. `cache` affects threads whose cache does not exist yet (set it
 * before the first allocation); the others apply at once. Returns 0, or -1 with
 * errno = EINVAL (cache not 0 or 1, large_cache_bytes or purge_delay_ms out of
 * range), changing nothing. NULL restores the defaults. */
int tl_pool_configure(const tl_pool_options *opts);
void tl_pool_get_options(tl_pool_options *out);

/* ---- threads and housekeeping --------------------------------------------- */

/* Tear down the calling thread's cache now, as thread exit does: empty pages go
 * to the depot, pages with live blocks are abandoned. The next allocation by
 * this thread creates a fresh cache. */
void tl_pool_thread_release(void);
/* Adopt every abandoned page whose blocks have all been freed and return it to
 * the depot; then give back to the OS all free memory above the retention
 * limit (all of it if `release_all`). Takes the depot lock once. */
void tl_pool_collect(int release_all);

/* The background purge thread: a thread that sleeps until something freed is
 * due to go back to the OS (the purge delay) and gives it back, so that a
 * program that stops calling the pool still sees its resident set fall within
 * purge_delay_ms plus at most a second. On by default: the first allocation
 * slow path (sizes above 1 KiB, refills) after something freed waited for the
 * delay starts it (never a free: the C library frees under locks that
 * pthread_create takes), so a program that never frees that much has none.
 * Fork's prepare handler stops it, and the next such allocation starts it
 * again in the parent and in the child: it does not exist while the process is copied
 * (CPython 3.12+ counts the parent's threads right after fork to warn about
 * forking a multi-threaded process). on = 1 starts it now; on = 0 stops it
 * (waiting for it to exit) and keeps it off, so nothing starts it again until
 * on = 1 (libtlalloc.so: TLALLOC_POOL_PURGE_THREAD=0; a program that needs to
 * stay single-threaded, e.g. for unshare(CLONE_NEWUSER), wants that). Returns
 * 0, or -1 with errno (EINVAL for another value of on, or pthread_create's
 * error). Call it from ordinary code, not from inside a malloc replacement's
 * callers (on = 1 creates the thread with pthread_create). */
int tl_pool_purge_thread(int on);
/* 1 if the background purge thread runs now, else 0 (also while it is on but
 * has not started itself yet). */
int tl_pool_purge_thread_running(void);

/* ---- statistics ----------------------------------------------------------- */

/* A snapshot. Per-thread counters are written by their owner only (relaxed
 * stores) and summed here; threads that exited are folded into totals. */
typedef struct tl_pool_stats {
    uint64_t in_use_bytes;          /* block bytes (class sizes) handed out and not freed */
    uint64_t peak_bytes;            /* high-water mark of in_use_bytes (threads fold their part
                                       in at refills, page returns and cross-thread frees) */
    uint64_t reserved_bytes;        /* bytes mapped from the OS (segments and large blocks) */
    uint64_t retained_bytes;        /* free resident bytes the depot holds for reuse */
    uint64_t num_allocations;       /* malloc, calloc, aligned and the allocating part of realloc */
    uint64_t num_frees;             /* blocks freed (free and the freeing part of realloc) */
    uint64_t num_cross_thread_frees;/* frees of a block owned by another thread's cache */
    uint64_t num_cache_misses;      /* allocations that had to go to the depot */
    uint64_t num_depot_locks;       /* depot lock acquisitions */
    uint64_t num_large_allocations; /* requests mapped on their own */
    uint64_t num_abandoned_pages;   /* pages handed over at thread exit, over time */
    uint64_t num_reclaimed_pages;   /* abandoned pages adopted by another thread */
    uint64_t num_segments;          /* segments mapped now */
    uint64_t num_heaps;             /* live per-thread caches */
    uint64_t num_threads;           /* per-thread caches ever created */
    int cache_enabled;              /* per-thread caches on for new threads */
} tl_pool_stats;
void tl_pool_get_stats(tl_pool_stats *out);

/* The large-block cache now (for tests and diagnostics; takes its lock). */
typedef struct tl_pool_large_info {
    uint64_t cached_bytes;   /* mapping bytes of the cached blocks (<= large_cache_bytes) */
    uint64_t resident_bytes; /* of which not purged yet (possibly resident) */
    uint64_t num_cached;     /* cached blocks */
    uint64_t num_purged;     /* of which purged */
    uint64_t mapped_bytes;   /* mapping bytes of all large blocks, live and cached */
    uint64_t num_purges;     /* blocks purged, over time */
    uint64_t num_reuses;     /* requests served from the cache, over time */
} tl_pool_large_info;
void tl_pool_large_cache_info(tl_pool_large_info *out);

#ifdef __cplusplus
}
#endif
#endif /* TLALLOC_POOL_H */
