/* liveness.c: exact live-array counts on free-threaded CPython (arena_py.c
 * counts the live arrays of a scope as its region's references; docs/threads.md,
 * "Liveness without the GIL").
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
 */
#include "arena_py.h"

#include <time.h>

#ifdef Py_GIL_DISABLED
static PyObject *tl_merge_func;     /* lambda: None (its call runs the eval breaker) */
static int tl_gc_running;            /* collections in progress (gc.callbacks) */
static uint64_t tl_gc_thread;        /* tl_py_thread_serial() of the collecting thread */

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
int tl_py_settle(PyObject *probe, Py_ssize_t held) {
    if (tl_merge_func) {
        PyObject *r = PyObject_CallNoArgs(tl_merge_func);
        if (!r) return -1;
        Py_DECREF(r);
    }
    if (__atomic_load_n(&tl_gc_running, __ATOMIC_ACQUIRE) <= 0 ||
        __atomic_load_n(&tl_gc_thread, __ATOMIC_RELAXED) == tl_py_thread_serial())
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
        __atomic_store_n(&tl_gc_thread, tl_py_thread_serial(), __ATOMIC_RELAXED);
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
int tl_settle_init(PyObject *m) {
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
/* With the GIL, every drop is immediate: nothing to do (arena_py.h). */
typedef int tl_liveness_unused; /* ISO C: a translation unit is never empty */
#endif
