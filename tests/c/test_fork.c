/* Unit tests of fork (no Python): the core's pthread_atfork handlers and what a
 * child sees.
 *
 * 1. test_child_state: two parked worker threads with thread arenas and pool
 *    caches at the fork; the child's registry lists only the forking thread as
 *    alive (with the child's thread id), an arena whose only reference was its
 *    thread's is retired, one still referenced stays (marked exited), the
 *    workers' pool caches are torn down (an empty cached page is back in the
 *    depot, a page with live blocks is abandoned and adopted on free), and the
 *    shared scratch arena is usable.
 * 2. test_fork_while_hammering: many children forked while other threads run
 *    every locked path of the core in loops; each child runs every locked path
 *    once and checks its registry and pool; the parent waits for each child
 *    with a deadline and kills it if it hangs (a failure, not a hang of the test).
 *
 * Under ThreadSanitizer the parent's side (handlers taking every lock while the
 * hammers hold them) is checked; TSan ignores everything a child of a
 * multi-threaded process does (it says it cannot reason about it), so the
 * child's own code is checked by the plain and ASan builds. A child must not
 * start threads under TSan (die_after_fork), and none does here.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tl_test.h"
#include "demo/huffman.h"
#include "tlalloc.h"

#define NUM_CHILDREN 200
/* A child that has not exited after this long is hung (it normally takes
 * milliseconds; the bound only turns a deadlock into a failure). */
#define CHILD_DEADLINE_S 30

/* ---- helpers --------------------------------------------------------------- */

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Wait for pid with a deadline; kill it past the deadline. Returns the exit
 * status (0-255), 1000 + signal if it died of a signal, -1 if it hung. */
