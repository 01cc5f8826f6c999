/* arena_py.c: the Python binding of arenas: the region, scope and arena types
 * (tlalloc.Arena), their statistics and the module's arena functions
 * (thread_arena() and its per-thread objects: thread_arena_py.c).
 *
 * Safety model. Every array or memoryview handed out has, as its NumPy base, a
 * "region" object: one per open scope (plus one for allocations outside any
 * scope). The arena's scope stack holds exactly one reference to each open
 * region, so the number of live arrays from a region is Py_REFCNT(region) - 1:
 * O(1) per allocation (one incref) and O(1) to check. A region also retains the
 * C arena, so arrays keep the memory mapped after the arena object or its
 * thread is gone.
 *
 * When a scope ends while arrays from it are alive, the scope's memory is not
 * rewound: the region takes it (tl_arena_escape: the chunks it lies in stay
 * valid, and the arena goes on in a fresh chunk), leaves the stack, and lives
 * on as the arrays' base. When its last array dies, in whichever thread, the
 * region's deallocation gives the memory back (tl_arena_escape_release: a
 * lock-free push; the owner takes it at its next slow path). The parent scope
 * does not answer for it: its own release and reset() are not blocked by
 * escaped arrays. At the top of the stack (no scope open), the root region
 * collects every allocation; when the current chunk is full it is rewound if
 * none of its arrays is alive, or escapes like a scope, and a fresh root goes
 * on (arena_reroot). So no memory waits for a reset that a service never calls.
 *
 * Bound (README, "Escaped memory comes back"): the chunks in use are the
 * current one, the chunks where open scopes still have memory, and the chunks
 * held by live escaped regions; bytes in use <= live escaped bytes + bytes of
 * open scopes + capacity x (live escaped regions + 1); at most
 * TL_ARENA_SPARE_CHUNKS unused chunks stay mapped after the owner's next slow
 * path. Escaped memory does not count against the capacity.
 *
 * A BufferError names the live arrays (live_arrays.c) and says
 * that their memory comes back when they die.
 *
 * On free-threaded CPython a count taken this way needs more care: liveness.c.
 *
 * An arena belongs to the thread that created it; every method that changes
 * it checks the caller's thread id (a pthread_self compare) and raises
 * RuntimeError otherwise. Fields other threads may read (depth, used, stats)
 * are read and written with atomics.
 */
#include "arena_py.h"

#include <string.h>

PyObject *tl_ArenaOverflowError;
PyObject *tl_ArenaFallbackWarning;
/* Set once, while the module is imported (tlalloc/__init__.py), before any
 * other thread can use the module; read-only afterwards. */
PyObject *tl_arena_subtype;            /* Python subclass used for new arenas */
static int tl_hooks_set;

/* ---------------------------------------------------------------- regions */


/* Regions alive in the process: one atomic add per region made or freed (not
 * per array: scopes reuse a spare region). For tests: nothing may leak. */
static Py_ssize_t tl_regions_alive;

/* The last array of r is gone (in whichever thread dropped it): the memory
 * its scope handed over goes back to the arena, lock-free (tlalloc/arena.h). */
static void region_dealloc(TlRegion *r) {
    tl_arena_escape_release(&r->esc);
    Py_CLEAR(r->tracked);
    tl_arena_release(r->a);
    PyObject_Free(r);
    __atomic_fetch_sub(&tl_regions_alive, 1, __ATOMIC_RELAXED);
}

static TlRegion *region_new(tl_arena *a) {
    TlRegion *r = PyObject_New(TlRegion, &TlRegion_Type);
    if (!r) return NULL;
    tl_py_share((PyObject *)r);
    __atomic_fetch_add(&tl_regions_alive, 1, __ATOMIC_RELAXED);
    tl_arena_retain(a);
    r->a = a;
    r->mark = tl_arena_mark(a);
    memset(&r->esc, 0, sizeof r->esc);
    r->tracked = NULL;
    return r;
}

/* Arrays and memoryviews that still use r, given that the caller's
 * structures hold `held` references to r. */
static inline Py_ssize_t region_live(TlRegion *r, Py_ssize_t held) {
    return Py_REFCNT(r) - held;
}

/* Double a PyMem array of pointers (or start it at `first` entries). Returns
 * the new array, or NULL with MemoryError set (the old one is kept). */
static void *grow_pointer_array(void *arr, Py_ssize_t *cap, Py_ssize_t first) {
    Py_ssize_t c = *cap ? 2 * *cap : first;
    void *p = PyMem_Realloc(arr, (size_t)c * sizeof(void *));
    if (!p) return PyErr_NoMemory();
    *cap = c;
    return p;
}

PyTypeObject TlRegion_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tlalloc._tlalloc._Region",
    .tp_basicsize = sizeof(TlRegion),
    .tp_dealloc = (destructor)region_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Owner of arena memory handed out in one scope (internal).",
};

/* ---------------------------------------------------------------- arenas */

static PyTypeObject TlArena_Type;

/* A number no other thread of this process ever gets: thread idents
 * (pthread_self) are reused as soon as a thread has exited, so a new thread
 * could pass for the dead owner of an arena object that outlived it. One TLS
 * read once set. */
static _Thread_local uint64_t tl_serial;
static uint64_t tl_serial_next;
TL_NOINLINE static uint64_t tl_thread_serial_slow(void) {
    tl_serial = __atomic_add_fetch(&tl_serial_next, 1, __ATOMIC_RELAXED);
    return tl_serial;
}
static inline uint64_t tl_thread_serial(void) {
    uint64_t s = tl_serial;
    return TL_LIKELY(s != 0) ? s : tl_thread_serial_slow();
}
uint64_t tl_py_thread_serial(void) { return tl_thread_serial(); }

static inline int arena_check_owner(TlArena *self) {
    if (TL_LIKELY(self->owner_serial == tl_thread_serial())) return 0;
    PyErr_Format(PyExc_RuntimeError,
                 "this arena belongs to another thread (created by thread %lu, used from "
                 "thread %lu); arenas are not shared between threads: use "
                 "tlalloc.thread_arena() in each thread or create one Arena per thread",
                 self->owner, PyThread_get_thread_ident());
    return -1;
}

