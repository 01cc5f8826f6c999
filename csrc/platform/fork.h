/* platform/fork.h: the core's fork handlers and the one order of its locks
 * (platform/fork.c; not installed).
 *
 * fork() copies only the calling thread. A lock another thread held at that
 * moment would stay held in the child forever, so the prepare handler takes
 * every lock of the core and the parent and child handlers release them. Each
 * subsystem that owns such locks registers its hooks here, in the slot of its
 * place in the order below; fork.c calls them, and no subsystem calls another's.
 * fork.c lists every lock of the core in that order and says why it is safe.
 */
#ifndef TLALLOC_PLATFORM_FORK_H
#define TLALLOC_PLATFORM_FORK_H

/* The lock order, outer first: prepare calls the lock hooks in this order,
 * parent and child the unlock hooks in the reverse one. */
typedef enum tl_fork_rank {
    TL_FORK_SCRATCH = 0,       /* arena/scratch.c: the shared-scratch lock */
    TL_FORK_THREAD_ARENAS = 1, /* arena/thread.c: thread-arena options, then registry */
    TL_FORK_POOL = 2,          /* pool/pool.c: heap registry, then depot */
    TL_FORK_POOL_LARGE = 3,    /* pool/pool_large.c: the large-block cache */
    TL_FORK_NUM_RANKS
} tl_fork_rank;

typedef struct tl_fork_hooks {
    void (*lock)(void);   /* prepare: take the subsystem's locks, outer first */
    void (*unlock)(void); /* parent and child: release them */
    void (*child)(void);  /* child, every lock usable again: repair what the
                             threads that fork did not copy left (NULL: nothing) */
} tl_fork_hooks;

/* Put `hooks` (static storage) in the slot `rank`, and register the handlers
 * with pthread_atfork if not done yet. Idempotent: every subsystem calls it at
 * load time and again on its first use, before taking any of its locks. */
void tl_fork_register(tl_fork_rank rank, const tl_fork_hooks *hooks);
/* Register the handlers with pthread_atfork (once; also done at load time). */
void tl_fork_init(void);

#endif
