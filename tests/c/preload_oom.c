/* A program that a malloc must serve under a memory limit as the C library's
 * does (tests/test_preload.py runs it on both, with RLIMIT_AS set as by
 * `ulimit -v 1000000`, and compares what it prints):
 *
 *   preload_oom limit  500,000 blocks of 1,000 B, all freed, a second's pause
 *                      with no call, then 700 blocks of 1 MiB and a thread:
 *                      the memory freed must be found again when the limit
 *                      is reached;
 *   preload_oom huge   malloc and calloc of 64 TiB: NULL with ENOMEM where
 *                      the kernel's overcommit policy refuses it.
 *
 * Plain C on purpose: it must not know which malloc it runs on. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *thread_main(void *arg) {
    void *p = malloc(1000); /* the new thread's first allocation */
    free(p);
    return arg;
}

static int limit_case(void) {
    enum { N = 500000, M = 700 };
    static void *small[N], *big[M];
    for (int i = 0; i < N; i++) {
        if (!(small[i] = malloc(1000))) {
            printf("block %d of 1000 B: NULL\n", i);
            return 1;
        }
        memset(small[i], 1, 1000);
    }
    for (int i = 0; i < N; i++) free(small[i]);
    sleep(1);
    int ok = 0, err = 0;
    for (int i = 0; i < M; i++) {
        if ((big[i] = malloc(1 << 20)) != NULL) {
            memset(big[i], 2, 1 << 20);
            ok++;
        } else {
            err = errno;
        }
    }
    printf("blocks of 1 MiB: %d of %d%s\n", ok, M, err ? " (ENOMEM)" : "");
    pthread_t t;
    int rc = pthread_create(&t, NULL, thread_main, NULL);
    printf("pthread_create: %s\n", rc == 0 ? "ok" : strerror(rc));
    if (rc == 0) pthread_join(t, NULL);
    for (int i = 0; i < M; i++) free(big[i]);
    /* And small blocks again. */
    int again = 0;
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(1000);
        again += p != NULL;
        free(p);
    }
    printf("blocks of 1000 B afterwards: %d of 1000\n", again);
    return 0;
}

static int huge_case(void) {
    size_t huge = (size_t)1 << 46;
    errno = 0;
    void *p = malloc(huge);
    int e1 = errno;
    errno = 0;
    void *q = calloc(1, huge);
    int e2 = errno;
    printf("malloc of 64 TiB: %s\n", p ? "a pointer" : e1 == ENOMEM ? "NULL, ENOMEM" : "NULL, other errno");
    printf("calloc of 64 TiB: %s\n", q ? "a pointer" : e2 == ENOMEM ? "NULL, ENOMEM" : "NULL, other errno");
    free(p);
    free(q);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "limit") == 0) return limit_case();
    if (argc == 2 && strcmp(argv[1], "huge") == 0) return huge_case();
    fprintf(stderr, "usage: preload_oom limit|huge\n");
    return 2;
}
