/* livecount.c: liblivecount.so, the most bytes a program holds from its
 * allocator at one time (its peak live bytes), measured under any allocator.
 *
 *   : > peak.bin    # an empty file, or one with 8 zero bytes
 *   TLALLOC_LIVE_FILE=peak.bin LD_PRELOAD="liblivecount.so liballoc.so" ./program
 *   od -An -tu8 -N8 peak.bin
 *
 * Peak RSS alone cannot say whether an allocator wastes memory when the
 * program's own live set differs from run to run (mimalloc-bench's rptest
 * holds 5 MiB at its peak in one run and 13 MiB in the next, under any
 * allocator); RSS over peak live bytes can. `tlalloc bench mimalloc-bench
 * --live` runs every program under this library, placed before the allocator
 * under test in LD_PRELOAD (or alone, for the C library's malloc).
 *
 * Every allocation function of the C library, and C++'s replaceable operator
 * new and delete, are defined here. Each forwards to the next definition in
 * the lookup order (dlsym RTLD_NEXT: the allocator under test, or the C
 * library) and counts the usable size (the next malloc_usable_size) of each
 * block handed out or taken back. operator new goes to this library's malloc
 * (or posix_memalign), and only when that fails to the next operator new,
 * which throws or calls the new_handler (built with -fexceptions); an
 * allocator's own operator new is thus measured as its malloc.
 *
 * Cost: a thread keeps its count in a thread-local variable and folds it into
 * the process's (an atomic add) once it has moved by 64 KiB, so the peak is
 * exact to 64 KiB per live thread; a thread's remainder is folded at its exit
 * (a pthread key destructor, set on its first count). The peak goes to the
 * first 8 bytes of the file named by TLALLOC_LIVE_FILE (a native uint64),
 * through a shared mapping updated with compare-and-swap: it survives any
 * exit, and the processes of one run (fork, or exec with the same
 * environment) leave the largest of their peaks. Without the variable the
 * library only counts.
 *
 * Bootstrapping: dlsym may allocate. The first call resolves the next
 * functions while the thread serves its own allocations from a static buffer
 * (never freed); other threads wait for it (a few microseconds, once).
 *
 * Standalone (no part of the pool): built by `make tools` and by setup.py as
 * tlalloc/_lib/liblivecount.so.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LC_EXPORT __attribute__((visibility("default")))
#define LC_TLS __attribute__((tls_model("initial-exec")))
#define LC_FOLD_BYTES ((int64_t)64 << 10)
#define LC_BOOT_BYTES ((size_t)64 << 10)

/* ---- the next definitions ----------------------------------------------------- */

static void *(*lc_next_malloc)(size_t);
static void *(*lc_next_calloc)(size_t, size_t);
static void *(*lc_next_realloc)(void *, size_t);
static void (*lc_next_free)(void *);
static void *(*lc_next_memalign)(size_t, size_t);
static int (*lc_next_posix_memalign)(void **, size_t, size_t);
static void *(*lc_next_aligned_alloc)(size_t, size_t);
static size_t (*lc_next_usable)(void *);

/* 0: not resolved, 1: one thread resolving, 2: ready. */
static _Atomic int lc_state;
static _Thread_local int lc_resolving LC_TLS;

/* Allocations of the resolving thread (dlsym's) while lc_state == 1. */
static _Alignas(64) char lc_boot[LC_BOOT_BYTES];
static size_t lc_boot_used;

static int lc_is_boot(const void *p) {
    return (const char *)p >= lc_boot && (const char *)p < lc_boot + sizeof lc_boot;
}

static void *lc_boot_alloc(size_t n, size_t align) {
    if (align < 16) align = 16;
    size_t at = (lc_boot_used + align - 1) & ~(align - 1);
    if (at > sizeof lc_boot || sizeof lc_boot - at < n) return NULL;
    lc_boot_used = at + n;
    return lc_boot + at; /* static storage: already zero */
}

/* ---- counting ------------------------------------------------------------------ */

static _Atomic int64_t lc_live;       /* the process's folded count */
static _Atomic uint64_t lc_peak;      /* its largest value */
static _Atomic(_Atomic(uint64_t) *) lc_peak_out; /* TLALLOC_LIVE_FILE's first 8 bytes, or NULL */
static pthread_key_t lc_key;
static int lc_key_ok;
static _Thread_local int64_t lc_delta LC_TLS; /* this thread's unfolded bytes */
static _Thread_local int lc_registered LC_TLS;

