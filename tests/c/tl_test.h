/* tl_test.h: a minimal test harness for the C core's unit tests. */
#ifndef TL_TEST_H
#define TL_TEST_H
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

/* Atomic: CHECK may be used from several threads (and runs under TSan). */
static _Atomic int tl_test_failures;
static _Atomic int tl_test_checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        tl_test_checks++;                                                              \
        if (!(cond)) {                                                                 \
            tl_test_failures++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
        }                                                                              \
    } while (0)

#define RUN(test)                                                                      \
    do {                                                                               \
        int before_ = tl_test_failures;                                                \
        test();                                                                        \
        printf("%s %s\n", tl_test_failures == before_ ? "ok  " : "FAIL", #test);      \
    } while (0)

#define TEST_MAIN_END()                                                                \
    do {                                                                               \
        printf("%d checks, %d failed\n", atomic_load(&tl_test_checks),                \
               atomic_load(&tl_test_failures));                                        \
        return atomic_load(&tl_test_failures) ? 1 : 0;                                 \
    } while (0)

/* Minor page faults of the process so far. */
static inline long minflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* Resident bytes of the process now (/proc/self/statm; 0 if unreadable). */
static inline size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, res = 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}
#endif
