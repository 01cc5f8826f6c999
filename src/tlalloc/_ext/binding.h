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
int tl_py_args_init(PyObject *m);   /* args.c */
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

/* ---- argument rules (args.c): each returns 0, or -1 with TypeError or
 * ValueError set naming the argument and the value ---- */
/* A size as text ("4MiB", "1.5KB"): tl_parse_size, the C library's parser. */
int tl_arg_size_text(PyObject *text, const char *name, uint64_t *out);
/* A byte count: an int (operator.index, not bool), 0 .. PTRDIFF_MAX. */
int tl_arg_nbytes(PyObject *obj, const char *name, size_t *out);
/* An alignment: an int (operator.index, not bool), a power of two, 1 .. max. */
int tl_arg_align(PyObject *obj, size_t max, size_t *out);
/* A count (threads, block size, top_k): an int (operator.index, not bool), lo .. hi. */
int tl_arg_count(PyObject *obj, const char *name, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t *out);
/* A flag given in Python: True or False (bool or numpy.bool_); NULL or None
 * leaves *out unchanged. */
int tl_arg_flag(PyObject *v, const char *name, int *out);
/* A choice: a str equal to one of names[0..n-1], *out its index; NULL or
 * None leaves *out unchanged. */
int tl_arg_choice(PyObject *v, const char *name, const char *const *names, int n, int *out);
/* An arena's capacity: an int or a size as text, TL_ARENA_MIN_CAPACITY ..
 * TL_ARENA_MAX_CAPACITY; NULL or None leaves *out unchanged. */
int tl_arg_capacity(PyObject *v, size_t *out);
/* NumPy's rules: a shape (an int or a sequence of them, each >= 0), its bytes
 * (at most NPY_MAX_INTP), a dtype (None: float64; no object references), an
 * order ('C' or 'F'; with keep, 'A' and 'K' give 2: follow the prototype). */
int tl_arg_shape(PyObject *shape, npy_intp *dims, int *nd);
int tl_arg_shape_nbytes(const npy_intp *dims, int nd, size_t itemsize, PyObject *shape,
                        size_t *out);
PyArray_Descr *tl_arg_dtype(PyObject *dtype);
int tl_arg_order(PyObject *order, int *fortran, int keep);

/* Exceptions defined in arena_py.c (module attributes of the same names). */
extern PyObject *tl_ArenaOverflowError;
extern PyObject *tl_ArenaFallbackWarning;

#endif