__attribute__((noinline)) static void lc_fold(int64_t d) {
    int64_t live = atomic_fetch_add_explicit(&lc_live, d, memory_order_relaxed) + d;
    if (live <= 0) return;
    uint64_t v = (uint64_t)live;
    uint64_t p = atomic_load_explicit(&lc_peak, memory_order_relaxed);
    while (v > p) {
        if (atomic_compare_exchange_weak_explicit(&lc_peak, &p, v, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            _Atomic uint64_t *out = atomic_load_explicit(&lc_peak_out, memory_order_acquire);
            if (out) {
                uint64_t o = atomic_load_explicit(out, memory_order_relaxed);
                while (v > o && !atomic_compare_exchange_weak_explicit(out, &o, v, memory_order_relaxed,
                                                                       memory_order_relaxed)) {
                }
            }
            return;
        }
    }
}

/* At thread exit: fold what the thread still holds back. A count after this
 * (a later key's destructor that allocates or frees) registers the thread
 * again, and the C library calls the destructor once more. */
static void lc_thread_exit(void *unused) {
    (void)unused;
    int64_t d = lc_delta;
    lc_delta = 0;
    lc_registered = 0;
    if (d) lc_fold(d);
}

/* A thread's first count: its exit must fold what it holds then (a thread
 * that allocates less than the fold size and exits, its blocks freed by
 * others, would otherwise leave the count too low for good). */
__attribute__((noinline)) static void lc_register(void) {
    lc_registered = 1; /* before the call: pthread_setspecific may allocate */
    if (lc_key_ok) pthread_setspecific(lc_key, (void *)1);
}

/* Fast path: a thread-local add, three compares (one for the first count). */
static inline void lc_count(int64_t d) {
    if (__builtin_expect(!lc_registered, 0)) lc_register();
    int64_t x = lc_delta + d;
    if (x < LC_FOLD_BYTES && x > -LC_FOLD_BYTES) {
        lc_delta = x;
        return;
    }
    lc_delta = 0;
    lc_fold(x);
}

/* Set while the next malloc_usable_size runs: it may allocate (tcmalloc's
 * creates an object with operator new on its first call), and those blocks
 * are handed out and freed uncounted instead of recursing. */
static _Thread_local int lc_inside LC_TLS;

static inline size_t lc_size(void *p) {
    if (!p) return 0;
    lc_inside = 1;
    size_t n = lc_next_usable(p);
    lc_inside = 0;
    return n;
}

/* Count a block handed out (p may be NULL) or taken back. */
static inline void lc_add(void *p) {
    if (p && !lc_inside) lc_count((int64_t)lc_size(p));
}
static inline void lc_sub(void *p) {
    if (!lc_inside) lc_count(-(int64_t)lc_size(p));
}

/* ---- resolving ------------------------------------------------------------------ */

static void *lc_sym(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        static const char msg[] = "liblivecount.so: no next definition of an allocation function\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        abort();
    }
    return f;
}

static void lc_open_output(void) {
    const char *path = getenv("TLALLOC_LIVE_FILE");
    if (!path || !*path) return;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    /* An empty file gets its 8 bytes (a second process finds them there). */
    if (fstat(fd, &st) == 0 && st.st_size < 8 && ftruncate(fd, 8) != 0) {
        close(fd);
        return;
    }
    void *m = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m != MAP_FAILED) atomic_store_explicit(&lc_peak_out, (_Atomic uint64_t *)m, memory_order_release);
}

__attribute__((noinline)) static void lc_resolve(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&lc_state, &expected, 1)) {
        while (atomic_load_explicit(&lc_state, memory_order_acquire) != 2) sched_yield();
        return;
    }
    lc_resolving = 1;
#define LC_RESOLVE(var, name)                                                                      \
    do {                                                                                           \
        void *sym_ = lc_sym(name);                                                                 \
        memcpy(&var, &sym_, sizeof var);                                                           \
    } while (0)
    LC_RESOLVE(lc_next_malloc, "malloc");
    LC_RESOLVE(lc_next_calloc, "calloc");
    LC_RESOLVE(lc_next_realloc, "realloc");
    LC_RESOLVE(lc_next_free, "free");
    LC_RESOLVE(lc_next_memalign, "memalign");
    LC_RESOLVE(lc_next_posix_memalign, "posix_memalign");
    LC_RESOLVE(lc_next_aligned_alloc, "aligned_alloc");
    LC_RESOLVE(lc_next_usable, "malloc_usable_size");
