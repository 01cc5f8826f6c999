/* preload_stress.c: an ordinary program (malloc, free, threads, fork) that is
 * run twice, on the C library's malloc and under LD_PRELOAD of libtlalloc.so,
 * and must print the same thing both times (`make test`, tests/test_preload.py).
 *
 * 1. producers allocate blocks (8 B to 9 MB, malloc, calloc, realloc,
 *    posix_memalign, aligned_alloc), fill them with a pattern and hand them to
 *    consumers, which check and free them: every block is freed by a thread
 *    other than the one that allocated it;
 * 2. short-lived threads allocate blocks that outlive them (freed by main),
 *    and set 40 pthread keys (glibc callocs a second block for keys >= 32)
 *    whose destructors allocate and free after the pool's own destructor;
 * 3. while 1 runs, main forks children that check and free blocks allocated
 *    before the fork by threads they do not have, allocate, start a thread and
 *    exit normally.
 *
 * stdout: counts only, the same under any correct malloc. stderr: whether
 * libtlalloc.so is the malloc in use (its tl_pool_get_stats is visible).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PRODUCERS 3
#define CONSUMERS 3
#define BLOCKS_PER_PRODUCER 4000
#define CHURN_THREADS 120
#define KEPT_PER_THREAD 8
#define NUM_KEYS 40
#define FORKS 8

static _Atomic long failures;
#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            failures++;                                                                 \
            fprintf(stderr, "preload_stress.c:%d: failed: %s\n", __LINE__, #cond);      \
        }                                                                               \
    } while (0)

static unsigned next_rand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

/* A block: its size and a seed up front, then bytes derived from the seed. */
typedef struct {
    size_t size;
    unsigned seed;
} header;

static void fill(unsigned char *p, size_t size, unsigned seed) {
    header h = {size, seed};
    memcpy(p, &h, sizeof h);
    /* every byte would be slow for 3 MB blocks: every 61st, and the last */
    for (size_t i = sizeof h; i < size; i += 61) p[i] = (unsigned char)(seed + i * 31);
    p[size - 1] = (unsigned char)(seed ^ 0x5a);
}

static int check(const unsigned char *p) {
    header h;
    memcpy(&h, p, sizeof h);
    if (malloc_usable_size((void *)p) < h.size) return 0;
    for (size_t i = sizeof h; i < h.size - 1; i += 61)
        if (p[i] != (unsigned char)(h.seed + i * 31)) return 0;
    return p[h.size - 1] == (unsigned char)(h.seed ^ 0x5a);
}

static unsigned char *make_block(unsigned *rng) {
    unsigned r = next_rand(rng);
    /* one in 8 up to 9 MB: through the pool's classes and its mapped blocks */
    size_t size = sizeof(header) + 1 + (r % 8 == 0 ? r % (9u << 20) : r % 2000);
    unsigned char *p = NULL;
    switch (next_rand(rng) % 5) {
    case 0: p = malloc(size); break;
    case 1: {
        p = calloc(1, size);
        size_t nonzero = 0;
        for (size_t i = 0; i < size; i += 97) nonzero += p[i] != 0;
        EXPECT(nonzero == 0);
        break;
    }
    case 2: { /* grow in three steps, keeping the first part */
        p = malloc(size / 4 + 1);
        memset(p, 0x33, size / 4 + 1);
        p = realloc(p, size / 2 + 1);
        EXPECT(p[size / 4] == 0x33);
        p = realloc(p, size);
        EXPECT(p[0] == 0x33 && p[size / 4] == 0x33);
        break;
    }
    case 3: {
        void *q = NULL;
        size_t align = (size_t)16 << (next_rand(rng) % 12); /* 16 B to 32 KiB */
        EXPECT(posix_memalign(&q, align, size) == 0 && ((uintptr_t)q & (align - 1)) == 0);
        p = q;
        break;
    }
    default: {
        size_t align = (size_t)64 << (next_rand(rng) % 8);
        p = aligned_alloc(align, (size + align - 1) & ~(align - 1));
        EXPECT(p && ((uintptr_t)p & (align - 1)) == 0);
    }
    }
    EXPECT(p != NULL);
    if (p) fill(p, size, next_rand(rng));
    return p;
}

/* ---- 1. producers and consumers ---------------------------------------------- */

#define QUEUE_CAP 64
static unsigned char *queue[QUEUE_CAP];
static size_t q_head, q_len;
static int producers_left = PRODUCERS;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static long consumed, consumed_bad;