static int arena_push(TlArena *self, TlRegion *r) {
    if (self->depth == self->cap) {
        TlRegion **p = grow_pointer_array(self->stack, &self->cap, 8);
        if (!p) return -1;
        self->stack = p;
    }
    self->stack[self->depth] = r;
    __atomic_store_n(&self->depth, self->depth + 1, __ATOMIC_RELAXED);
    return 0;
}

PyObject *arena_wrap(PyTypeObject *type, tl_arena *a, int is_thread) {
    TlArena *self = (TlArena *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->a = a; /* reference transferred by the caller */
    self->owner = PyThread_get_thread_ident();
    self->owner_serial = tl_thread_serial();
    self->is_thread = is_thread;
    TlRegion *root = region_new(a);
    if (!root || arena_push(self, root) < 0) {
        Py_XDECREF((PyObject *)root);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int arena_traverse(TlArena *self, visitproc visit, void *arg) {
    Py_VISIT((PyObject *)self->cached_scope);
    return 0;
}

static int arena_clear(TlArena *self) {
    Py_CLEAR(self->cached_scope);
    return 0;
}

static void arena_dealloc(TlArena *self) {
    PyObject_GC_UnTrack(self);
    if (self->is_thread) tl_wrappers_remove(self); /* normally done by the thread's exit */
    Py_CLEAR(self->cached_scope);
    Py_CLEAR(self->last_dtype);
    Py_CLEAR(self->last_descr);
    Py_XDECREF((PyObject *)self->spare);
    for (Py_ssize_t i = 0; i < self->depth; i++) Py_DECREF((PyObject *)self->stack[i]);
    PyMem_Free(self->stack);
    tl_arena_release(self->a);
    Py_TYPE(self)->tp_free((PyObject *)self);
}


/* Names in the order of the C enums (tl_overflow, tl_page_kind, tl_numa). */
static const char *const tl_overflow_names[] = {"error", "fallback", "panic"};
static const char *const tl_page_names[] = {"off", "thp", "hugetlb"};
static const char *const tl_numa_names[] = {"off", "local", "interleave"};
static int tl_warned_hugetlb; /* one warning per process */

/* Warn (once) when an arena asked for hugetlb pages and got something else. */
int warn_hugetlb_fallback(const tl_arena *a) {
    if (a->pages_requested != TL_PAGES_HUGETLB || a->pages == TL_PAGES_HUGETLB) return 0;
    if (__atomic_exchange_n(&tl_warned_hugetlb, 1, __ATOMIC_RELAXED)) return 0;
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "TLALLOC_HUGE_PAGES=hugetlb: the huge-page pool is empty or missing "
                            "(see /proc/sys/vm/nr_hugepages); arenas fall back to transparent huge "
                            "pages ('%s' obtained); warned once per process",
                            a->pages == TL_PAGES_THP ? "thp" : "default");
}

PyObject *tl_arena_error_from_errno(size_t capacity) {
    if (errno == EINVAL)
        return PyErr_Format(PyExc_ValueError, "invalid arena options (capacity %zu bytes)", capacity);
    return PyErr_Format(PyExc_MemoryError,
                        "the operating system refused a region of %zu bytes for an arena", capacity);
}

static PyObject *arena_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"capacity", "overflow", "zero_on_reset", "huge_pages", "numa",
                             "prefault", NULL};
    PyObject *cap = NULL, *ov = NULL, *zr = NULL, *hp = NULL, *nm = NULL, *pf = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$OOOOO:Arena", kwlist, &cap, &ov, &zr, &hp,
                                     &nm, &pf))
        return NULL;
    tl_orphans_drain();
    tl_arena_options o;
    tl_get_thread_arena_options(&o);
    int overflow = (int)o.overflow, pages = (int)o.pages, numa = (int)o.numa;
    int prefault = o.prefault;
    if (tl_arg_capacity(cap, &o.capacity) < 0 ||
        tl_arg_choice(ov, "overflow", tl_overflow_names, 3, &overflow) < 0 ||
        tl_arg_flag(zr, "zero_on_reset", &o.zero_on_reset) < 0 ||
        tl_arg_choice(hp, "huge_pages", tl_page_names, 3, &pages) < 0 ||
        tl_arg_choice(nm, "numa", tl_numa_names, 3, &numa) < 0 ||
        tl_arg_flag(pf, "prefault", &prefault) < 0)
        return NULL;
    o.overflow = (tl_overflow)overflow;
    o.pages = (tl_page_kind)pages;
    o.numa = (tl_numa)numa;
    o.prefault = prefault;
    tl_arena *a;
    Py_BEGIN_ALLOW_THREADS
    a = tl_arena_create(&o);
    Py_END_ALLOW_THREADS
    if (!a) return tl_arena_error_from_errno(o.capacity);
    PyObject *self = arena_wrap(type, a, 0);
    if (self && warn_hugetlb_fallback(a) < 0) Py_CLEAR(self);
    return self;
}

/* ------------------------------------------------------------ allocation */

TL_NOINLINE static void *arena_overflowed(TlArena *self, size_t nbytes) {
    tl_arena *a = self->a;
    PyErr_Format(tl_ArenaOverflowError,
                 "arena overflow: request of %zu bytes does not fit (capacity %zu bytes, "
                 "%zu bytes in use); use a larger arena (TLALLOC_ARENA_SIZE or "
                 "Arena(capacity=...)) or overflow='fallback'",
                 nbytes, a->capacity, tl_arena_used(a));
    return NULL;
}

static int arena_reroot(TlArena *self);

/* Out of line: the request did not fit the current chunk. At the top level
 * the root's memory is reused or handed over first (arena_reroot); then the
 * arena's own slow path applies the overflow policy. */