#undef LC_RESOLVE
    lc_key_ok = pthread_key_create(&lc_key, lc_thread_exit) == 0;
    lc_open_output();
    lc_resolving = 0;
    atomic_store_explicit(&lc_state, 2, memory_order_release);
}

/* 1 when the next functions may be called; 0 while this thread resolves them. */
static inline int lc_ready(void) {
    if (__builtin_expect(atomic_load_explicit(&lc_state, memory_order_acquire) == 2, 1)) return 1;
    if (lc_resolving) return 0;
    lc_resolve();
    return 1;
}

/* ---- the C library's functions ----------------------------------------------------- */

LC_EXPORT void *malloc(size_t n) {
    if (!lc_ready()) return lc_boot_alloc(n, 16);
    void *p = lc_next_malloc(n);
    lc_add(p);
    return p;
}

LC_EXPORT void *calloc(size_t k, size_t n) {
    if (!lc_ready()) {
        size_t bytes;
        return __builtin_mul_overflow(k, n, &bytes) ? NULL : lc_boot_alloc(bytes, 16);
    }
    void *p = lc_next_calloc(k, n);
    lc_add(p);
    return p;
}

LC_EXPORT void free(void *p) {
    if (!p || lc_is_boot(p) || !lc_ready()) return; /* (dlsym frees nothing else) */
    lc_sub(p);
    lc_next_free(p);
}

LC_EXPORT void *realloc(void *p, size_t n) {
    if (!lc_ready()) return p ? NULL : lc_boot_alloc(n, 16); /* only dlsym calls here then */
    if (p && lc_is_boot(p)) { /* a copy from the static buffer (its end bounds the old size) */
        void *q = malloc(n);
        size_t have = (size_t)(lc_boot + sizeof lc_boot - (char *)p);
        if (q) memcpy(q, p, n < have ? n : have);
        return q;
    }
    if (lc_inside) return lc_next_realloc(p, n);
    size_t old = lc_size(p);
    void *q = lc_next_realloc(p, n);
    if (q)
        lc_count((int64_t)lc_size(q) - (int64_t)old);
    else if (p && n == 0)
        lc_count(-(int64_t)old); /* realloc(p, 0) freed p (the C library's rule) */
    return q;
}

