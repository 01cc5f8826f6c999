/* tlalloc.h: the C API of tlalloc's core, one header for all of it: arenas,
 * kernel scratch, the kernels and the pool. */
#ifndef TLALLOC_H
#define TLALLOC_H
#include "tlalloc/arena.h"
#include "tlalloc/scratch.h"
#include "tlalloc/kernels.h"
#include "tlalloc/pool.h"
#endif