TL_NOINLINE static void *arena_take_slow(TlArena *self, size_t nbytes, size_t align) {
    tl_arena *a = self->a;
    if (nbytes != 0 && nbytes <= a->capacity && self->depth == 1 && arena_reroot(self) == 0) {
        void *p = tl_arena_try_alloc(a, nbytes, align);
        if (p) return p;
    }
    void *p = tl_arena_alloc_slow(a, nbytes, align);
    if (TL_UNLIKELY(p == NULL)) return arena_overflowed(self, nbytes);
    if (TL_UNLIKELY(!tl_arena_contains(a, p)) && nbytes != 0 && !self->warned_fallback) {
        self->warned_fallback = 1;
        if (PyErr_WarnFormat(tl_ArenaFallbackWarning, 1,
                             "arena overflow: %zu bytes served from the heap (policy 'fallback', "
                             "capacity %zu bytes, %zu in use); warned once per arena",
                             nbytes, a->capacity, tl_arena_used(a)) < 0)
            return NULL; /* warnings as errors: the block is released with its scope */
    }
    return p;
}

/* Allocate for Python: returns the data pointer, or NULL with an exception.
 * Fast path: the arena's bump and compare (tl_arena_try_alloc), inline. */
static inline void *arena_take(TlArena *self, size_t nbytes, size_t align) {
    void *p = tl_arena_try_alloc(self->a, nbytes, align);
    if (TL_LIKELY(p != NULL)) return p;
    return arena_take_slow(self, nbytes, align);
}


/* An ndarray over `data` (memory just taken from the arena) whose base is the
 * innermost region, so that releasing that region sees it; steals `descr`. */
static PyObject *arena_array_over(TlArena *self, PyArray_Descr *descr, int nd, npy_intp *dims,
                                  int fortran, void *data) {
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, descr, nd, dims, NULL, data,
                                         NPY_ARRAY_WRITEABLE | (fortran ? NPY_ARRAY_F_CONTIGUOUS : 0),
                                         NULL);
    if (!arr) return NULL;
    TlRegion *r = self->stack[self->depth - 1];
    Py_INCREF((PyObject *)r);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)r) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    tl_py_share(arr); /* freed, and r's count falls, in whichever thread drops it last */
    return arr;
}

/* Make an ndarray over arena memory; steals `descr`. */
static PyObject *arena_make_array(TlArena *self, PyArray_Descr *descr, int nd, npy_intp *dims,
                                  int fortran, PyObject *shape_for_errors, int zero) {
    size_t nbytes;
    if (tl_arg_shape_nbytes(dims, nd, (size_t)PyDataType_ELSIZE(descr), shape_for_errors, &nbytes) < 0) {
        Py_DECREF(descr);
        return NULL;
    }
    size_t align = TL_DEFAULT_ALIGN;
    if ((size_t)PyDataType_ALIGNMENT(descr) > align && tl_is_pow2((size_t)PyDataType_ALIGNMENT(descr)))
        align = (size_t)PyDataType_ALIGNMENT(descr);
    void *data = arena_take(self, nbytes, align);
    if (!data) {
        Py_DECREF(descr);
        return NULL;
    }
    if (zero && nbytes) memset(data, 0, nbytes);
    PyObject *arr = arena_array_over(self, descr, nd, dims, fortran, data);
    if (TL_UNLIKELY(__atomic_load_n(&tl_track, __ATOMIC_RELAXED)) && arr &&
        region_track(self->stack[self->depth - 1], arr) < 0)
        Py_CLEAR(arr);
    return arr;
}

static PyObject *arena_empty_impl(TlArena *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames, int zero) {
    static const char *const names[] = {"shape", "dtype", "order"};
    PyObject *vals[3] = {NULL, NULL, NULL};
    if (arena_check_owner(self) < 0) return NULL;
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 3 positional arguments (%zd given)",
                     zero ? "zeros" : "empty", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) vals[i] = args[i];
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int found = 0;
            for (int j = 0; j < 3; j++) {
                if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0) {
                    if (vals[j]) {
                        PyErr_Format(PyExc_TypeError, "argument %s given twice", names[j]);
                        return NULL;
                    }
                    vals[j] = args[nargs + k];
                    found = 1;
                }
            }
            if (!found) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R",
                             zero ? "zeros" : "empty", key);
                return NULL;
            }
        }
    }
    if (!vals[0]) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'shape'",
                     zero ? "zeros" : "empty");
        return NULL;
    }
    npy_intp dims[NPY_MAXDIMS];
    int nd, fortran;
    if (tl_arg_shape(vals[0], dims, &nd) < 0 || tl_arg_order(vals[2], &fortran, 0) < 0) return NULL;
    /* A loop allocates with the same dtype object again and again: remember the
     * last conversion (a pointer compare instead of NumPy's converter, ~20 ns). */
    PyArray_Descr *d;
    if (vals[1] != NULL && vals[1] == self->last_dtype) {
        d = self->last_descr;
        Py_INCREF(d);
    } else {
        d = tl_arg_dtype(vals[1]);
        if (!d) return NULL;
        /* Only immutable specifications: a list or dict could change in between,
         * and so could the .dtype attribute of a class defined in Python (a heap
         * type); built-in and NumPy types (static types) cannot change. */
        if (vals[1] != NULL &&
            ((PyType_Check(vals[1]) &&
              !(((PyTypeObject *)vals[1])->tp_flags & Py_TPFLAGS_HEAPTYPE)) ||
             PyArray_DescrCheck(vals[1]) || PyUnicode_CheckExact(vals[1]))) {
            Py_INCREF(vals[1]);
            Py_XSETREF(self->last_dtype, vals[1]);
            Py_INCREF(d);
            Py_XSETREF(self->last_descr, d);
        }
    }
    return arena_make_array(self, d, nd, dims, fortran, vals[0], zero);
}

static PyObject *arena_empty(TlArena *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    return arena_empty_impl(self, args, nargs, kwnames, 0);
}

static PyObject *arena_zeros(TlArena *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    return arena_empty_impl(self, args, nargs, kwnames, 1);
}

