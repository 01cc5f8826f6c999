/* os_linux.c: the OS layer on Linux (see platform/os.h). Nothing else in the
 * core calls mmap, madvise or the memory-policy system calls. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "platform/os.h"

/* Memory-policy modes and flags from <linux/mempolicy.h>, spelled out so that
 * no libnuma (or kernel header) is needed. */
#define TL_MPOL_DEFAULT 0
#define TL_MPOL_PREFERRED 1
#define TL_MPOL_BIND 2
#define TL_MPOL_INTERLEAVE 3
#define TL_MPOL_F_NODE (1 << 0)
#define TL_MPOL_F_ADDR (1 << 1)
#define TL_MAX_NODES 1024

static size_t tl_page_size_cached;
static size_t tl_huge_page_size_cached;

size_t tl_os_page_size(void) {
    size_t p = __atomic_load_n(&tl_page_size_cached, __ATOMIC_RELAXED);
    if (!p) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        __atomic_store_n(&tl_page_size_cached, p, __ATOMIC_RELAXED);
    }
    return p;
}

size_t tl_os_huge_page_size(void) {
    size_t h = __atomic_load_n(&tl_huge_page_size_cached, __ATOMIC_RELAXED);
    if (!h) {
        h = (size_t)2 << 20; /* x86-64 and most AArch64 kernels */
        /* open/read, not stdio: fopen allocates, and this may run inside
         * malloc when the pool is the process's allocator (libtlalloc.so). */
        int fd = open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[32];
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            unsigned long long v = 0;
            for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9' && v < (1ull << 40); i++)
                v = v * 10 + (unsigned)(buf[i] - '0');
            if (v >= 4096 && v <= ((size_t)1 << 40) && tl_is_pow2((size_t)v)) h = (size_t)v;
        }
        __atomic_store_n(&tl_huge_page_size_cached, h, __ATOMIC_RELAXED);
    }
    return h;
}

int tl_os_numa_nodes(void) {
    DIR *d = opendir("/sys/devices/system/node");
    if (!d) return 1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "node", 4) == 0 && e->d_name[4] >= '0' && e->d_name[4] <= '9') n++;
    }
    closedir(d);
    return n > 0 ? n : 1;
}

int tl_os_current_numa_node(void) {
    unsigned cpu = 0, node = 0;
    if (syscall(SYS_getcpu, &cpu, &node, NULL) != 0) return -1;
    return (int)node;
}

int tl_os_get_policy(const void *p, int *node) {
    int mode = -1;
    unsigned long mask[TL_MAX_NODES / (8 * sizeof(unsigned long))];
    memset(mask, 0, sizeof mask);
    if (node) *node = -1;
    if (syscall(SYS_get_mempolicy, &mode, mask, (unsigned long)TL_MAX_NODES, p, TL_MPOL_F_ADDR) != 0)
        return -1;
    if (node) {
        for (int i = 0; i < TL_MAX_NODES; i++) {
            if (mask[i / (8 * sizeof(unsigned long))] >> (i % (8 * sizeof(unsigned long))) & 1) {
                *node = i;
                break;
            }
        }
    }
    return mode;
}

/* ---- the kernel's overcommit policy ------------------------------------------------ */

/* Mode cached (-2: not read yet) and RAM + swap in bytes (0: not read yet or
 * unknown); both may be overridden by tests (tl_os_set_overcommit). */
static _Atomic int tl_overcommit = -2;
static _Atomic uint64_t tl_ram_swap;

/* A small file's first number, read without allocating (may run inside
 * malloc under libtlalloc.so). -1 if unreadable. */
static long tl_read_number(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    long v = 0;
    int digits = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9' && v < 1000000; i++, digits++)
        v = v * 10 + (buf[i] - '0');
    return digits ? v : -1;
}

int tl_os_overcommit_mode(void) {
    int m = atomic_load_explicit(&tl_overcommit, memory_order_relaxed);
    if (m == -2) {
        long v = tl_read_number("/proc/sys/vm/overcommit_memory");
        m = v >= 0 && v <= 2 ? (int)v : -1;
        atomic_store_explicit(&tl_overcommit, m, memory_order_relaxed);
    }
    return m;
}

static int tl_meminfo_field(const char *buf, const char *key, uint64_t *out);

/* MemTotal + SwapTotal from /proc/meminfo, read once (UINT64_MAX if unknown:
 * nothing is refused then). */
static uint64_t tl_os_ram_swap(void) {
    uint64_t v = atomic_load_explicit(&tl_ram_swap, memory_order_relaxed);
    if (v) return v;
    v = UINT64_MAX;
    char buf[4096];
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        uint64_t ram, swap;
        if (n > 0) {
            buf[n] = '\0';
            if (tl_meminfo_field(buf, "MemTotal:", &ram) == 0 && tl_meminfo_field(buf, "SwapTotal:", &swap) == 0)
                v = ram + swap;
        }
    }
    atomic_store_explicit(&tl_ram_swap, v, memory_order_relaxed);
    return v;
}

