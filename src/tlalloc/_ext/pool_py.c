/* pool_py.c: the Python binding of the size-class pool (tlalloc/pool.h).
 *
 * - pool_stats(): the pool's statistics as a dict (names as in docs/naming.md).
 * - pool_alloc(nbytes, align=16, zero=False) -> PoolBuffer: one pool block as a
 *   writable buffer, freed explicitly (free()) or when the object goes away.
 *   A PoolBuffer refuses to free or move its block while a memoryview or array
 *   uses it (BufferError), and a second free() is a ValueError, never a
 *   double free in the C pool.
 * - the NEP 49 data-memory handler that puts NumPy's array data on the pool
 *   (_numpy_pool_handler, a "mem_handler" capsule) and _numpy_set_handler(),
 *   which installs a handler for the current context (None: NumPy's default).
 * - _pool_configure / _pool_get_options / pool_collect / _pool_thread_release /
 *   pool_size_classes: settings and housekeeping (validated in tlalloc.pool).
 */
#include "binding.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ PoolBuffer */

typedef struct {
    PyObject_HEAD
    void *p;            /* NULL once freed */
    size_t nbytes;      /* requested size */
    size_t align;       /* kept across realloc */
    Py_ssize_t exports; /* live buffer views */
} TlPoolBuffer;

static PyTypeObject TlPoolBuffer_Type;

static int poolbuf_check_open(TlPoolBuffer *self, const char *what) {
    if (!self->p) {
        PyErr_Format(PyExc_ValueError, "cannot %s: this PoolBuffer was already freed", what);
        return -1;
    }
    if (self->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot %s a PoolBuffer while %zd memoryview(s) or array(s) use it", what,
                     self->exports);
        return -1;
    }
    return 0;
}

