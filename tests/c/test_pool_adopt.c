/* Who takes over a page whose owner exited (an abandoned page) when another
 * thread frees into it (as in mimalloc-bench's mstress at 2 threads).
 *
 * A thread that frees into an abandoned page adopts it only while its own
 * available pages of that class are few: then its later frees into the page
 * are local and it allocates from it. A thread with plenty of room in the
 * class leaves the page abandoned, and the next thread that needs a page of the
 * class adopts it and reuses its free blocks. Before the fix the long-lived
 * freeing thread adopted every such page and kept it for as long as one block
 * in it lived, while new threads took fresh pages from the depot: mstress's
 * peak RSS grew round after round (26 MiB against mimalloc's 15.7).
 *
 * Its own program: the abandoned lists are process-wide, and each test uses a
 * size class no other test here touches. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tl_test.h"
#include "tlalloc.h"

#define PAGE_SHIFT 16 /* small pages: 64 KiB, aligned to 64 KiB */
#define MAX_BLOCKS 1024

typedef struct {
    size_t size;
    int n;
    void *blocks[MAX_BLOCKS];
} work;

/* Allocate n blocks of `size`, then exit: the pages with live blocks are
 * abandoned by the thread's teardown. */
static void *allocate_and_exit(void *arg) {
    work *w = arg;
    for (int i = 0; i < w->n; i++) {
        w->blocks[i] = tl_pool_malloc(w->size);
        if (!w->blocks[i]) abort();
        memset(w->blocks[i], 0x5a, w->size);
    }
    return NULL;
}

static void run_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fn, arg) == 0);
    pthread_join(t, NULL);
}

static uintptr_t page_of(const void *p) { return (uintptr_t)p >> PAGE_SHIFT; }

/* A thread with no page of the class adopts the abandoned page on its first
 * free into it; its later frees there are local. */
static void test_free_adopts_when_short_of_pages(void) {
    static work w = {.size = 4096, .n = 32}; /* two pages of class 4096 */
    run_thread(allocate_and_exit, &w);
    tl_pool_stats before, after;
    tl_pool_get_stats(&before);
    for (int i = 0; i < w.n; i++) tl_pool_free(w.blocks[i]);
    tl_pool_get_stats(&after);
    CHECK(after.num_reclaimed_pages >= before.num_reclaimed_pages + 1);
    CHECK(after.num_cross_thread_frees == before.num_cross_thread_frees);
    CHECK(after.in_use_bytes == before.in_use_bytes - (uint64_t)w.n * 4096);
}

/* The page the freeing thread left abandoned goes to a thread that allocates. */
static void *allocate_one(void *arg) {
    void **out = arg;
    *out = tl_pool_malloc(2048);
    if (!*out) abort();
    memset(*out, 0x33, 2048);
    return NULL;
}

static void test_free_leaves_page_to_allocating_thread(void) {
    /* This thread: plenty of available pages of class 2048 (20 pages, each
     * with free blocks: every other block freed). */
    enum { MINE = 640 };
    static void *mine[MINE];
    for (int i = 0; i < MINE; i++) {
        mine[i] = tl_pool_malloc(2048);
        CHECK(mine[i] != NULL);
    }
    for (int i = 0; i < MINE; i += 2) tl_pool_free(mine[i]);

    /* Another thread fills two pages of the class and exits. */
    static work w = {.size = 2048, .n = 64};
    run_thread(allocate_and_exit, &w);
    uintptr_t pages[MAX_BLOCKS];
    int npages = 0;
    void *kept[MAX_BLOCKS];
    tl_pool_stats before, after;
    tl_pool_get_stats(&before);
    /* Free all of its blocks but one per page (which keeps the page from
     * going back to the depot empty). */
    for (int i = 0; i < w.n; i++) {
        int seen = 0;
        for (int k = 0; k < npages; k++) seen |= pages[k] == page_of(w.blocks[i]);
        if (!seen) {
            pages[npages] = page_of(w.blocks[i]);
            kept[npages++] = w.blocks[i];
        } else {
            tl_pool_free(w.blocks[i]);
        }
    }
    tl_pool_get_stats(&after);
    CHECK(npages >= 2);
    /* Not adopted: every free was a push onto the abandoned page. */
    CHECK(after.num_reclaimed_pages == before.num_reclaimed_pages);
    CHECK(after.num_cross_thread_frees == before.num_cross_thread_frees + (uint64_t)(w.n - npages));

    /* A new thread allocating in the class adopts one of those pages and
     * reuses its free blocks, instead of taking a fresh page. */
    void *got = NULL;
    run_thread(allocate_one, &got);
    int reused = 0;
    for (int k = 0; k < npages; k++) reused |= pages[k] == page_of(got);
    CHECK(reused);
    tl_pool_stats later;
    tl_pool_get_stats(&later);
    CHECK(later.num_reclaimed_pages >= after.num_reclaimed_pages + 1);

    tl_pool_free(got);
    for (int k = 0; k < npages; k++) tl_pool_free(kept[k]);
    for (int i = 1; i < MINE; i += 2) tl_pool_free(mine[i]);
}

/* Pages left abandoned that the frees empty go back to the depot without a
 * tl_pool_collect: a thread that frees the blocks an exited worker left
 * behind, and never allocates in their class again, does not keep them all
 * resident (before the sweep, every one of them stayed until tl_pool_collect). */
static void test_emptied_abandoned_pages_go_back(void) {
    enum { MINE = 420 }; /* 10 pages of class 1536, every other block freed */
    static void *mine[MINE];
    for (int i = 0; i < MINE; i++) {
        mine[i] = tl_pool_malloc(1536);
        CHECK(mine[i] != NULL);
    }
    for (int i = 0; i < MINE; i += 2) tl_pool_free(mine[i]);

    static work w = {.size = 1536, .n = 42 * 12}; /* about 12 pages */
    run_thread(allocate_and_exit, &w);
    uintptr_t pages[MAX_BLOCKS];
    int npages = 0;
    for (int i = 0; i < w.n; i++) {
        int seen = 0;
        for (int k = 0; k < npages; k++) seen |= pages[k] == page_of(w.blocks[i]);
        if (!seen) pages[npages++] = page_of(w.blocks[i]);
    }
    CHECK(npages >= 10);
    tl_pool_stats before, after;
    tl_pool_get_stats(&before);
    for (int i = 0; i < w.n; i++) tl_pool_free(w.blocks[i]);
    tl_pool_get_stats(&after);
    CHECK(after.num_reclaimed_pages == before.num_reclaimed_pages); /* not adopted */
    /* All but the last page or two (emptied after the last sweep) are free
     * depot pages now, resident until the depot's retain limit. */
    CHECK(after.retained_bytes >= before.retained_bytes + (uint64_t)(npages - 2) * 32768);
    for (int i = 1; i < MINE; i += 2) tl_pool_free(mine[i]);
}

int main(void) {
    RUN(test_free_adopts_when_short_of_pages);
    RUN(test_free_leaves_page_to_allocating_thread);
    RUN(test_emptied_abandoned_pages_go_back);
    tl_pool_stats s;
    tl_pool_get_stats(&s);
    CHECK(s.in_use_bytes == 0);
    TEST_MAIN_END();
}
