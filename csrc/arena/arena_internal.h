/* arena/arena_internal.h: what the arena's files share beyond the public
 * tlalloc/arena.h (not installed). */
#ifndef TLALLOC_ARENA_INTERNAL_H
#define TLALLOC_ARENA_INTERNAL_H

#include "tlalloc/arena.h"

/* Unlink a thread arena from the registry and fold its counters into the
 * totals of released arenas (thread.c): called by tl_arena_release (arena.c)
 * when a thread arena's last reference goes. */
void tl_registry_retire(tl_arena *a);

#endif
