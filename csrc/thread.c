/* thread.c: one arena per thread, created on first use, released at thread exit.
 *
 * The calling thread's arena sits in a C11 thread-local pointer, so finding it
 * costs one TLS read. A pthread key with a destructor drops the thread's
 * reference when the thread exits; the arena itself lives on until its last
 * reference (for example a NumPy array allocated from it) is gone.
 *
 * A registry (doubly linked list behind one mutex) lets process-wide statistics
 * sum over every thread arena. Only creating and destroying an arena, and
 * reading the registry, take the mutex; allocation never does.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include "internal.h"
#include "tlalloc/arena.h"

static _Thread_local tl_arena *tl_current;

static pthread_mutex_t tl_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_arena *tl_registry_head;
static uint64_t tl_registry_live;
static uint64_t tl_registry_created;
/* Counters of arenas already destroyed (capacity, used and peak stay 0). */
static tl_arena_stats tl_retired;
static uint64_t tl_retired_max_peak;

static pthread_mutex_t tl_options_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_arena_options tl_thread_options = {.capacity = TL_ARENA_DEFAULT_CAPACITY};

static pthread_once_t tl_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t tl_key;

uint64_t tl_current_thread_id(void) {
#if defined(__linux__)
    return (uint64_t)syscall(SYS_gettid);
#else
    return (uint64_t)(uintptr_t)pthread_self();
#endif
}

void tl_set_thread_arena_options(const tl_arena_options *opts) {
    pthread_mutex_lock(&tl_options_lock);
    tl_thread_options = *opts;
    pthread_mutex_unlock(&tl_options_lock);
}

void tl_get_thread_arena_options(tl_arena_options *out) {
    pthread_mutex_lock(&tl_options_lock);
    *out = tl_thread_options;
    pthread_mutex_unlock(&tl_options_lock);
}

/* Thread exit: the pthread key's destructor runs with the value we stored. */
static void tl_thread_exit(void *p) {
    tl_arena *a = p;
    /* The arena outlives the thread if someone else holds a reference. */
    __atomic_store_n(&a->thread_id, a->thread_id | ((uint64_t)1 << 63), __ATOMIC_RELAXED);
    tl_current = NULL;
    tl_arena_release(a);
}

static void tl_make_key(void) { (void)pthread_key_create(&tl_key, tl_thread_exit); }

tl_arena *tl_thread_arena_peek(void) { return tl_current; }

static void tl_registry_add(tl_arena *a) {
    pthread_mutex_lock(&tl_registry_lock);
    a->reg_prev = NULL;
    a->reg_next = tl_registry_head;
    if (tl_registry_head) tl_registry_head->reg_prev = a;
    tl_registry_head = a;
    tl_registry_live++;
    tl_registry_created++;
    pthread_mutex_unlock(&tl_registry_lock);
}

static void tl_stats_add_counters(tl_arena_stats *dst, const tl_arena_stats *s) {
    dst->num_allocations += s->num_allocations;
    dst->num_overflows += s->num_overflows;
    dst->fallback_bytes += s->fallback_bytes;
    dst->fallback_live_bytes += s->fallback_live_bytes;
    dst->num_resets += s->num_resets;
}

/* Called by tl_arena_release when a thread arena's last reference goes. */
void tl_registry_retire(tl_arena *a) {
    tl_arena_stats s;
    tl_arena_get_stats(a, &s);
    s.fallback_live_bytes = 0; /* freed with the arena */
    pthread_mutex_lock(&tl_registry_lock);
    if (a->reg_prev) a->reg_prev->reg_next = a->reg_next;
    else tl_registry_head = a->reg_next;
    if (a->reg_next) a->reg_next->reg_prev = a->reg_prev;
    tl_registry_live--;
    tl_stats_add_counters(&tl_retired, &s);
    if (s.peak_bytes > tl_retired_max_peak) tl_retired_max_peak = s.peak_bytes;
    pthread_mutex_unlock(&tl_registry_lock);
}

/* Slow path of tl_thread_arena: first use on this thread. */
TL_NOINLINE static tl_arena *tl_thread_arena_create(const char *name) {
    pthread_once(&tl_key_once, tl_make_key);
    tl_arena_options o;
    tl_get_thread_arena_options(&o);
    tl_arena *a = tl_arena_create(&o);
    if (!a) return NULL;
    a->is_thread_arena = 1;
    if (name) {
        strncpy(a->thread_name, name, sizeof a->thread_name - 1);
        a->thread_name[sizeof a->thread_name - 1] = '\0';
    }
    if (pthread_setspecific(tl_key, a) != 0) {
        tl_arena_release(a);
        errno = ENOMEM;
        return NULL;
    }
    tl_registry_add(a);
    tl_current = a;
    return a;
}

tl_arena *tl_thread_arena(const char *name) {
    tl_arena *a = tl_current; /* one TLS read */
    if (TL_LIKELY(a != NULL)) return a;
    return tl_thread_arena_create(name);
}

void tl_thread_arena_release_current(void) {
    tl_arena *a = tl_current;
    if (!a) return;
    pthread_setspecific(tl_key, NULL);
    tl_thread_exit(a);
}

void tl_registry_get_stats(tl_registry_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&tl_registry_lock);
    out->total = tl_retired;
    out->max_peak_bytes = tl_retired_max_peak;
    for (tl_arena *a = tl_registry_head; a; a = a->reg_next) {
        tl_arena_stats s;
        tl_arena_get_stats(a, &s);
        if (s.peak_bytes > out->max_peak_bytes) out->max_peak_bytes = s.peak_bytes;
        tl_stats_add_counters(&out->total, &s);
        out->total.capacity_bytes += s.capacity_bytes;
        out->total.used_bytes += s.used_bytes;
        out->total.peak_bytes += s.peak_bytes;
    }
    out->num_arenas = tl_registry_live;
    out->num_threads = tl_registry_created;
    pthread_mutex_unlock(&tl_registry_lock);
}

size_t tl_registry_list(tl_thread_stats *out, size_t max) {
    size_t n = 0;
    pthread_mutex_lock(&tl_registry_lock);
    for (tl_arena *a = tl_registry_head; a; a = a->reg_next, n++) {
        if (n >= max) continue;
        tl_thread_stats *t = &out[n];
        tl_arena_get_stats(a, &t->stats);
        uint64_t tid = __atomic_load_n(&a->thread_id, __ATOMIC_RELAXED);
        t->thread_id = tid & ~((uint64_t)1 << 63);
        t->alive = !(tid >> 63);
        memcpy(t->thread_name, a->thread_name, sizeof t->thread_name);
        t->pages = a->pages;
        t->pages_requested = a->pages_requested;
        t->numa = a->numa;
        t->numa_node = a->numa_node;
    }
    pthread_mutex_unlock(&tl_registry_lock);
    return n;
}