static void poolbuf_dealloc(TlPoolBuffer *self) {
    if (self->p) tl_pool_free(self->p); /* no export can be alive: views hold a reference */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Free-threaded CPython: a PoolBuffer's fields (p, nbytes, exports) are read
 * and written only under its critical section, so that two threads cannot free
 * (or free and export, or realloc and read) it at once, and a getter never
 * pairs a block with another block's size. With the GIL these are plain blocks.
 * Py_BEGIN_CRITICAL_SECTION opens a block and declares a variable; on 3.13 it
 * ends without a semicolon and is followed by a statement, hence the ";". */
#if defined(Py_GIL_DISABLED) && PY_VERSION_HEX >= 0x030D0000
#define TL_CS_BEGIN(o) Py_BEGIN_CRITICAL_SECTION(o);
#define TL_CS_END() Py_END_CRITICAL_SECTION();
#else
#define TL_CS_BEGIN(o) {
#define TL_CS_END() }
#endif

static int poolbuf_getbuffer_locked(TlPoolBuffer *self, Py_buffer *view, int flags) {
    if (!self->p) {
        PyErr_SetString(PyExc_ValueError, "this PoolBuffer was already freed");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->p, (Py_ssize_t)self->nbytes, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static int poolbuf_getbuffer(TlPoolBuffer *self, Py_buffer *view, int flags) {
    int rc;
    TL_CS_BEGIN(self)
    rc = poolbuf_getbuffer_locked(self, view, flags);
    TL_CS_END()
    return rc;
}

static void poolbuf_releasebuffer(TlPoolBuffer *self, Py_buffer *view) {
    (void)view;
    TL_CS_BEGIN(self)
    self->exports--;
    TL_CS_END()
}

static PyBufferProcs poolbuf_as_buffer = {
    (getbufferproc)poolbuf_getbuffer,
    (releasebufferproc)poolbuf_releasebuffer,
};

static PyObject *poolbuf_free(TlPoolBuffer *self, PyObject *Py_UNUSED(ignored)) {
    int rc;
    TL_CS_BEGIN(self)
    rc = poolbuf_check_open(self, "free");
    if (rc == 0) {
        tl_pool_free(self->p);
        self->p = NULL;
    }
    TL_CS_END()
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *poolbuf_realloc_locked(TlPoolBuffer *self, size_t n) {
    if (poolbuf_check_open(self, "realloc") < 0) return NULL;
    void *q;
    if (self->align <= 8 || (self->align <= TL_POOL_MIN_ALIGN && n >= TL_POOL_MIN_ALIGN)) {
        /* tl_pool_realloc: 16-byte aligned from 16 bytes on, 8 below; large
         * blocks grow without a copy (mremap). */
        q = tl_pool_realloc(self->p, n);
    } else if (n <= tl_pool_usable_size(self->p)) {
        q = self->p; /* fits: keep the block and its alignment */
    } else { /* tl_pool_realloc keeps 16-byte alignment from 16 bytes on only */
        q = tl_pool_aligned_alloc(self->align, n);
        if (q) {
            memcpy(q, self->p, self->nbytes < n ? self->nbytes : n);
            tl_pool_free(self->p);
        }
    }
    if (!q) return PyErr_Format(PyExc_MemoryError, "the pool cannot grow this block to %zu bytes", n);
    self->p = q;
    self->nbytes = n;
    Py_RETURN_NONE;
}

static PyObject *poolbuf_realloc(TlPoolBuffer *self, PyObject *arg) {
    size_t n;
    if (tl_arg_nbytes(arg, "nbytes", &n) < 0) return NULL;
    PyObject *r;
    TL_CS_BEGIN(self)
    r = poolbuf_realloc_locked(self, n);
    TL_CS_END()
    return r;
}

/* The live size: nbytes while the block is allocated, 0 once freed. */
static size_t poolbuf_size(TlPoolBuffer *self) {
    size_t n;
    TL_CS_BEGIN(self)
    n = self->p ? self->nbytes : 0;
    TL_CS_END()
    return n;
}

static PyObject *poolbuf_get_nbytes(TlPoolBuffer *self, void *Py_UNUSED(c)) {
    return PyLong_FromSize_t(poolbuf_size(self));
}
static PyObject *poolbuf_get_usable(TlPoolBuffer *self, void *Py_UNUSED(c)) {
    size_t n;
    TL_CS_BEGIN(self)
    n = self->p ? tl_pool_usable_size(self->p) : 0;
    TL_CS_END()
    return PyLong_FromSize_t(n);
}
static PyObject *poolbuf_get_address(TlPoolBuffer *self, void *Py_UNUSED(c)) {
    void *p;
    TL_CS_BEGIN(self)
    p = self->p;
    TL_CS_END()
    return PyLong_FromVoidPtr(p);
}
static PyObject *poolbuf_get_closed(TlPoolBuffer *self, void *Py_UNUSED(c)) {
    int closed;
    TL_CS_BEGIN(self)
    closed = self->p == NULL;
    TL_CS_END()
    return PyBool_FromLong(closed);
}

static PyObject *poolbuf_repr(TlPoolBuffer *self) {
    size_t n = 0, usable = 0;
    TL_CS_BEGIN(self)
    if (self->p) {
        n = self->nbytes;
        usable = tl_pool_usable_size(self->p);
    }
    TL_CS_END()
    if (!usable) return PyUnicode_FromString("<tlalloc.PoolBuffer freed>");
    return PyUnicode_FromFormat("<tlalloc.PoolBuffer nbytes=%zu usable_size=%zu>", n, usable);
}

static Py_ssize_t poolbuf_len(TlPoolBuffer *self) { return (Py_ssize_t)poolbuf_size(self); }

static PySequenceMethods poolbuf_as_sequence = {.sq_length = (lenfunc)poolbuf_len};

static PyMethodDef poolbuf_methods[] = {
    {"free", (PyCFunction)poolbuf_free, METH_NOARGS,
     "free()\n--\n\nGive the block back to the pool now. A second call raises ValueError;\n"
     "a call while a memoryview or array uses the block raises BufferError."},
    {"realloc", (PyCFunction)poolbuf_realloc, METH_O,
     "realloc(nbytes)\n--\n\nResize the block, keeping its contents up to the smaller size\n"
     "and its alignment."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef poolbuf_getset[] = {
    {"nbytes", (getter)poolbuf_get_nbytes, NULL, "Bytes requested (0 once freed).", NULL},
    {"usable_size", (getter)poolbuf_get_usable, NULL, "Bytes usable in the block (its size class).",
     NULL},
    {"address", (getter)poolbuf_get_address, NULL, "Address of the block (0 once freed).", NULL},
    {"closed", (getter)poolbuf_get_closed, NULL, "True once freed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TlPoolBuffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tlalloc.PoolBuffer",
    .tp_basicsize = sizeof(TlPoolBuffer),
    .tp_dealloc = (destructor)poolbuf_dealloc,
    .tp_repr = (reprfunc)poolbuf_repr,
    .tp_as_buffer = &poolbuf_as_buffer,
    .tp_as_sequence = &poolbuf_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One block of the tlalloc pool, as a writable buffer (see tlalloc.pool.alloc).",
    .tp_methods = poolbuf_methods,
    .tp_getset = poolbuf_getset,
};

static PyObject *py_pool_alloc(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"nbytes", "align", "zero", NULL};
    PyObject *nb_obj, *al_obj = NULL;
    int zero = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$p:pool_alloc", kwlist, &nb_obj, &al_obj,
                                     &zero))
        return NULL;
    size_t n, align = TL_POOL_MIN_ALIGN;
    if (tl_arg_nbytes(nb_obj, "nbytes", &n) < 0) return NULL;
    if (al_obj && tl_arg_align(al_obj, TL_POOL_MAX_ALIGN, &align) < 0) return NULL;
    TlPoolBuffer *self = PyObject_New(TlPoolBuffer, &TlPoolBuffer_Type);
    if (!self) return NULL;
    self->exports = 0;
    self->nbytes = n;
    self->align = align;
    self->p = tl_pool_aligned_alloc(align, n);
    if (!self->p) {
        Py_TYPE(self)->tp_free((PyObject *)self);
        return PyErr_Format(PyExc_MemoryError, "the pool cannot allocate nbytes=%zu", n);
    }
    if (zero) memset(self->p, 0, n);
    return (PyObject *)self;
}

/* ---------------------------------------------------------------- statistics */

static PyObject *py_pool_stats(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_pool_stats s;
    Py_BEGIN_ALLOW_THREADS
    tl_pool_get_stats(&s);
    Py_END_ALLOW_THREADS
    double hit = s.num_allocations
                     ? 1.0 - (double)s.num_cache_misses / (double)s.num_allocations
                     : 0.0;
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:d,s:K,s:K,s:K,s:K,s:K,s:K,s:N}",
        "in_use_bytes", (unsigned long long)s.in_use_bytes,
        "peak_bytes", (unsigned long long)s.peak_bytes,
        "reserved_bytes", (unsigned long long)s.reserved_bytes,
        "retained_bytes", (unsigned long long)s.retained_bytes,
        "num_allocations", (unsigned long long)s.num_allocations,
        "num_frees", (unsigned long long)s.num_frees,
        "num_cross_thread_frees", (unsigned long long)s.num_cross_thread_frees,
        "num_cache_misses", (unsigned long long)s.num_cache_misses,
        "num_depot_locks", (unsigned long long)s.num_depot_locks,
        "cache_hit_rate", hit,
        "num_large_allocations", (unsigned long long)s.num_large_allocations,
        "num_abandoned_pages", (unsigned long long)s.num_abandoned_pages,
        "num_reclaimed_pages", (unsigned long long)s.num_reclaimed_pages,
        "num_segments", (unsigned long long)s.num_segments,
        "num_heaps", (unsigned long long)s.num_heaps,
        "num_threads", (unsigned long long)s.num_threads,
        "cache_enabled", PyBool_FromLong(s.cache_enabled));
}

/* ---------------------------------------------------------- settings, upkeep */

/* Values validated by tlalloc.pool; the C checks (EINVAL) are the backstop. */
static PyObject *py_pool_configure(PyObject *Py_UNUSED(m), PyObject *args) {
    int cache;
    unsigned long long retain, large_cache, delay;
    if (!PyArg_ParseTuple(args, "pKKK:_pool_configure", &cache, &retain, &large_cache, &delay))
        return NULL;
    if (delay > TL_POOL_MAX_PURGE_DELAY_MS)
        return PyErr_Format(PyExc_ValueError, "purge_delay_ms=%llu is out of range", delay);
    tl_pool_options o = {.cache = cache,
                         .retain_bytes = (size_t)retain,
                         .large_cache_bytes = (size_t)large_cache,
                         .purge_delay_ms = (unsigned)delay};
    if (tl_pool_configure(&o) != 0) return PyErr_SetFromErrno(PyExc_ValueError);
    Py_RETURN_NONE;
}

static PyObject *py_pool_get_options(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_pool_options o;
    tl_pool_get_options(&o);
    return Py_BuildValue("{s:N,s:K,s:K,s:K}", "cache", PyBool_FromLong(o.cache), "retain_bytes",
                         (unsigned long long)o.retain_bytes, "large_cache_bytes",
                         (unsigned long long)o.large_cache_bytes, "purge_delay_ms",
                         (unsigned long long)o.purge_delay_ms);
}

/* Test-only introspection of the large-block cache (tl_pool_large_cache_info). */
static PyObject *py_pool_large_cache_info(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_pool_large_info i;
    tl_pool_large_cache_info(&i);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "cached_bytes",
                         (unsigned long long)i.cached_bytes, "resident_bytes",
                         (unsigned long long)i.resident_bytes, "num_cached",
                         (unsigned long long)i.num_cached, "num_purged",
                         (unsigned long long)i.num_purged, "mapped_bytes",
                         (unsigned long long)i.mapped_bytes, "num_purges",
                         (unsigned long long)i.num_purges, "num_reuses",
                         (unsigned long long)i.num_reuses);
}

static PyObject *py_pool_collect(PyObject *Py_UNUSED(m), PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"release_all", NULL};
    int all = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p:pool_collect", kwlist, &all)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    tl_pool_collect(all);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_pool_thread_release(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_pool_thread_release();
    Py_RETURN_NONE;
}

