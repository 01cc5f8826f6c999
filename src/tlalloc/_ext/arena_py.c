/* arena_py.c: the Python binding of arenas (tlalloc.Arena, thread_arena).
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
 * A BufferError names the live arrays (see "naming live arrays" below) and says
 * that their memory comes back when they die.
 *
 * Why the count is exact without the GIL (free-threaded builds). CPython's
 * biased reference counting defers a drop made by a thread other than an
 * object's creator: the object is queued for its creator to merge (at its next
 * eval-breaker check), or a garbage collection in any thread takes the queue
 * and frees the object later, in the collecting thread. An array dropped by a
 * consumer thread would stay counted until then, and a release in between
 * would raise BufferError for an array that is gone. Three things close that:
 *
 * 1. Every object whose death moves the count (regions, the arrays over arena
 *    memory, the memoryview of alloc() and its managed buffer) is switched to
 *    the shared ("merged") reference-count state at birth, while only the
 *    creating thread can reach it (tl_py_share). A merged object is freed by
 *    whichever thread drops its last reference, at that moment, and is never
 *    queued. Cost: its increments are atomic, as for any object shared
 *    between threads.
 * 2. Objects the owner made that hold an array (the tuple it put on a queue,
 *    a list) are queued to the owner itself: before raising, the release runs
 *    the owner's eval-breaker work (one call of an empty Python function),
 *    which merges that queue and frees what reached zero (tl_py_settle).
 * 3. A collection running in another thread may hold such objects between
 *    taking the queues and freeing them: before raising, the release waits for
 *    a running collection to finish, or for the count to fall (gc.callbacks
 *    keep a count of collections). The wait has no short bound: a collection
 *    that stops 128 threads on a loaded machine can take seconds, and giving
 *    up early would raise over an array the collector was about to free.
 *
 * What remains counted is what really exists: an object that holds an array,
 * made by one non-owner thread and dropped by another, counts until its maker
 * next runs Python code or the next collection frees it, as a reference held
 * by any object does.
 *
 * An arena belongs to the thread that created it; every method that changes
 * it checks the caller's thread id (a pthread_self compare) and raises
 * RuntimeError otherwise. Fields other threads may read (depth, used, stats)
 * are read and written with atomics.
 */
#include "binding.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

PyObject *tl_ArenaOverflowError;
PyObject *tl_ArenaFallbackWarning;
/* Set once, while the module is imported (tlalloc/__init__.py), before any
 * other thread can use the module; read-only afterwards. */
static PyObject *tl_arena_subtype;     /* Python subclass used for new arenas */
static PyObject *tl_parse_size_func;   /* tlalloc._config.parse_size */
static int tl_hooks_set;

/* ------------------------------------------------ shared reference counts */

#ifdef Py_GIL_DISABLED
/* Put a new object in the merged reference-count state (no owning thread):
 * what CPython does to an object whose creator has exited. Only for an object
 * this thread has just created and not yet published, so plain stores suffice
 * (publication to another thread goes through a synchronising operation). */
static void tl_py_share(PyObject *o) {
    Py_ssize_t n = (Py_ssize_t)o->ob_ref_local + (o->ob_ref_shared >> _Py_REF_SHARED_SHIFT);
    o->ob_ref_local = 0;
    o->ob_tid = _Py_UNOWNED_TID;
    o->ob_ref_shared = _Py_REF_SHARED(n, _Py_REF_MERGED);
}
static PyObject *tl_merge_func;     /* lambda: None (its call runs the eval breaker) */
static int tl_gc_running;            /* collections in progress (gc.callbacks) */
static uint64_t tl_gc_thread;        /* tl_thread_serial() of the collecting thread */
static uint64_t tl_thread_serial(void);

/* Before raising BufferError (points 2 and 3 above): merge this thread's
 * queue of objects other threads dropped; then, while a collection runs in
 * another thread, wait (without a thread state, so that the collection's
 * stop-the-world never waits for us) until it ends or `probe` has no more
 * than `held` references, whichever comes first. `probe` NULL: wait for the
 * collection's end. A collection with many threads on a loaded machine can
 * take seconds to stop the world; a fixed short bound (2 s before) would then
 * raise over an array the collector was about to free. The bound left (30 s)
 * only breaks a deadlock: a finalizer run by that collection waiting for
 * something this thread holds. Returns 0, or -1 with an exception
 * (KeyboardInterrupt from a signal handler the eval breaker ran). */
static int tl_py_settle(PyObject *probe, Py_ssize_t held) {
    if (tl_merge_func) {
        PyObject *r = PyObject_CallNoArgs(tl_merge_func);
        if (!r) return -1;
        Py_DECREF(r);
    }
    if (__atomic_load_n(&tl_gc_running, __ATOMIC_ACQUIRE) <= 0 ||
        __atomic_load_n(&tl_gc_thread, __ATOMIC_RELAXED) == tl_thread_serial())
        return 0;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 30000 && __atomic_load_n(&tl_gc_running, __ATOMIC_ACQUIRE) > 0; i++) {
        if (probe && Py_REFCNT(probe) <= held) break;
        struct timespec ts = {0, 1000000}; /* 1 ms */
        nanosleep(&ts, NULL);
    }
    Py_END_ALLOW_THREADS
    return 0;
}

