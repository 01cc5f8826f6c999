// preload_cxx.cpp: C++'s operator new and delete under LD_PRELOAD of
// libtlalloc.so (csrc/pool/preload.c defines them over the pool). Run twice, on
// the C++ runtime's operator new and under the library, it must print the
// same thing both times (`make test`, tests/test_preload.py):
//
// 1. new and delete of objects and arrays (plain, sized delete, nothrow),
//    new(0) giving distinct pointers, blocks passed between threads;
// 2. aligned new (C++17) at 64 B, 4 KiB and 1 MiB, by alignas and by explicit
//    std::align_val_t, with their deletes;
// 3. a huge nothrow new returns nullptr (plain and aligned); a huge throwing
//    new calls the new_handler that is set, then throws std::bad_alloc
//    (plain, array and aligned): the failure path of the library, which C
//    cannot throw from, goes to the C++ runtime's.
//
// stdout: results only, the same under any correct operator new. stderr: which
// object defines the operator new in use, and under the library whether the
// pool counted the allocations and malloc_usable_size agrees with them.
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <new>

#include "tlalloc/pool.h"

static int failures = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static bool aligned_to(const void *p, size_t align) { return ((uintptr_t)p & (align - 1)) == 0; }

struct alignas(64) Line {
    char bytes[64];
};
struct alignas(4096) Page {
    char bytes[4096];
};

// 1. Objects and arrays of 1 B to 100 KB; the sized deletes are what g++ calls
// for `delete[]` of a type with a destructor and for `delete` of a complete type.
struct Node {
    Node *next;
    size_t n;
    ~Node() { n = 0; }
};

static void objects_and_arrays() {
    size_t sizes[] = {0, 1, 7, 8, 16, 24, 100, 1000, 1024, 1025, 4096, 50000, 100000};
    int ok = 0, total = 0;
    for (int round = 0; round < 200; round++) {
        for (size_t s : sizes) {
            char *a = new char[s];
            memset(a, 0x5a, s);
            Node *n = new Node{nullptr, s};
            Node *arr = new Node[s % 17 + 1];  // array cookie: delete[] passes the size
            arr[0].n = s;
            total++;
            ok += (s == 0 || (a[0] == 0x5a && a[s - 1] == 0x5a)) && n->n == s && arr[0].n == s;
            delete[] arr;
            delete n;
            delete[] a;
            char *q = new (std::nothrow) char[s + 1];
            CHECK(q != nullptr);
            q[s] = 1;
            ::operator delete[](q, std::nothrow);
        }
    }
    printf("objects and arrays: %d of %d intact\n", ok, total);

    void *z1 = ::operator new(0), *z2 = ::operator new(0);
    void *za1 = ::operator new[](0), *za2 = ::operator new[](0);
    printf("new(0): non-null %d, distinct %d\n", z1 && z2 && za1 && za2, z1 != z2 && za1 != za2);
    ::operator delete(z1);
    ::operator delete(z2);
    ::operator delete[](za1);
    ::operator delete[](za2);
    ::operator delete(nullptr);
    ::operator delete[](nullptr);
}

// Blocks allocated with new by one thread and deleted by another.
static Node *handoff[1000];

static void *make_nodes(void *) {
    for (size_t i = 0; i < 1000; i++) handoff[i] = new Node{nullptr, i};
    return nullptr;
}

static void across_threads() {
    pthread_t t;
    pthread_create(&t, nullptr, make_nodes, nullptr);
    pthread_join(t, nullptr);
    int ok = 0;
    for (size_t i = 0; i < 1000; i++) {
        ok += handoff[i]->n == i;
        delete handoff[i];
    }
    printf("across threads: %d of 1000 intact\n", ok);
}

// 2. Aligned new.
static void aligned() {
    int ok = 0;
    for (int i = 0; i < 100; i++) {
        Line *l = new Line;
        Page *p = new Page;
        Line *ls = new Line[3];
        Page *ps = new Page[2];
        memset(p->bytes, 1, sizeof p->bytes);
        memset(ps, 2, 2 * sizeof(Page));
        ok += aligned_to(l, 64) && aligned_to(p, 4096) && aligned_to(ls, 64) && aligned_to(ps, 4096);
        delete[] ps;
        delete[] ls;
        delete p;
        delete l;
    }
    printf("alignas(64), alignas(4096): %d of 100 aligned\n", ok);

    const std::align_val_t mib{(size_t)1 << 20};
    int ok_mib = 0;
    for (int i = 0; i < 8; i++) {
        void *a = ::operator new(3000, mib);
        void *b = ::operator new[](5 << 20, mib);
        void *c = ::operator new(0, std::align_val_t{4096});
        void *d = ::operator new(100, mib, std::nothrow);
        void *e = ::operator new[](100, std::align_val_t{64}, std::nothrow);
        memset(a, 3, 3000);
        memset(b, 4, 5 << 20);
        ok_mib += aligned_to(a, 1 << 20) && aligned_to(b, 1 << 20) && c && aligned_to(c, 4096) &&
                  d && aligned_to(d, 1 << 20) && e && aligned_to(e, 64);
        ::operator delete(a, mib);
        ::operator delete[](b, (size_t)5 << 20, mib);
        ::operator delete(c, (size_t)0, std::align_val_t{4096});
        ::operator delete(d, mib, std::nothrow);
        ::operator delete[](e, std::align_val_t{64}, std::nothrow);
    }
    printf("align_val_t 1 MiB, 4 KiB, 64: %d of 8 aligned\n", ok_mib);
}