static PyObject *arena_empty_like(TlArena *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"prototype", "dtype", "order", "shape", NULL};
    PyObject *proto, *dtype = NULL, *order = NULL, *shape = NULL;
    if (arena_check_owner(self) < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOO:empty_like", kwlist, &proto, &dtype,
                                     &order, &shape))
        return NULL;
    PyArrayObject *p = (PyArrayObject *)PyArray_FROM_O(proto);
    if (!p) return NULL;
    int fortran = 0;
    if (tl_arg_order(order, &fortran, 1) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    if (fortran == 2) /* 'A', 'K' or None: follow the prototype */
        fortran = PyArray_NDIM(p) > 1 && PyArray_IS_F_CONTIGUOUS(p) && !PyArray_IS_C_CONTIGUOUS(p);
    PyArray_Descr *d;
    if (dtype && dtype != Py_None) {
        d = tl_arg_dtype(dtype);
    } else {
        d = PyArray_DESCR(p);
        Py_INCREF(d);
        if (PyDataType_REFCHK(d)) {
            Py_DECREF(d);
            d = tl_arg_dtype((PyObject *)PyArray_DESCR(p)); /* raises the TypeError */
        }
    }
    if (!d) {
        Py_DECREF(p);
        return NULL;
    }
    npy_intp dims[NPY_MAXDIMS];
    int nd;
    PyObject *shape_obj;
    if (shape && shape != Py_None) {
        shape_obj = shape;
        Py_INCREF(shape_obj);
        if (tl_arg_shape(shape, dims, &nd) < 0) {
            Py_DECREF(d);
            Py_DECREF(p);
            Py_DECREF(shape_obj);
            return NULL;
        }
    } else {
        nd = PyArray_NDIM(p);
        if (nd > 0) /* a 0-d prototype has no dims array (NULL): no memcpy from it */
            memcpy(dims, PyArray_DIMS(p), (size_t)nd * sizeof(npy_intp));
        shape_obj = PyObject_GetAttrString((PyObject *)p, "shape");
        if (!shape_obj) {
            Py_DECREF(d);
            Py_DECREF(p);
            return NULL;
        }
    }
    Py_DECREF(p);
    PyObject *res = arena_make_array(self, d, nd, dims, fortran, shape_obj, 0);
    Py_DECREF(shape_obj);
    return res;
}

static PyObject *arena_alloc(TlArena *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"nbytes", "align", NULL};
    PyObject *nb_obj, *al_obj = NULL;
    if (arena_check_owner(self) < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:alloc", kwlist, &nb_obj, &al_obj))
        return NULL;
    size_t nb, align = TL_DEFAULT_ALIGN;
    if (tl_arg_nbytes(nb_obj, "nbytes", &nb) < 0 ||
        (al_obj && tl_arg_align(al_obj, TL_MAX_ALIGN, &align) < 0))
        return NULL;
    void *data = arena_take(self, nb, align);
    if (!data) return NULL;
    npy_intp dims[1] = {(npy_intp)nb};
    PyObject *arr = arena_array_over(self, PyArray_DescrFromType(NPY_UINT8), 1, dims, 0, data);
    if (!arr) return NULL;
    PyObject *mv = PyMemoryView_FromObject(arr);
    Py_DECREF(arr);
    if (mv) { /* both hold the array: both freed by whichever thread drops them last */
        tl_py_share(mv);
        tl_py_share((PyObject *)((PyMemoryViewObject *)mv)->mbuf);
        if (TL_UNLIKELY(__atomic_load_n(&tl_track, __ATOMIC_RELAXED)) && region_track(self->stack[self->depth - 1], mv) < 0)
            Py_CLEAR(mv);
    }
    return mv;
}

/* ------------------------------------------------------- scopes and reset */

/* Release the innermost scope. `quiet`: an exception is propagating out of the
 * with-block; if arrays are alive keep their memory and do not raise over it.
 * O(1): one reference count read (two if a settle is needed). When arrays are
 * alive, the region takes the scope's memory with it (tl_arena_escape): the
 * arena goes on in a fresh chunk and the memory comes back when the region's
 * last array dies, whichever thread drops it. */
static int arena_pop_scope(TlArena *self, int quiet) {
    tl_assert(self->depth >= 2);
    TlRegion *r = self->stack[self->depth - 1];
    Py_ssize_t live = region_live(r, 1);
    int settle_failed = 0;
    if (live > 0 && !quiet) {
        settle_failed = tl_py_settle((PyObject *)r, 1) < 0; /* free-threaded: deferred drops */
        live = region_live(r, 1);
    }
    if (live > 0) {
        /* Before our reference goes (no other thread can free r until then):
         * r holds the memory; a stale mark (after a C-level reset) holds nothing. */
        (void)tl_arena_escape(self->a, r->mark, &r->esc);
        PyObject *err = NULL;
        if (!quiet && !settle_failed) err = region_error(r, live, "release the scope");
        __atomic_store_n(&self->depth, self->depth - 1, __ATOMIC_RELAXED);
        Py_DECREF((PyObject *)r); /* the arrays keep it */
        if (quiet) return 0;
        if (settle_failed) return -1; /* e.g. KeyboardInterrupt: the memory is held */
        if (err) {
            PyErr_SetObject(PyExc_BufferError, err);
            Py_DECREF(err);
        }
        return -1;
    }
    __atomic_store_n(&self->depth, self->depth - 1, __ATOMIC_RELAXED);
    (void)tl_arena_rewind(self->a, r->mark); /* a mark made stale by a C-level reset is a no-op */
    if (settle_failed) PyErr_Clear(); /* released after all: nothing to report */
    Py_CLEAR(r->tracked);
    if (self->spare == NULL) self->spare = r; /* reuse: saves an allocation */
    else Py_DECREF((PyObject *)r);
    return 0;
}

/* At the top of the arena (no scope open) the root region collects every
 * allocation. When the current chunk is full: if none of them is alive any
 * more, rewind to the root's mark; else the root region takes the memory (an
 * escape) and a fresh root starts in a fresh chunk. So the top level reuses
 * its memory as its arrays die, whatever their order, without a reset.
 * Returns 0 if something was done (the caller retries), -1 otherwise (with
 * no exception set). */
static int arena_reroot(TlArena *self) {
    TlRegion *root = self->stack[0];
    if (region_live(root, 1) == 0) {
        if (tl_arena_rewind(self->a, root->mark) < 0) root->mark = tl_arena_mark(self->a);
        Py_CLEAR(root->tracked);
        return 0;
    }
    TlRegion *fresh = region_new(self->a);
    if (!fresh) {
        PyErr_Clear(); /* the caller's overflow handling reports the failure */
        return -1;
    }
    if (tl_arena_escape(self->a, root->mark, &root->esc) < 0 || root->esc.arena == NULL) {
        Py_DECREF((PyObject *)fresh); /* nothing held: nothing would be gained */
        return -1;
    }
    fresh->mark = tl_arena_mark(self->a);
    self->stack[0] = fresh;
    Py_DECREF((PyObject *)root); /* its arrays keep it */
    return 0;
}

