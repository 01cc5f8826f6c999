/* alloc: ns per allocation and aggregate throughput of 64-byte requests for the
 * thread-local arena, one mutex-protected shared arena, and malloc/free.
 *
 *   build/c/bench/alloc [--allocs N] [--size BYTES] [--threads 1,2,4,16,32] [--json PATH]
 *
 * The same loop is what `tlalloc bench alloc` runs through the extension. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_alloc.h"
#include "tlalloc.h"

static const char *names[] = {"thread", "shared", "malloc"};

int main(int argc, char **argv) {
    unsigned long long allocs = 5000000;
    size_t size = 64;
    int threads[32] = {1, 2, 4, 16, 32};
    int nt = 5;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--allocs") && i + 1 < argc) allocs = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            nt = 0;
            for (char *s = strtok(argv[++i], ","); s && nt < 32; s = strtok(NULL, ",")) threads[nt++] = atoi(s);
        } else {
            fprintf(stderr, "usage: %s [--allocs N] [--size BYTES] [--threads 1,2,4] [--json PATH]\n", argv[0]);
            return 2;
        }
    }
    tl_bench_result r[32][3];
    printf("64-byte allocations: %llu per thread, size %zu, %ld online CPUs\n", allocs, size,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-8s %-8s %12s %16s %14s\n", "threads", "strategy", "ns/alloc", "allocs/s (agg)",
           "vs thread");
    for (int t = 0; t < nt; t++) {
        for (int s = 0; s < 3; s++) {
            if (tl_bench_alloc((tl_bench_strategy)s, threads[t], allocs, size, &r[t][s]) != 0) {
                perror("tl_bench_alloc");
                return 1;
            }
        }
        for (int s = 0; s < 3; s++)
            printf("%-8d %-8s %12.2f %16.0f %13.2fx\n", threads[t], names[s], r[t][s].ns_per_alloc,
                   r[t][s].allocs_per_second, r[t][s].ns_per_alloc / r[t][0].ns_per_alloc);
    }
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\"allocs_per_thread\": %llu, \"size\": %zu, \"results\": [\n", allocs, size);
        for (int t = 0; t < nt; t++)
            for (int s = 0; s < 3; s++)
                fprintf(f, "  {\"threads\": %d, \"strategy\": \"%s\", \"ns_per_alloc\": %.4f, "
                           "\"allocs_per_second\": %.1f}%s\n",
                        threads[t], names[s], r[t][s].ns_per_alloc, r[t][s].allocs_per_second,
                        (t == nt - 1 && s == 2) ? "" : ",");
        fprintf(f, "]}\n");
        fclose(f);
    }
    return 0;
}
