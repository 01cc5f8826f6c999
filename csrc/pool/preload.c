/* preload.c: libtlalloc.so, the pool as the whole process's malloc.
 *
 *   LD_PRELOAD=$(tlalloc preload-path) python script.py
 *
 * Compiled only into libtlalloc.so (Makefile `preload`, setup.py), never into
 * libtlalloc.a or the Python extension: it defines malloc itself.
 *
 * The C library's allocation functions are defined here over the tl_pool_*
 * API. The C library calls them through its own PLT (glibc supports replacing
 * malloc this way), and the dynamic loader switches to them once relocation is
 * done, so the first call can come before any constructor of this library has
 * run. What makes that safe lives in the core (pool.c, thread.c): nothing
 * needs initialising before the first call (static data and initial-exec TLS
 * only); the heap descriptors come from mmap, not malloc; the calls the pool
 * makes into the C library while setting up a thread (pthread_once,
 * pthread_atfork, pthread_setspecific) may come back here and are then served
 * by the locked global heap; the fork handlers are registered at the first
 * allocation; at thread exit, frees and allocations after the pool's own key
 * destructor go to the global heap and the cross-thread path.
 *
 * Settings: the first allocation reads the variables of tl_env_settings below
 * (TLALLOC_POOL_CACHE, _RETAIN, _LARGE_CACHE, _PURGE_DELAY, and _PURGE_THREAD
 * below) from the environment, with the rules of the Python package (env.c). A bad
 * value is reported on stderr (write(2): no stdio, which allocates) and the
 * process exits with status 2 before it runs any code of its own.
 *
 * C++'s replaceable global operator new and delete are defined here too (end
 * of the file), as mimalloc, jemalloc and tcmalloc do: without them a C++
 * program's new and delete go through libstdc++'s (a new_handler loop around
 * malloc, a call to free): two more calls and PLT jumps per allocation.
 *
 * TL_PRELOAD_NAME renames the exported functions, so that a test program can
 * include this file and call them under a sanitizer (which must keep its own
 * malloc): tests/c/test_preload.c.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "pool_internal.h"
#include "tlalloc/pool.h"

#ifndef TL_PRELOAD_NAME
#define TL_PRELOAD_NAME(name) name
#endif
#define TL_EXPORT __attribute__((visibility("default")))

/* ---- settings ----------------------------------------------------------------- */

/* One environment variable. To add one: a row here naming its field of
 * tl_pool_options (an int, unsigned or size_t) and its kind, and its line in
 * the table of src/tlalloc/pool.py's docstring; the messages are Python's. */
typedef struct tl_env_setting {
    const char *name;
    enum { TL_ENV_FLAG, TL_ENV_SIZE, TL_ENV_DELAY_MS } kind;
    size_t offset, width; /* of the field in tl_pool_options */
    uint64_t max;         /* sizes and delays: largest accepted value (the smallest is 0) */
    const char *range;    /* sizes and delays: the accepted range, as Python says it */
} tl_env_setting;

#define TL_FIELD(f) offsetof(tl_pool_options, f), sizeof(((tl_pool_options *)0)->f)

static const tl_env_setting tl_env_settings[] = {
    {"TLALLOC_POOL_CACHE", TL_ENV_FLAG, TL_FIELD(cache), 1, NULL},
    {"TLALLOC_POOL_RETAIN", TL_ENV_SIZE, TL_FIELD(retain_bytes), (uint64_t)1 << 40,
     "use 0 to 1TiB (1099511627776 bytes)"},
    {"TLALLOC_POOL_LARGE_CACHE", TL_ENV_SIZE, TL_FIELD(large_cache_bytes), TL_POOL_MAX_LARGE_CACHE,
     "use 0 (no cache) to 1TiB (1099511627776 bytes)"},
    {"TLALLOC_POOL_PURGE_DELAY", TL_ENV_DELAY_MS, TL_FIELD(purge_delay_ms), TL_POOL_MAX_PURGE_DELAY_MS,
     "use 0 (purge at once) to 3600000 ms"},
};
#define TL_NUM_ENV_SETTINGS (sizeof tl_env_settings / sizeof tl_env_settings[0])

_Static_assert(TL_POOL_MAX_LARGE_CACHE == (size_t)1 << 40 && TL_POOL_MAX_PURGE_DELAY_MS == 3600000u,
               "the range texts above say these limits");