LC_EXPORT void *reallocarray(void *p, size_t k, size_t n) {
    size_t bytes;
    if (__builtin_mul_overflow(k, n, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, bytes);
}

LC_EXPORT void *memalign(size_t align, size_t n) {
    if (!lc_ready()) return align && !(align & (align - 1)) ? lc_boot_alloc(n, align) : NULL;
    void *p = lc_next_memalign(align, n);
    lc_add(p);
    return p;
}

LC_EXPORT void *aligned_alloc(size_t align, size_t n) {
    if (!lc_ready()) return align && !(align & (align - 1)) ? lc_boot_alloc(n, align) : NULL;
    void *p = lc_next_aligned_alloc(align, n);
    lc_add(p);
    return p;
}

LC_EXPORT int posix_memalign(void **out, size_t align, size_t n) {
    if (!lc_ready()) {
        if (!align || (align & (align - 1)) || align % sizeof(void *)) return EINVAL;
        void *p = lc_boot_alloc(n, align);
        if (!p) return ENOMEM;
        *out = p;
        return 0;
    }
    int rc = lc_next_posix_memalign(out, align, n);
    if (rc == 0) lc_add(*out);
    return rc;
}

static size_t lc_page(void) {
    long pg = sysconf(_SC_PAGESIZE);
    return pg > 0 ? (size_t)pg : 4096;
}

LC_EXPORT void *valloc(size_t n) { return memalign(lc_page(), n); }

LC_EXPORT void *pvalloc(size_t n) {
    size_t pg = lc_page(), r;
    if (__builtin_add_overflow(n, pg - 1, &r)) {
        errno = ENOMEM;
        return NULL;
    }
    r &= ~(pg - 1);
    return memalign(pg, r ? r : pg);
}

/* ---- C++'s operator new and delete (Itanium ABI names) ------------------------------ */

/* A failed new: the next definition of `name` (libstdc++'s, or the allocator's),
 * which calls the new_handler and throws, or returns NULL for nothrow. */
__attribute__((noinline, cold)) static void *lc_next_new(const char *name, int form, size_t n,
                                                         size_t align, const void *nothrow) {
    void *sym = lc_sym(name), *p;
    if (form == 0) {
        void *(*f)(size_t);
        memcpy(&f, &sym, sizeof f);
        p = f(n);
    } else if (form == 1) {
        void *(*f)(size_t, const void *);
        memcpy(&f, &sym, sizeof f);
        p = f(n, nothrow);
    } else if (form == 2) {
        void *(*f)(size_t, size_t);
        memcpy(&f, &sym, sizeof f);
        p = f(n, align);
    } else {
        void *(*f)(size_t, size_t, const void *);
        memcpy(&f, &sym, sizeof f);
        p = f(n, align, nothrow);
    }
    lc_add(p);
    return p;
}

/* Aligned new: the alignment is a power of two (the standard says so). */
static void *lc_new_aligned(size_t align, size_t n) {
    void *p = NULL;
    if (align < sizeof(void *)) align = sizeof(void *);
    return posix_memalign(&p, align, n ? n : 1) == 0 ? p : NULL;
}

#define LC_NEW(fn, name)                                                                           \
    LC_EXPORT void *fn(size_t n) {                                                                 \
        void *p = malloc(n ? n : 1);                                                               \
        return p ? p : lc_next_new(name, 0, n, 0, NULL);                                           \
    }
#define LC_NEW_NOTHROW(fn, name)                                                                   \
    LC_EXPORT void *fn(size_t n, const void *nt) {                                                 \
        void *p = malloc(n ? n : 1);                                                               \
        return p ? p : lc_next_new(name, 1, n, 0, nt);                                             \
    }
#define LC_NEW_ALIGNED(fn, name)                                                                   \
    LC_EXPORT void *fn(size_t n, size_t align) {                                                   \
        void *p = lc_new_aligned(align, n);                                                        \
        return p ? p : lc_next_new(name, 2, n, align, NULL);                                      \
    }
#define LC_NEW_ALIGNED_NOTHROW(fn, name)                                                           \
    LC_EXPORT void *fn(size_t n, size_t align, const void *nt) {                                   \
        void *p = lc_new_aligned(align, n);                                                        \
        return p ? p : lc_next_new(name, 3, n, align, nt);                                         \
    }

LC_NEW(_Znwm, "_Znwm")
LC_NEW(_Znam, "_Znam")
LC_NEW_NOTHROW(_ZnwmRKSt9nothrow_t, "_ZnwmRKSt9nothrow_t")
LC_NEW_NOTHROW(_ZnamRKSt9nothrow_t, "_ZnamRKSt9nothrow_t")
LC_NEW_ALIGNED(_ZnwmSt11align_val_t, "_ZnwmSt11align_val_t")
LC_NEW_ALIGNED(_ZnamSt11align_val_t, "_ZnamSt11align_val_t")
LC_NEW_ALIGNED_NOTHROW(_ZnwmSt11align_val_tRKSt9nothrow_t, "_ZnwmSt11align_val_tRKSt9nothrow_t")
LC_NEW_ALIGNED_NOTHROW(_ZnamSt11align_val_tRKSt9nothrow_t, "_ZnamSt11align_val_tRKSt9nothrow_t")

/* Every delete is free: the next allocator's free takes what its malloc,
 * posix_memalign and operator new returned. */
LC_EXPORT void _ZdlPv(void *p) { free(p); }
LC_EXPORT void _ZdaPv(void *p) { free(p); }
LC_EXPORT void _ZdlPvm(void *p, size_t n) { (void)n; free(p); }
LC_EXPORT void _ZdaPvm(void *p, size_t n) { (void)n; free(p); }
LC_EXPORT void _ZdlPvRKSt9nothrow_t(void *p, const void *nt) { (void)nt; free(p); }
LC_EXPORT void _ZdaPvRKSt9nothrow_t(void *p, const void *nt) { (void)nt; free(p); }
LC_EXPORT void _ZdlPvSt11align_val_t(void *p, size_t a) { (void)a; free(p); }
LC_EXPORT void _ZdaPvSt11align_val_t(void *p, size_t a) { (void)a; free(p); }
LC_EXPORT void _ZdlPvmSt11align_val_t(void *p, size_t n, size_t a) { (void)n, (void)a; free(p); }
LC_EXPORT void _ZdaPvmSt11align_val_t(void *p, size_t n, size_t a) { (void)n, (void)a; free(p); }
LC_EXPORT void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t a, const void *nt) {
    (void)a, (void)nt;
    free(p);
}
LC_EXPORT void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t a, const void *nt) {
    (void)a, (void)nt;
    free(p);
}
