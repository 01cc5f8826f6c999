/* Unit tests of libtlalloc.so's functions (csrc/pool/preload.c) and of the size and
 * flag parser it reads its settings with (csrc/platform/env.c).
 *
 * preload.c is included here with its exported names prefixed (tlp_malloc,
 * ...), so that this program keeps the C library's malloc and can run under
 * AddressSanitizer and ThreadSanitizer (which must own malloc); what the
 * functions promise (errno, alignment, usable sizes, contents) is checked
 * here. The library itself, preloaded under real programs, is tested by
 * tests/c/preload_stress.c (run by `make test` under LD_PRELOAD) and
 * tests/test_preload.py.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define TL_PRELOAD_NAME(name) tlp_##name
#include "../../csrc/pool/preload.c"

#include "tl_test.h"

static int aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* ---- the parser: the rules of tlalloc._config.parse_size ----------------------- */

static void test_parse_size(void) {
    static const struct {
        const char *text;
        int rc;
        uint64_t value;
    } cases[] = {
        {"0", TL_PARSE_OK, 0},
        {"4096", TL_PARSE_OK, 4096},
        {"64MiB", TL_PARSE_OK, (uint64_t)64 << 20},
        {" 64 mib ", TL_PARSE_OK, (uint64_t)64 << 20},
        {"\t1GiB\n", TL_PARSE_OK, (uint64_t)1 << 30},
        {"1TiB", TL_PARSE_OK, (uint64_t)1 << 40},
        {"1k", TL_PARSE_OK, 1024},
        {"1K", TL_PARSE_OK, 1024},
        {"7b", TL_PARSE_OK, 7},
        {"1.5KB", TL_PARSE_OK, 1500},
        {"2.50 kb", TL_PARSE_OK, 2500},
        {"0.5KiB", TL_PARSE_OK, 512},
        {"3.0", TL_PARSE_OK, 3},
        {"1MB", TL_PARSE_OK, 1000000},
        {"2GB", TL_PARSE_OK, 2000000000},
        {"1TB", TL_PARSE_OK, 1000000000000},
        {"16777215TiB", TL_PARSE_OK, UINT64_MAX - (((uint64_t)1 << 40) - 1)},
        {"1.5", TL_PARSE_FRACTION, 0},
        {"1.5B", TL_PARSE_FRACTION, 0},
        {"0.3KiB", TL_PARSE_FRACTION, 0},
        {"16777216TiB", TL_PARSE_RANGE, 0},
        {"99999999999999999999999", TL_PARSE_RANGE, 0},
        {"", TL_PARSE_SYNTAX, 0},
        {"   ", TL_PARSE_SYNTAX, 0},
        {"-1", TL_PARSE_SYNTAX, 0},
        {"+1", TL_PARSE_SYNTAX, 0},
        {"1.", TL_PARSE_SYNTAX, 0},
        {".5", TL_PARSE_SYNTAX, 0},
        {"1e3", TL_PARSE_SYNTAX, 0},
        {"1 m", TL_PARSE_SYNTAX, 0},
        {"1KiBB", TL_PARSE_SYNTAX, 0},
        {"1 2", TL_PARSE_SYNTAX, 0},
        {"lots", TL_PARSE_SYNTAX, 0},
        {"0x10", TL_PARSE_SYNTAX, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        int rc = tl_parse_size(cases[i].text, &v);
        if (rc != cases[i].rc || (rc == TL_PARSE_OK && v != cases[i].value))
            fprintf(stderr, "  tl_parse_size(\"%s\") = %d, %llu\n", cases[i].text, rc,
                    (unsigned long long)v);
        CHECK(rc == cases[i].rc);
        if (rc == TL_PARSE_OK) CHECK(v == cases[i].value);
        else CHECK(v == 12345); /* untouched on failure */
    }
}

static void test_parse_delay(void) {
    static const struct {
        const char *text;
        int rc;
        uint64_t ms;
    } cases[] = {
        {"250", TL_PARSE_OK, 250},     {" 250ms ", TL_PARSE_OK, 250}, {"1.5s", TL_PARSE_OK, 1500},
        {"0", TL_PARSE_OK, 0},         {"2 s", TL_PARSE_OK, 2000},    {"3600s", TL_PARSE_OK, 3600000},
        {"0.5ms", TL_PARSE_FRACTION, 0}, {"1.0005s", TL_PARSE_FRACTION, 0},
        {"250MS", TL_PARSE_SYNTAX, 0}, {"1m", TL_PARSE_SYNTAX, 0},    {"-1", TL_PARSE_SYNTAX, 0},
        {"", TL_PARSE_SYNTAX, 0},      {"1.s", TL_PARSE_SYNTAX, 0},   {"5 sec", TL_PARSE_SYNTAX, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        int rc = tl_parse_delay_ms(cases[i].text, &v);
        if (rc != cases[i].rc) fprintf(stderr, "  tl_parse_delay_ms(\"%s\") = %d\n", cases[i].text, rc);
        CHECK(rc == cases[i].rc);
        if (rc == TL_PARSE_OK) CHECK(v == cases[i].ms);
    }
}

static void test_parse_flag(void) {
    int f = -1;
    CHECK(tl_parse_flag("0", &f) == TL_PARSE_OK && f == 0);
    CHECK(tl_parse_flag(" 1 ", &f) == TL_PARSE_OK && f == 1);
    f = 7;
    CHECK(tl_parse_flag("2", &f) == TL_PARSE_SYNTAX && f == 7);
    CHECK(tl_parse_flag("01", &f) == TL_PARSE_SYNTAX);
    CHECK(tl_parse_flag("true", &f) == TL_PARSE_SYNTAX);
    CHECK(tl_parse_flag("", &f) == TL_PARSE_SYNTAX);
}

/* ---- the settings table ------------------------------------------------------ */

static const char *fake_env[5][2];

static const char *fake_getenv(const char *name) {
    for (int i = 0; i < 5 && fake_env[i][0]; i++)
        if (strcmp(fake_env[i][0], name) == 0) return fake_env[i][1];
    return NULL;
}

static void set_fake_env(const char *retain, const char *cache) {
    memset(fake_env, 0, sizeof fake_env);
    fake_env[0][0] = "TLALLOC_POOL_RETAIN";
    fake_env[0][1] = retain;
    fake_env[1][0] = "TLALLOC_POOL_CACHE";
    fake_env[1][1] = cache;
}

static void test_settings(void) {
    tl_pool_options o = {.cache = 1, .retain_bytes = 99};
    tl_msg m = {.len = 0};
    set_fake_env(NULL, NULL);
    CHECK(tl_preload_read_settings(fake_getenv, &o, &m) == 0 && o.cache == 1 && o.retain_bytes == 99);
    set_fake_env("", ""); /* empty is unset, as in Python */
    CHECK(tl_preload_read_settings(fake_getenv, &o, &m) == 0 && o.cache == 1 && o.retain_bytes == 99);
    set_fake_env("1MiB", "0");
    CHECK(tl_preload_read_settings(fake_getenv, &o, &m) == 0 && o.cache == 0 &&
          o.retain_bytes == ((size_t)1 << 20));
    set_fake_env("1TiB", " 1");
    CHECK(tl_preload_read_settings(fake_getenv, &o, &m) == 0 && o.cache == 1 &&
          o.retain_bytes == ((size_t)1 << 40));
    set_fake_env(NULL, NULL);
    fake_env[2][0] = "TLALLOC_POOL_LARGE_CACHE";
    fake_env[2][1] = "64MiB";
    fake_env[3][0] = "TLALLOC_POOL_PURGE_DELAY";
    fake_env[3][1] = "1.5s";
    CHECK(tl_preload_read_settings(fake_getenv, &o, &m) == 0 &&
          o.large_cache_bytes == ((size_t)64 << 20) && o.purge_delay_ms == 1500);
    fake_env[3][1] = "2h";
    tl_msg md = {.len = 0};
    CHECK(tl_preload_read_settings(fake_getenv, &o, &md) == -1 &&
          strstr(md.buf, "TLALLOC_POOL_PURGE_DELAY: cannot read '2h' as a delay") != NULL);
    fake_env[3][1] = "3601s";
    tl_msg mr = {.len = 0};
    CHECK(tl_preload_read_settings(fake_getenv, &o, &mr) == -1 &&
          strstr(mr.buf, "is out of range: use 0 (purge at once) to 3600000 ms") != NULL);

    static const struct {
        const char *retain, *cache, *says;
    } bad[] = {
        {"2TiB", NULL, "TLALLOC_POOL_RETAIN='2TiB' is out of range: use 0 to 1TiB (1099511627776 bytes)"},
        {"12XB", NULL, "TLALLOC_POOL_RETAIN: cannot read '12XB' as a size; use bytes or a number"},
        {"1.5", NULL, "TLALLOC_POOL_RETAIN: '1.5' is not a whole number of bytes"},
        {NULL, "yes", "TLALLOC_POOL_CACHE='yes' is not accepted; use 0 or 1"},
        {NULL, "\x01'", "TLALLOC_POOL_CACHE='\\x01\\'' is not accepted"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl_msg mb = {.len = 0};
        set_fake_env(bad[i].retain, bad[i].cache);
        CHECK(tl_preload_read_settings(fake_getenv, &o, &mb) == -1);
        if (!strstr(mb.buf, bad[i].says)) fprintf(stderr, "  message: %s\n", mb.buf);
        CHECK(strstr(mb.buf, bad[i].says) != NULL);
    }
}

/* The fallback used if malloc is called before the C library set `environ`. */
static void test_proc_environ(void) {
    tl_proc_env_load();
    const char *path = getenv("PATH");
    if (tl_proc_env_len == 0 || !path) return; /* no /proc here: nothing to compare */
    const char *got = tl_proc_getenv("PATH");
    CHECK(got != NULL && strcmp(got, path) == 0);
    CHECK(tl_proc_getenv("TLALLOC_NO_SUCH_VARIABLE_X") == NULL);
    CHECK(tl_proc_getenv("PAT") == NULL); /* a prefix of a name is not the name */
}

/* ---- the allocation functions -------------------------------------------------- */

static void test_malloc_free(void) {
    void *a = tlp_malloc(0), *b = tlp_malloc(0);
    CHECK(a && b && a != b); /* malloc(0): unique pointers */
    tlp_free(a);
    tlp_free(b);
    tlp_free(NULL);
    static const size_t sizes[] = {1,     7,       8,       9,          16,        17,       100,
                                   1024,  1025,    4096,    65536,      65537,     1 << 20,
                                   (1 << 20) + 1, 3 << 20, 64 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = tlp_malloc(sizes[i]);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK(tlp_malloc_usable_size(p) >= sizes[i]);
        if (sizes[i] >= 16) CHECK(aligned(p, 16));
        memset(p, 0xab, tlp_malloc_usable_size(p)); /* all of it is usable */
        tlp_free(p);
    }
    CHECK(tlp_malloc_usable_size(NULL) == 0);
    errno = 0;
    CHECK(tlp_malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(tlp_malloc(SIZE_MAX / 2 + 1) == NULL && errno == ENOMEM);
}

static void test_calloc(void) {
    for (size_t n = 1; n <= (4u << 20); n *= 4) {
        unsigned char *p = tlp_malloc(n);
        memset(p, 0xff, n); /* dirty a block the next calloc may get */
        tlp_free(p);
        unsigned char *q = tlp_calloc(1, n);
        size_t nonzero = 0;
        for (size_t i = 0; i < n; i++) nonzero += q[i] != 0;
        CHECK(nonzero == 0);
        tlp_free(q);
    }
    errno = 0;
    CHECK(tlp_calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    void *z = tlp_calloc(0, 5);
    CHECK(z != NULL);
    tlp_free(z);
}

static void test_realloc(void) {
    unsigned char *p = tlp_realloc(NULL, 10); /* realloc(NULL, n) is malloc(n) */
    CHECK(p != NULL);
    if (!p) return;
    for (int i = 0; i < 10; i++) p[i] = (unsigned char)(i * 7 + 1);
    size_t n = 10;
    for (int step = 0; step < 20; step++) { /* grow through classes into mapped blocks (to 27 MB) */
        size_t m = n * 3 / 2 + 4100;
        unsigned char *q = tlp_realloc(p, m);
        CHECK(q != NULL);
        if (!q) return;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += q[i] != (unsigned char)(i * 7 + 1);
        CHECK(bad == 0);
        for (size_t i = n; i < m; i++) q[i] = (unsigned char)(i * 7 + 1);
        p = q;
        n = m;
    }
    unsigned char *s = tlp_realloc(p, 5); /* shrink keeps the first bytes */
    CHECK(s != NULL && s[0] == 1 && s[4] == 29);
    errno = 0;
    CHECK(tlp_realloc(s, SIZE_MAX) == NULL && errno == ENOMEM && s[4] == 29); /* s still valid */
    void *r = tlp_realloc(s, 0); /* frees s; returns a minimal block */
    CHECK(r != NULL);
    tlp_free(r);
}

static void test_reallocarray(void) {
    int *p = tlp_reallocarray(NULL, 10, sizeof(int));
    CHECK(p != NULL);
    for (int i = 0; i < 10; i++) p[i] = i * i;
    errno = 0;
    CHECK(tlp_reallocarray(p, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    CHECK(p[9] == 81); /* unchanged by the refused call */
    int *q = tlp_reallocarray(p, 1000, sizeof(int));
    CHECK(q != NULL && q[9] == 81 && tlp_malloc_usable_size(q) >= 1000 * sizeof(int));
    tlp_free(q);
}

static void test_posix_memalign(void) {
    void *p = (void *)&p;
    CHECK(tlp_posix_memalign(&p, 0, 8) == EINVAL && p == (void *)&p);
    CHECK(tlp_posix_memalign(&p, 24, 8) == EINVAL && p == (void *)&p);
    CHECK(tlp_posix_memalign(&p, 4, 8) == EINVAL && p == (void *)&p); /* not a multiple of void* */
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 20); a *= 2) {
        static const size_t sizes[] = {0, 1, 100, 5000, 70000, 3 << 20};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            errno = 12345;
            void *q = NULL;
            int rc = tlp_posix_memalign(&q, a, sizes[i]);
            CHECK(rc == 0 && errno == 12345); /* errno left alone */
            if (rc != 0) continue;
            CHECK(aligned(q, a) && tlp_malloc_usable_size(q) >= sizes[i]);
            if (sizes[i]) memset(q, 1, sizes[i]);
            tlp_free(q);
        }
    }
    /* Above 1 MiB: served, or refused as ENOMEM (the pool's limit), never EINVAL. */
    void *q = NULL;
    int rc = tlp_posix_memalign(&q, (size_t)4 << 20, 100);
    CHECK(rc == 0 || rc == ENOMEM);
    if (rc == 0) {
        CHECK(aligned(q, (size_t)4 << 20));
        tlp_free(q);
    }
    errno = 12345;
    CHECK(tlp_posix_memalign(&q, 64, SIZE_MAX - 100) == ENOMEM && errno == 12345);
}

static void test_aligned_alloc_family(void) {
    errno = 0;
    CHECK(tlp_aligned_alloc(0, 8) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(tlp_aligned_alloc(48, 96) == NULL && errno == EINVAL);
    for (size_t a = 1; a <= ((size_t)1 << 20); a *= 4) {
        void *p = tlp_aligned_alloc(a, 3 * a);
        CHECK(p != NULL && aligned(p, a) && tlp_malloc_usable_size(p) >= 3 * a);
        tlp_free(p);
    }
    /* memalign: rounds a non-power of two up, takes 0 as no alignment. */
    void *m = tlp_memalign(24, 10);
    CHECK(m != NULL && aligned(m, 32));
    tlp_free(m);
    m = tlp_memalign(0, 10);
    CHECK(m != NULL);
    tlp_free(m);
    m = tlp_memalign(16, 8); /* 8-byte requests are 16-aligned when asked */
    CHECK(m != NULL && aligned(m, 16));
    tlp_free(m);
    errno = 0;
    CHECK(tlp_memalign(SIZE_MAX / 2 + 2, 10) == NULL && errno == EINVAL);
    size_t page = tl_os_page_size();
    void *v = tlp_valloc(100);
    CHECK(v != NULL && aligned(v, page));
    tlp_free(v);
    void *pv = tlp_pvalloc(1);
    CHECK(pv != NULL && aligned(pv, page) && tlp_malloc_usable_size(pv) >= page);
    tlp_free(pv);
    pv = tlp_pvalloc(0);
    CHECK(pv != NULL && aligned(pv, page) && tlp_malloc_usable_size(pv) >= page);
    tlp_free(pv);
    pv = tlp_pvalloc(page + 1);
    CHECK(pv != NULL && tlp_malloc_usable_size(pv) >= 2 * page);
    tlp_free(pv);
    errno = 0;
    CHECK(tlp_pvalloc(SIZE_MAX - 10) == NULL && errno == ENOMEM);
}

/* C++'s operator new and delete, called as C (the Itanium ABI's arguments).
 * Their failure path goes to the C++ runtime (the next definition), which a C
 * program does not load: it is tested by tests/c/preload_cxx.cpp, preloaded. */
static void test_cxx_new_delete(void) {
    static const char nothrow_tag = 0; /* std::nothrow: passed by reference, never read */
    size_t sizes[] = {0, 1, 8, 100, 1024, 1025, 70000, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i], want = n ? n : 1;
        void *p[4] = {tlp__Znwm(n), tlp__Znam(n), tlp__ZnwmRKSt9nothrow_t(n, &nothrow_tag),
                      tlp__ZnamRKSt9nothrow_t(n, &nothrow_tag)};
        for (int k = 0; k < 4; k++) {
            CHECK(p[k] != NULL && tlp_malloc_usable_size(p[k]) >= want && aligned(p[k], n >= 16 ? 16 : 8));
            memset(p[k], k, want);
        }
        CHECK(p[0] != p[1] && p[2] != p[3]); /* new(0) too: unique blocks */
        tlp__ZdlPv(p[0]);
        tlp__ZdaPvm(p[1], n);
        tlp__ZdlPvRKSt9nothrow_t(p[2], &nothrow_tag);
        tlp__ZdaPvRKSt9nothrow_t(p[3], &nothrow_tag);
        void *q = tlp__Znwm(n), *r = tlp__Znam(n);
        CHECK(q != NULL && r != NULL);
        tlp__ZdlPvm(q, n);
        tlp__ZdaPv(r);
    }
    for (size_t a = 16; a <= ((size_t)1 << 20); a *= 4) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t n = sizes[i], want = n ? n : 1;
            void *p[4] = {tlp__ZnwmSt11align_val_t(n, a), tlp__ZnamSt11align_val_t(n, a),
                          tlp__ZnwmSt11align_val_tRKSt9nothrow_t(n, a, &nothrow_tag),
                          tlp__ZnamSt11align_val_tRKSt9nothrow_t(n, a, &nothrow_tag)};
            for (int k = 0; k < 4; k++) {
                CHECK(p[k] != NULL && aligned(p[k], a) && tlp_malloc_usable_size(p[k]) >= want);
                memset(p[k], k, want);
            }
            tlp__ZdlPvSt11align_val_t(p[0], a);
            tlp__ZdaPvmSt11align_val_t(p[1], n, a);
            tlp__ZdlPvSt11align_val_tRKSt9nothrow_t(p[2], a, &nothrow_tag);
            tlp__ZdaPvSt11align_val_tRKSt9nothrow_t(p[3], a, &nothrow_tag);
            void *q = tlp__ZnwmSt11align_val_t(n, a), *r = tlp__ZnamSt11align_val_t(n, a);
            CHECK(q != NULL && r != NULL);
            tlp__ZdlPvmSt11align_val_t(q, n, a);
            tlp__ZdaPvSt11align_val_t(r, a);
        }
    }
    /* delete of NULL, every form, does nothing. */
    tlp__ZdlPv(NULL);
    tlp__ZdaPv(NULL);
    tlp__ZdlPvm(NULL, 8);
    tlp__ZdaPvm(NULL, 8);
    tlp__ZdlPvRKSt9nothrow_t(NULL, &nothrow_tag);
    tlp__ZdaPvRKSt9nothrow_t(NULL, &nothrow_tag);
    tlp__ZdlPvSt11align_val_t(NULL, 64);
    tlp__ZdaPvSt11align_val_t(NULL, 64);
    tlp__ZdlPvmSt11align_val_t(NULL, 8, 64);
    tlp__ZdaPvmSt11align_val_t(NULL, 8, 64);
    tlp__ZdlPvSt11align_val_tRKSt9nothrow_t(NULL, 64, &nothrow_tag);
    tlp__ZdaPvSt11align_val_tRKSt9nothrow_t(NULL, 64, &nothrow_tag);
}

static void test_malloc_trim(void) {
    void *blocks[64];
    for (int i = 0; i < 64; i++) blocks[i] = tlp_malloc(20000);
    for (int i = 0; i < 64; i++) tlp_free(blocks[i]);
    tl_pool_thread_release(); /* the pages go to the depot */
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    int r = tlp_malloc_trim(0);
    CHECK(r == (s.retained_bytes > 0));
    tl_pool_get_stats(&s);
    CHECK(s.retained_bytes == 0);
}

/* ---- thread exit: other keys' destructors after the pool's ---------------------- */

static pthread_key_t app_key;
static void *from_main;
static _Atomic int destructor_ok;

/* Runs after the pool's own destructor (its key was created first, and glibc
 * runs destructors in key order): the thread's cache is gone; allocating,
 * freeing its own and a foreign block must still work. */
static void app_destructor(void *v) {
    unsigned char *own = v;
    int ok = own[0] == 0x5a;
    tlp_free(own);
    unsigned char *p = tlp_malloc(300);
    unsigned char *big = tlp_calloc(1, 2u << 20);
    ok = ok && p && big && big[12345] == 0;
    if (p) memset(p, 1, 300);
    tlp_free(p);
    tlp_free(big);
    tlp_free(from_main);
    destructor_ok = ok;
}

static void *exit_worker(void *arg) {
    (void)arg;
    unsigned char *own = tlp_malloc(64); /* creates this thread's cache */
    own[0] = 0x5a;
    pthread_setspecific(app_key, own);
    return NULL;
}

static void test_destructor_after_pool_key(void) {
    tlp_free(tlp_malloc(8)); /* the pool's key exists before app_key */
    CHECK(pthread_key_create(&app_key, app_destructor) == 0);
    for (int round = 0; round < 4; round++) {
        destructor_ok = 0;
        from_main = tlp_malloc(1000);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, exit_worker, NULL) == 0);
        pthread_join(t, NULL);
        CHECK(destructor_ok == 1);
    }
    pthread_key_delete(app_key);
}