/* Live arrays over every open scope (escaped regions are on their own). */
static Py_ssize_t arena_live(TlArena *self) {
    Py_ssize_t live = 0;
    for (Py_ssize_t i = 0; i < self->depth; i++) live += region_live(self->stack[i], 1);
    return live;
}

static PyObject *arena_reset(TlArena *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"force", NULL};
    int force = 0;
    if (arena_check_owner(self) < 0) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$p:reset", kwlist, &force)) return NULL;
    if (!force) {
        Py_ssize_t live = arena_live(self);
        if (live > 0) {
            if (tl_py_settle(NULL, 0) < 0) return NULL;
            live = arena_live(self);
        }
        if (live > 0) {
            for (Py_ssize_t i = self->depth - 1; i >= 0; i--) {
                TlRegion *r = self->stack[i];
                if (region_live(r, 1) > 0) {
                    PyObject *msg = region_error(r, live, "reset the arena");
                    if (msg) {
                        PyErr_SetObject(PyExc_BufferError, msg);
                        Py_DECREF(msg);
                    }
                    return NULL;
                }
            }
        }
    }
    /* force: regions that arrays still hold take their memory with them
     * (innermost first: each escape leaves the outer marks valid), and fresh
     * regions replace them; the arrays stay valid and are no longer counted. */
    for (Py_ssize_t i = self->depth - 1; i >= 0; i--) {
        TlRegion *r = self->stack[i];
        if (region_live(r, 1) > 0) {
            TlRegion *fresh = region_new(self->a);
            if (!fresh) return NULL;
            (void)tl_arena_escape(self->a, r->mark, &r->esc);
            self->stack[i] = fresh;
            Py_DECREF((PyObject *)r);
        }
    }
    tl_arena_reset(self->a);
    for (Py_ssize_t i = 0; i < self->depth; i++) {
        self->stack[i]->mark = tl_arena_mark(self->a);
        Py_CLEAR(self->stack[i]->tracked);
    }
    Py_RETURN_NONE;
}

/* Scope objects are single-use context managers. A scope holds a strong
 * reference to its arena from creation until __exit__ (or its deallocation),
 * never longer, so the arena's cached scope (below) forms no lasting cycle. */
typedef struct TlScope {
    PyObject_HEAD
    TlArena *arena;   /* strong while `holds`, otherwise not to be used */
    int holds;
    Py_ssize_t depth; /* stack depth after entering; 0 = not entered */
    uint64_t owner_serial; /* the arena owner's: checked before any other field */
} TlScope;

/* The fields above belong to the owner thread; another thread that got hold
 * of the scope object is refused before it reads them. */
static int scope_check_owner(TlScope *s) {
    if (TL_LIKELY(s->owner_serial == tl_thread_serial())) return 0;
    PyErr_SetString(PyExc_RuntimeError,
                    "this scope belongs to another thread's arena; arenas are not shared "
                    "between threads");
    return -1;
}

static PyTypeObject TlScope_Type;

/* arena.scope(): reuses the arena's cached scope object when nobody else holds
 * it (the common `with tlalloc.scratch()` loop), which saves an allocation and
 * a deallocation per round trip. */
PyObject *arena_scope(TlArena *self, PyObject *Py_UNUSED(ignored)) {
    /* The cache and the arena's reference count are the owner's: another
     * thread gets its RuntimeError here, before it touches either. */
    if (arena_check_owner(self) < 0) return NULL;
    TlScope *s = self->cached_scope;
    if (s != NULL && Py_REFCNT(s) == 1 && s->depth == 0) {
        if (!s->holds) {
            Py_INCREF(self);
            s->holds = 1;
        }
        Py_INCREF(s);
        return (PyObject *)s;
    }
    s = PyObject_GC_New(TlScope, &TlScope_Type);
    if (!s) return NULL;
    Py_INCREF(self);
    s->arena = self;
    s->holds = 1;
    s->depth = 0;
    s->owner_serial = self->owner_serial;
    PyObject_GC_Track(s);
    if (self->cached_scope == NULL) {
        Py_INCREF(s);
        self->cached_scope = s;
    }
    return (PyObject *)s;
}

static void scope_drop_arena(TlScope *s) {
    if (s->holds) {
        TlArena *a = s->arena;
        s->holds = 0;
        Py_DECREF(a); /* may free the arena, which may drop its ref to s: s stays valid
                         because our caller holds a reference to it */
    }
}

static int scope_traverse(TlScope *s, visitproc visit, void *arg) {
    if (s->holds) Py_VISIT((PyObject *)s->arena);
    return 0;
}

static int scope_clear(TlScope *s) {
    scope_drop_arena(s);
    return 0;
}

static void scope_dealloc(TlScope *s) {
    PyObject_GC_UnTrack(s);
    if (s->holds) {
        s->holds = 0;
        Py_DECREF(s->arena);
    }
    PyObject_GC_Del(s);
}

static PyObject *scope_enter(TlScope *s, PyObject *Py_UNUSED(ignored)) {
    if (scope_check_owner(s) < 0) return NULL;
    if (!s->holds) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this scope was already used; call arena.scope() for a new one");
        return NULL;
    }
    TlArena *self = s->arena;
    if (arena_check_owner(self) < 0) return NULL;
    if (s->depth) {
        PyErr_SetString(PyExc_RuntimeError, "this scope is already open; call arena.scope() again "
                                            "for a nested scope");
        return NULL;
    }
    TlRegion *r = self->spare;
    if (r) {
        self->spare = NULL;
        r->mark = tl_arena_mark(self->a);
    } else if (!(r = region_new(self->a))) {
        return NULL;
    }
    if (arena_push(self, r) < 0) {
        Py_DECREF((PyObject *)r);
        return NULL;
    }
    s->depth = self->depth;
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *scope_exit(TlScope *s, PyObject *const *args, Py_ssize_t nargs) {
    if (scope_check_owner(s) < 0) return NULL;
    if (!s->holds || s->depth == 0) {
        PyErr_SetString(PyExc_RuntimeError, "this scope is not open");
        return NULL;
    }
    TlArena *self = s->arena;
    if (arena_check_owner(self) < 0) return NULL;
    if (s->depth != self->depth) {
        PyErr_Format(PyExc_RuntimeError,
                     "scopes must be closed innermost first (closing depth %zd while depth %zd "
                     "is open)", s->depth - 1, self->depth - 1);
        return NULL;
    }
    s->depth = 0;
    int propagating = nargs > 0 && args[0] != Py_None;
    int rc = arena_pop_scope(self, propagating);
    scope_drop_arena(s);
    if (rc < 0) return NULL;
    Py_RETURN_FALSE;
}