static int wait_child(pid_t pid) {
    for (long waited = 0; waited < CHILD_DEADLINE_S * 1000L; waited += 2) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
        if (r < 0 && errno != EINTR) return -2;
        sleep_ms(2);
    }
    if (getenv("TL_TEST_FORK_GDB")) { /* debugging aid: where is it stuck? */
        char cmd[128];
        snprintf(cmd, sizeof cmd, "gdb -q -batch -p %d -ex 'thread apply all bt' 1>&2", (int)pid);
        if (system(cmd) != 0) fprintf(stderr, "(gdb failed)\n");
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* In a child: the number of failed checks becomes the exit status. */
static int child_failures;
#define CCHECK(cond)                                                                   \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            child_failures++;                                                          \
            fprintf(stderr, "%s:%d: child CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                              \
    } while (0)

/* Thread arenas alive per the registry, and whether `a`'s entry says alive. */
static size_t count_alive(const tl_arena *self, int *self_alive, uint64_t *self_tid) {
    tl_thread_stats buf[256];
    size_t n = tl_registry_list(buf, 256);
    size_t alive = 0;
    *self_alive = 0;
    for (size_t i = 0; i < n && i < 256; i++) {
        if (buf[i].alive) alive++;
        if (self && strcmp(buf[i].thread_name, self->thread_name) == 0 && buf[i].alive) {
            *self_alive = 1;
            *self_tid = buf[i].thread_id;
        }
    }
    return alive;
}

/* Every locked path of the core, once, from the calling thread (in a child:
 * the only thread). Each would hang if fork had left its lock held. */
static void every_locked_path_once(void) {
    tl_arena_options o;
    tl_get_thread_arena_options(&o);
    tl_set_thread_arena_options(&o);
    tl_registry_stats rs;
    tl_registry_get_stats(&rs);
    tl_thread_stats ts[4];
    (void)tl_registry_list(ts, 4);
    /* Registry add and retire: drop this thread's arena and make a new one. */
    tl_thread_arena_release_current();
    tl_arena *a = tl_thread_arena("child");
    CCHECK(a != NULL);
    if (a) CCHECK(tl_arena_alloc(a, 100, 64) != NULL);
    tl_scratch s;
    CCHECK(tl_scratch_begin(&s, TL_SCRATCH_SHARED, NULL) == 0);
    CCHECK(tl_scratch_alloc(&s, 1000, 64) != NULL);
    tl_scratch_end(&s);
    tl_arena_stats as;
    tl_scratch_shared_stats(&as);
    CCHECK(as.used_bytes == 0); /* reset when the child's only bracket ended */
    void *p = tl_pool_malloc(48), *q = tl_pool_malloc(100000), *big = tl_pool_malloc(3 << 20);
    CCHECK(p && q && big);
    tl_pool_free(p);
    tl_pool_free(q);
    tl_pool_free(big);
    tl_pool_options po;
    tl_pool_get_options(&po);
    CCHECK(tl_pool_configure(&po) == 0);
    tl_pool_collect(0);
    tl_pool_stats ps;
    tl_pool_get_stats(&ps);
    uint8_t in[4096], *enc = NULL;
    for (size_t i = 0; i < sizeof in; i++) in[i] = (uint8_t)(i * 7 % 13);
    size_t len = 0;
    tl_huff_options ho = {.block_size = 1024, .threads = 1, .allocator = TL_HUFF_TLALLOC};
    /* threads = 1 still starts a worker thread: not under the sanitizers. TSan
     * refuses threads in a child of a multi-threaded process (die_after_fork);
     * GCC 12's ASan allocator has no fork handlers, so a new thread's first
     * allocation can wait forever on an allocator lock that a parent thread
     * held at the fork (seen: 2 of 60 children). */
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
    CCHECK(tl_huff_encode(in, sizeof in, &ho, &enc, &len, NULL, NULL) == TL_HUFF_OK);
    free(enc);
#else
    (void)ho;
    (void)enc;
    (void)len;
#endif
}

/* ---- 1. what a child sees ---------------------------------------------------- */

typedef struct worker {
    pthread_t tid;
    const char *name;
    int keep_ref;         /* main keeps a reference to the arena (as an array would) */
    tl_arena *arena;      /* published before `ready` */
    void *live[50];       /* blocks still allocated at the fork (class 64) */
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *ready, *go;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    w->arena = tl_thread_arena(w->name);
    tl_arena_alloc(w->arena, 1000, 64);
    if (w->keep_ref) tl_arena_retain(w->arena);
    /* A page of class 64 with 50 live blocks, and a page of class 2048 whose
     * blocks were all freed (the heap keeps it cached as its only page). */
    void *tmp[200];
    for (int i = 0; i < 200; i++) tmp[i] = tl_pool_malloc(64);
    for (int i = 0; i < 200; i++) {
        if (i < 50) w->live[i] = tmp[i];
        else tl_pool_free(tmp[i]);
    }
    for (int i = 0; i < 20; i++) tmp[i] = tl_pool_malloc(2048);
    for (int i = 0; i < 20; i++) tl_pool_free(tmp[i]);
    pthread_mutex_lock(w->mu);
    (*w->ready)++;
    pthread_cond_broadcast(w->cv);
    while (!*w->go) pthread_cond_wait(w->cv, w->mu);
    pthread_mutex_unlock(w->mu);
    return NULL;
}

static void test_child_state(void) {
    tl_arena *mine = tl_thread_arena("forker");
    CHECK(mine != NULL);
    void *own = tl_pool_malloc(16); /* the forking thread has a cache too */
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int ready = 0, go = 0;
    worker w[2] = {{.name = "worker-only-thread-ref", .keep_ref = 0},
                   {.name = "worker-kept-ref", .keep_ref = 1}};
    for (int i = 0; i < 2; i++) {
        w[i].mu = &mu;
        w[i].cv = &cv;
        w[i].ready = &ready;
        w[i].go = &go;
        CHECK(pthread_create(&w[i].tid, NULL, worker_main, &w[i]) == 0);
    }
    pthread_mutex_lock(&mu);
    while (ready < 2) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    tl_registry_stats before_reg;
    tl_registry_get_stats(&before_reg);
    tl_pool_stats before;
    tl_pool_get_stats(&before);
    int self_alive;
    uint64_t self_tid = 0;
    CHECK(count_alive(mine, &self_alive, &self_tid) == 3 && self_alive);

    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Registry: only the forking thread alive, with the child's id. */
        CCHECK(count_alive(mine, &self_alive, &self_tid) == 1);
        CCHECK(self_alive && self_tid == tl_current_thread_id());
        tl_thread_stats buf[16];
        size_t n = tl_registry_list(buf, 16);
        int saw_only = 0, saw_kept = 0;
        for (size_t i = 0; i < n && i < 16; i++) {
            if (!strcmp(buf[i].thread_name, w[0].name)) saw_only = 1;
            if (!strcmp(buf[i].thread_name, w[1].name)) saw_kept = 1 + !buf[i].alive;
        }
        CCHECK(!saw_only);      /* its thread held the last reference: retired */
        CCHECK(saw_kept == 2);  /* still referenced: listed, not alive */
        tl_registry_stats rs;
        tl_registry_get_stats(&rs);
        CCHECK(rs.num_arenas == before_reg.num_arenas - 1);
        CCHECK(rs.total.num_allocations == before_reg.total.num_allocations);
        /* The kept reference still works and is dropped like any other. */
        tl_arena_release(w[1].arena);
        tl_registry_get_stats(&rs);
        CCHECK(rs.num_arenas == before_reg.num_arenas - 2);
        CCHECK(tl_thread_arena(NULL) == mine);

        /* Pool: the workers' caches are gone, their pages handed over. */
        tl_pool_stats after;
        tl_pool_get_stats(&after);
        CCHECK(after.num_heaps == before.num_heaps - 2);
        CCHECK(after.num_abandoned_pages >= before.num_abandoned_pages + 2);
        CCHECK(after.retained_bytes > before.retained_bytes); /* the empty 2048 pages */
        CCHECK(after.num_allocations == before.num_allocations);
        CCHECK(after.in_use_bytes == before.in_use_bytes);
        /* Freeing the workers' live blocks adopts their pages: local frees,
         * not pushes onto a page whose owner is gone. */
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < 50; i++) tl_pool_free(w[k].live[i]);
        tl_pool_stats freed;
        tl_pool_get_stats(&freed);
        CCHECK(freed.num_cross_thread_frees == after.num_cross_thread_frees);
        CCHECK(freed.num_reclaimed_pages >= after.num_reclaimed_pages + 2);
        CCHECK(freed.in_use_bytes == before.in_use_bytes - 100 * 64);
        /* And their memory is reused by the child. */
        void *b[100];
        for (int i = 0; i < 100; i++) b[i] = tl_pool_malloc(64);
        for (int i = 0; i < 100; i++) tl_pool_free(b[i]);
        tl_pool_free(own);
        every_locked_path_once();
        fflush(NULL);
        _exit(child_failures ? 1 : 0);
    }
    CHECK(pid > 0);
    if (pid > 0) CHECK(wait_child(pid) == 0);

    /* The parent is unchanged. */
    CHECK(count_alive(mine, &self_alive, &self_tid) == 3 && self_alive);
    pthread_mutex_lock(&mu);
    go = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 2; i++) {
        pthread_join(w[i].tid, NULL);
        for (int k = 0; k < 50; k++) tl_pool_free(w[i].live[k]);
    }
    tl_arena_release(w[1].arena);
    tl_pool_free(own);
}

