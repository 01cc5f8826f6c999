/* platform/os.h: the only door to the operating system's memory calls (not
 * installed).
 *
 * Everything above this layer (arena, pool) asks for regions here and never
 * calls mmap, madvise or the memory-policy system calls itself. One
 * implementation per platform lives in csrc/platform/os_*.c; it also defines
 * tl_current_thread_id (declared in tlalloc/arena.h: the thread ids that the
 * arena's statistics report).
 */
#ifndef TLALLOC_OS_H
#define TLALLOC_OS_H

#include <stddef.h>
#include <stdint.h>
#include "tlalloc/arena.h" /* tl_page_kind, tl_numa: what an arena's options ask for */

#ifdef __cplusplus
extern "C" {
#endif

/* What a mapping really got. */
typedef struct tl_os_region {
    void *base;          /* aligned to `align` given to tl_os_map */
    size_t size;         /* bytes usable from base (the request rounded up to pages) */
    tl_page_kind pages;  /* page kind obtained */
    tl_numa numa;        /* memory policy applied (TL_NUMA_OFF if none) */
    int numa_node;       /* node of the calling CPU, -1 if unknown */
    int prefaulted;      /* nonzero if populated at creation */
    int hugetlb_fell_back; /* nonzero if hugetlb was asked for and thp was used */
} tl_os_region;

/* Size of an ordinary page (cached after the first call). */
size_t tl_os_page_size(void);
/* Size of a (transparent) huge page on this system, or 0 if unknown. */
size_t tl_os_huge_page_size(void);

/* Map `size` bytes of zeroed, private, read-write memory aligned to at least
 * `align` (a power of two; the page size if smaller). Returns 0, or -1 with
 * errno set. */
int tl_os_map(size_t size, size_t align, tl_page_kind pages, tl_numa numa,
              int prefault, tl_os_region *out);
/* tl_os_map without the release hook below (callers that hold a lock the
 * hook takes: the pool's own mappings, which release and retry themselves). */
int tl_os_map_norelease(size_t size, size_t align, tl_page_kind pages, tl_numa numa,
                        int prefault, tl_os_region *out);
/* Return a region obtained from tl_os_map. */
void tl_os_unmap(const tl_os_region *r);
/* Give the pages of [p, p+n) back to the OS (contents lost, range stays mapped). */
void tl_os_discard(void *p, size_t n);

/* ---- raw mappings for the pool's large blocks (pool/pool_large.c) ---- */

/* Anonymous, private, read-write memory of `n` bytes (a multiple of the page
 * size) at an address q with (q + offset) % align == 0 (align a power of two,
 * at least the page size). Over-maps by `align` and unmaps both ends. NULL if
 * the OS refuses. */
void *tl_os_map_anchored(size_t n, size_t align, size_t offset);
/* Resize the mapping [p, p + old) to `n` bytes (both multiples of the page
 * size) without copying: in place when shrinking or when the address space
 * after it is free, else by moving its page tables (mremap) to an address q
 * with (q + offset) % align == 0. Returns the new address, or NULL with the old
 * mapping unchanged. */
void *tl_os_remap(void *p, size_t old, size_t n, size_t align, size_t offset);
/* Unmap [p, p + n) (page aligned). */
void tl_os_unmap_range(void *p, size_t n);
/* Ask for transparent huge pages on [p, p + n) (madvise MADV_HUGEPAGE).
 * Returns 0 if the kernel accepted the advice. */
int tl_os_advise_huge(void *p, size_t n);
/* A coarse monotonic clock in milliseconds (CLOCK_MONOTONIC_COARSE: a vDSO
 * read, a few ns, resolution of a scheduler tick). */
uint64_t tl_os_coarse_ms(void);
/* MemAvailable and MemTotal from /proc/meminfo in bytes (no allocation: plain
 * open and read). Returns 0, or -1 if unknown. */
int tl_os_meminfo(uint64_t *available, uint64_t *total);

/* ---- when the OS refuses memory ------------------------------------------- */

/* A function that gives memory the process holds but does not use back to
 * the OS (the pool registers one: its caches and free pages). tl_os_map calls
 * it when a mapping fails with ENOMEM, then tries once more: so an arena's
 * chunk gets the memory the pool kept for reuse. It runs on the thread whose
 * mapping failed, never nested on one thread, and must not map memory. NULL
 * removes it. */
typedef void (*tl_os_release_fn)(void);
void tl_os_set_release_hook(tl_os_release_fn fn);
/* Call the registered function (unless this thread is inside it already).
 * Returns 1 if it ran. */
int tl_os_release(void);
/* Tests: the next n mappings of any kind (tl_os_map's tries,
 * tl_os_map_norelease, tl_os_map_anchored, the growth of tl_os_remap) fail with ENOMEM as if the
 * OS refused them, so that the release-and-retry paths can be tested where a
 * real limit cannot be set (under ASan, which needs much address space). */
void tl_os_inject_map_failures(unsigned n);

/* ---- the kernel's overcommit policy -------------------------------------------- */

/* /proc/sys/vm/overcommit_memory, read once: 0 heuristic, 1 always, 2 strict
 * (never; -1 unreadable: treated as 0). Under 0 a single request larger than
 * MemTotal + SwapTotal is refused as the kernel refuses it (tl_os_size_possible);
 * under 2 mappings are made without MAP_NORESERVE, so that the kernel's commit
 * accounting applies to them. */
int tl_os_overcommit_mode(void);
/* Tests: act as if the mode were `mode` (0, 1, 2), with RAM + swap of
 * `ram_swap` bytes for mode 0 (0: read /proc/meminfo); mode -1 goes back to
 * the kernel's. */
void tl_os_set_overcommit(int mode, uint64_t ram_swap);
/* 0 if a single mapping of n bytes is one the kernel's policy refuses (mode
 * 0 and n above RAM + swap), else 1. tl_os_map_anchored and tl_os_remap (a
 * malloc's blocks) check it; tl_os_map does not (an arena's region is address
 * space reserved, touched as it fills). */
int tl_os_size_possible(size_t n);

/* Number of NUMA nodes configured (1 on a single-node machine). */
int tl_os_numa_nodes(void);
/* NUMA node of the calling CPU, -1 if unknown. */
int tl_os_current_numa_node(void);
/* Memory policy of the page holding p, read back with get_mempolicy:
 * returns the mode (MPOL_* value) or -1, and stores the node mask's lowest
 * set node in *node (or -1). */
int tl_os_get_policy(const void *p, int *node);

#ifdef __cplusplus
}
#endif
#endif