/* Store v into a field of `width` bytes (an int or unsigned of 4, a size_t of 8). */
static void tl_store_field(char *field, size_t width, uint64_t v) {
    if (width == sizeof(uint32_t)) {
        uint32_t w = (uint32_t)v;
        memcpy(field, &w, sizeof w);
    } else {
        memcpy(field, &v, sizeof v);
    }
}

/* A message built without allocating. */
typedef struct tl_msg {
    char buf[512];
    size_t len;
} tl_msg;

static void tl_msg_add(tl_msg *m, const char *s) {
    for (; *s && m->len < sizeof m->buf - 1; s++) m->buf[m->len++] = *s;
    m->buf[m->len] = '\0';
}

/* The value as Python's repr of a str would quote it (close enough: quotes,
 * and \xNN for bytes that are not printable ASCII), cut at 100 bytes. */
static void tl_msg_add_quoted(tl_msg *m, const char *v) {
    static const char hex[] = "0123456789abcdef";
    tl_msg_add(m, "'");
    for (size_t i = 0; v[i]; i++) {
        if (i == 100) {
            tl_msg_add(m, "...");
            break;
        }
        unsigned char c = (unsigned char)v[i];
        char e[5] = {(char)c, 0, 0, 0, 0};
        if (c == '\'' || c == '\\') e[0] = '\\', e[1] = (char)c;
        else if (c < 0x20 || c >= 0x7f)
            e[0] = '\\', e[1] = 'x', e[2] = hex[c >> 4], e[3] = hex[c & 15];
        tl_msg_add(m, e);
    }
    tl_msg_add(m, "'");
}

/* Read every variable of the table through `get` (NULL or "" means unset: the
 * default) into *o, which holds the defaults. Returns 0, or -1 with the reason
 * in *m, naming the variable and its value. */
static int tl_preload_read_settings(const char *(*get)(const char *), tl_pool_options *o, tl_msg *m) {
    for (size_t i = 0; i < TL_NUM_ENV_SETTINGS; i++) {
        const tl_env_setting *e = &tl_env_settings[i];
        const char *v = get(e->name);
        if (!v || !*v) continue;
        char *field = (char *)o + e->offset;
        if (e->kind == TL_ENV_FLAG) {
            int f;
            if (tl_parse_flag(v, &f) == TL_PARSE_OK) {
                tl_store_field(field, e->width, (uint64_t)f);
                continue;
            }
            tl_msg_add(m, e->name);
            tl_msg_add(m, "=");
            tl_msg_add_quoted(m, v);
            tl_msg_add(m, " is not accepted; use 0 or 1");
            return -1;
        }
        int delay = e->kind == TL_ENV_DELAY_MS;
        uint64_t n;
        int rc = delay ? tl_parse_delay_ms(v, &n) : tl_parse_size(v, &n);
        if (rc == TL_PARSE_OK && n <= e->max) {
            tl_store_field(field, e->width, n);
            continue;
        }
        if (rc == TL_PARSE_SYNTAX) {
            tl_msg_add(m, e->name);
            tl_msg_add(m, ": cannot read ");
            tl_msg_add_quoted(m, v);
            tl_msg_add(m, delay ? " as a delay; use milliseconds ('250' or '250ms') or seconds ('1.5s')"
                                : " as a size; use bytes or a number with a unit (KiB, MiB, GiB, TiB as "
                                  "powers of 1024; KB, MB, GB, TB as powers of 1000)");
        } else if (rc == TL_PARSE_FRACTION) {
            tl_msg_add(m, e->name);
            tl_msg_add(m, ": ");
            tl_msg_add_quoted(m, v);
            tl_msg_add(m, delay ? " is not a whole number of milliseconds" : " is not a whole number of bytes");
        } else {
            tl_msg_add(m, e->name);
            tl_msg_add(m, "=");
            tl_msg_add_quoted(m, v);
            tl_msg_add(m, " is out of range: ");
            tl_msg_add(m, e->range);
        }
        return -1;
    }
    return 0;
}

/* getenv does not allocate; it reads `environ`, which the C library has set
 * by the first malloc (tests/test_preload.py checks that settings apply).
 * Should a loader call malloc before that, the variables are read from
 * /proc/self/environ instead, which holds the environment the process
 * started with. */