/* gc.callbacks entry: callback(phase, info). */
static PyObject *py_gc_callback(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *phase, *info;
    if (!PyArg_ParseTuple(args, "UO:_gc_callback", &phase, &info)) return NULL;
    if (PyUnicode_CompareWithASCIIString(phase, "start") == 0) {
        __atomic_store_n(&tl_gc_thread, tl_thread_serial(), __ATOMIC_RELAXED);
        __atomic_add_fetch(&tl_gc_running, 1, __ATOMIC_ACQ_REL);
    } else if (PyUnicode_CompareWithASCIIString(phase, "stop") == 0) {
        __atomic_store_n(&tl_gc_thread, 0, __ATOMIC_RELAXED);
        /* Never below 0: a "stop" whose "start" came before the callback was
         * registered (import during a collection) must not hide the next one. */
        int v = __atomic_load_n(&tl_gc_running, __ATOMIC_RELAXED);
        while (v > 0 && !__atomic_compare_exchange_n(&tl_gc_running, &v, v - 1, 1,
                                                     __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef tl_gc_callback_def = {"_gc_callback", (PyCFunction)py_gc_callback,
                                         METH_VARARGS, NULL};

/* At import: the empty function and the gc callback. */
static int tl_settle_init(PyObject *m) {
    if (tl_merge_func) return 0;
    PyObject *g = Py_BuildValue("{sO}", "__builtins__", PyEval_GetBuiltins());
    if (!g) return -1;
    tl_merge_func = PyRun_String("lambda: None", Py_eval_input, g, g);
    Py_DECREF(g);
    if (!tl_merge_func) return -1;
    PyObject *name = PyModule_GetNameObject(m);
    PyObject *cb = name ? PyCFunction_NewEx(&tl_gc_callback_def, NULL, name) : NULL;
    Py_XDECREF(name);
    PyObject *gc = cb ? PyImport_ImportModule("gc") : NULL;
    PyObject *cbs = gc ? PyObject_GetAttrString(gc, "callbacks") : NULL;
    int rc = cbs ? PyList_Append(cbs, cb) : -1;
    Py_XDECREF(cbs);
    Py_XDECREF(gc);
    Py_XDECREF(cb);
    return rc;
}
#else
static inline void tl_py_share(PyObject *o) { (void)o; }
static inline int tl_py_settle(PyObject *probe, Py_ssize_t held) {
    (void)probe;
    (void)held;
    return 0;
}
static inline int tl_settle_init(PyObject *m) { (void)m; return 0; }
#endif

/* ---------------------------------------------------------------- regions */

typedef struct TlRegion {
    PyObject_HEAD
    tl_arena *a;               /* retained */
    tl_mark mark;              /* where the scope started */
    tl_escape esc;             /* after its scope ended with arrays alive: the memory
                                  they use, given back when the region dies */
    PyObject *tracked;         /* with track_allocations: a list of (weakref to the
                                  array, file, line) for each allocation; else NULL */
} TlRegion;

static PyTypeObject TlRegion_Type;

/* track_allocations (set by tlalloc._config; relaxed loads: a plain load). */
static int tl_track;
TL_NOINLINE static int region_track(TlRegion *r, PyObject *obj);

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

static PyTypeObject TlRegion_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tlalloc._tlalloc._Region",
    .tp_basicsize = sizeof(TlRegion),
    .tp_dealloc = (destructor)region_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Owner of arena memory handed out in one scope (internal).",
};

/* ---------------------------------------------------------------- arenas */

typedef struct TlArena_ {
    PyObject_HEAD
    tl_arena *a;
    unsigned long owner;   /* PyThread_get_thread_ident() of the creator (for messages) */
    uint64_t owner_serial; /* tl_thread_serial() of the creator (for the check) */
    int is_thread;
    int warned_fallback;
    TlRegion **stack;      /* stack[0]: outside any scope; stack[depth-1]: innermost */
    Py_ssize_t depth, cap; /* depth: written by the owner, read by any thread (atomics) */
    TlRegion *spare;       /* a released region kept for the next scope (owner only) */
    struct TlScope *cached_scope; /* reused by scope() when nobody else holds it */
    PyObject *last_dtype;         /* the dtype argument of the last empty()/zeros() ... */
    PyArray_Descr *last_descr;    /* ... and what it converted to (owner thread only) */
    /* Thread arenas only: the list of every thread's arena object (tl_wrappers,
     * for fork), and the list of those whose thread has exited (tl_orphans). */
    struct TlArena_ *wprev, *wnext;
    struct TlArena_ *orphan_next;
} TlArena;

static PyTypeObject TlArena_Type;

/* Every thread arena object (see thread_arena() below for the whole story). */
static pthread_mutex_t tl_wrappers_lock = PTHREAD_MUTEX_INITIALIZER;
static TlArena *tl_wrappers;   /* head; linked through wprev/wnext */
static TlArena *tl_orphans;    /* Treiber stack through orphan_next (atomics) */

static void tl_orphans_drain(void);

static void tl_wrappers_unlink_locked(TlArena *w) {
    if (w->wprev) w->wprev->wnext = w->wnext;
    else if (tl_wrappers == w) tl_wrappers = w->wnext;
    if (w->wnext) w->wnext->wprev = w->wprev;
    w->wprev = w->wnext = NULL;
}

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

static PyObject *arena_wrap(PyTypeObject *type, tl_arena *a, int is_thread) {
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
    if (self->is_thread) { /* normally unlinked already, by the thread's exit */
        pthread_mutex_lock(&tl_wrappers_lock);
        tl_wrappers_unlink_locked(self);
        pthread_mutex_unlock(&tl_wrappers_lock);
    }
    Py_CLEAR(self->cached_scope);
    Py_CLEAR(self->last_dtype);
    Py_CLEAR(self->last_descr);
    Py_XDECREF((PyObject *)self->spare);
    for (Py_ssize_t i = 0; i < self->depth; i++) Py_DECREF((PyObject *)self->stack[i]);
    PyMem_Free(self->stack);
    tl_arena_release(self->a);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int parse_overflow(PyObject *v, tl_overflow *out) {
    if (v == NULL || v == Py_None) return 0;
    const char *s = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
    if (s && strcmp(s, "error") == 0) *out = TL_OVERFLOW_ERROR;
    else if (s && strcmp(s, "fallback") == 0) *out = TL_OVERFLOW_FALLBACK;
    else if (s && strcmp(s, "panic") == 0) *out = TL_OVERFLOW_PANIC;
    else {
        PyErr_Clear();
        PyErr_Format(PyUnicode_Check(v) ? PyExc_ValueError : PyExc_TypeError,
                     "overflow must be 'error', 'fallback' or 'panic', got %R", v);
        return -1;
    }
    return 0;
}

/* Capacity: None (default), a positive int, or a string with a unit. */
static int parse_capacity(PyObject *v, size_t *out) {
    if (v == NULL || v == Py_None) return 0;
    PyObject *n;
    if (PyUnicode_Check(v)) {
        if (!tl_parse_size_func) {
            PyErr_SetString(PyExc_RuntimeError, "tlalloc is not initialised");
            return -1;
        }
        n = PyObject_CallFunction(tl_parse_size_func, "Os", v, "capacity");
        if (!n) return -1;
    } else if (PyBool_Check(v) || !PyIndex_Check(v)) {
        PyErr_Format(PyExc_TypeError,
                     "capacity must be an int (bytes) or a string such as '4MiB', got %R", v);
        return -1;
    } else {
        n = PyNumber_Index(v);
        if (!n) return -1;
    }
    int overflow = 0;
    long long c = PyLong_AsLongLongAndOverflow(n, &overflow);
    Py_DECREF(n);
    if (c == -1 && PyErr_Occurred()) return -1;
    if (overflow || c < (long long)TL_ARENA_MIN_CAPACITY || (unsigned long long)c > TL_ARENA_MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError,
                     "capacity must be between %zu bytes and %zu bytes (1 TiB), got %R",
                     (size_t)TL_ARENA_MIN_CAPACITY, (size_t)TL_ARENA_MAX_CAPACITY, v);
        return -1;
    }
    *out = (size_t)c;
    return 0;
}

/* A flag: True or False (bool or numpy.bool_), the rule configure() applies too. */
static int parse_zero(PyObject *v, int *out) {
    if (v == NULL || v == Py_None) return 0;
    if (!PyBool_Check(v) && !PyArray_IsScalar(v, Bool)) {
        PyErr_Format(PyExc_TypeError, "zero_on_reset must be True or False, got %R", v);
        return -1;
    }
    int t = PyObject_IsTrue(v);
    if (t < 0) return -1;
    *out = t;
    return 0;
}

static int parse_choice(PyObject *v, const char *arg, const char *const *names, int n, int *out) {
    if (v == NULL || v == Py_None) return 0;
    const char *s = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
    for (int i = 0; s && i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    PyErr_Clear();
    /* A choice among names, the rule configure() applies too: a str, exactly. */
    PyErr_Format(PyUnicode_Check(v) ? PyExc_ValueError : PyExc_TypeError,
                 "%s must be one of '%s', '%s', '%s', got %R", arg, names[0], names[1], names[2], v);
    return -1;
}

static const char *const tl_page_names[] = {"off", "thp", "hugetlb"};
static const char *const tl_numa_names[] = {"off", "local", "interleave"};
static int tl_warned_hugetlb; /* one warning per process */

/* Warn (once) when an arena asked for hugetlb pages and got something else. */
static int warn_hugetlb_fallback(const tl_arena *a) {
    if (a->pages_requested != TL_PAGES_HUGETLB || a->pages == TL_PAGES_HUGETLB) return 0;
    if (__atomic_exchange_n(&tl_warned_hugetlb, 1, __ATOMIC_RELAXED)) return 0;
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "TLALLOC_HUGE_PAGES=hugetlb: the huge-page pool is empty or missing "
                            "(see /proc/sys/vm/nr_hugepages); arenas fall back to transparent huge "
                            "pages ('%s' obtained); warned once per process",
                            a->pages == TL_PAGES_THP ? "thp" : "default");
}

static PyObject *tl_arena_error_from_errno(size_t capacity) {
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
    int pages = (int)o.pages, numa = (int)o.numa, prefault = o.prefault;
    if (parse_capacity(cap, &o.capacity) < 0 || parse_overflow(ov, &o.overflow) < 0 ||
        parse_zero(zr, &o.zero_on_reset) < 0 ||
        parse_choice(hp, "huge_pages", tl_page_names, 3, &pages) < 0 ||
        parse_choice(nm, "numa", tl_numa_names, 3, &numa) < 0)
        return NULL;
    if (pf && pf != Py_None) {
        if (!PyBool_Check(pf)) return PyErr_Format(PyExc_TypeError, "prefault must be a bool, got %R", pf);
        prefault = pf == Py_True;
    }
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

/* Shape, NumPy's rule: an integer (anything with __index__ but bool, such as
 * numpy.int64 or a 0-d integer array) or a sequence of them, each >= 0. */
static int parse_shape(PyObject *shape, npy_intp *dims, int *nd) {
    if (PyIndex_Check(shape) && !PyBool_Check(shape) &&
        !(PyArray_Check(shape) && PyArray_NDIM((PyArrayObject *)shape) != 0)) {
        Py_ssize_t v = PyNumber_AsSsize_t(shape, PyExc_OverflowError);
        if (v == -1 && PyErr_Occurred()) {
            int too_big = PyErr_ExceptionMatches(PyExc_OverflowError);
            PyErr_Clear();
            if (too_big)
                PyErr_Format(PyExc_ValueError, "shape %R is too large", shape);
            else
                PyErr_Format(PyExc_TypeError, "shape must be an int or a sequence of ints, got %R",
                             shape);
            return -1;
        }
        if (v < 0) {
            PyErr_Format(PyExc_ValueError, "negative dimensions are not allowed: shape=%R", shape);
            return -1;
        }
        dims[0] = (npy_intp)v;
        *nd = 1;
        return 0;
    }
    PyObject *seq = PySequence_Check(shape) && !PyUnicode_Check(shape) && !PyBytes_Check(shape)
                        ? PySequence_Fast(shape, "shape")
                        : NULL;
    if (!seq) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "shape must be an int or a sequence of ints, got %R", shape);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > NPY_MAXDIMS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "shape has %zd dimensions, at most %d are allowed", n,
                     NPY_MAXDIMS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (PyBool_Check(item) || !PyIndex_Check(item)) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_TypeError, "shape must be an int or a sequence of ints, got %R",
                         shape);
            return -1;
        }
        Py_ssize_t v = PyNumber_AsSsize_t(item, PyExc_OverflowError);
        if (v == -1 && PyErr_Occurred()) {
            int too_big = PyErr_ExceptionMatches(PyExc_OverflowError);
            Py_DECREF(seq);
            PyErr_Clear();
            if (too_big)
                PyErr_Format(PyExc_ValueError, "shape %R is too large", shape);
            else
                PyErr_Format(PyExc_TypeError, "shape must be an int or a sequence of ints, got %R",
                             shape);
            return -1;
        }
        if (v < 0) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "negative dimensions are not allowed: shape=%R", shape);
            return -1;
        }
        dims[i] = (npy_intp)v;
    }
    *nd = (int)n;
    Py_DECREF(seq);
    return 0;
}

