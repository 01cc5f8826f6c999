/* thread.c: one arena per thread, created on first use, released at thread exit
 * (docs/arena.md, "Threads"; identity, liveness and fork: docs/threads.md).
 *
 * The calling thread's arena sits in a C11 thread-local pointer, so finding it
 * costs one TLS read. A pthread key with a destructor drops the thread's
 * reference when the thread exits; the arena itself lives on until its last
 * reference (for example a NumPy array allocated from it) is gone.
 *
 * A registry (doubly linked list behind one mutex) lets process-wide statistics
 * sum over every thread arena. Only creating and destroying an arena, and
 * reading the registry, take the mutex; allocation never does.
 *
 * Across fork (locks 2 and 3 of platform/fork.c's order), the child's registry
 * lists only the forking thread's arena as alive (see "fork" below).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "arena_internal.h"
#include "internal.h"
#include "platform/fork.h"
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

static void tl_thread_arenas_fork_register(void);

void tl_set_thread_arena_options(const tl_arena_options *opts) {
    tl_thread_arenas_fork_register();
    pthread_mutex_lock(&tl_options_lock);
    tl_thread_options = *opts;
    pthread_mutex_unlock(&tl_options_lock);
}

void tl_get_thread_arena_options(tl_arena_options *out) {
    pthread_mutex_lock(&tl_options_lock);
    *out = tl_thread_options;
    pthread_mutex_unlock(&tl_options_lock);
}

#define TL_THREAD_EXITED ((uint64_t)1 << 63) /* bit of thread_id: the thread is gone */

static void tl_stats_add_counters(tl_arena_stats *dst, const tl_arena_stats *s);

/* Unlink a thread arena and fold its counters into the retired totals. */
static void tl_registry_unlink_locked(tl_arena *a) {
    tl_arena_stats s;
    tl_arena_get_stats(a, &s);
    s.fallback_live_bytes = 0; /* freed with the arena */
    s.escaped_bytes = s.escaped_chunks = s.num_chunks = s.spare_chunks = 0; /* none left */
    if (a->reg_prev) a->reg_prev->reg_next = a->reg_next;
    else tl_registry_head = a->reg_next;
    if (a->reg_next) a->reg_next->reg_prev = a->reg_prev;
    tl_registry_live--;
    tl_stats_add_counters(&tl_retired, &s);
    if (s.peak_bytes > tl_retired_max_peak) tl_retired_max_peak = s.peak_bytes;
}

/* The thread that owns `a` is gone (it exited, or it was not copied by fork):
 * mark `a` exited and drop that thread's reference, registry lock held. If
 * other references remain this is one decrement. If the thread's reference is
 * the last one (nobody else holds one, so nobody can take one), the arena is
 * unlinked here and stops being a thread arena; the function returns 1 and the
 * caller must tl_arena_release it after unlocking, which then only destroys.
 * Marking and dropping in one critical section matter for fork: a child (whose
 * fork handler holds this lock across the fork) never sees an arena marked
 * exited whose thread's reference is still counted, which would leak. */
