/* pool_fork.c: the pool's places in the core's fork lock order (platform/fork.c):
 * the heap registry and depot locks (pool.c), then the large-block cache's
 * (pool_large.c). */
#include "platform/fork.h"
#include "pool_internal.h"

static const tl_fork_hooks tl_pool_fork_hooks = {tl_pool_fork_lock, tl_pool_fork_unlock,
                                                 tl_pool_fork_child};
static const tl_fork_hooks tl_large_fork_hooks = {tl_large_fork_lock, tl_large_fork_unlock,
                                                  tl_large_fork_child};

void tl_pool_fork_register(void) {
    tl_fork_register(TL_FORK_POOL, &tl_pool_fork_hooks);
    tl_fork_register(TL_FORK_POOL_LARGE, &tl_large_fork_hooks);
}

#if defined(__GNUC__) || defined(__clang__)
/* At load time, so that a fork before any thread's first heap (while another
 * thread already holds, say, the depot lock for statistics) is covered too. */
__attribute__((constructor)) static void tl_pool_fork_at_load(void) { tl_pool_fork_register(); }
#endif
