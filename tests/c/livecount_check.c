/* livecount_check.c: run under liblivecount.so (bench/c/lib/livecount.c), alone
 * or before libtlalloc.so in LD_PRELOAD, with TLALLOC_LIVE_FILE set (`make
 * test`, tests/test_livecount.py). Holds known amounts of memory at known
 * times and checks, after each, the peak the library wrote to the file:
 *
 * 0. 1,000 threads, one at a time, that each allocate 16 KiB (less than a
 *    thread folds at once) and exit; main holds them all, then frees them:
 *    about 16 MiB (the exits fold the threads' counts);
 * 1. a buffer grown by realloc to 24 MiB, then freed: peak about 24 MiB;
 * 2. four threads that hold 8 MiB each at once (calloc, posix_memalign,
 *    aligned_alloc, memalign), then free them and exit: about 32 MiB;
 * 3. a forked child that holds 48 MiB and exits: about 48 MiB, the largest
 *    peak of the two processes.
 *
 * The library counts usable sizes, so the expected peaks are the blocks'
 * malloc_usable_size (an allocator may round 24 MiB up, or pad an aligned
 * block); within them, stdio holds a few KiB and each thread folds its count
 * into the process's every 64 KiB. Exit status 0 and
 * "livecount: 4 peaks right" on success; the first wrong peak fails it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

static const char *peak_file;
static pthread_barrier_t held;

static uint64_t read_peak(void) {
    FILE *f = fopen(peak_file, "rb");
    uint64_t v = 0;
    if (!f || fread(&v, sizeof v, 1, f) != 1) {
        fprintf(stderr, "livecount_check: cannot read 8 bytes of %s\n", peak_file);
        exit(1);
    }
    fclose(f);
    return v;
}

/* The peak must be `usable` bytes, give or take: below, at most 64 KiB
 * unfolded per thread (5 here); above, what the C library holds (stdio
 * buffers, thread bookkeeping). */
static void expect_peak(const char *what, uint64_t usable) {
    uint64_t v = read_peak();
    uint64_t lo = usable - 512 * 1024, hi = usable + 2 * MIB;
    if (v < lo || v > hi) {
        fprintf(stderr, "livecount_check: %s: peak %llu bytes, expected %llu to %llu\n", what,
                (unsigned long long)v, (unsigned long long)lo, (unsigned long long)hi);
        exit(1);
    }
    printf("%s: right\n", what);
}

static _Atomic uint64_t held_usable; /* phase 2: the four blocks' usable sizes */

#define SHORT_THREADS 1000
#define SHORT_BYTES (16 * 1024)

static void *short_lived(void *arg) {
    void *p = malloc(SHORT_BYTES);
    if (p) memset(p, 3, SHORT_BYTES);
    *(void **)arg = p;
    return NULL;
}

static void *holder(void *arg) {
    int i = (int)(intptr_t)arg;
    void *p = NULL;
    switch (i) {
    case 0: p = calloc(8, MIB); break;
    case 1:
        if (posix_memalign(&p, 4096, 8 * MIB) != 0) p = NULL;
        break;
    case 2: p = aligned_alloc(64, 8 * MIB); break;
    default: p = memalign(1 << 16, 8 * MIB); break;
    }
    if (!p) {
        fprintf(stderr, "livecount_check: thread %d: allocation failed\n", i);
        exit(1);
    }
    memset(p, i, 8 * MIB);
    held_usable += malloc_usable_size(p);
    pthread_barrier_wait(&held); /* all four hold theirs */
    pthread_barrier_wait(&held); /* main has read the peak */
    free(p);
    return NULL;
}

int main(void) {
    peak_file = getenv("TLALLOC_LIVE_FILE");
    if (!peak_file) {
        fprintf(stderr, "livecount_check: run it with TLALLOC_LIVE_FILE set, under liblivecount.so\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0); /* no buffer to hold through fork */

    /* 0. short-lived threads whose blocks main frees */
    static void *kept[SHORT_THREADS];
    uint64_t kept_usable = 0;
    for (int i = 0; i < SHORT_THREADS; i++) {
        pthread_t st;
        if (pthread_create(&st, NULL, short_lived, &kept[i]) != 0 || pthread_join(st, NULL) != 0 || !kept[i])
            return 1;
        kept_usable += malloc_usable_size(kept[i]);
    }
    for (int i = 0; i < SHORT_THREADS; i++) free(kept[i]);
    expect_peak("1,000 threads x 16 KiB, freed by main", kept_usable);

    /* 1. realloc growth */
    char *buf = NULL;
    for (size_t n = 4096; n <= 24 * MIB; n += n / 2 < 4096 ? 4096 : n / 2) {
        char *q = realloc(buf, n);
        if (!q) return 1;
        buf = q;
        buf[n - 1] = 1;
    }
    buf = realloc(buf, 24 * MIB);
    if (!buf) return 1;
    memset(buf, 1, 24 * MIB);
    uint64_t usable = malloc_usable_size(buf);
    free(buf);
    expect_peak("realloc to 24 MiB", usable);

    /* 2. four threads at once */
    pthread_t t[4];
    pthread_barrier_init(&held, NULL, 5);
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, holder, (void *)(intptr_t)i);
    pthread_barrier_wait(&held); /* each 8 MiB block was folded in at once */
    pthread_barrier_wait(&held);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&held);
    expect_peak("4 threads x 8 MiB", held_usable);

    /* 3. a child of fork */
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        char *c = malloc(48 * MIB);
        if (!c) _exit(1);
        memset(c, 2, 48 * MIB);
        uint64_t u = malloc_usable_size(c);
        free(c);
        _exit(write(fds[1], &u, sizeof u) == sizeof u ? 0 : 1);
    }
    uint64_t child_usable = 0;
    if (read(fds[0], &child_usable, sizeof child_usable) != sizeof child_usable) return 1;
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
    expect_peak("child of fork, 48 MiB", child_usable);
    printf("livecount: 4 peaks right\n");
    return 0;
}