static char tl_proc_env[1 << 16]; /* first 64 KiB of /proc/self/environ (first use only) */
static size_t tl_proc_env_len;

static void tl_proc_env_load(void) {
    int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    while (tl_proc_env_len < sizeof tl_proc_env - 1) {
        ssize_t n = read(fd, tl_proc_env + tl_proc_env_len, sizeof tl_proc_env - 1 - tl_proc_env_len);
        if (n <= 0) break;
        tl_proc_env_len += (size_t)n;
    }
    close(fd);
    tl_proc_env[tl_proc_env_len] = '\0';
}

static const char *tl_proc_getenv(const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < tl_proc_env_len; i += strlen(tl_proc_env + i) + 1)
        if (strncmp(tl_proc_env + i, name, nl) == 0 && tl_proc_env[i + nl] == '=')
            return tl_proc_env + i + nl + 1;
    return NULL;
}

static const char *tl_libc_getenv(const char *name) { return getenv(name); }

extern char **environ;

static void tl_write_all(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

/* TLALLOC_POOL_PURGE_THREAD (not a field of tl_pool_options): unset, the
 * background purge thread starts itself at an allocation once something freed
 * waited for the purge delay (pool.c); 1 starts it from the library's constructor; 0
 * keeps it off (set at the first allocation, before any free). */
#define TL_ENV_PURGE_THREAD "TLALLOC_POOL_PURGE_THREAD"
static int tl_preload_purge_thread = -1;

static int tl_preload_read_purge_thread(const char *(*get)(const char *), tl_msg *m) {
    const char *v = get(TL_ENV_PURGE_THREAD);
    if (!v || !*v) return 0;
    if (tl_parse_flag(v, &tl_preload_purge_thread) == TL_PARSE_OK) return 0;
    tl_msg_add(m, TL_ENV_PURGE_THREAD "=");
    tl_msg_add_quoted(m, v);
    tl_msg_add(m, " is not accepted; use 0 or 1");
    return -1;
}

/* The pool calls this once, at the process's first allocation (pool.c). */
void tl_pool_first_use(void) {
    tl_pool_options o;
    tl_pool_get_options(&o);
    tl_msg m = {.len = 0};
    const char *(*get)(const char *) = tl_libc_getenv;
    if (environ == NULL) {
        tl_proc_env_load();
        get = tl_proc_getenv;
    }
    if (tl_preload_read_settings(get, &o, &m) != 0 || tl_preload_read_purge_thread(get, &m) != 0) {
        tl_write_all("libtlalloc.so: ", 15);
        tl_write_all(m.buf, m.len);
        tl_write_all(" (unset it for the default)\n", 28);
        _exit(2);
    }
    (void)tl_pool_configure(&o); /* values checked above: cannot fail */
    if (tl_preload_purge_thread == 0) (void)tl_pool_purge_thread(0); /* no thread to stop */
}

/* With TLALLOC_POOL_PURGE_THREAD=1 the purge thread starts here, in the
 * library's constructor, before main (otherwise at an allocation once something
 * is due, pool.c). The first allocation has read the settings by then
 * (made here if none came before). */
__attribute__((constructor)) static void tl_preload_start_purge_thread(void) {
    tl_pool_free(tl_pool_malloc(1));
    if (tl_preload_purge_thread == 1) (void)tl_pool_purge_thread(1);
}

/* ---- the C library's allocation functions ---------------------------------------- */

TL_EXPORT void *TL_PRELOAD_NAME(malloc)(size_t size) { return tl_pool_malloc(size); }

TL_EXPORT void TL_PRELOAD_NAME(free)(void *p) { tl_pool_free(p); }

TL_EXPORT void *TL_PRELOAD_NAME(calloc)(size_t n, size_t size) { return tl_pool_calloc(n, size); }

/* realloc(p, 0) frees p and returns a minimal block (as mimalloc and jemalloc
 * do; glibc returns NULL): either way the caller owns what comes back. */
TL_EXPORT void *TL_PRELOAD_NAME(realloc)(void *p, size_t size) { return tl_pool_realloc(p, size); }

TL_EXPORT void *TL_PRELOAD_NAME(reallocarray)(void *p, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return tl_pool_realloc(p, total);
}

/* The pool's aligned allocation for a valid power-of-two alignment. The pool
 * refuses alignments it cannot serve with EINVAL; to the caller the alignment
 * was valid, so that is reported as ENOMEM. */
static void *tl_aligned(size_t align, size_t size) {
    void *p = tl_pool_aligned_alloc(align, size);
    if (!p) errno = ENOMEM;
    return p;
}

/* POSIX: EINVAL unless align is a power of two multiple of sizeof(void *);
 * *out untouched on failure; errno unchanged. */
TL_EXPORT int TL_PRELOAD_NAME(posix_memalign)(void **out, size_t align, size_t size) {
    if (!tl_is_pow2(align) || align % sizeof(void *) != 0) return EINVAL;
    int saved = errno;
    void *p = tl_aligned(align, size);
    errno = saved;
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

/* C11/C17 (and glibc from 2.38): NULL with EINVAL unless align is a power of two. */
TL_EXPORT void *TL_PRELOAD_NAME(aligned_alloc)(size_t align, size_t size) {
    if (!tl_is_pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return tl_aligned(align, size);
}

/* As glibc: an alignment that is not a power of two is rounded up to one; one
 * above SIZE_MAX / 2 + 1 is EINVAL. */
TL_EXPORT void *TL_PRELOAD_NAME(memalign)(size_t align, size_t size) {
    if (align == 0) align = 1;
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!tl_is_pow2(align)) align = (size_t)1 << (64 - __builtin_clzll((unsigned long long)align));
    return tl_aligned(align, size);
}

TL_EXPORT void *TL_PRELOAD_NAME(valloc)(size_t size) { return tl_aligned(tl_os_page_size(), size); }

/* Page aligned, the size rounded up to whole pages (at least one). */
TL_EXPORT void *TL_PRELOAD_NAME(pvalloc)(size_t size) {
    size_t page = tl_os_page_size();
    if (size > SIZE_MAX - page) {
        errno = ENOMEM;
        return NULL;
    }
    size = size ? (size + page - 1) & ~(page - 1) : page;
    return tl_aligned(page, size);
}

TL_EXPORT size_t TL_PRELOAD_NAME(malloc_usable_size)(void *p) { return tl_pool_usable_size(p); }

/* glibc's malloc_trim works on glibc's heap, which nothing uses here: give the
 * pool's free memory back instead, as when the OS refuses memory
 * (tl_pool_release: the calling thread's empty pages and free blocks' pages,
 * the depot's free pages and free segments, abandoned pages emptied since,
 * every cached large block; other threads give back their empty pages at
 * their next allocation above 1 KiB). pad is ignored. Returns 1 if the pool
 * held free memory it could see. */
TL_EXPORT int TL_PRELOAD_NAME(malloc_trim)(size_t pad) {
    (void)pad;
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    tl_pool_release();
    return s.retained_bytes > 0;
}

#if defined(__GLIBC__) /* struct mallinfo and mallinfo2 are glibc's */
/* glibc's heap statistics, from the pool's (glibc's own heap is unused here).
 * arena: bytes mapped for the size classes (segments); hblkhd: bytes mapped
 * for large blocks, live and cached; uordblks: bytes handed out and not freed
 * (class sizes, large blocks' usable bytes); fordblks: free bytes the pool
 * keeps resident for reuse (the depot and the large cache); the other fields
 * 0. One call takes the pool's locks briefly (tl_pool_get_stats). */
static void tl_mallinfo_fields(size_t f[4]) {
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    tl_pool_large_info li;
    tl_pool_large_cache_info(&li);
    f[0] = (size_t)(s.reserved_bytes > li.mapped_bytes ? s.reserved_bytes - li.mapped_bytes : 0);
    f[1] = (size_t)li.mapped_bytes;
    f[2] = (size_t)s.in_use_bytes;
    f[3] = (size_t)s.retained_bytes;
}

#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)
TL_EXPORT struct mallinfo2 TL_PRELOAD_NAME(mallinfo2)(void) {
    size_t f[4];
    tl_mallinfo_fields(f);
    struct mallinfo2 m;
    memset(&m, 0, sizeof m);
    m.arena = f[0];
    m.hblkhd = f[1];
    m.uordblks = f[2];
    m.fordblks = f[3];
    return m;
}
#endif

/* The same in int fields (clamped), for programs that still call mallinfo. */
static int tl_clamp_int(size_t v) { return v > (size_t)INT_MAX ? INT_MAX : (int)v; }

TL_EXPORT struct mallinfo TL_PRELOAD_NAME(mallinfo)(void) {
    size_t f[4];
    tl_mallinfo_fields(f);
    struct mallinfo m;
    memset(&m, 0, sizeof m);
    m.arena = tl_clamp_int(f[0]);
    m.hblkhd = tl_clamp_int(f[1]);
    m.uordblks = tl_clamp_int(f[2]);
    m.fordblks = tl_clamp_int(f[3]);
    return m;
}
#endif /* __GLIBC__ */

/* ---- C++'s replaceable global allocation functions ---------------------------------- */

/* The Itanium C++ ABI names of operator new and delete (C++98 to C++17), in C:
 * std::size_t and std::align_val_t are size_t arguments, and std::nothrow_t
 * comes by reference (a pointer, never read). The pool serves them; only a
 * failed allocation leaves it.
 *
 * operator new never returns NULL: when the pool has no memory it calls the
 * new_handler until one frees memory or none is left, then throws
 * std::bad_alloc; nothrow new does the same but returns NULL. C cannot throw,
 * so that rare path goes to the next definition of the same function in the
 * lookup order (dlsym RTLD_NEXT: libstdc++'s, or libc++'s), which is exactly
 * that loop around malloc, aligned_alloc or posix_memalign, that is around the
 * pool again. Only a program that defines operator new itself skips this
 * library's, and then it never comes here.
 *
 * delete accepts what any of these new returned, also from that fallback (the
 * pool's blocks too): the size of sized delete and the alignment of aligned
 * delete are not needed, since the pool finds a block's page from its address
 * (tl_pool_free). The deletes are free's tail call. */

/* Which signature of operator new the failure path calls. */
typedef enum tl_cxx_kind {
    TL_CXX_NEW,                /* (size) */
    TL_CXX_NEW_NOTHROW,        /* (size, nothrow) */
    TL_CXX_NEW_ALIGNED,        /* (size, align) */
    TL_CXX_NEW_ALIGNED_NOTHROW /* (size, align, nothrow) */
} tl_cxx_kind;

/* The failure path: the next definition of `name` (never this library's: RTLD_NEXT
 * searches the objects loaded after it). Exceptions pass through these frames
 * (built with -fexceptions: the Makefile and setup.py). */
TL_NOINLINE TL_COLD static void *tl_cxx_next_new(const char *name, tl_cxx_kind kind, size_t size, size_t align,
                                                const void *nothrow) {
    void *sym = dlsym(RTLD_NEXT, name);
    if (sym == NULL) {
        /* Cannot happen in a program that calls operator new: it links a C++
         * runtime, which defines them all. */
        tl_write_all("libtlalloc.so: out of memory in operator new, and no C++ runtime defines ", 73);
        tl_write_all(name, strlen(name));
        tl_write_all("\n", 1);
        abort();
    }
    switch (kind) {
    case TL_CXX_NEW: {
        void *(*f)(size_t);
        memcpy(&f, &sym, sizeof f);
        return f(size);
    }
    case TL_CXX_NEW_NOTHROW: {
        void *(*f)(size_t, const void *);
        memcpy(&f, &sym, sizeof f);
        return f(size, nothrow);
    }
    case TL_CXX_NEW_ALIGNED: {
        void *(*f)(size_t, size_t);
        memcpy(&f, &sym, sizeof f);
        return f(size, align);
    }
    default: {
        void *(*f)(size_t, size_t, const void *);
        memcpy(&f, &sym, sizeof f);
        return f(size, align, nothrow);
    }
    }
}

/* Every new: the pool's block (malloc's fast path: size 0 gets a block of its
 * own, as C++ wants a unique pointer), then one predicted test; the failure
 * path is out of line. */
static inline void *tl_cxx_result(void *p, const char *name, tl_cxx_kind kind, size_t size, size_t align,
                                  const void *nothrow) {
    if (TL_LIKELY(p != NULL)) return p;
    return tl_cxx_next_new(name, kind, size, align, nothrow);
}

/* operator new(size_t), operator new[](size_t) */
TL_EXPORT void *TL_PRELOAD_NAME(_Znwm)(size_t size) {
    return tl_cxx_result(tl_pool_malloc(size), "_Znwm", TL_CXX_NEW, size, 0, NULL);
}
TL_EXPORT void *TL_PRELOAD_NAME(_Znam)(size_t size) {
    return tl_cxx_result(tl_pool_malloc(size), "_Znam", TL_CXX_NEW, size, 0, NULL);
}

/* operator new(size_t, const std::nothrow_t &), and new[] */
TL_EXPORT void *TL_PRELOAD_NAME(_ZnwmRKSt9nothrow_t)(size_t size, const void *nothrow) {
    return tl_cxx_result(tl_pool_malloc(size), "_ZnwmRKSt9nothrow_t", TL_CXX_NEW_NOTHROW, size, 0, nothrow);
}
TL_EXPORT void *TL_PRELOAD_NAME(_ZnamRKSt9nothrow_t)(size_t size, const void *nothrow) {
    return tl_cxx_result(tl_pool_malloc(size), "_ZnamRKSt9nothrow_t", TL_CXX_NEW_NOTHROW, size, 0, nothrow);
}

/* operator new(size_t, std::align_val_t) (C++17), and new[]. An alignment the
 * pool refuses (not a power of two: undefined behaviour in C++) goes to the
 * fallback too, which throws or returns NULL. */
TL_EXPORT void *TL_PRELOAD_NAME(_ZnwmSt11align_val_t)(size_t size, size_t align) {
    return tl_cxx_result(tl_pool_aligned_alloc(align, size), "_ZnwmSt11align_val_t", TL_CXX_NEW_ALIGNED, size, align,
                         NULL);
}
TL_EXPORT void *TL_PRELOAD_NAME(_ZnamSt11align_val_t)(size_t size, size_t align) {
    return tl_cxx_result(tl_pool_aligned_alloc(align, size), "_ZnamSt11align_val_t", TL_CXX_NEW_ALIGNED, size, align,
                         NULL);
}
TL_EXPORT void *TL_PRELOAD_NAME(_ZnwmSt11align_val_tRKSt9nothrow_t)(size_t size, size_t align,
                                                                  const void *nothrow) {
    void *p = tl_pool_aligned_alloc(align, size);
    return tl_cxx_result(p, "_ZnwmSt11align_val_tRKSt9nothrow_t", TL_CXX_NEW_ALIGNED_NOTHROW, size, align, nothrow);
}
TL_EXPORT void *TL_PRELOAD_NAME(_ZnamSt11align_val_tRKSt9nothrow_t)(size_t size, size_t align,
                                                                  const void *nothrow) {
    void *p = tl_pool_aligned_alloc(align, size);
    return tl_cxx_result(p, "_ZnamSt11align_val_tRKSt9nothrow_t", TL_CXX_NEW_ALIGNED_NOTHROW, size, align, nothrow);
}

/* operator delete and delete[]: plain, sized (C++14), nothrow, aligned
 * (C++17), sized and aligned, aligned nothrow. NULL is accepted (tl_pool_free). */
TL_EXPORT void TL_PRELOAD_NAME(_ZdlPv)(void *p) { tl_pool_free(p); }
TL_EXPORT void TL_PRELOAD_NAME(_ZdaPv)(void *p) { tl_pool_free(p); }
TL_EXPORT void TL_PRELOAD_NAME(_ZdlPvm)(void *p, size_t size) {
    (void)size;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdaPvm)(void *p, size_t size) {
    (void)size;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdlPvRKSt9nothrow_t)(void *p, const void *nothrow) {
    (void)nothrow;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdaPvRKSt9nothrow_t)(void *p, const void *nothrow) {
    (void)nothrow;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdlPvSt11align_val_t)(void *p, size_t align) {
    (void)align;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdaPvSt11align_val_t)(void *p, size_t align) {
    (void)align;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdlPvmSt11align_val_t)(void *p, size_t size, size_t align) {
    (void)size, (void)align;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdaPvmSt11align_val_t)(void *p, size_t size, size_t align) {
    (void)size, (void)align;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdlPvSt11align_val_tRKSt9nothrow_t)(void *p, size_t align,
                                                                const void *nothrow) {
    (void)align, (void)nothrow;
    tl_pool_free(p);
}
TL_EXPORT void TL_PRELOAD_NAME(_ZdaPvSt11align_val_tRKSt9nothrow_t)(void *p, size_t align,
                                                                const void *nothrow) {
    (void)align, (void)nothrow;
    tl_pool_free(p);
}
