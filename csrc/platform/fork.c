/* platform/fork.c: the core's pthread_atfork handlers. They take the locks of
 * every subsystem that registered (platform/fork.h) before fork, release them
 * after, and let each subsystem repair its state in the child (what a child
 * keeps: docs/threads.md, "Fork").
 *
 * Prepare takes the locks in the one order in which any thread ever nests them
 * (outer first); this list is that order, and no code may take a lock of the
 * list while holding a later one:
 *
 *   1. the shared-scratch lock (arena/scratch.c), held while reading the
 *      options (2) when the shared arena is created;
 *   2. the thread-arena options lock (arena/thread.c);
 *   3. the thread-arena registry lock (arena/thread.c);
 *   4. the pool's heap registry lock (pool/pool.c);
 *   5. the pool's depot lock (pool/pool.c, used by pool/pool_depot.c);
 *   6. the pool's large-block cache lock (pool/pool_large.c).
 *
 * Each slot of tl_fork_rank takes one subsystem's locks of this list (slot
 * TL_FORK_THREAD_ARENAS takes 2 then 3, TL_FORK_POOL 4 then 5).
 *
 * Locks 3 to 6 are never held while another lock is taken (tl_pool_get_stats
 * and a heap's teardown take 4 and 5 one after the other, never nested), and
 * no code under any of them calls back into user code, so a thread holding one
 * always releases it without waiting on the forking thread. The C library
 * takes its malloc locks after these handlers ran, so malloc under our locks
 * (arena creation) cannot deadlock against prepare either.
 *
 * Locks that need no handler: the Huffman coder's (demo/huffman.c,
 * demo/huffman_heap.c) belong to one encode or decode call and the worker
 * threads it starts; a child does not have those threads and never touches the
 * call's objects. The once-controls are pthread_once, whose glibc
 * implementation restarts, in a child, an initialisation that a thread missing
 * there left in progress.
 *
 * After the locks are usable again, the child repairs the state the missing
 * threads left, slot by slot in the order above: the shared scratch arena
 * forgets the other threads' open brackets, the arena registry lists only the
 * forking thread as alive (the other threads' references are dropped as at
 * their exit), and the other threads' pool caches are torn down as at their
 * exit (pool.c).
 *
 * Registration. Every subsystem registers at load time (a constructor) and
 * again on its first use, before it takes a lock of the list; a slot only ever
 * goes from empty to its hooks. Prepare records which slots it locked, in the
 * forking thread's own variable, so that parent and child release exactly
 * those even if a slot filled in between.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "platform/fork.h"

/* Defined here, not in the pool, because tl_fork_setup below sets it too (see
 * internal.h), and this layer depends on no subsystem. */
_Thread_local int tl_pool_bootstrapping TL_TLS_MODEL;

static const tl_fork_hooks *_Atomic tl_fork_slots[TL_FORK_NUM_RANKS];
/* Slots whose locks the prepare handler of this thread's fork took (bit i:
 * slot i). Thread-local: the child is a copy of the forking thread. */
static _Thread_local unsigned tl_fork_locked TL_TLS_MODEL;

static const tl_fork_hooks *tl_fork_slot(int i) {
    return atomic_load_explicit(&tl_fork_slots[i], memory_order_acquire);
}

static void tl_fork_prepare(void) {
    unsigned locked = 0;
    for (int i = 0; i < TL_FORK_NUM_RANKS; i++) {
        const tl_fork_hooks *h = tl_fork_slot(i);
        if (!h) continue;
        h->lock();
        locked |= 1u << i;
    }
    tl_fork_locked = locked;
}

static void tl_fork_parent(void) {
    unsigned locked = tl_fork_locked;
    tl_fork_locked = 0;
    for (int i = TL_FORK_NUM_RANKS - 1; i >= 0; i--)
        if (locked & (1u << i)) tl_fork_slot(i)->unlock();
}

/* In the child: the forking thread is the only thread. */
static void tl_fork_child(void) {
    unsigned locked = tl_fork_locked;
    tl_fork_parent(); /* release all locks: the forking thread holds them */
    for (int i = 0; i < TL_FORK_NUM_RANKS; i++)
        if ((locked & (1u << i)) && tl_fork_slot(i)->child) tl_fork_slot(i)->child();
}

static pthread_once_t tl_fork_once = PTHREAD_ONCE_INIT;

/* pthread_atfork may allocate (glibc grows its handler list with malloc), and
 * holds its own lock meanwhile: when the pool is the process's malloc, that
 * malloc must not come back here to register again (tl_pool_bootstrapping). */
static void tl_fork_setup(void) {
    tl_pool_bootstrapping++;
    (void)pthread_atfork(tl_fork_prepare, tl_fork_parent, tl_fork_child);
    tl_pool_bootstrapping--;
}

void tl_fork_init(void) { pthread_once(&tl_fork_once, tl_fork_setup); }

void tl_fork_register(tl_fork_rank rank, const tl_fork_hooks *hooks) {
    tl_assert(rank < TL_FORK_NUM_RANKS && hooks && hooks->lock && hooks->unlock);
    tl_fork_init();
    /* After the first call, a load and a branch: no store to a line every
     * thread reads. */
    if (atomic_load_explicit(&tl_fork_slots[rank], memory_order_relaxed) != hooks)
        atomic_store_explicit(&tl_fork_slots[rank], hooks, memory_order_release);
}

#if defined(__GNUC__) || defined(__clang__)
/* At load time, so that a fork that happens before any subsystem's first use
 * is covered too; the subsystems register their slots at load time as well. */
__attribute__((constructor)) static void tl_fork_init_at_load(void) { tl_fork_init(); }
#endif
