/* tlalloc.h: the C core of tlalloc, one header for all of it. */
#ifndef TLALLOC_H
#define TLALLOC_H
#include "tlalloc/arena.h"
#include "tlalloc/os.h"
#include "tlalloc/scratch.h"
#include "tlalloc/kernels.h"
#include "tlalloc/pool.h"
#include "tlalloc/bench.h"
#include "tlalloc/huffman.h"
#endif