/* ---- 2. fork while other threads hold every lock ----------------------------- */

static _Atomic int hammer_stop;

/* Thread arena create and exit, pool cache create and teardown. */
static void *short_lived(void *arg) {
    (void)arg;
    tl_arena *a = tl_thread_arena("short");
    if (a) tl_arena_alloc(a, 256, 64);
    void *p = tl_pool_malloc(200);
    tl_pool_free(p);
    return NULL;
}
static void *hammer_threads(void *arg) {
    (void)arg;
    while (!atomic_load(&hammer_stop)) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) == 0) pthread_join(t, NULL);
    }
    return NULL;
}

static void *hammer_stats(void *arg) {
    (void)arg;
    tl_thread_stats buf[64];
    while (!atomic_load(&hammer_stop)) {
        tl_registry_stats rs;
        tl_registry_get_stats(&rs);
        (void)tl_registry_list(buf, 64);
        tl_pool_stats ps;
        tl_pool_get_stats(&ps);
        tl_arena_stats as;
        tl_scratch_shared_stats(&as);
    }
    return NULL;
}

static void *hammer_options(void *arg) {
    (void)arg;
    while (!atomic_load(&hammer_stop)) {
        tl_arena_options o;
        tl_get_thread_arena_options(&o);
        tl_set_thread_arena_options(&o);
        tl_pool_options po;
        tl_pool_get_options(&po);
        tl_pool_configure(&po);
        tl_pool_collect(0);
    }
    return NULL;
}

static void *hammer_scratch(void *arg) {
    (void)arg;
    while (!atomic_load(&hammer_stop)) {
        tl_scratch s;
        if (tl_scratch_begin(&s, TL_SCRATCH_SHARED, NULL) == 0) {
            tl_scratch_alloc(&s, 512, 64);
            tl_scratch_alloc(&s, 1 << 22, 64); /* overflow: heap */
            tl_scratch_end(&s);
        }
        if (tl_scratch_begin(&s, TL_SCRATCH_THREAD, NULL) == 0) {
            tl_scratch_alloc(&s, 512, 64);
            tl_scratch_end(&s);
        }
    }
    return NULL;
}