void tl_os_set_overcommit(int mode, uint64_t ram_swap) {
    atomic_store_explicit(&tl_overcommit, mode >= 0 && mode <= 2 ? mode : -2, memory_order_relaxed);
    atomic_store_explicit(&tl_ram_swap, mode >= 0 ? ram_swap : 0, memory_order_relaxed);
}

/* The heuristic mode (0, the default) refuses a single mapping larger than
 * RAM plus swap (mm/util.c, __vm_enough_memory) unless it is MAP_NORESERVE,
 * as the pool's are: so the check is made here, and malloc(1 << 46) fails
 * with ENOMEM as glibc's does. */
int tl_os_size_possible(size_t n) {
    int m = tl_os_overcommit_mode();
    if (m == 1 || m == 2) return 1; /* 2: the kernel accounts (no MAP_NORESERVE) */
    return (uint64_t)n <= tl_os_ram_swap();
}

/* MAP_NORESERVE (no commit charge: the address space of a segment costs
 * nothing until touched) except under the strict mode, where the kernel
 * ignores it anyway and a mapping must be charged to be refused. */
static int tl_noreserve(void) { return tl_os_overcommit_mode() == 2 ? 0 : MAP_NORESERVE; }

/* ---- release and retry -------------------------------------------------------------- */

static _Atomic(tl_os_release_fn) tl_release_hook;
static _Atomic unsigned tl_inject_failures;
static _Thread_local int tl_in_release TL_TLS_MODEL;

void tl_os_set_release_hook(tl_os_release_fn fn) {
    atomic_store_explicit(&tl_release_hook, fn, memory_order_release);
}

int tl_os_release(void) {
    tl_os_release_fn fn = atomic_load_explicit(&tl_release_hook, memory_order_acquire);
    if (!fn || tl_in_release) return 0;
    tl_in_release = 1;
    fn();
    tl_in_release = 0;
    return 1;
}

void tl_os_inject_map_failures(unsigned n) {
    atomic_store_explicit(&tl_inject_failures, n, memory_order_relaxed);
}

/* A failure the tests injected: takes one. A relaxed load when none (every
 * caller is about to make a system call). */