static PyMethodDef scope_methods[] = {
    {"__enter__", (PyCFunction)scope_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))scope_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TlScope_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tlalloc._tlalloc.Scope",
    .tp_basicsize = sizeof(TlScope),
    .tp_dealloc = (destructor)scope_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)scope_traverse,
    .tp_clear = (inquiry)scope_clear,
    .tp_methods = scope_methods,
    .tp_doc = "Context manager returned by Arena.scope(): releases what was allocated inside.",
};

/* ------------------------------------------------------------ statistics */

static int dict_set_u64(PyObject *d, const char *k, uint64_t v) {
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    if (!o) return -1;
    int r = tl_dict_set(d, k, o);
    Py_DECREF(o);
    return r;
}

static const char *page_kind_name(tl_page_kind k) {
    return k == TL_PAGES_THP ? "thp" : k == TL_PAGES_HUGETLB ? "hugetlb" : "default";
}
static const char *numa_name(tl_numa n) {
    return n == TL_NUMA_LOCAL ? "local" : n == TL_NUMA_INTERLEAVE ? "interleave" : "off";
}

static PyObject *stats_dict(const tl_arena_stats *s) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (dict_set_u64(d, "capacity_bytes", s->capacity_bytes) < 0 ||
        dict_set_u64(d, "used_bytes", s->used_bytes) < 0 ||
        dict_set_u64(d, "peak_bytes", s->peak_bytes) < 0 ||
        dict_set_u64(d, "num_allocations", s->num_allocations) < 0 ||
        dict_set_u64(d, "num_overflows", s->num_overflows) < 0 ||
        dict_set_u64(d, "fallback_bytes", s->fallback_bytes) < 0 ||
        dict_set_u64(d, "fallback_live_bytes", s->fallback_live_bytes) < 0 ||
        dict_set_u64(d, "num_resets", s->num_resets) < 0 ||
        dict_set_u64(d, "escaped_bytes", s->escaped_bytes) < 0 ||
        dict_set_u64(d, "escaped_chunks", s->escaped_chunks) < 0 ||
        dict_set_u64(d, "num_escapes", s->num_escapes) < 0 ||
        dict_set_u64(d, "num_chunks", s->num_chunks) < 0 ||
        dict_set_u64(d, "spare_chunks", s->spare_chunks) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static int dict_set_str(PyObject *d, const char *k, const char *v) {
    PyObject *o = PyUnicode_FromString(v);
    if (!o) return -1;
    int r = tl_dict_set(d, k, o);
    Py_DECREF(o);
    return r;
}

static int add_placement(PyObject *d, tl_page_kind pages, tl_page_kind requested, tl_numa numa,
                         int node) {
    if (dict_set_str(d, "page_kind", page_kind_name(pages)) < 0 ||
        dict_set_str(d, "page_kind_requested", page_kind_name(requested)) < 0 ||
        dict_set_str(d, "numa_policy", numa_name(numa)) < 0)
        return -1;
    PyObject *n = PyLong_FromLong(node);
    if (!n) return -1;
    int r = tl_dict_set(d, "numa_node", n);
    Py_DECREF(n);
    return r;
}

/* Statistics may be read from any thread: no owner check. */
static PyObject *arena_stats_dict(TlArena *self, PyObject *Py_UNUSED(ignored)) {
    tl_arena_stats s;
    tl_arena_get_stats(self->a, &s);
    PyObject *d = stats_dict(&s);
    if (d && (add_placement(d, self->a->pages, self->a->pages_requested, self->a->numa,
                           self->a->numa_node) < 0 ||
              tl_dict_set(d, "prefaulted", self->a->prefaulted ? Py_True : Py_False) < 0))
        Py_CLEAR(d);
    return d;
}

static PyObject *arena_get_live(TlArena *self, void *Py_UNUSED(c)) {
    if (arena_check_owner(self) < 0) return NULL;
    return PyLong_FromSsize_t(arena_live(self));
}

static PyObject *arena_get_capacity(TlArena *self, void *Py_UNUSED(c)) {
    return PyLong_FromSize_t(self->a->capacity);
}
static PyObject *arena_get_used(TlArena *self, void *Py_UNUSED(c)) {
    return PyLong_FromSize_t(tl_arena_used(self->a));
}
static PyObject *arena_get_generation(TlArena *self, void *Py_UNUSED(c)) {
    return PyLong_FromUnsignedLongLong(tl_arena_generation(self->a));
}
static PyObject *arena_get_depth(TlArena *self, void *Py_UNUSED(c)) {
    return PyLong_FromSsize_t(__atomic_load_n(&self->depth, __ATOMIC_RELAXED) - 1);
}
static PyObject *arena_get_overflow(TlArena *self, void *Py_UNUSED(c)) {
    return PyUnicode_FromString(self->a->overflow == TL_OVERFLOW_FALLBACK ? "fallback"
                                : self->a->overflow == TL_OVERFLOW_PANIC  ? "panic"
                                                                          : "error");
}
static PyObject *arena_get_zero(TlArena *self, void *Py_UNUSED(c)) {
    return PyBool_FromLong(self->a->zero_on_reset);
}
static PyObject *arena_get_is_thread(TlArena *self, void *Py_UNUSED(c)) {
    return PyBool_FromLong(self->is_thread);
}
static PyObject *arena_get_owner(TlArena *self, void *Py_UNUSED(c)) {
    return PyLong_FromUnsignedLong(self->owner);
}

static PyGetSetDef arena_getset[] = {
    {"capacity", (getter)arena_get_capacity, NULL, "Size of the arena's region in bytes.", NULL},
    {"used", (getter)arena_get_used, NULL, "Bytes currently handed out (the bump offset).", NULL},
    {"generation", (getter)arena_get_generation, NULL,
     "Counter that changes on every reset and scope release.", NULL},
    {"depth", (getter)arena_get_depth, NULL, "Number of open scopes.", NULL},
    {"live_arrays", (getter)arena_get_live, NULL,
     "Arrays and memoryviews of the open scopes (and the top level) still referenced; "
     "escaped ones hold their own memory (stats(): escaped_bytes).", NULL},
    {"overflow", (getter)arena_get_overflow, NULL, "Overflow policy.", NULL},
    {"zero_on_reset", (getter)arena_get_zero, NULL, "Whether released memory is zeroed.", NULL},
    {"is_thread_arena", (getter)arena_get_is_thread, NULL,
     "True for the arena returned by thread_arena().", NULL},
    {"owner_thread", (getter)arena_get_owner, NULL,
     "threading.get_ident() of the thread that owns the arena.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef arena_methods[] = {
    {"empty", (PyCFunction)(void (*)(void))arena_empty, METH_FASTCALL | METH_KEYWORDS,
     "empty(shape, dtype=float, order='C')\n--\n\nUninitialised array in the arena."},
    {"zeros", (PyCFunction)(void (*)(void))arena_zeros, METH_FASTCALL | METH_KEYWORDS,
     "zeros(shape, dtype=float, order='C')\n--\n\nZero-filled array in the arena."},
    {"empty_like", (PyCFunction)(void (*)(void))arena_empty_like, METH_VARARGS | METH_KEYWORDS,
     "empty_like(prototype, dtype=None, order='K', shape=None)\n--\n\n"
     "Uninitialised array in the arena with the prototype's shape and dtype."},
    {"alloc", (PyCFunction)(void (*)(void))arena_alloc, METH_VARARGS | METH_KEYWORDS,
     "alloc(nbytes, align=64)\n--\n\nWritable 1-D memoryview of nbytes in the arena."},
    {"scope", (PyCFunction)arena_scope, METH_NOARGS,
     "scope()\n--\n\nContext manager: everything allocated inside is released on exit."},
    {"reset", (PyCFunction)(void (*)(void))arena_reset, METH_VARARGS | METH_KEYWORDS,
     "reset(*, force=False)\n--\n\nRelease everything allocated from the arena."},
    {"_stats_dict", (PyCFunction)arena_stats_dict, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TlArena_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tlalloc._tlalloc.Arena",
    .tp_basicsize = sizeof(TlArena),
    .tp_dealloc = (destructor)arena_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)arena_traverse,
    .tp_clear = (inquiry)arena_clear,
    .tp_methods = arena_methods,
    .tp_getset = arena_getset,
    .tp_new = arena_new,
    .tp_doc = "Arena(capacity=None, *, overflow=None, zero_on_reset=None)\n--\n\n"
              "A bump arena owned by the thread that creates it.",
};


static PyObject *py_region_count(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSsize_t(__atomic_load_n(&tl_regions_alive, __ATOMIC_RELAXED));
}


static PyObject *py_registry_stats(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_orphans_drain();
    tl_registry_stats rs;
    tl_registry_get_stats(&rs);
    PyObject *d = stats_dict(&rs.total);
    if (!d) return NULL;
    if (dict_set_u64(d, "num_arenas", rs.num_arenas) < 0 ||
        dict_set_u64(d, "num_threads", rs.num_threads) < 0 ||
        dict_set_u64(d, "max_peak_bytes", rs.max_peak_bytes) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *py_registry_list(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_orphans_drain();
    size_t cap = 64;
    tl_thread_stats *buf = NULL;
    size_t n;
    for (;;) {
        tl_thread_stats *nb = PyMem_Realloc(buf, cap * sizeof *buf);
        if (!nb) {
            PyMem_Free(buf);
            return PyErr_NoMemory();
        }
        buf = nb;
        n = tl_registry_list(buf, cap);
        if (n <= cap) break;
        cap = n + 16;
    }
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *d = stats_dict(&buf[i].stats);
        if (!d || dict_set_u64(d, "thread_id", buf[i].thread_id) < 0 ||
            dict_set_str(d, "thread_name", buf[i].thread_name) < 0 ||
            tl_dict_set(d, "thread_alive", buf[i].alive ? Py_True : Py_False) < 0 ||
            add_placement(d, buf[i].pages, buf[i].pages_requested, buf[i].numa,
                          buf[i].numa_node) < 0 ||
            PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(d);
    }
    PyMem_Free(buf);
    return list;
}

/* _set_defaults(capacity, overflow, zero_on_reset, pages, numa, prefault): the
 * options of arenas created from now on (validated by tlalloc._config). */
static PyObject *py_set_defaults(PyObject *Py_UNUSED(m), PyObject *args) {
    unsigned long long cap;
    int ov, zero, pages, numa, prefault;
    if (!PyArg_ParseTuple(args, "Kiiiii:_set_defaults", &cap, &ov, &zero, &pages, &numa, &prefault))
        return NULL;
    if (cap < TL_ARENA_MIN_CAPACITY || cap > TL_ARENA_MAX_CAPACITY || ov < 0 ||
        ov > TL_OVERFLOW_PANIC || pages < 0 || pages > TL_PAGES_HUGETLB || numa < 0 ||
        numa > TL_NUMA_INTERLEAVE)
        return PyErr_Format(PyExc_ValueError, "invalid arena defaults");
    tl_arena_options o = {.capacity = (size_t)cap,
                          .overflow = (tl_overflow)ov,
                          .zero_on_reset = zero,
                          .pages = (tl_page_kind)pages,
                          .numa = (tl_numa)numa,
                          .prefault = prefault};
    tl_set_thread_arena_options(&o);
    Py_RETURN_NONE;
}

static PyObject *py_set_hooks(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *subtype;
    if (!PyArg_ParseTuple(args, "O:_set_hooks", &subtype)) return NULL;
    if (tl_hooks_set) /* read without a lock from then on: set once, at import */
        return PyErr_Format(PyExc_RuntimeError, "_set_hooks may be called only once");
    if (!PyType_Check(subtype) || !PyType_IsSubtype((PyTypeObject *)subtype, &TlArena_Type))
        return PyErr_Format(PyExc_TypeError, "subtype must be a subclass of Arena");
    Py_INCREF(subtype);
    Py_XSETREF(tl_arena_subtype, subtype);
    tl_hooks_set = 1;
    Py_RETURN_NONE;
}

static PyObject *py_numa_nodes(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(tl_os_numa_nodes());
}

static PyObject *py_region_policy(PyObject *Py_UNUSED(m), PyObject *arena) {
    if (!PyObject_TypeCheck(arena, &TlArena_Type))
        return PyErr_Format(PyExc_TypeError, "expected an Arena, got %R", arena);
    int node = -1;
    int mode = tl_os_get_policy(((TlArena *)arena)->a->base, &node);
    return Py_BuildValue("(ii)", mode, node);
}

static PyObject *py_region_address(PyObject *Py_UNUSED(m), PyObject *arena) {
    if (!PyObject_TypeCheck(arena, &TlArena_Type))
        return PyErr_Format(PyExc_TypeError, "expected an Arena, got %R", arena);
    TlArena *a = (TlArena *)arena;
    return Py_BuildValue("(KK)", (unsigned long long)(uintptr_t)a->a->base,
                         (unsigned long long)a->a->mapped);
}

/* _bench_alloc(strategy, threads, allocs_per_thread, size) -> dict: the C
 * allocation micro-benchmark (bench/c/lib/bench_alloc.h), run without the GIL. */
static PyObject *py_bench_alloc(PyObject *Py_UNUSED(m), PyObject *args) {
    const char *strategy;
    PyObject *threads_obj;
    Py_ssize_t threads;
    unsigned long long n, size;
    if (!PyArg_ParseTuple(args, "sOKK:_bench_alloc", &strategy, &threads_obj, &n, &size)) return NULL;
    tl_bench_strategy s;
    if (strcmp(strategy, "thread") == 0) s = TL_BENCH_THREAD;
    else if (strcmp(strategy, "shared") == 0) s = TL_BENCH_SHARED;
    else if (strcmp(strategy, "malloc") == 0) s = TL_BENCH_MALLOC;
    else return PyErr_Format(PyExc_ValueError, "strategy must be 'thread', 'shared' or 'malloc', "
                                               "got '%s'", strategy);
    if (tl_arg_count(threads_obj, "threads", 1, 4096, &threads) < 0) return NULL;
    if (size == 0 || size > (1u << 20))
        return PyErr_Format(PyExc_ValueError, "size must be between 1 and 1048576, got %llu", size);
    tl_bench_result r;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = tl_bench_alloc(s, (int)threads, (uint64_t)n, (size_t)size, &r);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("{s:d,s:d,s:d,s:K}", "wall_seconds", r.wall_seconds, "ns_per_alloc",
                         r.ns_per_alloc, "allocs_per_second", r.allocs_per_second,
                         "total_allocations", (unsigned long long)r.total_allocations);
}

static PyMethodDef module_methods[] = {
    {"_bench_alloc", (PyCFunction)py_bench_alloc, METH_VARARGS, NULL},
    {"_registry_stats", (PyCFunction)py_registry_stats, METH_NOARGS, NULL},
    {"_region_count", (PyCFunction)py_region_count, METH_NOARGS, NULL},
    {"_registry_list", (PyCFunction)py_registry_list, METH_NOARGS, NULL},
    {"_set_defaults", (PyCFunction)py_set_defaults, METH_VARARGS, NULL},
    {"_set_hooks", (PyCFunction)py_set_hooks, METH_VARARGS, NULL},
    {"_numa_nodes", (PyCFunction)py_numa_nodes, METH_NOARGS, NULL},
    {"_region_policy", (PyCFunction)py_region_policy, METH_O, NULL},
    {"_region_address", (PyCFunction)py_region_address, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int tl_py_arena_init(PyObject *m) {
    if (tl_settle_init(m) < 0) return -1;
    if (tl_py_thread_arena_init(m) < 0) return -1;
    if (tl_py_live_arrays_init(m) < 0) return -1;
    if (PyType_Ready(&TlRegion_Type) < 0 || PyType_Ready(&TlScope_Type) < 0 ||
        PyType_Ready(&TlArena_Type) < 0)
        return -1;
    if (PyModule_AddFunctions(m, module_methods) < 0) return -1;
    Py_INCREF(&TlArena_Type);
    if (PyModule_AddObject(m, "Arena", (PyObject *)&TlArena_Type) < 0) {
        Py_DECREF(&TlArena_Type);
        return -1;
    }
    Py_INCREF(&TlScope_Type);
    if (PyModule_AddObject(m, "Scope", (PyObject *)&TlScope_Type) < 0) {
        Py_DECREF(&TlScope_Type);
        return -1;
    }
    if (!tl_arena_subtype) {
        Py_INCREF(&TlArena_Type);
        tl_arena_subtype = (PyObject *)&TlArena_Type;
    }
    if (!tl_ArenaOverflowError) {
        tl_ArenaOverflowError = PyErr_NewExceptionWithDoc(
            "tlalloc.ArenaOverflowError",
            "A request did not fit in an arena whose overflow policy is 'error'.",
            PyExc_MemoryError, NULL);
        if (!tl_ArenaOverflowError) return -1;
    }
    if (!tl_ArenaFallbackWarning) {
        tl_ArenaFallbackWarning = PyErr_NewExceptionWithDoc(
            "tlalloc.ArenaFallbackWarning",
            "An arena served a request from the heap (overflow policy 'fallback').",
            PyExc_RuntimeWarning, NULL);
        if (!tl_ArenaFallbackWarning) return -1;
    }
    Py_INCREF(tl_ArenaOverflowError);
    if (PyModule_AddObject(m, "ArenaOverflowError", tl_ArenaOverflowError) < 0) return -1;
    Py_INCREF(tl_ArenaFallbackWarning);
    if (PyModule_AddObject(m, "ArenaFallbackWarning", tl_ArenaFallbackWarning) < 0) return -1;
    return 0;
}
