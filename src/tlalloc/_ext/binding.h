/* binding.h: shared by the files of the extension module tlalloc._tlalloc.
 *
 * The extension is a thin binding over the C core (include/tlalloc.h). Each part
 * of the core has one binding file here that adds its functions and types to the
 * module in its init function, called from module.c.
 */
#ifndef TLALLOC_BINDING_H
#define TLALLOC_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* One NumPy C-API table for the whole extension; module.c imports it. */
#define PY_ARRAY_UNIQUE_SYMBOL tlalloc_ARRAY_API
#ifndef TL_BINDING_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "tlalloc.h"
#include "internal.h"
#include "bench_alloc.h"
#include "demo/huffman.h"
#include "platform/os.h"

/* Per-part init functions: add names to the module, return 0 or -1. */
int tl_py_arena_init(PyObject *m);   /* arena_py.c */
int tl_py_kernels_init(PyObject *m); /* kernels_py.c */
int tl_py_pool_init(PyObject *m);    /* pool_py.c */
int tl_py_huffman_init(PyObject *m); /* huffman_py.c */

/* The calling thread's C arena, created on first use and named after the
 * current Python thread. Returns NULL with MemoryError set on failure.
 * Kernels use this for their scratch memory. */
tl_arena *tl_py_thread_arena(void);

/* d[k] = o without interning k. PyDict_SetItemString interns its key, which
 * takes the lock of the interpreter's table of interned strings; on a
 * free-threaded build a fork can leave that lock held by a thread that does
 * not exist in the child, and the child would hang in the next statistics
 * call. Statistics keys are not hot: a plain string costs nothing noticeable. */
static inline int tl_dict_set(PyObject *d, const char *k, PyObject *o) {
    PyObject *key = PyUnicode_FromString(k);
    if (!key) return -1;
    int r = PyDict_SetItem(d, key, o);
    Py_DECREF(key);
    return r;
}

/* Exceptions defined in arena_py.c (module attributes of the same names). */
extern PyObject *tl_ArenaOverflowError;
extern PyObject *tl_ArenaFallbackWarning;

#endif