static int tl_injected_failure(void) {
    unsigned n = atomic_load_explicit(&tl_inject_failures, memory_order_relaxed);
    while (n != 0)
        if (atomic_compare_exchange_weak_explicit(&tl_inject_failures, &n, n - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

/* Map with MAP_HUGETLB from the huge-page pool; fails when the pool cannot hold
 * the region. No MAP_NORESERVE here: the kernel must reserve the huge pages at
 * mmap time, or a later first touch would die with SIGBUS on an empty pool. */
static void *tl_map_hugetlb(size_t size) {
#ifdef MAP_HUGETLB
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
#else
    (void)size;
    return NULL;
#endif
}

/* Aligned mappings first ask for an address of their alignment: one system
 * call where over-mapping and trimming take three. mmap holds the process's
 * mmap lock for writing, and a thread that waits on that lock sleeps (and its
 * wake-up moves it to the waker's core, pool_depot.c's tl_depot_unlock). The
 * hints climb through an area the kernel does not place mappings in by itself
 * (8-16 TiB; mimalloc's hints start at 2 TiB), from a start that differs
 * between processes (ASLR moves this variable). The kernel takes a hint only
 * where nothing is mapped; otherwise the mapping goes the long way. Not under
 * the sanitizers, whose shadow memory lies there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TL_NO_MAP_HINTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TL_NO_MAP_HINTS 1
#endif
#endif
#if UINTPTR_MAX > 0xFFFFFFFFu && !defined(TL_NO_MAP_HINTS)
#define TL_HINT_BASE ((uintptr_t)8 << 40)
#define TL_HINT_END ((uintptr_t)16 << 40)
static _Atomic uintptr_t tl_hint_next;

static void *tl_map_at_hint(size_t size, size_t align) {
    if (size > ((size_t)1 << 30) || align > ((size_t)1 << 30)) return NULL;
    uintptr_t cur = atomic_load_explicit(&tl_hint_next, memory_order_relaxed);
    if (cur == 0) { /* 1 GiB steps within the area's first TiB */
        uintptr_t mix = ((uintptr_t)&tl_hint_next >> 12) * (uintptr_t)0x9E3779B97F4A7C15u;
        atomic_compare_exchange_strong_explicit(&tl_hint_next, &cur, TL_HINT_BASE + (mix >> 54) * ((uintptr_t)1 << 30),
                                                memory_order_relaxed, memory_order_relaxed);
    }
    /* A hole of one alignment unit after each mapping: the kernel would merge
     * adjacent mappings into one, and a mapping the kernel changes (merged
     * into, or split by a munmap) makes the page faults of every other thread
     * in it wait. */
    uintptr_t step = (((uintptr_t)size + align - 1) & ~(uintptr_t)(align - 1)) + align;
    uintptr_t h = atomic_fetch_add_explicit(&tl_hint_next, step, memory_order_relaxed);
    h = (h + align - 1) & ~(uintptr_t)(align - 1);
    if (h + size > TL_HINT_END) return NULL;
    void *p = mmap((void *)h, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | tl_noreserve(), -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (((uintptr_t)p & (align - 1)) == 0) return p; /* the hint (or luck) */
    munmap(p, size);
    return NULL;
}
#else
static void *tl_map_at_hint(size_t size, size_t align) {
    (void)size;
    (void)align;
    return NULL;
}
#endif

/* Map size bytes aligned to align: at a hint, or over-map, then trim both ends. */
static void *tl_map_aligned(size_t size, size_t align) {
    size_t page = tl_os_page_size();
    if (align <= page) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | tl_noreserve(),
                       -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    void *hinted = tl_map_at_hint(size, align);
    if (hinted) return hinted;
    if (size > SIZE_MAX - align) return NULL;
    size_t total = size + align;
    char *raw = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | tl_noreserve(),
                     -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    char *end = p + size, *raw_end = raw + total;
    if (raw_end > end) munmap(end, (size_t)(raw_end - end));
    return p;
}

static void tl_apply_numa(tl_os_region *r, tl_numa numa) {
    r->numa = TL_NUMA_OFF;
    if (numa == TL_NUMA_OFF) return;
    unsigned long mask[TL_MAX_NODES / (8 * sizeof(unsigned long))];
    memset(mask, 0, sizeof mask);
    int mode;
    if (numa == TL_NUMA_LOCAL) {
        int node = r->numa_node >= 0 ? r->numa_node : 0;
        if (node >= TL_MAX_NODES) return;
        mask[node / (8 * sizeof(unsigned long))] |= 1ul << (node % (8 * sizeof(unsigned long)));
        mode = TL_MPOL_BIND;
    } else {
        int n = tl_os_numa_nodes();
        for (int i = 0; i < n && i < TL_MAX_NODES; i++)
            mask[i / (8 * sizeof(unsigned long))] |= 1ul << (i % (8 * sizeof(unsigned long)));
        mode = TL_MPOL_INTERLEAVE;
    }
    if (syscall(SYS_mbind, r->base, r->size, mode, mask, (unsigned long)TL_MAX_NODES, 0u) == 0)
        r->numa = numa;
}

static void tl_prefault(tl_os_region *r) {
#ifdef MADV_POPULATE_WRITE
    if (madvise(r->base, r->size, MADV_POPULATE_WRITE) == 0) {
        r->prefaulted = 1;
        return;
    }
#endif
    /* Older kernels: touch one byte per page (the region is zero, stay zero). */
    size_t step = r->pages == TL_PAGES_DEFAULT ? tl_os_page_size() : tl_os_huge_page_size();
    volatile char *c = r->base;
    for (size_t i = 0; i < r->size; i += step) c[i] = 0;
    r->prefaulted = 1;
}

int tl_os_map_norelease(size_t size, size_t align, tl_page_kind pages, tl_numa numa, int prefault,
                        tl_os_region *out) {
    memset(out, 0, sizeof *out);
    size_t page = tl_os_page_size();
    if (size == 0 || !tl_is_pow2(align)) {
        errno = EINVAL;
        return -1;
    }
    size_t unit = pages == TL_PAGES_DEFAULT ? page : tl_os_huge_page_size();
    if (size > SIZE_MAX - unit) {
        errno = ENOMEM;
        return -1;
    }
    size = (size + unit - 1) & ~(unit - 1);
    if (tl_injected_failure()) {
        errno = ENOMEM;
        return -1;
    }
    out->numa_node = tl_os_current_numa_node();
    out->pages = TL_PAGES_DEFAULT;
    if (pages == TL_PAGES_HUGETLB) {
        void *p = tl_map_hugetlb(size);
        if (p) {
            out->base = p;
            out->pages = TL_PAGES_HUGETLB;
        } else {
            out->hugetlb_fell_back = 1;
            pages = TL_PAGES_THP;
        }
    }
    if (!out->base) {
        void *p = tl_map_aligned(size, pages == TL_PAGES_THP ? (align > unit ? align : unit) : align);
        if (!p) {
            errno = ENOMEM;
            return -1;
        }
        out->base = p;
        if (pages == TL_PAGES_THP) {
#ifdef MADV_HUGEPAGE
            if (madvise(p, size, MADV_HUGEPAGE) == 0) out->pages = TL_PAGES_THP;
#endif
        }
    }
    out->size = size;
    tl_apply_numa(out, numa);
    if (prefault) tl_prefault(out);
    return 0;
}

/* A mapping the OS refused (ENOMEM: RLIMIT_AS, the strict overcommit mode,
 * the map count) is asked for once more after the release hook gave back
 * what it could. (No size check here: an arena's region is address space it
 * may never touch, up to TL_ARENA_MAX_CAPACITY.) */
int tl_os_map(size_t size, size_t align, tl_page_kind pages, tl_numa numa, int prefault,
              tl_os_region *out) {
    if (tl_os_map_norelease(size, align, pages, numa, prefault, out) == 0) return 0;
    if (errno != ENOMEM || !tl_os_release()) return -1;
    return tl_os_map_norelease(size, align, pages, numa, prefault, out);
}

void tl_os_unmap(const tl_os_region *r) {
    if (r->base) munmap(r->base, r->size);
}

void tl_os_discard(void *p, size_t n) {
    size_t page = tl_os_page_size();
    uintptr_t b = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(page - 1);
    if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);
}

/* ---- raw mappings for the pool's large blocks ------------------------------------ */

#define TL_MAP_RW (PROT_READ | PROT_WRITE)
#define TL_MAP_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS | tl_noreserve())

/* The first address q >= raw with (q + offset) % align == 0. */
static char *tl_anchor(char *raw, size_t align, size_t offset) {
    uintptr_t a = ((uintptr_t)raw + offset + align - 1) & ~(uintptr_t)(align - 1);
    return (char *)(a - offset);
}

void *tl_os_map_anchored(size_t n, size_t align, size_t offset) {
    if (!tl_os_size_possible(n) || tl_injected_failure()) return NULL;
    if (align <= tl_os_page_size() && offset % tl_os_page_size() == 0) {
        void *p = mmap(NULL, n, TL_MAP_RW, TL_MAP_FLAGS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    if (n > SIZE_MAX - align) return NULL;
    size_t total = n + align;
    char *raw = mmap(NULL, total, TL_MAP_RW, TL_MAP_FLAGS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *q = tl_anchor(raw, align, offset);
    if (q > raw) munmap(raw, (size_t)(q - raw));
    if (raw + total > q + n) munmap(q + n, (size_t)(raw + total - (q + n)));
    return q;
}

void *tl_os_remap(void *p, size_t old, size_t n, size_t align, size_t offset) {
    /* In place: always possible when shrinking, when growing only if nothing
     * is mapped right after the region. */
    if (n > old && (!tl_os_size_possible(n) || tl_injected_failure())) return NULL;
    void *q = mremap(p, old, n, 0);
    if (q != MAP_FAILED) return q;
    if (n <= old || n > SIZE_MAX - align) return NULL;
    /* Move: reserve an anchored range (no access, no memory), then let mremap
     * replace it with the region's pages; the reservation's ends go back. */
    size_t total = n + align;
    char *raw = mmap(NULL, total, PROT_NONE, TL_MAP_FLAGS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *t = tl_anchor(raw, align, offset);
    q = mremap(p, old, n, MREMAP_MAYMOVE | MREMAP_FIXED, t);
    if (q == MAP_FAILED) {
        munmap(raw, total);
        return NULL;
    }
    if (t > raw) munmap(raw, (size_t)(t - raw));
    if (raw + total > t + n) munmap(t + n, (size_t)(raw + total - (t + n)));
    return q;
}

void tl_os_unmap_range(void *p, size_t n) {
    if (p && n) munmap(p, n);
}

int tl_os_advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    return madvise(p, n, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
    return -1;
#endif
}

uint64_t tl_os_coarse_ms(void) {
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
#endif
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The value in kB of the line starting with `key` (e.g. "MemAvailable:"). */
static int tl_meminfo_field(const char *buf, const char *key, uint64_t *out) {
    const char *s = strstr(buf, key);
    if (!s) return -1;
    s += strlen(key);
    while (*s == ' ') s++;
    uint64_t v = 0;
    int digits = 0;
    for (; *s >= '0' && *s <= '9'; s++, digits++) v = v * 10 + (uint64_t)(*s - '0');
    if (!digits) return -1;
    *out = v * 1024u;
    return 0;
}

int tl_os_meminfo(uint64_t *available, uint64_t *total) {
    char buf[2048]; /* MemTotal, MemFree, MemAvailable are the first three lines */
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    if (tl_meminfo_field(buf, "MemAvailable:", available) != 0) return -1;
    if (tl_meminfo_field(buf, "MemTotal:", total) != 0) return -1;
    return 0;
}

/* ---- thread identity ---------------------------------------------------------- */

uint64_t tl_current_thread_id(void) { return (uint64_t)syscall(SYS_gettid); }