/* Start (True) or stop (False) the background purge thread; stopping waits
 * for it, without the GIL (it takes no Python object). */
static PyObject *py_pool_purge_thread(PyObject *Py_UNUSED(m), PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = tl_pool_purge_thread(on);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(tl_pool_purge_thread_running());
}

static PyObject *py_pool_size_classes(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    unsigned n = 0; /* the classes in use: up to TL_POOL_MAX_SMALL */
    while (n < TL_POOL_NUM_CLASSES && tl_pool_class_size(n) <= TL_POOL_MAX_SMALL) n++;
    PyObject *t = PyTuple_New(n);
    if (!t) return NULL;
    for (unsigned c = 0; c < n; c++) {
        PyObject *v = PyLong_FromSize_t(tl_pool_class_size(c));
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, c, v);
    }
    return t;
}

/* ------------------------------------------------------ NumPy (NEP 49) handler */

/* NumPy calls these with or without the GIL, from any thread: the pool is
 * thread-safe and frees may come from any thread, also after the allocating
 * thread exited or after the handler was uninstalled (each array keeps a
 * reference to the handler it was allocated with). */
static void *tl_np_malloc(void *ctx, size_t size) {
    (void)ctx;
    return tl_pool_malloc(size);
}
static void *tl_np_calloc(void *ctx, size_t n, size_t size) {
    (void)ctx;
    return tl_pool_calloc(n, size);
}
static void *tl_np_realloc(void *ctx, void *p, size_t size) {
    (void)ctx;
    return tl_pool_realloc(p, size);
}
static void tl_np_free(void *ctx, void *p, size_t size) {
    (void)ctx;
    (void)size;
    tl_pool_free(p);
}