/* Bytes for dims x itemsize, refusing anything beyond NPY_MAX_INTP. */
static int shape_nbytes(const npy_intp *dims, int nd, size_t itemsize, PyObject *shape,
                        size_t *out) {
    size_t n = itemsize;
    for (int i = 0; i < nd; i++) {
        if (__builtin_mul_overflow(n, (size_t)dims[i], &n)) goto too_big;
    }
    /* A zero dimension makes the product 0 whatever the others are; NumPy still
     * requires each dimension alone to fit, which parse_shape ensured. */
    if (n > (size_t)NPY_MAX_INTP) goto too_big;
    *out = n;
    return 0;
too_big:
    PyErr_Format(PyExc_ValueError,
                 "array is too big: shape %R with %zu-byte items needs more than %zd bytes",
                 shape, itemsize, (Py_ssize_t)NPY_MAX_INTP);
    return -1;
}

static PyArray_Descr *parse_dtype(PyObject *dtype) {
    PyArray_Descr *d = NULL;
    if (dtype == NULL || dtype == Py_None) return PyArray_DescrFromType(NPY_DOUBLE);
    if (!PyArray_DescrConverter2(dtype, &d)) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            PyErr_Format(PyExc_TypeError, "dtype %R is not understood (%S)", dtype,
                         value ? value : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        return NULL;
    }
    if (d == NULL) return PyArray_DescrFromType(NPY_DOUBLE);
    if (PyDataType_REFCHK(d)) {
        PyErr_Format(PyExc_TypeError,
                     "dtype %R holds Python object references; arena memory can only hold "
                     "plain data (numbers, bytes, structured types of them)", (PyObject *)d);
        Py_DECREF(d);
        return NULL;
    }
    if (PyDataType_ELSIZE(d) == 0 && PyDataType_ISFLEXIBLE(d)) {
        PyErr_Format(PyExc_TypeError,
                     "dtype %R has no size; give one, for example 'S16' or 'U8'", (PyObject *)d);
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* Order, NumPy's rule: None (the default), or a str among 'C', 'F', 'A', 'K'
 * (either case); another type is a TypeError. With `keep` (empty_like), 'A' and
 * 'K' give 2 (follow the prototype); else they are refused as np.empty does. */
static int parse_order_ex(PyObject *order, int *fortran, int keep) {
    *fortran = keep ? 2 : 0;
    if (order == NULL || order == Py_None) return 0;
    if (!PyUnicode_Check(order) && !PyBytes_Check(order)) { /* NumPy takes bytes too */
        PyErr_Format(PyExc_TypeError, "order must be a str ('C', 'F'%s), got %R",
                     keep ? ", 'A' or 'K'" : "", order);
        return -1;
    }
    const char *s = PyBytes_Check(order) ? PyBytes_AS_STRING(order) : PyUnicode_AsUTF8(order);
    if (s == NULL) return -1;
    char c = s[0] && !s[1] ? s[0] : 0;
    if (c == 'C' || c == 'c') *fortran = 0;
    else if (c == 'F' || c == 'f') *fortran = 1;
    else if (keep && (c == 'A' || c == 'a' || c == 'K' || c == 'k')) *fortran = 2;
    else {
        PyErr_Format(PyExc_ValueError, "order must be 'C' or 'F'%s, got %R",
                     keep ? " ('A' and 'K' follow the prototype)" : "", order);
        return -1;
    }
    return 0;
}

static int parse_order(PyObject *order, int *fortran) { return parse_order_ex(order, fortran, 0); }

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
    if (shape_nbytes(dims, nd, (size_t)PyDataType_ELSIZE(descr), shape_for_errors, &nbytes) < 0) {
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
    if (parse_shape(vals[0], dims, &nd) < 0 || parse_order(vals[2], &fortran) < 0) return NULL;
    /* A loop allocates with the same dtype object again and again: remember the
     * last conversion (a pointer compare instead of NumPy's converter, ~20 ns). */
    PyArray_Descr *d;
    if (vals[1] != NULL && vals[1] == self->last_dtype) {
        d = self->last_descr;
        Py_INCREF(d);
    } else {
        d = parse_dtype(vals[1]);
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
    if (parse_order_ex(order, &fortran, 1) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    if (fortran == 2) /* 'A', 'K' or None: follow the prototype */
        fortran = PyArray_NDIM(p) > 1 && PyArray_IS_F_CONTIGUOUS(p) && !PyArray_IS_C_CONTIGUOUS(p);
    PyArray_Descr *d;
    if (dtype && dtype != Py_None) {
        d = parse_dtype(dtype);
    } else {
        d = PyArray_DESCR(p);
        Py_INCREF(d);
        if (PyDataType_REFCHK(d)) {
            Py_DECREF(d);
            d = parse_dtype((PyObject *)PyArray_DESCR(p)); /* raises the TypeError */
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
        if (parse_shape(shape, dims, &nd) < 0) {
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
    if (PyBool_Check(nb_obj) || !PyIndex_Check(nb_obj)) {
        PyErr_Format(PyExc_TypeError, "nbytes must be an int, got %R", nb_obj);
        return NULL;
    }
    Py_ssize_t nb = PyNumber_AsSsize_t(nb_obj, PyExc_OverflowError); /* no clipping */
    if (nb == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "nbytes %R is too large (at most %zd)", nb_obj,
                     PY_SSIZE_T_MAX);
        return NULL;
    }
    if (nb < 0) {
        PyErr_Format(PyExc_ValueError, "nbytes must be >= 0, got %R", nb_obj);
        return NULL;
    }
    Py_ssize_t align = TL_DEFAULT_ALIGN;
    if (al_obj) {
        if (PyBool_Check(al_obj) || !PyIndex_Check(al_obj)) {
            PyErr_Format(PyExc_TypeError, "align must be an int, got %R", al_obj);
            return NULL;
        }
        align = PyNumber_AsSsize_t(al_obj, PyExc_OverflowError);
        if (align == -1 && PyErr_Occurred()) PyErr_Clear(); /* out of range: refused below */
        if (align <= 0 || !tl_is_pow2((size_t)align) || (size_t)align > TL_MAX_ALIGN) {
            PyErr_Format(PyExc_ValueError,
                         "align must be a power of two between 1 and %u, got %R", TL_MAX_ALIGN,
                         al_obj);
            return NULL;
        }
    }
    void *data = arena_take(self, (size_t)nb, (size_t)align);
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

static PyObject *region_error(TlArena *self, TlRegion *r, Py_ssize_t live, const char *what);

/* ------------------------------------------------- naming live arrays
 *
 * A BufferError names up to TL_NAMED arrays of the region: shape, dtype and
 * bytes, and where they are. Two sources:
 *
 * - with track_allocations on (configure() or TLALLOC_TRACK_ALLOCATIONS=1),
 *   every allocation appends (weak reference, file, line) to its region's list:
 *   exact, and the file:line that allocated each live array. Cost only while
 *   tracking is on; off, the allocation pays one flag test.
 * - always: the calling thread's frames (their local variables, and tuples,
 *   lists and dicts held by them, one level deep), which finds the arrays that
 *   are still in a variable of the function that opened the scope, or of its
 *   callers. An array held elsewhere (a queue, another thread) is counted,
 *   not named, without tracking.
 *
 * Arrays are not tracked by the garbage collector (NumPy's are plain objects),
 * so gc.get_referrers cannot find them; only these two ways can, and the
 * frames cost nothing until a BufferError is raised. */
#define TL_NAMED 5
#define TL_SCAN_ITEMS 64 /* items looked at per container */

/* The region an object's memory comes from: follows ndarray bases and a
 * memoryview's exporter. NULL if not from an arena. */
static TlRegion *region_of(PyObject *o) {
    for (int hops = 0; o != NULL && hops < 64; hops++) {
        if (Py_IS_TYPE(o, &TlRegion_Type)) return (TlRegion *)o;
        if (PyArray_Check(o)) o = PyArray_BASE((PyArrayObject *)o);
        else if (PyMemoryView_Check(o)) o = PyMemoryView_GET_BASE(o);
        else return NULL;
    }
    return NULL;
}

/* "float32 array of shape (100000,), 400000 bytes" */
static PyObject *describe_object(PyObject *o) {
    if (PyMemoryView_Check(o)) {
        Py_buffer *b = PyMemoryView_GET_BUFFER(o);
        return PyUnicode_FromFormat("memoryview of %zd bytes", b->len);
    }
    if (!PyArray_Check(o)) return PyObject_Repr(o);
    PyArrayObject *arr = (PyArrayObject *)o;
    PyObject *shape = PyObject_GetAttrString(o, "shape");
    if (!shape) return NULL;
    PyObject *r = PyUnicode_FromFormat("%S array of shape %R, %zd bytes",
                                       (PyObject *)PyArray_DESCR(arr), shape,
                                       (Py_ssize_t)PyArray_NBYTES(arr));
    Py_DECREF(shape);
    return r;
}

typedef struct {
    PyObject *seen[TL_NAMED]; /* borrowed: objects already named */
    PyObject *lines;          /* list of str */
    int n;
} tl_naming;

static int naming_has(tl_naming *nm, PyObject *o) {
    for (int i = 0; i < nm->n; i++)
        if (nm->seen[i] == o) return 1;
    return 0;
}

/* Name o (an object of region r) with `where`; 1 if named, 0 if not, -1 on error. */
static int naming_add(tl_naming *nm, PyObject *o, PyObject *where) {
    if (nm->n >= TL_NAMED || naming_has(nm, o)) return 0;
    PyObject *d = describe_object(o);
    if (!d) return -1;
    PyObject *line = PyUnicode_FromFormat("  - %U%s%U", d, where ? ", " : "",
                                          where ? where : d);
    Py_DECREF(d);
    if (!line) return -1;
    int rc = PyList_Append(nm->lines, line);
    Py_DECREF(line);
    if (rc < 0) return -1;
    nm->seen[nm->n++] = o;
    return 1;
}

/* Look at one value of a frame (and one level into containers). */
static int naming_scan_value(tl_naming *nm, TlRegion *r, PyObject *v, PyObject *name,
                             PyObject *func, PyObject *file, int line, int depth) {
    if (region_of(v) == r) {
        PyObject *where = PyUnicode_FromFormat("held by %s%S in %S() at %S:%d",
                                               depth ? "an item of " : "", name, func, file, line);
        if (!where) return -1;
        int rc = naming_add(nm, v, where);
        Py_DECREF(where);
        return rc < 0 ? -1 : 0;
    }
    if (depth > 0) return 0;
    /* Tuples and lists: their last TL_SCAN_ITEMS items; dicts up to that size.
     * A raise costs O(1) per container, however large (a loop that keeps
     * every array in a list stays linear). */
    Py_ssize_t n;
    if (PyTuple_CheckExact(v) || PyList_CheckExact(v)) n = PySequence_Size(v);
    else if (PyDict_CheckExact(v) && PyDict_Size(v) <= TL_SCAN_ITEMS) n = -2;
    else return 0;
    if (n == -2) {
        PyObject *items = PyDict_Values(v);
        if (!items) return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items) && nm->n < TL_NAMED; i++) {
            if (naming_scan_value(nm, r, PyList_GET_ITEM(items, i), name, func, file, line, 1) < 0) {
                Py_DECREF(items);
                return -1;
            }
        }
        Py_DECREF(items);
        return 0;
    }
    for (Py_ssize_t i = n > TL_SCAN_ITEMS ? n - TL_SCAN_ITEMS : 0; i < n && nm->n < TL_NAMED; i++) {
        PyObject *item = PySequence_GetItem(v, i); /* a new reference (lists may change) */
        if (!item) {
            PyErr_Clear(); /* shrunk meanwhile */
            break;
        }
        int rc = naming_scan_value(nm, r, item, name, func, file, line, 1);
        Py_DECREF(item);
        if (rc < 0) return -1;
    }
    return 0;
}

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
/* CPython 3.11 has no way to read a frame's variable without PyFrame_GetLocals,
 * whose snapshot dict would keep every local alive (and so raise false
 * BufferErrors later): read the fast locals directly. The layout of 3.11's
 * frames (Include/internal/pycore_frame.h), fixed for the 3.11 series. */
typedef struct {
    PyObject *f_func, *f_globals, *f_builtins, *f_locals;
    PyCodeObject *f_code;
    PyObject *frame_obj;
    void *previous, *prev_instr;
    int stacktop;
    char is_entry, owner;
    PyObject *localsplus[1];
} tl_iframe311;
typedef struct {
    PyObject_HEAD
    PyObject *f_back;
    tl_iframe311 *f_frame;
} tl_frame311;
#endif

#if PY_VERSION_HEX >= 0x030B0000
/* Variable i of frame f's code (a new reference), NULL if unbound. No side
 * effect on the frame. */
static PyObject *frame_var(PyFrameObject *f, PyCodeObject *code, int i) {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *v = PyFrame_GetVar(f, PyTuple_GET_ITEM(code->co_localsplusnames, i));
    if (!v) PyErr_Clear(); /* NameError: unbound */
    return v;
#else
    tl_iframe311 *fr = ((tl_frame311 *)f)->f_frame;
    if (fr == NULL || fr->f_code != code) return NULL;
    PyObject *v = fr->localsplus[i];
    if (v && PyCell_Check(v)) v = PyCell_GET(v);
    Py_XINCREF(v);
    return v;
#endif
}
#endif

/* The calling thread's frames, innermost first: their variables, and the
 * items of tuples, lists and dicts among them. Read-only. */
static int naming_scan_frames(tl_naming *nm, TlRegion *r) {
#if PY_VERSION_HEX < 0x030B0000
    /* CPython 3.10: no co_qualname nor co_localsplusnames; arrays are named
     * from the tracking list only. */
    (void)nm;
    (void)r;
    return 0;
#else
    PyFrameObject *f = PyEval_GetFrame();
    Py_XINCREF(f);
    int rc = 0;
    for (int k = 0; f != NULL && k < 64 && nm->n < TL_NAMED && rc == 0; k++) {
        PyCodeObject *code = PyFrame_GetCode(f);
        int line = PyFrame_GetLineNumber(f);
        if (!(code->co_flags & CO_OPTIMIZED)) {
            /* Module or class body: its locals are a plain dict, read as is. */
            PyObject *locals = PyFrame_GetLocals(f);
            PyObject *items = locals && PyDict_Check(locals) ? PyDict_Items(locals) : NULL;
            if (!items) PyErr_Clear();
            for (Py_ssize_t j = 0; items && j < PyList_GET_SIZE(items) && nm->n < TL_NAMED && rc == 0;
                 j++) {
                PyObject *kv = PyList_GET_ITEM(items, j);
                PyObject *label = PyUnicode_FromFormat("variable %R", PyTuple_GET_ITEM(kv, 0));
                if (!label || naming_scan_value(nm, r, PyTuple_GET_ITEM(kv, 1), label,
                                                code->co_qualname, code->co_filename, line, 0) < 0)
                    rc = -1;
                Py_XDECREF(label);
            }
            Py_XDECREF(items);
            Py_XDECREF(locals);
        }
        for (int i = 0; i < code->co_nlocalsplus && nm->n < TL_NAMED && rc == 0; i++) {
            PyObject *v = frame_var(f, code, i);
            if (!v) continue;
            PyObject *label = PyUnicode_FromFormat(
                "local '%U'", PyTuple_GET_ITEM(code->co_localsplusnames, i));
            if (!label || naming_scan_value(nm, r, v, label, code->co_qualname,
                                            code->co_filename, line, 0) < 0)
                rc = -1;
            Py_XDECREF(label);
            Py_DECREF(v);
        }
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    return rc;
#endif
}

/* With tracking: the live arrays of the region's list, with their line. */
static int naming_scan_tracked(tl_naming *nm, TlRegion *r) {
    if (!r->tracked) return 0;
    for (Py_ssize_t i = PyList_GET_SIZE(r->tracked) - 1; i >= 0 && nm->n < TL_NAMED; i--) {
        PyObject *e = PyList_GET_ITEM(r->tracked, i); /* (ref, file, line, kind) */
        PyObject *o = PyObject_CallNoArgs(PyTuple_GET_ITEM(e, 0));
        if (!o) return -1;
        if (o != Py_None) {
            PyObject *where = PyUnicode_FromFormat("allocated at %S:%S", PyTuple_GET_ITEM(e, 1),
                                                   PyTuple_GET_ITEM(e, 2));
            int rc = where ? naming_add(nm, o, where) : -1;
            Py_XDECREF(where);
            if (rc < 0) {
                Py_DECREF(o);
                return -1;
            }
        }
        Py_DECREF(o);
    }
    return 0;
}

/* The BufferError's text: what is alive, where, and how the memory comes back. */
static PyObject *region_error(TlArena *self, TlRegion *r, Py_ssize_t live, const char *what) {
    (void)self;
    tl_naming nm = {.n = 0};
    nm.lines = PyList_New(0);
    if (!nm.lines) return NULL;
    /* Tracking first (exact, with the allocating line); then the frames. With
     * tracking, an array found in a frame too is named once, from the list. */
    if (naming_scan_tracked(&nm, r) < 0 || naming_scan_frames(&nm, r) < 0) PyErr_Clear();
    Py_ssize_t more = live - nm.n;
    PyObject *sep = PyUnicode_FromString("\n");
    PyObject *named = sep ? PyUnicode_Join(sep, nm.lines) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(nm.lines);
    if (!named) return NULL;
    PyObject *rest;
    if (nm.n == 0)
        rest = PyUnicode_FromString(" (none of them in a variable of this thread's frames: held "
                                    "elsewhere, by a container, a queue or another thread)");
    else if (more > 0)
        rest = PyUnicode_FromFormat("\n  - and %zd more, held elsewhere (a container, a queue, "
                                    "another thread)", more);
    else
        rest = PyUnicode_FromString("");
    if (!rest) {
        Py_DECREF(named);
        return NULL;
    }
    PyObject *msg = PyUnicode_FromFormat(
        "cannot %s: %zd array(s) or memoryview(s) allocated in it are still referenced%s%U%U\n"
        "Their memory stays valid: it now belongs to them and goes back to the arena when the "
        "last of them is gone, from whichever thread drops it (no reset needed; nothing leaks). "
        "Delete them before the scope ends, or copy what must outlive it.%s",
        what, live, nm.n ? ":\n" : "", named, rest,
        __atomic_load_n(&tl_track, __ATOMIC_RELAXED)
            ? ""
            : "\n(tlalloc.configure(track_allocations=True) or TLALLOC_TRACK_ALLOCATIONS=1 "
              "also names the line that allocated each one.)");
    Py_DECREF(named);
    Py_DECREF(rest);
    return msg;
}

/* Tracking: remember (weakref, file, line) for an allocation of region r,
 * from the innermost frame outside tlalloc's own Python code. */
static int region_track(TlRegion *r, PyObject *obj) {
    if (!r->tracked && !(r->tracked = PyList_New(0))) return -1;
    /* Drop entries of dead arrays when the list doubles: bounded by 2x live. */
    Py_ssize_t n = PyList_GET_SIZE(r->tracked);
    if (n >= 64 && (n & (n - 1)) == 0) {
        PyObject *keep = PyList_New(0);
        if (!keep) return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *e = PyList_GET_ITEM(r->tracked, i);
            PyObject *o = PyObject_CallNoArgs(PyTuple_GET_ITEM(e, 0));
            int rc = o ? (o != Py_None ? PyList_Append(keep, e) : 0) : -1;
            Py_XDECREF(o);
            if (rc < 0) {
                Py_DECREF(keep);
                return -1;
            }
        }
        Py_SETREF(r->tracked, keep);
    }
    PyObject *file = NULL, *line = NULL;
    PyFrameObject *f = PyEval_GetFrame();
    Py_XINCREF(f);
#if PY_VERSION_HEX >= 0x030B0000 /* PyFrame_GetGlobals: 3.11 and later */
    while (f) {
        PyObject *g = PyFrame_GetGlobals(f);
        PyObject *mod = g ? PyDict_GetItemString(g, "__name__") : NULL; /* borrowed */
        Py_XDECREF(g);
        const char *name = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : NULL;
        int ours = name && (strcmp(name, "tlalloc") == 0 || strncmp(name, "tlalloc.", 8) == 0);
        if (!ours) break;
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
#endif
    if (f) {
        PyCodeObject *code = PyFrame_GetCode(f);
        file = code->co_filename;
        Py_INCREF(file);
        line = PyLong_FromLong(PyFrame_GetLineNumber(f));
        Py_DECREF(code);
        Py_DECREF(f);
    } else {
        file = PyUnicode_FromString("<unknown>");
        line = PyLong_FromLong(0);
    }
    PyObject *ref = PyWeakref_NewRef(obj, NULL);
    PyObject *e = ref && file && line ? PyTuple_Pack(3, ref, file, line) : NULL;
    Py_XDECREF(ref);
    Py_XDECREF(file);
    Py_XDECREF(line);
    int rc = e ? PyList_Append(r->tracked, e) : -1;
    Py_XDECREF(e);
    return rc;
}

static PyObject *py_set_track_allocations(PyObject *Py_UNUSED(m), PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    __atomic_store_n(&tl_track, on, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

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
        if (!quiet && !settle_failed) err = region_error(self, r, live, "release the scope");
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
                    PyObject *msg = region_error(self, r, live, "reset the arena");
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
static PyObject *arena_scope(TlArena *self, PyObject *Py_UNUSED(ignored)) {
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

/* ----------------------------------------------------- thread arenas */

tl_arena *tl_py_thread_arena(void) {
    tl_arena *a = tl_thread_arena_peek();
    if (TL_LIKELY(a != NULL)) return a;
    /* First use on this thread: name the arena after the Python thread. */
    char name[64] = "";
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading) {
        PyObject *t = PyObject_CallMethod(threading, "current_thread", NULL);
        PyObject *n = t ? PyObject_GetAttrString(t, "name") : NULL;
        const char *s = n && PyUnicode_Check(n) ? PyUnicode_AsUTF8(n) : NULL;
        if (s) snprintf(name, sizeof name, "%s", s);
        Py_XDECREF(n);
        Py_XDECREF(t);
        Py_DECREF(threading);
    }
    PyErr_Clear();
    a = tl_thread_arena(name);
    if (!a) {
        tl_arena_options o;
        tl_get_thread_arena_options(&o);
        tl_arena_error_from_errno(o.capacity);
    }
    return a;
}

/* thread_arena(): one Python object per OS thread, for the thread's whole life.
 *
 * The calling thread's object sits in a C thread-local with a strong
 * reference, so it survives the thread state's teardown (a threading.local
 * finalizer may still call thread_arena() or scratch()), and every thread
 * state an OS thread ever gets (a thread made by a C library gets a new one
 * for each call into Python through ctypes or cffi) sees the same object, and
 * so the same scope stack and the same live-array accounting as the C arena
 * it wraps. Objects and C thread arenas correspond one to one.
 *
 * When the OS thread exits, a pthread key destructor (tl_wrapper_exit) runs
 * after Python has detached that thread: it may not touch Python objects, so
 * it pushes the object onto a lock-free list of orphans, and the next thread
 * that calls into the arena binding with a thread state drops those
 * references (tl_orphans_drain: thread_arena()'s first call in a thread, Arena
 * creation, statistics). The arena's memory lives on while arrays from it do.
 *
 * tl_wrappers lists every thread's object (under tl_wrappers_lock, never held
 * while calling Python), so that a forked child can drop those of the threads
 * that do not exist in it (_after_fork_child). */
static _Thread_local PyObject *tl_thread_arena_obj; /* strong */
static pthread_key_t tl_wrapper_key;
static pthread_once_t tl_wrapper_once = PTHREAD_ONCE_INIT;
static int tl_wrapper_key_ok;

static void tl_orphan_push(TlArena *w) {
    TlArena *head = __atomic_load_n(&tl_orphans, __ATOMIC_RELAXED);
    do {
        w->orphan_next = head;
    } while (!__atomic_compare_exchange_n(&tl_orphans, &head, w, 1, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
}

/* pthread key destructor: the OS thread is exiting; no Python here. */
static void tl_wrapper_exit(void *p) {
    TlArena *w = p;
    /* After fork, glibc may give a new thread of the child the stack of a dead
     * parent thread with its key values still set: only our own object counts
     * (the child's _after_fork_child has already dropped the others). */
    if ((PyObject *)w != tl_thread_arena_obj) return;
    tl_thread_arena_obj = NULL;
    pthread_mutex_lock(&tl_wrappers_lock);
    tl_wrappers_unlink_locked(w);
    pthread_mutex_unlock(&tl_wrappers_lock);
    tl_orphan_push(w);
}

static void tl_wrappers_prepare(void) { pthread_mutex_lock(&tl_wrappers_lock); }
static void tl_wrappers_parent(void) { pthread_mutex_unlock(&tl_wrappers_lock); }
static void tl_wrappers_child(void) { pthread_mutex_init(&tl_wrappers_lock, NULL); }

static void tl_wrapper_key_make(void) {
    tl_wrapper_key_ok = pthread_key_create(&tl_wrapper_key, tl_wrapper_exit) == 0;
    (void)pthread_atfork(tl_wrappers_prepare, tl_wrappers_parent, tl_wrappers_child);
}

/* Drop the references of threads that have exited. Needs a thread state. One
 * atomic load when there is nothing to do. */
static void tl_orphans_drain(void) {
    if (TL_LIKELY(__atomic_load_n(&tl_orphans, __ATOMIC_RELAXED) == NULL)) return;
    TlArena *w = __atomic_exchange_n(&tl_orphans, NULL, __ATOMIC_ACQUIRE);
    while (w) {
        TlArena *next = w->orphan_next;
        w->orphan_next = NULL;
        Py_DECREF((PyObject *)w);
        w = next;
    }
}

/* Slow path of thread_arena(): first call on this OS thread. */
TL_NOINLINE static PyObject *thread_arena_create(void) {
    tl_orphans_drain();
    pthread_once(&tl_wrapper_once, tl_wrapper_key_make);
    if (!tl_wrapper_key_ok) {
        PyErr_SetString(PyExc_RuntimeError, "tlalloc: no thread-specific key available");
        return NULL;
    }
    tl_arena *a = tl_py_thread_arena();
    if (!a) return NULL;
    tl_arena_retain(a);
    PyObject *obj = arena_wrap((PyTypeObject *)tl_arena_subtype, a, 1);
    if (!obj) return NULL;
    tl_py_share(obj); /* its last reference is dropped by another thread */
    if (warn_hugetlb_fallback(a) < 0 || pthread_setspecific(tl_wrapper_key, obj) != 0) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        Py_DECREF(obj);
        return NULL;
    }
    TlArena *w = (TlArena *)obj;
    pthread_mutex_lock(&tl_wrappers_lock);
    w->wnext = tl_wrappers;
    if (tl_wrappers) tl_wrappers->wprev = w;
    tl_wrappers = w;
    pthread_mutex_unlock(&tl_wrappers_lock);
    tl_thread_arena_obj = obj; /* the thread's reference (the one arena_wrap made) */
    Py_INCREF(obj);            /* the caller's */
    return obj;
}

/* Fast path: one TLS read and one compare (the object must still wrap this
 * thread's C arena; a C caller may have released that arena). */
static PyObject *py_thread_arena(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    PyObject *obj = tl_thread_arena_obj;
    if (TL_LIKELY(obj != NULL && ((TlArena *)obj)->a == tl_thread_arena_peek())) {
        Py_INCREF(obj);
        return obj;
    }
    if (obj != NULL) { /* the C arena was released under it: start over */
        tl_thread_arena_obj = NULL;
        (void)pthread_setspecific(tl_wrapper_key, NULL);
        pthread_mutex_lock(&tl_wrappers_lock);
        tl_wrappers_unlink_locked((TlArena *)obj);
        pthread_mutex_unlock(&tl_wrappers_lock);
        Py_DECREF(obj);
    }
    return thread_arena_create();
}

/* _after_fork_child(): called in a child made by os.fork (os.register_at_fork).
 * Only the forking thread exists there: drop the objects of all the others, as
 * their exits would have. */
static PyObject *py_after_fork_child(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    PyObject *mine = tl_thread_arena_obj;
    pthread_mutex_lock(&tl_wrappers_lock);
    TlArena *w = tl_wrappers;
    tl_wrappers = NULL;
    while (w) {
        TlArena *next = w->wnext;
        w->wprev = w->wnext = NULL;
        if ((PyObject *)w == mine) {
            tl_wrappers = w; /* the only entry left */
        } else {
            tl_orphan_push(w);
        }
        w = next;
    }
    pthread_mutex_unlock(&tl_wrappers_lock);
    tl_orphans_drain();
    Py_RETURN_NONE;
}

static PyObject *py_region_count(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSsize_t(__atomic_load_n(&tl_regions_alive, __ATOMIC_RELAXED));
}

static PyObject *py_scratch(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    PyObject *arena = py_thread_arena(m, NULL);
    if (!arena) return NULL;
    PyObject *s = arena_scope((TlArena *)arena, NULL);
    Py_DECREF(arena);
    return s;
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
    PyObject *subtype, *parse_size;
    if (!PyArg_ParseTuple(args, "OO:_set_hooks", &subtype, &parse_size)) return NULL;
    if (tl_hooks_set) /* read without a lock from then on: set once, at import */
        return PyErr_Format(PyExc_RuntimeError, "_set_hooks may be called only once");
    if (!PyType_Check(subtype) || !PyType_IsSubtype((PyTypeObject *)subtype, &TlArena_Type))
        return PyErr_Format(PyExc_TypeError, "subtype must be a subclass of Arena");
    Py_INCREF(subtype);
    Py_XSETREF(tl_arena_subtype, subtype);
    Py_INCREF(parse_size);
    Py_XSETREF(tl_parse_size_func, parse_size);
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
 * allocation micro-benchmark (tlalloc/bench.h), run without the GIL. */
static PyObject *py_bench_alloc(PyObject *Py_UNUSED(m), PyObject *args) {
    const char *strategy;
    int threads;
    unsigned long long n, size;
    if (!PyArg_ParseTuple(args, "siKK:_bench_alloc", &strategy, &threads, &n, &size)) return NULL;
    tl_bench_strategy s;
    if (strcmp(strategy, "thread") == 0) s = TL_BENCH_THREAD;
    else if (strcmp(strategy, "shared") == 0) s = TL_BENCH_SHARED;
    else if (strcmp(strategy, "malloc") == 0) s = TL_BENCH_MALLOC;
    else return PyErr_Format(PyExc_ValueError, "strategy must be 'thread', 'shared' or 'malloc', "
                                               "got '%s'", strategy);
    if (threads < 1 || threads > 4096)
        return PyErr_Format(PyExc_ValueError, "threads must be between 1 and 4096, got %d", threads);
    if (size == 0 || size > (1u << 20))
        return PyErr_Format(PyExc_ValueError, "size must be between 1 and 1048576, got %llu", size);
    tl_bench_result r;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = tl_bench_alloc(s, threads, (uint64_t)n, (size_t)size, &r);
    Py_END_ALLOW_THREADS
    if (rc != 0) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("{s:d,s:d,s:d,s:K}", "wall_seconds", r.wall_seconds, "ns_per_alloc",
                         r.ns_per_alloc, "allocs_per_second", r.allocs_per_second,
                         "total_allocations", (unsigned long long)r.total_allocations);
}

static PyMethodDef module_methods[] = {
    {"_bench_alloc", (PyCFunction)py_bench_alloc, METH_VARARGS, NULL},
    {"thread_arena", (PyCFunction)py_thread_arena, METH_NOARGS,
     "thread_arena()\n--\n\n"
     "The calling thread's arena, created on first use with the configured size.\n\n"
     "It is never shared with another thread; it is released after the thread exits\n"
     "and the last array allocated from it is gone.\n\n"
     "Example:\n"
     "    >>> import tlalloc\n"
     "    >>> tlalloc.thread_arena() is tlalloc.thread_arena()\n"
     "    True\n"},
    {"scratch", (PyCFunction)py_scratch, METH_NOARGS,
     "scratch()\n--\n\n"
     "A scope on the calling thread's arena: ``thread_arena().scope()``.\n\n"
     "Example:\n"
     "    >>> import numpy as np, tlalloc\n"
     "    >>> with tlalloc.scratch() as a:\n"
     "    ...     v = a.empty(8, np.float64)\n"
     "    ...     v.shape\n"
     "    ...     del v\n"
     "    (8,)\n"},
    {"_registry_stats", (PyCFunction)py_registry_stats, METH_NOARGS, NULL},
    {"_after_fork_child", (PyCFunction)py_after_fork_child, METH_NOARGS, NULL},
    {"_region_count", (PyCFunction)py_region_count, METH_NOARGS, NULL},
    {"_set_track_allocations", (PyCFunction)py_set_track_allocations, METH_O, NULL},
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