/* Two threads pass blocks to each other to free (cross-thread frees), plus
 * large blocks (the depot lock). */
#define RING 256
static _Atomic(void *) ring[2][RING];
static void *hammer_pool(void *arg) {
    int me = (int)(intptr_t)arg;
    unsigned i = 0;
    while (!atomic_load(&hammer_stop)) {
        void *p = tl_pool_malloc(16 + (i * 37) % 3000);
        /* My previous block in this slot (or one the other thread left there). */
        tl_pool_free(atomic_exchange(&ring[me][i % RING], p));
        /* A block the other thread allocated: a cross-thread free. */
        tl_pool_free(atomic_exchange(&ring[1 - me][(i * 7) % RING], NULL));
        if (i % 64 == 0) tl_pool_free(tl_pool_malloc(2 << 20));
        i++;
    }
    return NULL;
}

static void *hammer_huffman(void *arg) {
    (void)arg;
    static uint8_t in[16384];
    for (size_t i = 0; i < sizeof in; i++) in[i] = (uint8_t)(i * 131 % 29);
    tl_huff_allocator kinds[3] = {TL_HUFF_TLALLOC, TL_HUFF_POOLED, TL_HUFF_GLOBAL_LOCK};
    for (unsigned k = 0; !atomic_load(&hammer_stop); k++) {
        tl_huff_options o = {.block_size = 2048, .threads = 3, .allocator = kinds[k % 3]};
        uint8_t *enc = NULL;
        size_t len;
        if (tl_huff_encode(in, sizeof in, &o, &enc, &len, NULL, NULL) == TL_HUFF_OK) free(enc);
    }
    return NULL;
}

static void test_fork_while_hammering(void) {
    tl_arena *mine = tl_thread_arena("forker2");
    CHECK(mine != NULL);
    tl_pool_free(tl_pool_malloc(64));
    pthread_t t[7];
    int nt = 0;
    CHECK(pthread_create(&t[nt++], NULL, hammer_threads, NULL) == 0);
    CHECK(pthread_create(&t[nt++], NULL, hammer_stats, NULL) == 0);
    CHECK(pthread_create(&t[nt++], NULL, hammer_options, NULL) == 0);
    CHECK(pthread_create(&t[nt++], NULL, hammer_scratch, NULL) == 0);
    CHECK(pthread_create(&t[nt++], NULL, hammer_pool, (void *)0) == 0);
    CHECK(pthread_create(&t[nt++], NULL, hammer_pool, (void *)1) == 0);
    CHECK(pthread_create(&t[nt++], NULL, hammer_huffman, NULL) == 0);
    int hung = 0, failed = 0, crashed = 0;
    for (int i = 0; i < NUM_CHILDREN; i++) {
        sleep_ms(1 + i % 3); /* let the hammers get into their locks */
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            int self_alive;
            uint64_t tid = 0;
            CCHECK(count_alive(mine, &self_alive, &tid) == 1);
            CCHECK(self_alive && tid == tl_current_thread_id());
            tl_pool_stats ps;
            tl_pool_get_stats(&ps);
            CCHECK(ps.num_heaps == 1); /* the forking thread's own cache only */
            every_locked_path_once();
            tl_pool_get_stats(&ps);
            CCHECK(ps.num_heaps == 1);
            /* Also catches a stale key destructor tearing down a heap again
             * when every_locked_path_once's encode starts a thread (glibc may
             * give it a dead thread's stack and key values). */
            CCHECK(count_alive(NULL, &self_alive, &tid) == 1);
            fflush(NULL);
            _exit(child_failures ? 1 : 0);
        }
        CHECK(pid > 0);
        if (pid < 0) break;
        int rc = wait_child(pid);
        if (rc == -1) hung++;
        else if (rc >= 1000) crashed++;
        else if (rc != 0) failed++;
    }
    atomic_store(&hammer_stop, 1);
    for (int i = 0; i < nt; i++) pthread_join(t[i], NULL);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < RING; i++) tl_pool_free(atomic_exchange(&ring[k][i], NULL));
    if (hung || crashed || failed)
        fprintf(stderr, "%d children: %d hung, %d crashed, %d failed checks\n", NUM_CHILDREN, hung,
                crashed, failed);
    CHECK(hung == 0);
    CHECK(crashed == 0);
    CHECK(failed == 0);
}

int main(void) {
    RUN(test_child_state);
    RUN(test_fork_while_hammering);
    TEST_MAIN_END();
}