static int tl_drop_thread_ref_locked(tl_arena *a) {
    __atomic_store_n(&a->thread_id, a->thread_id | TL_THREAD_EXITED, __ATOMIC_RELAXED);
    long n = atomic_load_explicit(&a->refcount, memory_order_relaxed);
    while (n > 1)
        if (atomic_compare_exchange_weak_explicit(&a->refcount, &n, n - 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return 0;
    tl_registry_unlink_locked(a);
    a->is_thread_arena = 0; /* retired: the caller's release destroys it */
    return 1;
}

/* Thread exit: the pthread key's destructor runs with the value we stored. The
 * arena outlives the thread if someone else holds a reference. */
static void tl_thread_exit(void *p) {
    tl_arena *a = p;
    /* Only this thread's own arena. In a child of fork, glibc may hand a new
     * thread the stack of a parent thread that was running its key destructors
     * at the fork, with that thread's key values still set: the value is then
     * an arena whose thread's reference tl_registry_fork_child already dropped
     * (maybe freed since), while this thread's TLS, initialised afresh, does
     * not point to it. */
    if (a != tl_current) return;
    tl_current = NULL;
    pthread_mutex_lock(&tl_registry_lock);
    int last = tl_drop_thread_ref_locked(a);
    pthread_mutex_unlock(&tl_registry_lock);
    if (last) tl_arena_release(a);
}

static void tl_make_key(void) {
    tl_thread_arenas_fork_register();
    (void)pthread_key_create(&tl_key, tl_thread_exit);
}

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
    dst->num_escapes += s->num_escapes;
    dst->escaped_bytes += s->escaped_bytes;
    dst->escaped_chunks += s->escaped_chunks;
    dst->num_chunks += s->num_chunks;
    dst->spare_chunks += s->spare_chunks;
}

/* Called by tl_arena_release when a thread arena's last reference goes. */
void tl_registry_retire(tl_arena *a) {
    pthread_mutex_lock(&tl_registry_lock);
    tl_registry_unlink_locked(a);
    pthread_mutex_unlock(&tl_registry_lock);
}

/* Slow path of tl_thread_arena: first use on this thread. */
TL_NOINLINE static tl_arena *tl_thread_arena_create(const char *name) {
    pthread_once(&tl_key_once, tl_make_key);
    tl_arena_options o;
    tl_get_thread_arena_options(&o);
    tl_arena *a = tl_arena_create(&o);
    if (!a) return NULL;
    if (name) {
        strncpy(a->thread_name, name, sizeof a->thread_name - 1);
        a->thread_name[sizeof a->thread_name - 1] = '\0';
    }
    if (pthread_setspecific(tl_key, a) != 0) {
        tl_arena_release(a); /* not a thread arena yet: nothing to unregister */
        errno = ENOMEM;
        return NULL;
    }
    a->is_thread_arena = 1;
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
        t->thread_id = tid & ~TL_THREAD_EXITED;
        t->alive = !(tid & TL_THREAD_EXITED);
        memcpy(t->thread_name, a->thread_name, sizeof t->thread_name);
        t->pages = a->pages;
        t->pages_requested = a->pages_requested;
        t->numa = a->numa;
        t->numa_node = a->numa_node;
    }
    pthread_mutex_unlock(&tl_registry_lock);
    return n;
}

/* ---- fork (slot TL_FORK_THREAD_ARENAS: locks 2 and 3 of platform/fork.c) ---- */

static void tl_thread_arenas_fork_lock(void) {
    pthread_mutex_lock(&tl_options_lock);
    pthread_mutex_lock(&tl_registry_lock);
}

static void tl_thread_arenas_fork_unlock(void) {
    pthread_mutex_unlock(&tl_registry_lock);
    pthread_mutex_unlock(&tl_options_lock);
}

/* In the child: the forking thread is the only thread. Every arena whose thread
 * was alive is now an arena of a thread that is gone; the forking thread's own
 * arena keeps its reference and gets its new thread id (gettid differs in the
 * child). Arenas whose last reference was their thread's are released after
 * the registry lock is dropped, since a release may take it (retire). */
static void tl_registry_fork_child(void) {
    tl_arena *self = tl_current, *gone = NULL, *next;
    pthread_mutex_lock(&tl_registry_lock);
    if (self) __atomic_store_n(&self->thread_id, tl_current_thread_id(), __ATOMIC_RELAXED);
    for (tl_arena *a = tl_registry_head; a; a = next) {
        next = a->reg_next;
        if (a == self || (__atomic_load_n(&a->thread_id, __ATOMIC_RELAXED) & TL_THREAD_EXITED))
            continue;
        if (tl_drop_thread_ref_locked(a)) { /* unlinked: reuse the link for our list */
            a->reg_next = gone;
            gone = a;
        }
    }
    pthread_mutex_unlock(&tl_registry_lock);
    for (; gone; gone = next) {
        next = gone->reg_next;
        tl_arena_release(gone);
    }
}

static const tl_fork_hooks tl_thread_arenas_fork_hooks = {
    tl_thread_arenas_fork_lock, tl_thread_arenas_fork_unlock, tl_registry_fork_child};

static void tl_thread_arenas_fork_register(void) {
    tl_fork_register(TL_FORK_THREAD_ARENAS, &tl_thread_arenas_fork_hooks);
}

#if defined(__GNUC__) || defined(__clang__)
/* At load time, so that a fork before the first thread arena is covered too. */
__attribute__((constructor)) static void tl_thread_arenas_fork_at_load(void) {
    tl_thread_arenas_fork_register();
}
#endif