static PyDataMem_Handler tl_np_handler = {
    "tlalloc_pool",
    1,
    {NULL, tl_np_malloc, tl_np_calloc, tl_np_realloc, tl_np_free},
};

static PyObject *py_numpy_set_handler(PyObject *Py_UNUSED(m), PyObject *h) {
    if (h == Py_None) return PyDataMem_SetHandler(NULL); /* NumPy's default */
    if (!PyCapsule_IsValid(h, "mem_handler"))
        return PyErr_Format(PyExc_TypeError,
                            "handler must be a 'mem_handler' capsule or None, got %R", h);
    return PyDataMem_SetHandler(h);
}

/* ------------------------------------------------------------------ module */

static PyMethodDef pool_methods[] = {
    {"pool_stats", (PyCFunction)py_pool_stats, METH_NOARGS,
     "pool_stats()\n--\n\nStatistics of the size-class pool, summed over every thread, as a dict."},
    {"pool_alloc", (PyCFunction)(void (*)(void))py_pool_alloc, METH_VARARGS | METH_KEYWORDS,
     "pool_alloc(nbytes, align=16, *, zero=False)\n--\n\nOne pool block as a PoolBuffer."},
    {"pool_collect", (PyCFunction)(void (*)(void))py_pool_collect, METH_VARARGS | METH_KEYWORDS,
     "pool_collect(*, release_all=False)\n--\n\n"
     "Return abandoned pages whose blocks were all freed, and free memory above the\n"
     "retention limit (all of it with release_all), to the OS."},
    {"pool_size_classes", (PyCFunction)py_pool_size_classes, METH_NOARGS,
     "pool_size_classes()\n--\n\nThe pool's block sizes, smallest first."},
    {"_pool_configure", (PyCFunction)py_pool_configure, METH_VARARGS, NULL},
    {"_pool_get_options", (PyCFunction)py_pool_get_options, METH_NOARGS, NULL},
    {"_pool_large_cache_info", (PyCFunction)py_pool_large_cache_info, METH_NOARGS, NULL},
    {"_pool_thread_release", (PyCFunction)py_pool_thread_release, METH_NOARGS, NULL},
    {"_pool_purge_thread", (PyCFunction)py_pool_purge_thread, METH_O, NULL},
    {"_numpy_set_handler", (PyCFunction)py_numpy_set_handler, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int tl_py_pool_init(PyObject *m) {
    if (PyType_Ready(&TlPoolBuffer_Type) < 0) return -1;
    if (PyModule_AddFunctions(m, pool_methods) < 0) return -1;
    Py_INCREF(&TlPoolBuffer_Type);
    if (PyModule_AddObject(m, "PoolBuffer", (PyObject *)&TlPoolBuffer_Type) < 0) {
        Py_DECREF(&TlPoolBuffer_Type);
        return -1;
    }
    PyObject *cap = PyCapsule_New(&tl_np_handler, "mem_handler", NULL);
    if (!cap || PyModule_AddObject(m, "_numpy_pool_handler", cap) < 0) {
        Py_XDECREF(cap);
        return -1;
    }
#ifdef TLALLOC_DEBUG
    PyObject *dbg = Py_True;
#else
    PyObject *dbg = Py_False;
#endif
    Py_INCREF(dbg);
    if (PyModule_AddObject(m, "_pool_debug", dbg) < 0) {
        Py_DECREF(dbg);
        return -1;
    }
    if (PyModule_AddIntConstant(m, "POOL_MAX_ALIGN", (long)TL_POOL_MAX_ALIGN) < 0) return -1;
    if (PyModule_AddIntConstant(m, "POOL_DEFAULT_RETAIN", (long)TL_POOL_DEFAULT_RETAIN) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "POOL_DEFAULT_LARGE_CACHE", (long)TL_POOL_DEFAULT_LARGE_CACHE) < 0 ||
        PyModule_AddIntConstant(m, "POOL_MAX_LARGE_CACHE", (long)TL_POOL_MAX_LARGE_CACHE) < 0 ||
        PyModule_AddIntConstant(m, "POOL_DEFAULT_PURGE_DELAY_MS", (long)TL_POOL_DEFAULT_PURGE_DELAY_MS) < 0 ||
        PyModule_AddIntConstant(m, "POOL_MAX_PURGE_DELAY_MS", (long)TL_POOL_MAX_PURGE_DELAY_MS) < 0)
        return -1;
    return 0;
}
