/* tlalloc/pool.h: the size-class pool, a malloc-like allocator with per-thread
 * caches (public C API).
 *
 * Arenas serve scratch that dies all at once; the pool serves blocks that are
 * freed one by one, possibly by another thread.
 *
 * Design (mimalloc / tcache style; see csrc/pool.c and csrc/pool_depot.c):
 *
 * - Memory comes from the OS layer in 4 MiB segments aligned to 4 MiB, so that
 *   the segment (and the descriptor of its 64 KiB slot) of any block is found by
 *   masking and shifting its address. A segment is cut into pages of one size: 64 KiB (small blocks),
 *   512 KiB (medium) or the whole segment (large). A page holds blocks of one
 *   size class and is owned by one thread's cache (its heap) at a time.
 * - Allocation pops the owner's free list of the current page of the class:
 *   no lock, no atomic read-modify-write. A free by the owner pushes on the
 *   same list. A free by another thread pushes on the page's atomic
 *   cross-thread list, which the owner collects when it runs dry; foreign blocks
 *   never enter the freeing thread's cache. The first such free into a page
 *   its owner found full goes on the owner's list instead (mimalloc's "delayed
 *   free"), so a refill looks only at pages that got blocks back, whatever the
 *   number of full pages, and returns those emptied to the depot.
 * - When a thread exits, its empty pages go back to the global depot and pages
 *   that still hold live blocks are abandoned: the next thread that refills
 *   that size class adopts it, and so does a thread that frees a block into
 *   one while its own available pages of the class are few (otherwise it
 *   pushes the block on the page, which stays for a thread that allocates,
 *   and now and then gives the pages such frees emptied back to the depot).
 *   Only refills from the depot and returns to it take a lock.
 * - The depot keeps `retain_bytes` of free, resident pages. Pages beyond that
 *   go back to the OS (madvise), and segments with no page in use beyond it
 *   are unmapped, once they stayed free for purge_delay_ms (the lazy purge
 *   below: a program whose threads come and go takes them again without
 *   faulting them in); at once when retain_bytes or purge_delay_ms is 0, and
 *   on tl_pool_collect. Checked by returns to the depot and, with a clock
 *   read and one relaxed load, by every 64th slow-path allocation of a thread
 *   (sizes above 1 KiB, refills). What waits for the delay beyond
 *   retain_bytes is bounded (the eager bound, pool_depot.c): a return that
 *   finds more gives the oldest pages back at once, so a burst of frees
 *   leaves the resident set whether or not the program calls the pool again.
 *   The bound starts at 16 MiB, doubles when a page it gave back is taken
 *   again within the delay (a churn larger than it: it would fault in what
 *   it frees, round after round), and halves after 8 delays without that.
 * - Idle memory: the background purge thread (tl_pool_purge_thread), on by
 *   default and started by the first allocation slow path (sizes above 1 KiB,
 *   refills) after something freed waited for the purge delay, gives back
 *   what is due within purge_delay_ms plus at most a second with no call at
 *   all. Turned off, on later calls only.
 * - When the OS refuses memory (RLIMIT_AS, the strict overcommit mode), the
 *   pool gives back what it holds unused and tries once more before it
 *   returns NULL (ENOMEM): the calling thread's empty pages and free blocks'
 *   pages, every cached large block, the empty abandoned pages, the depot's
 *   free pages and segments; other threads give back their empty pages at
 *   their next slow-path allocation. An arena's region refused by the OS gets
 *   the same (the OS layer's release hook, tlalloc/os.h).
 * - A single request the kernel's overcommit policy refuses is refused at
 *   once (ENOMEM), as glibc's malloc is: above MemTotal + SwapTotal under the
 *   heuristic mode (the pool's mappings are MAP_NORESERVE, which the kernel
 *   does not check); under the strict mode mappings are made without
 *   MAP_NORESERVE, so the kernel's commit accounting decides.
 * - Requests above TL_POOL_MAX_SMALL bytes (or aligned beyond TL_POOL_PAGE_ALIGN)
 *   are large blocks, each mapped on its own (csrc/pool_large.c): a 4 KiB
 *   header, then the block. See "large blocks" below.
 *
 * Size classes (56 in use): 8, 16, 32, 48, 64 bytes, then four classes per
 * doubling to 1 KiB: 80, 96, 112, 128, 160, 192, 224, 256, ..., 1024; from
 * 1 KiB to 8 KiB the largest multiples of 16 that fill a 64 KiB page with n
 * blocks (n = 56, 48, 42, 36, 32, ..., 16, 15, 14, ..., 8: 1168, 1360, ...,
 * 4096, 4368, 4672, ..., 7280, 8192); eight classes per doubling to 16 KiB,
 * four to 64 KiB. Every block of 16 bytes or more is 16-byte aligned.
 * Worst-case internal waste: 15 bytes for requests up to 64 bytes (a 17-byte
 * request gets 32), and below 20% of the block above 64 bytes (a request of
 * 2^k + 1 gets 2^k * 5/4 up to 1 KiB; 1025 B gets 1168 B).
 *
 * Large blocks (above 64 KiB, or aligned beyond 4 KiB), the policy:
 *
 * - Reuse: a freed large block goes to the large cache, bounded in bytes
 *   (large_cache_bytes, default TL_POOL_DEFAULT_LARGE_CACHE = 1 GiB; the
 *   oldest blocks are unmapped beyond it; 0: no cache). A request is served
 *   from the cache when it can be: a block whose mapping is at least what it
 *   needs and at most a quarter more (three quarters more when it needs above
 *   4 MiB: a trimmed tail is faulted in again by the next larger request), as
 *   it is (the best fit, resident blocks before purged ones; a live block's
 *   slack stays resident); else one up to twice as large, its tail unmapped; else
 *   one at least half as large, grown with mremap (its pages kept, only the
 *   rest new). Only then a fresh mapping. So the cache does not hold on to
 *   blocks that no request fits. calloc clears a reused block only where it
 *   may be resident.
 * - Thread caches: a block whose mapping is at most 1 MiB (aligned to at most
 *   4 KiB) freed by a thread with a cache stays in that thread's large cache
 *   (4 slots, at most 1 MiB; the oldest goes to the shared cache) and serves
 *   that thread's next request it fits as it is, newest first, without the
 *   large lock (NumPy temporaries of 256 KiB from two threads). A request
 *   that fits none of them moves them to the shared cache first (where it may
 *   trim or grow one), and until a request fits again the thread keeps only
 *   every 8th block (a churn of many sizes gains nothing there). These blocks
 *   count as cached (statistics, and within large_cache_bytes: a thread keeps
 *   a block only while the caches stay within it), are purged after the delay
 *   like the others (the purge moves them to the shared cache first),
 *   tl_pool_collect and a change of settings empty every thread's cache, and
 *   a thread's exit hands its blocks to the shared cache. A bound or delay of
 *   0 turns them off.
 * - Lazy purge (as mimalloc's purge delay and jemalloc's decay): a cached block
 *   not reused for purge_delay_ms (default TL_POOL_DEFAULT_PURGE_DELAY_MS) is
 *   given back with madvise(MADV_DONTNEED): its memory leaves the resident set
 *   but the mapping stays cached (reused without a system call; zero pages). A
 *   purged block not reused for TL_POOL_UNMAP_DELAY_FACTOR times the delay (at
 *   least TL_POOL_MIN_UNMAP_DELAY_MS) is unmapped. The default delay sits
 *   between mimalloc's 10 ms purge delay and jemalloc's 10 s dirty decay: a
 *   block freed and asked for again within a computation stays resident, and
 *   a burst leaves the resident set within a fraction of a second. As in
 *   mimalloc, the delay is a deadline checked on later calls, not a timer:
 *   large allocations and frees, allocations above 1 KiB (one relaxed load;
 *   while something is cached, every 64th call of a thread reads the coarse
 *   clock) and tl_pool_collect purge what is due, and so does the optional
 *   background purge thread (tl_pool_purge_thread). Without that thread, a
 *   process that stops calling the pool keeps its cache until it calls
 *   again (or tl_pool_collect). Under
 *   memory pressure (MemAvailable below 1/8 of MemTotal, read at most once a
 *   second while resident blocks are cached) every cached block is purged at
 *   once. tl_pool_collect(0) purges every cached block now and unmaps purged
 *   ones; tl_pool_collect(1) unmaps the whole cache.
 * - Resident bound: cached mappings are also purged at once, oldest first,
 *   while the cached resident bytes and the live large blocks together exceed
 *   the most live large bytes of the last purge delay (counting the blocks
 *   a free just cached as live) plus a slack: a 32nd of that most, at least
 *   1 MiB, at most retain_bytes (a churn of many sizes would otherwise keep
 *   a mapping of each size used within the delay resident, and raise the
 *   peak above the live set's).
 * - Free blocks of size classes of 16 KiB and more that stay free for one to
 *   two purge delays are given back too (all but their first 4 KiB), by their
 *   owner thread on its later allocations above 1 KiB.
 * - Transparent huge pages: mappings of 4 MiB and more are advised
 *   MADV_HUGEPAGE (as NumPy does for its arrays); every mapping starts on a
 *   4 MiB boundary, so their 2 MiB ranges can be huge pages.
 * - realloc of a large block shrinks in place (the tail is unmapped) and grows
 *   with mremap (in place when the address space after it is free, else moved
 *   by its page tables): no copy, and only new pages are faulted in; growth
 *   reserves an eighth more, so repeated small growths take few system calls.
 * - Alignments up to TL_POOL_MAX_ALIGN: a block aligned to A > 4 KiB starts A
 *   bytes into its mapping (the pages between header and block are never
 *   touched); beyond 4 MiB the mapping's header sits 4 MiB before the block.
 *
 * Thread safety: every function may be called from any thread. A block may be
 * freed by any thread, also after the thread that allocated it has exited.
 *
 * libtlalloc.so (csrc/preload.c, `make preload`) is this pool as a process's
 * malloc through LD_PRELOAD; it exports the functions below too, so a program
 * running under it can read its own malloc's statistics.
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
 * shared by all threads and bounded: with classes up to 1 MiB, each thread
 * kept its recent high-water mark of blocks in each of 16 classes from 80 KiB
 * to 1 MiB resident (4 threads dropping NumPy arrays of 1 B to 2 MB: 2.8x
 * the RSS of glibc's malloc; bench/numpy_churn_ab.py). The table's entries
 * above TL_POOL_MAX_SMALL are unused. */
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