/* ---- cross-thread traffic through the exported functions ------------------------ */

#define XT_SLOTS 256
static _Atomic(unsigned char *) xt_slots[XT_SLOTS];
static _Atomic int xt_bad;

static void *xt_worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned slot = (seed >> 8) % XT_SLOTS;
        size_t n = 1 + (seed >> 12) % ((seed & 1) ? 200 : 70000);
        unsigned char *p = tlp_malloc(n + 1);
        if (!p) {
            xt_bad++;
            continue;
        }
        p[0] = (unsigned char)(n & 0xff);
        p[n] = (unsigned char)(n >> 3);
        unsigned char *old = atomic_exchange(&xt_slots[slot], p);
        if (old) { /* allocated by any thread, maybe this one */
            size_t u = tlp_malloc_usable_size(old);
            if (u < 2) xt_bad++;
            tlp_free(old);
        }
    }
    return NULL;
}

static void test_cross_thread(void) {
    for (int wave = 0; wave < 3; wave++) { /* threads exit with blocks still out */
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, xt_worker, (void *)(uintptr_t)(wave * 4 + i));
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    }
    for (int s = 0; s < XT_SLOTS; s++) tlp_free(atomic_exchange(&xt_slots[s], NULL));
    CHECK(xt_bad == 0);
}

int main(void) {
    RUN(test_parse_size);
    RUN(test_parse_delay);
    RUN(test_parse_flag);
    RUN(test_settings);
    RUN(test_proc_environ);
    RUN(test_malloc_free);
    RUN(test_calloc);
    RUN(test_realloc);
    RUN(test_reallocarray);
    RUN(test_posix_memalign);
    RUN(test_aligned_alloc_family);
    RUN(test_cxx_new_delete);
    RUN(test_malloc_trim);
    RUN(test_destructor_after_pool_key);
    RUN(test_cross_thread);
    TEST_MAIN_END();
}
