/* arena_py.h: shared by the files of the arena binding (not by the other parts).
 *
 * arena_py.c       the region, scope and arena types (tlalloc.Arena), statistics;
 * thread_arena_py.c  one arena object per OS thread (thread_arena(), scratch()),
 *                  its release at thread exit and in a forked child;
 * live_arrays.c    the live arrays named in a BufferError, allocation tracking;
 * liveness.c       exact live-array counts on free-threaded CPython;
 * args.c           argument rules shared by every binding file (binding.h).
 */
#ifndef TLALLOC_ARENA_PY_H
#define TLALLOC_ARENA_PY_H

#include "binding.h"

/* The owner of arena memory handed out in one scope: the NumPy base of every
 * array from it (arena_py.c explains the safety model). */
typedef struct TlRegion {
    PyObject_HEAD
    tl_arena *a;               /* retained */
    tl_mark mark;              /* where the scope started */
    tl_escape esc;             /* after its scope ended with arrays alive: the memory
                                  they use, given back when the region dies */
    PyObject *tracked;         /* with track_allocations: a list of (weakref to the
                                  array, file, line) for each allocation; else NULL */
} TlRegion;

/* tlalloc.Arena. */
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

/* ---- arena_py.c ---- */
/* Python subclass used for new arenas (set once at import by _set_hooks). */
extern PyObject *tl_arena_subtype;
/* Wrap the C arena `a` (its reference passes to the object). */
PyObject *arena_wrap(PyTypeObject *type, tl_arena *a, int is_thread);
/* Arena.scope(). */
PyObject *arena_scope(TlArena *self, PyObject *ignored);
/* Warn (once per process) when `a` asked for hugetlb pages and got others. */
int warn_hugetlb_fallback(const tl_arena *a);
/* The exception for a failed tl_arena_create (errno set by it). */
PyObject *tl_arena_error_from_errno(size_t capacity);
/* A number no other thread of this process ever gets (out of line; the
 * owner checks use an inline copy). */
uint64_t tl_py_thread_serial(void);

/* The region type (internal: the NumPy base of arena arrays). */
extern PyTypeObject TlRegion_Type;

/* ---- live_arrays.c ---- */
/* track_allocations: set by tlalloc._config; read with relaxed loads (a
 * plain load) on every allocation. */
extern int tl_track;
/* With tracking on: remember (weakref, file, line) of obj, allocated from r. */
TL_NOINLINE int region_track(TlRegion *r, PyObject *obj);
/* The BufferError's text for `live` arrays of r alive when `what` was asked. */
PyObject *region_error(TlRegion *r, Py_ssize_t live, const char *what);
/* Add _set_track_allocations() to the module. */
int tl_py_live_arrays_init(PyObject *m);

/* ---- thread_arena_py.c ---- */
/* Drop the objects of threads that have exited. Needs a thread state. */
void tl_orphans_drain(void);
/* Take a thread arena object off the list of every thread's object. */
void tl_wrappers_remove(TlArena *w);
/* Add thread_arena(), scratch() and _after_fork_child() to the module. */
int tl_py_thread_arena_init(PyObject *m);

/* ---- liveness.c: exact counts without the GIL ---- */
#ifdef Py_GIL_DISABLED
/* Put a new object in the merged reference-count state (no owning thread):
 * what CPython does to an object whose creator has exited. Only for an object
 * this thread has just created and not yet published, so plain stores suffice
 * (publication to another thread goes through a synchronising operation).
 * Four stores, inline: it runs for every array made. */
static inline void tl_py_share(PyObject *o) {
    Py_ssize_t n = (Py_ssize_t)o->ob_ref_local + (o->ob_ref_shared >> _Py_REF_SHARED_SHIFT);
    o->ob_ref_local = 0;
    o->ob_tid = _Py_UNOWNED_TID;
    o->ob_ref_shared = _Py_REF_SHARED(n, _Py_REF_MERGED);
}
/* Before raising BufferError: let deferred drops of `probe` land (liveness.c). */
int tl_py_settle(PyObject *probe, Py_ssize_t held);
/* At import: the empty function and the gc callback tl_py_settle uses. */
int tl_settle_init(PyObject *m);
#else
static inline void tl_py_share(PyObject *o) { (void)o; }
static inline int tl_py_settle(PyObject *probe, Py_ssize_t held) {
    (void)probe;
    (void)held;
    return 0;
}
static inline int tl_settle_init(PyObject *m) {
    (void)m;
    return 0;
}
#endif

#endif