// 3. Failure: nothrow gives nullptr, the throwing forms run the new_handler
// (which removes itself, so the next try throws) and throw std::bad_alloc.
static const size_t HUGE_SIZE = (size_t)1 << 62;
static int handler_calls = 0;
// Where results go, so that the compiler keeps every new (it may remove a new
// whose block is only deleted).
static void *volatile sink;

static void handler() {
    handler_calls++;
    std::set_new_handler(nullptr);
}

template <typename F>
static void expect_bad_alloc(const char *what, F f) {
    handler_calls = 0;
    std::set_new_handler(handler);
    bool thrown = false;
    try {
        f();
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    std::set_new_handler(nullptr);
    printf("%s: bad_alloc %d, new_handler called %d time(s)\n", what, thrown, handler_calls);
}

static void failures_throw() {
    int null_new = (sink = ::operator new(HUGE_SIZE, std::nothrow)) == nullptr;
    int null_array = (sink = ::operator new[](HUGE_SIZE, std::nothrow)) == nullptr;
    int null_aligned = (sink = ::operator new(HUGE_SIZE, std::align_val_t{4096}, std::nothrow)) == nullptr;
    printf("nothrow huge new: nullptr %d, new[] nullptr %d, aligned nullptr %d\n", null_new, null_array,
           null_aligned);
    expect_bad_alloc("huge new", [] {
        sink = ::operator new(HUGE_SIZE);
        ::operator delete(sink);
    });
    expect_bad_alloc("huge new[]", [] {
        sink = ::operator new[](HUGE_SIZE);
        ::operator delete[](sink);
    });
    expect_bad_alloc("huge aligned new", [] {
        sink = ::operator new(HUGE_SIZE, std::align_val_t{64});
        ::operator delete(sink, std::align_val_t{64});
    });
    // 64 TiB: above RAM + swap of any machine these tests run on, so the
    // kernel's heuristic and strict overcommit modes refuse it (glibc's malloc
    // and the pool alike: the two outputs are compared).
    bool thrown64 = false;
    try {
        sink = ::operator new((size_t)1 << 46);
        ::operator delete(sink);
    } catch (const std::bad_alloc &) {
        thrown64 = true;
    }
    printf("new of 64 TiB: bad_alloc %d\n", thrown64);
    // Nothrow new runs the new_handler too, then returns nullptr.
    handler_calls = 0;
    std::set_new_handler(handler);
    sink = ::operator new(HUGE_SIZE, std::nothrow);
    std::set_new_handler(nullptr);
    printf("huge nothrow new with a new_handler: nullptr %d, new_handler called %d time(s)\n", sink == nullptr,
           handler_calls);
}

// Which object defines the operator new the program calls; under the library,
// whether the pool served it.
static void report_origin() {
    void *(*op_new)(size_t) = &::operator new;
    Dl_info info;
    const char *from = dladdr((void *)op_new, &info) && info.dli_fname ? info.dli_fname : "?";
    const char *base = strrchr(from, '/') ? strrchr(from, '/') + 1 : from;
    fprintf(stderr, "operator new from: %s\n", base);
    void *sym = dlsym(RTLD_DEFAULT, "tl_pool_get_stats");
    if (!sym) return;
    void (*get_stats)(tl_pool_stats *);
    memcpy(&get_stats, &sym, sizeof get_stats);
    tl_pool_stats before, after;
    get_stats(&before);
    char *blocks[1000];
    int usable_ok = 0;
    for (int i = 0; i < 1000; i++) {
        blocks[i] = new char[i + 1];
        usable_ok += malloc_usable_size(blocks[i]) >= (size_t)i + 1;
    }
    Page *pg = new Page;
    get_stats(&after);
    usable_ok += malloc_usable_size(pg) >= sizeof(Page);
    delete pg;
    for (int i = 0; i < 1000; i++) delete[] blocks[i];
    // The counters are per thread, folded into the totals by the pool: read
    // them only as "at least as many as we made".
    uint64_t counted = after.num_allocations - before.num_allocations;
    fprintf(stderr, "pool counted new: %s (%llu of 1001), malloc_usable_size agrees: %d of 1001\n",
            counted >= 1001 ? "yes" : "no", (unsigned long long)counted, usable_ok);
}

int main() {
    objects_and_arrays();
    across_threads();
    aligned();
    failures_throw();
    report_origin();
    if (failures) printf("%d checks failed\n", failures);
    return failures != 0;
}