static void *producer(void *arg) {
    unsigned rng = (unsigned)(uintptr_t)arg * 7919u + 1;
    for (int i = 0; i < BLOCKS_PER_PRODUCER; i++) {
        unsigned char *p = make_block(&rng);
        pthread_mutex_lock(&q_lock);
        while (q_len == QUEUE_CAP) pthread_cond_wait(&q_cond, &q_lock);
        queue[(q_head + q_len++) % QUEUE_CAP] = p;
        pthread_cond_broadcast(&q_cond);
        pthread_mutex_unlock(&q_lock);
    }
    pthread_mutex_lock(&q_lock);
    producers_left--;
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&q_lock);
        while (q_len == 0 && producers_left > 0) pthread_cond_wait(&q_cond, &q_lock);
        if (q_len == 0) {
            pthread_mutex_unlock(&q_lock);
            return NULL;
        }
        unsigned char *p = queue[q_head];
        q_head = (q_head + 1) % QUEUE_CAP;
        q_len--;
        pthread_cond_broadcast(&q_cond);
        pthread_mutex_unlock(&q_lock);
        int ok = p && check(p);
        free(p);
        pthread_mutex_lock(&q_lock);
        consumed++;
        consumed_bad += !ok;
        pthread_mutex_unlock(&q_lock);
    }
}

/* ---- 2. threads that exit, with keys ------------------------------------------ */

static pthread_key_t keys[NUM_KEYS];
static unsigned char *kept[CHURN_THREADS * KEPT_PER_THREAD];
static _Atomic long destructors_run, destructors_bad;

static void key_destructor(void *v) {
    int ok = check(v);
    free(v);
    unsigned rng = 99;
    unsigned char *p = make_block(&rng); /* allocate and free after the pool's destructor */
    ok = ok && p && check(p);
    free(p);
    destructors_run++;
    destructors_bad += !ok;
}

static void *churn(void *arg) {
    unsigned idx = (unsigned)(uintptr_t)arg, rng = idx + 1000;
    for (int i = 0; i < KEPT_PER_THREAD; i++) kept[idx * KEPT_PER_THREAD + i] = make_block(&rng);
    for (int k = 0; k < NUM_KEYS; k += 13) /* keys 0, 13, 26, 39 */
        EXPECT(pthread_setspecific(keys[k], make_block(&rng)) == 0);
    return NULL;
}

/* ---- 3. fork -------------------------------------------------------------------- */

static void *child_thread(void *arg) {
    unsigned rng = 5;
    for (int i = 0; i < 200; i++) {
        unsigned char *p = make_block(&rng);
        EXPECT(check(p));
        free(p);
    }
    return arg;
}

static int run_child(int n) {
    /* Blocks allocated before the fork by threads this process does not have. */
    for (int i = n; i < CHURN_THREADS * KEPT_PER_THREAD; i += FORKS) {
        EXPECT(check(kept[i]));
        free(kept[i]);
        kept[i] = NULL;
    }
    pthread_t t;
    EXPECT(pthread_create(&t, NULL, child_thread, NULL) == 0);
    unsigned rng = 77;
    for (int i = 0; i < 300; i++) free(make_block(&rng));
    pthread_join(t, NULL);
    return failures == 0 ? 0 : 1;
}

int main(void) {
    /* libtlalloc.so exports the pool's API: say whether it is the malloc here. */
    fprintf(stderr, "preload_stress: pool malloc: %s\n",
            dlsym(RTLD_DEFAULT, "tl_pool_get_stats") ? "yes" : "no");
    for (int k = 0; k < NUM_KEYS; k++) EXPECT(pthread_key_create(&keys[k], key_destructor) == 0);

    pthread_t t[CHURN_THREADS];
    for (unsigned i = 0; i < CHURN_THREADS; i++) { /* four at a time */
        EXPECT(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)i) == 0);
        if (i % 4 == 3)
            for (unsigned j = i - 3; j <= i; j++) pthread_join(t[j], NULL);
    }
    int kept_ok = 0;
    for (int i = 0; i < CHURN_THREADS * KEPT_PER_THREAD; i++) kept_ok += kept[i] && check(kept[i]);
    printf("churn: %d threads exited, %d of %d blocks they left intact, %ld key destructors, %ld bad\n",
           CHURN_THREADS, kept_ok, CHURN_THREADS * KEPT_PER_THREAD, (long)destructors_run,
           (long)destructors_bad);
    fflush(stdout);

    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++) pthread_create(&cons[i], NULL, consumer, NULL);
    for (int i = 0; i < PRODUCERS; i++) pthread_create(&prod[i], NULL, producer, (void *)(uintptr_t)i);

    int children_ok = 0;
    for (int n = 0; n < FORKS; n++) { /* while producers and consumers run */
        usleep(20000);
        pid_t pid = fork();
        if (pid == 0) exit(run_child(n)); /* atexit handlers and all, on the child's malloc */
        int st = 0;
        EXPECT(pid > 0 && waitpid(pid, &st, 0) == pid);
        children_ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    for (int i = 0; i < PRODUCERS; i++) pthread_join(prod[i], NULL);
    for (int i = 0; i < CONSUMERS; i++) pthread_join(cons[i], NULL);
    printf("producers/consumers: %ld blocks passed between threads, %ld bad\n", consumed, consumed_bad);
    printf("fork: %d of %d children ran cleanly\n", children_ok, FORKS);
    for (int i = 0; i < CHURN_THREADS * KEPT_PER_THREAD; i++) free(kept[i]);
    printf("failures: %ld\n", (long)failures);
    return failures == 0 && consumed_bad == 0 && children_ok == FORKS ? 0 : 1;
}
