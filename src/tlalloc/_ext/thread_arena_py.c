/* thread_arena_py.c: thread_arena() and scratch(): one arena object per OS
 * thread, released at the thread's exit and, in a forked child, for every
 * thread that does not exist there (the story is told at thread_arena(); what
 * holds, in short: docs/threads.md). */
#include "arena_py.h"

#include <pthread.h>

/* Every thread arena object (see thread_arena() below). */
static pthread_mutex_t tl_wrappers_lock = PTHREAD_MUTEX_INITIALIZER;
static TlArena *tl_wrappers;   /* head; linked through wprev/wnext */
static TlArena *tl_orphans;    /* Treiber stack through orphan_next (atomics) */

static void tl_wrappers_unlink_locked(TlArena *w) {
    if (w->wprev) w->wprev->wnext = w->wnext;
    else if (tl_wrappers == w) tl_wrappers = w->wnext;
    if (w->wnext) w->wnext->wprev = w->wprev;
    w->wprev = w->wnext = NULL;
}

void tl_wrappers_remove(TlArena *w) {
    pthread_mutex_lock(&tl_wrappers_lock);
    tl_wrappers_unlink_locked(w);
    pthread_mutex_unlock(&tl_wrappers_lock);
}

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
void tl_orphans_drain(void) {
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

static PyObject *py_scratch(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    PyObject *arena = py_thread_arena(m, NULL);
    if (!arena) return NULL;
    PyObject *s = arena_scope((TlArena *)arena, NULL);
    Py_DECREF(arena);
    return s;
}

static PyMethodDef thread_arena_methods[] = {
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
    {"_after_fork_child", (PyCFunction)py_after_fork_child, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int tl_py_thread_arena_init(PyObject *m) { return PyModule_AddFunctions(m, thread_arena_methods); }
