/* kernels_py.c: binding of the kernels (include/tlalloc/kernels.h).
 *
 * The functions here are private (_cosine_similarity, _spread_activation,
 * _decay); tlalloc/kernels.py wraps them with the public signatures. Every
 * argument is checked here, before any memory is touched, with an exception
 * that names the argument and the value; then the GIL is released (unless the
 * call is too short for that to pay: "short calls keep the GIL" below),
 * scratch is taken from the chosen strategy (thread: the calling thread's
 * arena) and the C kernel runs. Checks cost O(1) per argument, except the ages check of decay
 * (one pass) and conversions of unusual dtypes (a NumPy copy).
 *
 * Caller memory read with the GIL released (another thread may write it
 * meanwhile) is read once where a value decides an access: seeds and
 * activations are private copies; spread_activation reads each indptr pair and
 * each edge's index once and checks it at that read; shapes and strides come
 * from the array objects, not from the data. Values that only enter arithmetic
 * (cosine inputs, strengths, ages, weights) can then only give other numbers:
 * an age made negative after decay's check gives a factor above 1, never an
 * access outside a buffer.
 */
#include "binding.h"

#include <math.h>
#include <signal.h>
#include <string.h>
#include <time.h>

/* ---- helpers -------------------------------------------------------------------- */

/* tl_dtype of a native-byte-order array, or -1. */
static int tl_py_dtype(PyArrayObject *a) {
    if (!PyArray_ISNOTSWAPPED(a)) return -1;
    switch (PyArray_TYPE(a)) {
    case NPY_HALF: return TL_F16;
    case NPY_FLOAT: return TL_F32;
    case NPY_DOUBLE: return TL_F64;
    case NPY_BYTE: return TL_I8;
    case NPY_SHORT: return TL_I16;
    case NPY_UBYTE: return TL_U8;
    case NPY_USHORT: return TL_U16;
    default: break;
    }
    /* int/long/longlong alias each other by size */
    int tn = PyArray_TYPE(a);
    if (PyTypeNum_ISSIGNED(tn)) return PyArray_ITEMSIZE(a) == 4 ? TL_I32 : PyArray_ITEMSIZE(a) == 8 ? TL_I64 : -1;
    if (PyTypeNum_ISUNSIGNED(tn)) return PyArray_ITEMSIZE(a) == 4 ? TL_U32 : PyArray_ITEMSIZE(a) == 8 ? TL_U64 : -1;
    return -1;
}

/* New reference: obj as an ndarray (no copy when it already is one). */
static PyArrayObject *tl_py_array(PyObject *obj) {
    if (PyArray_Check(obj)) {
        Py_INCREF(obj);
        return (PyArrayObject *)obj;
    }
    return (PyArrayObject *)PyArray_FromAny(obj, NULL, 0, 0, 0, NULL);
}

/* Borrowed arrays. The arrays a call reads (a corpus, a graph, strengths) are
 * often the same objects in every thread. Their reference count is the one
 * write a call would make to them: on a free-threaded build an INCREF/DECREF
 * of an object another thread created is an atomic add on its header's cache
 * line, which every calling core then takes in turn. The binding does not
 * make it: an argument that is already a usable ndarray is used as borrowed
 * (the caller holds its arguments for the whole call, with or without the
 * GIL), and only a converted copy is a new reference. tl_py_array_arg returns
 * such a reference and tl_py_drop releases one, given the argument. */
static PyArrayObject *tl_py_array_arg(PyObject *obj) {
    if (PyArray_Check(obj)) return (PyArrayObject *)obj;
    return (PyArrayObject *)PyArray_FromAny(obj, NULL, 0, 0, 0, NULL);
}

static void tl_py_drop(PyArrayObject *a, PyObject *arg) {
    if (a && (PyObject *)a != arg) Py_DECREF(a);
}

/* New reference: `a` cast to `type_num` (native order), a NumPy copy. */
static PyArrayObject *tl_py_cast(PyArrayObject *a, int type_num) {
    PyArray_Descr *d = PyArray_DescrFromType(type_num);
    if (!d) return NULL;
    return (PyArrayObject *)PyArray_FromAny((PyObject *)a, d, 0, 0, NPY_ARRAY_FORCECAST | NPY_ARRAY_ALIGNED, NULL);
}

/* A float array for `name`: float16/32/64 as is; long double or swapped byte
 * order converted to float64 (copy); anything else TypeError. Borrowed or new
 * (tl_py_array_arg's rule: release with tl_py_drop(a, obj)). */
static PyArrayObject *tl_py_float_array(PyObject *obj, const char *name) {
    PyArrayObject *a = tl_py_array_arg(obj);
    if (!a) return NULL;
    int tn = PyArray_TYPE(a);
    if (!PyTypeNum_ISFLOAT(tn)) {
        PyErr_Format(PyExc_TypeError, "%s must have a floating-point dtype (float16, float32 or float64), got %R",
                     name, (PyObject *)PyArray_DESCR(a));
        tl_py_drop(a, obj);
        return NULL;
    }
    if (tl_py_dtype(a) < 0 || !PyArray_ISALIGNED(a)) {
        PyArrayObject *c = tl_py_cast(a, tn == NPY_HALF ? NPY_HALF : tn == NPY_FLOAT ? NPY_FLOAT : NPY_DOUBLE);
        tl_py_drop(a, obj);
        return c;
    }
    return a;
}

/* The calling thread's default scratch strategy (kernels.scratch_strategy()):
 * a C thread-local, so a kernel call reads it without any Python lookup. */
static _Thread_local int tl_py_scratch_default = TL_SCRATCH_THREAD;
static const char *const tl_scratch_names[3] = {"thread", "shared", "malloc"};

/* `_scratch` argument: None (the thread's default) or a strategy name. */
static int tl_py_scratch_kind(PyObject *obj, tl_scratch_kind *out) {
    if (obj == Py_None) {
        *out = (tl_scratch_kind)tl_py_scratch_default;
        return 0;
    }
    if (PyUnicode_Check(obj))
        for (int i = 0; i < 3; i++)
            if (PyUnicode_CompareWithASCIIString(obj, tl_scratch_names[i]) == 0) {
                *out = (tl_scratch_kind)i;
                return 0;
            }
    PyErr_Format(PyExc_ValueError, "_scratch must be one of ['malloc', 'shared', 'thread'] or None, got %R",
                 obj);
    return -1;
}

static PyObject *py_set_thread_scratch(PyObject *Py_UNUSED(m), PyObject *arg) {
    tl_scratch_kind kind;
    if (arg == Py_None) {
        PyErr_SetString(PyExc_ValueError, "a strategy name is required");
        return NULL;
    }
    if (tl_py_scratch_kind(arg, &kind) < 0) return NULL;
    int prev = tl_py_scratch_default;
    tl_py_scratch_default = (int)kind;
    return PyUnicode_FromString(tl_scratch_names[prev]);
}

static PyObject *py_get_thread_scratch(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyUnicode_FromString(tl_scratch_names[tl_py_scratch_default]);
}

/* The object kernels.py uses as decay()'s default tau, so that an explicit tau
 * (even 86400.0) can be told from the default. Set once at import. */
static PyObject *tl_py_default_tau;

static PyObject *py_set_default_tau(PyObject *Py_UNUSED(m), PyObject *arg) {
    Py_XSETREF(tl_py_default_tau, Py_NewRef(arg));
    Py_RETURN_NONE;
}

/* The arena for a scratch bracket: for THREAD it is fetched with the GIL held
 * (first use creates and names it); SHARED and MALLOC need none. Returns 0, or
 * -1 with an exception set. tl_scratch_begin itself runs after the GIL is
 * released (SHARED may wait on its lock). */
static int tl_py_scratch_arena(tl_scratch_kind kind, tl_arena **out) {
    *out = NULL;
    if (kind != TL_SCRATCH_THREAD) return 0;
    *out = tl_py_thread_arena();
    return *out ? 0 : -1;
}

static PyObject *tl_py_kernel_error(int rc) {
    if (rc == TL_K_ENOMEM) return PyErr_NoMemory();
    PyErr_Format(PyExc_SystemError, "tlalloc kernel failed with code %d", rc);
    return NULL;
}

/* Optional count (None -> -1): the count rule (args.c), 0 or more. */
static int tl_py_opt_count(PyObject *obj, const char *name, Py_ssize_t *out) {
    if (obj == Py_None) {
        *out = -1;
        return 0;
    }
    return tl_arg_count(obj, name, 0, PY_SSIZE_T_MAX, out);
}

static int tl_py_real(PyObject *obj, const char *name, double *out) {
    if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyLong_Check(obj) || PyIndex_Check(obj) ||
                               PyArray_IsScalar(obj, Floating))) {
        PyErr_Format(PyExc_TypeError, "%s must be a real number, got %R", name, obj);
        return -1;
    }
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

/* The byte range [lo, hi) an array's elements can touch (as np.may_share_memory
 * computes it: from the extreme strides, O(ndim)). */
static void tl_py_extent(PyArrayObject *a, uintptr_t *lo, uintptr_t *hi) {
    uintptr_t base = (uintptr_t)PyArray_DATA(a);
    intptr_t low = 0, high = 0;
    for (int i = 0; i < PyArray_NDIM(a); i++) {
        npy_intp n = PyArray_DIM(a, i), st = PyArray_STRIDE(a, i);
        if (n == 0) {
            *lo = *hi = base;
            return;
        }
        if (st > 0) high += (intptr_t)st * (n - 1);
        else low += (intptr_t)st * (n - 1);
    }
    *lo = base + (uintptr_t)low;
    *hi = base + (uintptr_t)high + (uintptr_t)PyArray_ITEMSIZE(a);
}

/* Nonzero if the memory of a and b may overlap (bounds only, like NumPy's check). */
static int tl_py_may_overlap(PyArrayObject *a, PyArrayObject *b) {
    uintptr_t alo, ahi, blo, bhi;
    tl_py_extent(a, &alo, &ahi);
    tl_py_extent(b, &blo, &bhi);
    return alo < bhi && blo < ahi;
}

/* Nonzero if out and in are the same elements (same start, stride, item size)
 * or do not overlap at all. 1-D arrays of one length. */
static int tl_py_same_or_apart(PyArrayObject *out, PyArrayObject *in) {
    if (PyArray_DATA(out) == PyArray_DATA(in) && PyArray_ITEMSIZE(out) == PyArray_ITEMSIZE(in) &&
        (PyArray_STRIDE(out, 0) == PyArray_STRIDE(in, 0) || PyArray_DIM(out, 0) <= 1))
        return 1;
    return !tl_py_may_overlap(out, in);
}

/* ---- interruption ------------------------------------------------------------------
 * A call can run as long as its input makes it (a zero-stride view of 2**40 rows,
 * a cycle spread for a million steps). The kernels poll between chunks of work
 * (tl_kernels_set_poll). On the main thread the poll function below looks, at
 * most every TL_PY_POLL_NS, whether SIGINT arrived: it takes the GIL for that
 * (PyOS_InterruptOccurred needs it; one acquisition per 50 ms), and if so trips
 * the signal again for Python (PyErr_SetInterruptEx) and stops the kernel. The
 * binding then runs the handlers where that is safe (the kernel has returned,
 * its scratch is released): KeyboardInterrupt propagates, with out= partly
 * written; a handler that returns normally makes the call start over. Other
 * threads are not polled: Python runs signal handlers in the main thread only. */
#define TL_PY_POLL_NS 50000000ull

/* The main thread's ident: set by kernels.py at import and in a forked child. */
static unsigned long tl_py_main_ident;

static PyObject *py_set_main_thread(PyObject *Py_UNUSED(m), PyObject *arg) {
    unsigned long v = PyLong_AsUnsignedLong(arg);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    __atomic_store_n(&tl_py_main_ident, v, __ATOMIC_RELAXED); /* read by any thread */
    Py_RETURN_NONE;
}

/* A stretch of kernel work with the GIL released (the role of
 * Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS, plus polling). */
typedef struct tl_py_nogil {
    PyThreadState *save;
    uint64_t next_ns;
    int polled; /* main thread: the kernels poll */
} tl_py_nogil;

static uint64_t tl_py_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* vDSO, ~5 ns; 4 ms resolution is plenty */
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The poll function (GIL released): nonzero if SIGINT arrived. */
static int tl_py_poll(void *arg) {
    tl_py_nogil *g = arg;
    uint64_t now = tl_py_now_ns();
    if (now < g->next_ns) return 0;
    g->next_ns = now + TL_PY_POLL_NS;
    PyEval_RestoreThread(g->save);
    int hit = PyOS_InterruptOccurred(); /* clears the flag ... */
    if (hit) PyErr_SetInterruptEx(SIGINT); /* ... so set it again for the handler */
    g->save = PyEval_SaveThread();
    return hit;
}

static void tl_py_nogil_begin(tl_py_nogil *g) {
    g->polled = PyThread_get_thread_ident() == __atomic_load_n(&tl_py_main_ident, __ATOMIC_RELAXED);
    if (g->polled) {
        g->next_ns = tl_py_now_ns() + TL_PY_POLL_NS;
        tl_kernels_set_poll(tl_py_poll, g);
    }
    g->save = PyEval_SaveThread();
}

static void tl_py_nogil_end(tl_py_nogil *g) {
    PyEval_RestoreThread(g->save);
    if (g->polled) tl_kernels_set_poll(NULL, NULL);
}

/* A kernel's work with the GIL released: the kernel's code (TL_K_*). */
typedef int (*tl_py_work_fn)(void *ctx, tl_scratch *s, tl_py_nogil *g);

/* The scratch memory a call's work runs in (NULL: none). */
typedef struct tl_py_scratch_arg {
    tl_scratch_kind kind;
    tl_arena *arena; /* TL_SCRATCH_THREAD: the thread's arena */
} tl_py_scratch_arg;

/* Open the scratch scope `sa` names: TL_K_OK, or TL_K_ENOMEM. */
static int tl_py_scratch_open(tl_scratch *s, const tl_py_scratch_arg *sa) {
    return tl_scratch_begin(s, sa->kind, sa->kind == TL_SCRATCH_THREAD ? sa->arena : NULL) == 0
               ? TL_K_OK
               : TL_K_ENOMEM;
}

/* tl_py_run returns this when the signal handlers (or `restart`) raised. */
#define TL_PY_RAISED (-100)

/* ---- short calls keep the GIL ------------------------------------------------------
 * Releasing the GIL and taking it back is a cost of its own: uncontended, a
 * mutex, a condition variable and the thread state's bookkeeping, measured
 * at 0.05-0.08 us of CPU per call (a decay of 1,000 float32 values: 0.49 us
 * with the GIL kept, 0.57 us released on 3.11; 0.69 and 0.76 us on 3.13t);
 * when other threads wait for the GIL, a hand-off on top. It pays when the
 * work is long enough for other threads to do something meanwhile, and only
 * then: a kernel call estimates its work as the bytes it reads (the corpus
 * rows it scores, the graph a spreading walk may cross, the arrays decay
 * streams) and runs calls below TL_PY_KEEP_GIL_BYTES with the GIL held, as
 * NumPy's loops below 500 elements do. With the GIL, what decides is the
 * hand-off when another thread waits for it: two threads calling in a loop
 * paid 1.4-2.4 us of CPU more per call for releasing it (spreading over 50
 * nodes 2.2 -> 4.6 us, decay of 10,000 values 2.5 -> 3.9 us, cosine over
 * 300 x 768 float32 rows 9.2 -> 11.2 us; `python -m tlalloc.bench.kernel_threads
 * --keep-gil-bytes 65536` against the default on 3.11, Zen 5, load 1.4), so a release costs under 10 % of a call only from
 * about 20 us of work: 1 MiB at the kernels' in-cache rate of about 50 bytes
 * per ns. The same cells with the GIL kept below 1 MiB: 0.97-1.23x. A thread
 * waits at most that long for the GIL (the switch interval is 5 ms).
 *
 * A call run with the GIL held is not polled for Ctrl-C: it is short by
 * construction (its estimate bounds its work, which runs at tens of GB/s in
 * cache), so a signal waits microseconds for it. Calls that use the shared scratch arena
 * always release the GIL: tl_scratch_begin may wait there for another
 * thread's call, and no thread may wait while it holds the GIL.
 *
 * A free-threaded build has no GIL to keep and no hand-off, but releasing
 * still detaches the thread state (an atomic exchange and the QSBR
 * bookkeeping: 0.07 us of CPU, a decay of 1,000 values 0.69 against 0.76 us)
 * and attaching again may wait for a stop-the-world pause (the GC's), which a
 * detached thread lets proceed without it: there the threshold is 64 KiB,
 * about 1.3 us of work, above which detaching costs under 6 % of a call. */
#ifdef Py_GIL_DISABLED
#define TL_PY_KEEP_GIL_BYTES_DEFAULT ((size_t)64 << 10)
#else
#define TL_PY_KEEP_GIL_BYTES_DEFAULT ((size_t)1 << 20)
#endif

static size_t tl_py_keep_gil_bytes = TL_PY_KEEP_GIL_BYTES_DEFAULT; /* testing aid may change it */

/* _kernels_keep_gil_bytes(n=None): the threshold; n sets it, returns the previous one. */
static PyObject *py_keep_gil_bytes(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    size_t prev = __atomic_load_n(&tl_py_keep_gil_bytes, __ATOMIC_RELAXED);
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "_kernels_keep_gil_bytes(n=None)");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        Py_ssize_t v;
        if (tl_arg_count(args[0], "n", 0, PY_SSIZE_T_MAX, &v) < 0) return NULL;
        __atomic_store_n(&tl_py_keep_gil_bytes, (size_t)v, __ATOMIC_RELAXED);
    }
    return PyLong_FromSize_t(prev);
}

/* a * b * c, or SIZE_MAX where that overflows (a zero-stride view can claim
 * 2**40 rows): a work estimate in bytes. */
static size_t tl_py_bytes3(size_t a, size_t b, size_t c) {
    size_t ab, abc;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc)) return SIZE_MAX;
    return abc;
}

/* A spreading call's estimate, a bound: every step may walk the whole graph
 * (a cycle with decay_rate=0 does, up to max_depth steps), every edge counted
 * as a cache line (its target is a random access) and every node as 16 bytes
 * of state; the seeding and max_depth steps per seed set. A walk that stops
 * early touches less, so a call that keeps the GIL is short whatever it
 * meets. */
#define TL_PY_EDGE_BYTES 64
static size_t tl_py_spread_bytes(size_t n, size_t nnz, size_t depth, size_t nsets) {
    size_t edges = tl_py_bytes3(nnz, TL_PY_EDGE_BYTES, 1), nodes = tl_py_bytes3(n, 16, 1);
    size_t steps = depth >= SIZE_MAX - 1 ? SIZE_MAX : depth + 1;
    return edges > SIZE_MAX - nodes ? SIZE_MAX : tl_py_bytes3(edges + nodes, steps, nsets);
}

/* work(ctx) inside a scratch scope if `sa` is given; the work's code. */
static int tl_py_run_work(tl_py_work_fn work, void *ctx, const tl_py_scratch_arg *sa, tl_py_nogil *g) {
    if (!sa) return work(ctx, NULL, g);
    tl_scratch s;
    int rc = tl_py_scratch_open(&s, sa);
    if (rc == TL_K_OK) {
        rc = work(ctx, &s, g);
        tl_scratch_end(&s);
    }
    return rc;
}

/* Run work(ctx), inside a scratch scope if `sa` is given: with the GIL held if
 * its estimated `bytes` are below the threshold above (never polled), else
 * with the GIL released (polled for SIGINT on the main thread). When a poll
 * stops it (TL_K_EINTR), run the signal handlers with the GIL held: if they
 * raise (Ctrl-C's KeyboardInterrupt), return TL_PY_RAISED; else call
 * `restart` (if any: it rewinds the work's input, -1 with an exception set on
 * failure) and run the work again from the start. Returns the work's code
 * otherwise. */
static int tl_py_run(tl_py_work_fn work, void *ctx, const tl_py_scratch_arg *sa,
                     int (*restart)(void *ctx), size_t bytes) {
    if (bytes < __atomic_load_n(&tl_py_keep_gil_bytes, __ATOMIC_RELAXED) &&
        !(sa && sa->kind == TL_SCRATCH_SHARED)) {
        tl_py_nogil held = {NULL, 0, 0}; /* not polled: the work cannot stop with TL_K_EINTR */
        return tl_py_run_work(work, ctx, sa, &held);
    }
    for (;;) {
        tl_py_nogil g;
        tl_py_nogil_begin(&g);
        int rc = tl_py_run_work(work, ctx, sa, &g);
        tl_py_nogil_end(&g);
        if (rc != TL_K_EINTR) return rc;
        if (PyErr_CheckSignals() < 0) return TL_PY_RAISED;
        if (restart && restart(ctx) < 0) return TL_PY_RAISED;
    }
}

/* ---- cosine similarity ------------------------------------------------------------ */

/* Nonzero if `a` holds bfloat16 (ml_dtypes registers it as a 2-byte void-kind
 * dtype named "bfloat16"; NumPy itself has none, so ml_dtypes stays optional). */
static int tl_py_is_bf16(PyArrayObject *a) {
    PyArray_Descr *dt = PyArray_DESCR(a);
    if (dt->kind != 'V' || PyArray_ITEMSIZE(a) != 2) return 0;
    PyObject *name = PyObject_GetAttrString((PyObject *)dt, "name");
    if (!name) {
        PyErr_Clear();
        return 0;
    }
    int yes = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "bfloat16") == 0;
    Py_DECREF(name);
    return yes;
}

/* A cosine input for `name`: a float array (tl_py_float_array's rule) or a
 * bfloat16 one (read in place: the kernel reads 16-bit elements through memcpy
 * or aligned vector loads, so any alignment works). *dtype gets its tl_dtype.
 * Borrowed or new: release with tl_py_drop(a, obj). */
static PyArrayObject *tl_py_cos_array(PyObject *obj, const char *name, tl_dtype *dtype) {
    if (PyArray_Check(obj) && tl_py_is_bf16((PyArrayObject *)obj)) { /* borrowed */
        *dtype = TL_BF16;
        return (PyArrayObject *)obj;
    }
    PyArrayObject *a = tl_py_float_array(obj, name);
    if (a) *dtype = (tl_dtype)tl_py_dtype(a);
    return a;
}

/* candidate_norms: shape (n,), float32 or float64, every value finite and >= 0
 * (one pass, with the GIL held: the kernel reads them again, but they only
 * enter arithmetic, where a value changed meanwhile gives another score).
 * Borrowed or new (release with tl_py_drop(a, obj)), or NULL with an
 * exception set. */
static PyArrayObject *tl_py_cand_norms(PyObject *obj, npy_intp n) {
    PyArrayObject *a = tl_py_array_arg(obj);
    if (!a) return NULL;
    int tn = PyArray_TYPE(a);
    if ((tn != NPY_FLOAT && tn != NPY_DOUBLE) || !PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_TypeError, "candidate_norms must have dtype float32 or float64, got %R",
                     (PyObject *)PyArray_DESCR(a));
        goto fail;
    }
    if (PyArray_NDIM(a) != 1 || PyArray_DIM(a, 0) != n) {
        PyErr_Format(PyExc_ValueError, "candidate_norms must have shape (%zd,) (one norm per candidate), got %d "
                     "dimension(s) of size %zd", (Py_ssize_t)n, PyArray_NDIM(a),
                     PyArray_NDIM(a) ? (Py_ssize_t)PyArray_DIM(a, 0) : (Py_ssize_t)1);
        goto fail;
    }
    if (!PyArray_ISALIGNED(a)) {
        PyArrayObject *c = tl_py_cast(a, tn);
        tl_py_drop(a, obj);
        if (!c) return NULL;
        a = c;
    }
    const char *p = PyArray_DATA(a);
    npy_intp st = PyArray_STRIDE(a, 0);
    for (npy_intp i = 0; i < n; i++) {
        double v = tn == NPY_FLOAT ? (double)*(const float *)(p + i * st) : *(const double *)(p + i * st);
        if (isfinite(v) && v >= 0.0) continue;
        PyObject *pv = PyFloat_FromDouble(v);
        if (pv) {
            PyErr_Format(PyExc_ValueError, "candidate_norms[%zd] = %R is %s", (Py_ssize_t)i, pv,
                         isfinite(v) ? "negative (a norm must be >= 0)" : "not finite");
            Py_DECREF(pv);
        }
        goto fail;
    }
    return a;
fail:
    tl_py_drop(a, obj);
    return NULL;
}

/* allow=: None, a boolean mask of n, or row ids (any integer dtype; empty:
 * any dtype). Fills o's filter from a private copy (*arr keeps it alive) and
 * *kept, the rows chosen. 0, or -1 with an exception set. Range and repeats of
 * ids are checked by the kernel. */
static int tl_py_allow(PyObject *obj, npy_intp n, tl_score_opts *o, PyArrayObject **arr, npy_intp *kept) {
    *kept = n;
    if (obj == Py_None) return 0;
    PyArrayObject *a = tl_py_array(obj);
    if (!a) return -1;
    *arr = a;
    if (PyArray_NDIM(a) != 1) {
        PyErr_Format(PyExc_ValueError, "allow must be 1-dimensional (a mask of %zd or row ids), got %d dimension(s)",
                     (Py_ssize_t)n, PyArray_NDIM(a));
        return -1;
    }
    const npy_intp len = PyArray_DIM(a, 0);
    if (PyArray_TYPE(a) == NPY_BOOL) {
        if (len != n) {
            PyErr_Format(PyExc_ValueError, "allow as a mask must have shape (%zd,) (one per candidate), got (%zd,)",
                         (Py_ssize_t)n, (Py_ssize_t)len);
            return -1;
        }
        /* a private copy (n bytes): the count that sizes the result and the
         * rows the kernel scores then come from the same bytes, whatever other
         * threads write to the caller's mask meanwhile */
        PyArrayObject *c = (PyArrayObject *)PyArray_NewCopy(a, NPY_CORDER);
        if (!c) return -1;
        Py_SETREF(*arr, c);
        o->allow_mask = PyArray_DATA(c);
        o->mask_stride = 1;
        *kept = (npy_intp)tl_allow_mask_count(o->allow_mask, o->mask_stride, (size_t)n);
        return 0;
    }
    if (!PyArray_ISINTEGER(a) && len != 0) {
        PyErr_Format(PyExc_TypeError, "allow must be a boolean mask or an array of integer row ids, got dtype %R",
                     (PyObject *)PyArray_DESCR(a));
        return -1;
    }
    if (PyArray_TYPE(a) == NPY_UINT64 || PyArray_TYPE(a) == NPY_ULONGLONG || PyArray_TYPE(a) == NPY_ULONG) {
        const char *p = PyArray_DATA(a); /* ids above INT64_MAX would wrap in the cast */
        for (npy_intp i = 0; i < len; i++) {
            uint64_t v;
            memcpy(&v, p + i * PyArray_STRIDE(a, 0), 8);
            if (v > (uint64_t)INT64_MAX) {
                PyErr_Format(PyExc_ValueError, "allow[%zd] = %llu is out of range for %zd candidates", (Py_ssize_t)i,
                             (unsigned long long)v, (Py_ssize_t)n);
                return -1;
            }
        }
    }
    {   /* a private int64 copy (8 bytes an id): the kernel checks the ids it then uses */
        PyArray_Descr *dt = PyArray_DescrFromType(NPY_INT64); /* stolen below */
        PyArrayObject *c =
            dt ? (PyArrayObject *)PyArray_FromAny((PyObject *)a, dt, 1, 1,
                                                  NPY_ARRAY_FORCECAST | NPY_ARRAY_CARRAY | NPY_ARRAY_ENSURECOPY, NULL)
               : NULL;
        if (!c) return -1;
        Py_SETREF(*arr, c);
    }
    o->allow_ids = PyArray_DATA(*arr);
    o->n_allow = (size_t)len;
    *kept = len;
    return 0;
}

/* out= with top_k: a pair (indices, scores) of C-contiguous, writeable int64
 * and float32 arrays of shape (k,) (one query) or (m, k). New references in
 * *ri, *rs, or -1 with an exception set. */
static int tl_py_topk_out(PyObject *obj, int batched, npy_intp mq, npy_intp k, PyArrayObject **ri,
                          PyArrayObject **rs) {
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2) {
        PyErr_Format(PyExc_TypeError, "out with top_k must be a pair (indices, scores) of arrays, got %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    static const char *const names[2] = {"out[0] (indices)", "out[1] (scores)"};
    static const int types[2] = {NPY_INT64, NPY_FLOAT};
    static const char *const tnames[2] = {"int64", "float32"};
    PyArrayObject **dst[2] = {ri, rs};
    for (int t = 0; t < 2; t++) {
        PyObject *x = PyTuple_GET_ITEM(obj, t);
        if (!PyArray_Check(x)) {
            PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray, got %.100s", names[t], Py_TYPE(x)->tp_name);
            return -1;
        }
        PyArrayObject *a = (PyArrayObject *)x;
        if (PyArray_TYPE(a) != types[t] || !PyArray_ISNOTSWAPPED(a)) {
            PyErr_Format(PyExc_TypeError, "%s must have dtype %s, got %R", names[t], tnames[t],
                         (PyObject *)PyArray_DESCR(a));
            return -1;
        }
        int ok = batched ? PyArray_NDIM(a) == 2 && PyArray_DIM(a, 0) == mq && PyArray_DIM(a, 1) == k
                         : PyArray_NDIM(a) == 1 && PyArray_DIM(a, 0) == k;
        if (!ok) {
            PyObject *shape = PyObject_GetAttrString(x, "shape");
            if (!shape) return -1;
            if (batched)
                PyErr_Format(PyExc_ValueError, "%s must have shape (%zd, %zd) (queries x top_k), got %R", names[t],
                             (Py_ssize_t)mq, (Py_ssize_t)k, shape);
            else
                PyErr_Format(PyExc_ValueError, "%s must have shape (%zd,) (top_k), got %R", names[t], (Py_ssize_t)k,
                             shape);
            Py_DECREF(shape);
            return -1;
        }
        if (!PyArray_ISWRITEABLE(a) || !PyArray_ISALIGNED(a) || !PyArray_IS_C_CONTIGUOUS(a)) {
            PyErr_Format(PyExc_ValueError, "%s must be writeable, aligned and C-contiguous", names[t]);
            return -1;
        }
        Py_INCREF(a);
        *dst[t] = a;
    }
    if (tl_py_may_overlap(*ri, *rs)) {
        PyErr_SetString(PyExc_ValueError, "out[0] (indices) and out[1] (scores) must not overlap");
        return -1;
    }
    return 0;
}

/* One cosine call's arguments, for its work without the GIL. */
typedef struct tl_py_cos_call {
    const tl_mat *q, *c;
    const tl_vec *cn; /* candidate norms, or NULL */
    Py_ssize_t k;     /* top_k, or -1: every score into out */
    void *ri, *rs;    /* top_k: indices and scores, query i's at + i * ld elements */
    size_t ld;
    size_t *count;
    void *out;
    ptrdiff_t ors, ocs;
    const tl_score_opts *o;
    size_t bad_pos; /* TL_K_EINVAL from allow ids: the bad one's position */
    int dup;        /* ... and whether it repeats an earlier one */
} tl_py_cos_call;

static int tl_py_cos_work(void *ctx, tl_scratch *s, tl_py_nogil *g) {
    tl_py_cos_call *c = ctx;
    (void)g;
    int rc = c->k >= 0 ? tl_score_topk_batch(s, c->q, c->c, c->cn, c->o, (size_t)c->k, c->ri, c->rs, c->ld, c->count)
                       : tl_score_batch(s, c->q, c->c, c->cn, c->o, c->out, c->ors, c->ocs);
    /* the binding checked everything else: the ids are at fault; find which */
    if (rc == TL_K_EINVAL && c->o->allow_ids)
        rc = tl_allow_check(s, c->o->allow_ids, c->o->n_allow, c->c->rows, &c->bad_pos, &c->dup);
    return rc;
}

static const char *const tl_metric_names[3] = {"cosine", "dot", "l2"};

static PyObject *py_cosine(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 && nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "_cosine_similarity(queries, candidates, top_k, out, candidate_norms, scratch"
                                         "[, metric, normalized, allow])");
        return NULL;
    }
    Py_ssize_t k;
    tl_scratch_kind kind;
    if (tl_py_scratch_kind(args[5], &kind) < 0 || tl_py_opt_count(args[2], "top_k", &k) < 0) return NULL;
    int metric = TL_METRIC_COSINE, normalized = 0;
    if (nargs == 9 && (tl_arg_choice(args[6], "metric", tl_metric_names, 3, &metric) < 0 ||
                       tl_arg_flag(args[7], "normalized", &normalized) < 0))
        return NULL;
    PyObject *out_obj = args[3], *allow_obj = nargs == 9 ? args[8] : Py_None;
    tl_score_opts opts = {(tl_metric)metric, normalized, NULL, 0, NULL, 0};
    PyArrayObject *q = NULL, *c = NULL, *out = NULL, *ri = NULL, *rs = NULL, *cn = NULL, *allow = NULL;
    PyObject *result = NULL;
    tl_dtype qdt, cdt;
    q = tl_py_cos_array(args[0], "queries", &qdt);
    if (!q) goto done;
    c = tl_py_cos_array(args[1], "candidates", &cdt);
    if (!c) goto done;
    const int batched = PyArray_NDIM(q) == 2;
    if (PyArray_NDIM(q) != 1 && !batched) {
        PyErr_Format(PyExc_ValueError, "queries must be 1-dimensional (d,) or 2-dimensional (m, d), got %d dimension(s)",
                     PyArray_NDIM(q));
        goto done;
    }
    if (PyArray_NDIM(c) != 2) {
        PyErr_Format(PyExc_ValueError, "candidates must be 2-dimensional (n, d), got %d dimension(s)",
                     PyArray_NDIM(c));
        goto done;
    }
    npy_intp mq = batched ? PyArray_DIM(q, 0) : 1, d = PyArray_DIM(q, batched), n = PyArray_DIM(c, 0);
    if (PyArray_DIM(c, 1) != d) {
        PyErr_Format(PyExc_ValueError,
                     "candidates must have shape (n, %zd) to match queries of length %zd, got (%zd, %zd)",
                     (Py_ssize_t)d, (Py_ssize_t)d, (Py_ssize_t)n, (Py_ssize_t)PyArray_DIM(c, 1));
        goto done;
    }
    if (args[4] != Py_None) {
        if (normalized) {
            PyErr_SetString(PyExc_ValueError, "normalized=True cannot be combined with candidate_norms "
                                              "(normalized takes every norm as 1)");
            goto done;
        }
        cn = tl_py_cand_norms(args[4], n);
        if (!cn) goto done;
    }
    npy_intp kept; /* the rows scored: n, or those allow chooses */
    if (tl_py_allow(allow_obj, n, &opts, &allow, &kept) < 0) goto done;
    if (k >= 0 && out_obj != Py_None) {
        if (tl_py_topk_out(out_obj, batched, mq, k, &ri, &rs) < 0) goto done;
        if (tl_py_may_overlap(ri, q) || tl_py_may_overlap(ri, c) || (cn && tl_py_may_overlap(ri, cn)) ||
            tl_py_may_overlap(rs, q) || tl_py_may_overlap(rs, c) || (cn && tl_py_may_overlap(rs, cn)) ||
            (allow && (tl_py_may_overlap(ri, allow) || tl_py_may_overlap(rs, allow)))) {
            PyErr_SetString(PyExc_ValueError, "out must not overlap queries, candidates, candidate_norms or allow");
            goto done;
        }
    } else if (out_obj != Py_None) {
        if (!PyArray_Check(out_obj)) {
            PyErr_Format(PyExc_TypeError, "out must be a numpy.ndarray, got %.100s", Py_TYPE(out_obj)->tp_name);
            goto done;
        }
        out = (PyArrayObject *)out_obj; /* borrowed */
        if (PyArray_TYPE(out) != NPY_FLOAT || !PyArray_ISNOTSWAPPED(out)) {
            PyErr_Format(PyExc_TypeError, "out must have dtype float32, got %R", (PyObject *)PyArray_DESCR(out));
            goto done;
        }
        if (!batched && (PyArray_NDIM(out) != 1 || PyArray_DIM(out, 0) != kept)) {
            PyErr_Format(PyExc_ValueError, "out must have shape (%zd,), got %d dimension(s) of size %zd",
                         (Py_ssize_t)kept, PyArray_NDIM(out),
                         PyArray_NDIM(out) ? (Py_ssize_t)PyArray_DIM(out, 0) : (Py_ssize_t)1);
            goto done;
        }
        if (batched && (PyArray_NDIM(out) != 2 || PyArray_DIM(out, 0) != mq || PyArray_DIM(out, 1) != kept)) {
            PyObject *shape = PyObject_GetAttrString((PyObject *)out, "shape");
            if (shape) {
                PyErr_Format(PyExc_ValueError, "out must have shape (%zd, %zd) (queries x candidates), got %R",
                             (Py_ssize_t)mq, (Py_ssize_t)kept, shape);
                Py_DECREF(shape);
            }
            goto done;
        }
        if (!PyArray_ISWRITEABLE(out) || !PyArray_ISALIGNED(out)) {
            PyErr_SetString(PyExc_ValueError, "out must be writeable and aligned");
            goto done;
        }
        if (tl_py_may_overlap(out, q) || tl_py_may_overlap(out, c) || (cn && tl_py_may_overlap(out, cn)) ||
            (allow && tl_py_may_overlap(out, allow))) {
            PyErr_SetString(PyExc_ValueError, "out must not overlap queries, candidates, candidate_norms or allow");
            goto done;
        }
    } else if (k < 0) {
        npy_intp dims[2] = {mq, kept};
        out = (PyArrayObject *)PyArray_SimpleNew(batched ? 2 : 1, batched ? dims : dims + 1, NPY_FLOAT);
        if (!out) goto done;
    }
    Py_ssize_t kk = k < 0 ? 0 : (k < kept ? k : kept);
    if (k >= 0 && !ri) {
        npy_intp dims[2] = {mq, kk};
        ri = (PyArrayObject *)PyArray_SimpleNew(batched ? 2 : 1, batched ? dims : dims + 1, NPY_INT64);
        rs = (PyArrayObject *)PyArray_SimpleNew(batched ? 2 : 1, batched ? dims : dims + 1, NPY_FLOAT);
        if (!ri || !rs) goto done;
    }
    tl_arena *arena;
    if (tl_py_scratch_arena(kind, &arena) < 0) goto done;
    /* A 1-D query is the batched form with one query (row stride 0). */
    tl_mat qm = {PyArray_DATA(q), qdt, (size_t)mq, (size_t)d, batched ? PyArray_STRIDE(q, 0) : 0,
                 PyArray_STRIDE(q, batched)};
    tl_mat cm = {PyArray_DATA(c), cdt, (size_t)n, (size_t)d, PyArray_STRIDE(c, 0), PyArray_STRIDE(c, 1)};
    tl_vec cnv = {cn ? PyArray_DATA(cn) : NULL, cn && PyArray_TYPE(cn) == NPY_FLOAT ? TL_F32 : TL_F64, (size_t)n,
                  cn ? PyArray_STRIDE(cn, 0) : 0};
    ptrdiff_t ors = out && batched ? PyArray_STRIDE(out, 0) : 0;
    ptrdiff_t ocs = out ? PyArray_STRIDE(out, batched) : 0;
    size_t count = 0;
    /* top_k rows: kk entries (new arrays), or k (out=: entries past the
     * count get index -1 and score NaN) */
    const size_t ld = out_obj != Py_None ? (size_t)k : (size_t)kk;
    tl_py_cos_call call = {&qm, &cm, cn ? &cnv : NULL, k, ri ? PyArray_DATA(ri) : NULL,
                           rs ? PyArray_DATA(rs) : NULL, ld, &count, out ? PyArray_DATA(out) : NULL,
                           ors, ocs, &opts, 0, 0};
    tl_py_scratch_arg sa = {kind, arena};
    int rc = tl_py_run(tl_py_cos_work, &call, &sa, NULL,
                       tl_py_bytes3((size_t)mq, (size_t)kept, (size_t)d * (size_t)PyArray_ITEMSIZE(c)));
    if (rc == TL_PY_RAISED) goto done;
    if (rc == TL_K_EINVAL && opts.allow_ids) {
        long long v = (long long)opts.allow_ids[call.bad_pos];
        if (call.dup)
            PyErr_Format(PyExc_ValueError, "allow[%zd] = %lld repeats an earlier row id (ids must be distinct)",
                         (Py_ssize_t)call.bad_pos, v);
        else
            PyErr_Format(PyExc_ValueError, "allow[%zd] = %lld is out of range for %zd candidates",
                         (Py_ssize_t)call.bad_pos, v, (Py_ssize_t)n);
        goto done;
    }
    if (rc != TL_K_OK) {
        tl_py_kernel_error(rc);
        goto done;
    }
    if (k >= 0 && out_obj != Py_None && count < (size_t)k) {
        int64_t *pi = PyArray_DATA(ri);
        float *ps = PyArray_DATA(rs);
        for (npy_intp i = 0; i < mq; i++)
            for (size_t t = count; t < (size_t)k; t++) {
                pi[(size_t)i * ld + t] = -1;
                ps[(size_t)i * ld + t] = NAN;
            }
        /* the caller's arrays, cut to the entries found */
        PyObject *stop = PyLong_FromSize_t(count), *cut = stop ? PySlice_New(NULL, stop, NULL) : NULL;
        Py_XDECREF(stop);
        if (!cut) goto done;
        PyObject *key = batched ? PyTuple_Pack(2, Py_Ellipsis, cut) : (Py_INCREF(cut), cut);
        Py_DECREF(cut);
        if (!key) goto done;
        PyObject *a = PyObject_GetItem((PyObject *)ri, key), *b = a ? PyObject_GetItem((PyObject *)rs, key) : NULL;
        Py_DECREF(key);
        if (b) result = PyTuple_Pack(2, a, b);
        Py_XDECREF(a);
        Py_XDECREF(b);
    } else if (k >= 0) {
        result = PyTuple_Pack(2, (PyObject *)ri, (PyObject *)rs);
    } else {
        result = (PyObject *)out;
        Py_INCREF(result);
    }
done:
    tl_py_drop(q, args[0]);
    tl_py_drop(c, args[1]);
    tl_py_drop(cn, args[4]);
    Py_XDECREF(allow);
    tl_py_drop(out, out_obj);
    Py_XDECREF(ri);
    Py_XDECREF(rs);
    return result;
}

/* ---- spreading activation ---------------------------------------------------------- */

/* Node ids are checked as the values given: an unsigned 64-bit id above
 * INT64_MAX would wrap to a negative int64 in the cast (2**64 - 1 reported as
 * -1). This finds the first such value of a 1-D array (O(n), only for uint64
 * input, which is copied anyway) and raises with it. 0 if none, -1 raised. */
static int tl_py_check_u64_ids(PyArrayObject *a, const char *name, Py_ssize_t n_nodes) {
    if (!PyTypeNum_ISUNSIGNED(PyArray_TYPE(a)) || PyArray_ITEMSIZE(a) != 8 || PyArray_NDIM(a) > 1)
        return 0;
    npy_intp len = PyArray_NDIM(a) == 0 ? 1 : PyArray_DIM(a, 0);
    npy_intp st = PyArray_NDIM(a) == 0 ? 0 : PyArray_STRIDE(a, 0);
    for (npy_intp i = 0; i < len; i++) {
        uint64_t v;
        memcpy(&v, PyArray_BYTES(a) + i * st, sizeof v);
        if (!PyArray_ISNOTSWAPPED(a)) v = __builtin_bswap64(v);
        if (v > (uint64_t)INT64_MAX) {
            if (n_nodes < 0)
                PyErr_Format(PyExc_ValueError, "%s[%zd] = %llu is out of range", name, (Py_ssize_t)i,
                             (unsigned long long)v);
            else
                PyErr_Format(PyExc_ValueError, "%s[%zd] = %llu is out of range for a graph of %zd nodes",
                             name, (Py_ssize_t)i, (unsigned long long)v, n_nodes);
            return -1;
        }
    }
    return 0;
}

/* A contiguous 1-D index array (int32 or int64; other integer types are cast to
 * int64, a copy). Borrowed or new: release with tl_py_drop(a, obj). */
static PyArrayObject *tl_py_index_array(PyObject *obj, const char *name) {
    PyArrayObject *a = tl_py_array_arg(obj);
    if (!a) return NULL;
    if (!PyTypeNum_ISINTEGER(PyArray_TYPE(a))) {
        PyErr_Format(PyExc_TypeError, "%s must have an integer dtype, got %R", name, (PyObject *)PyArray_DESCR(a));
        tl_py_drop(a, obj);
        return NULL;
    }
    if (PyArray_NDIM(a) != 1) {
        PyErr_Format(PyExc_ValueError, "%s must be 1-dimensional, got %d dimension(s)", name, PyArray_NDIM(a));
        tl_py_drop(a, obj);
        return NULL;
    }
    int t = tl_py_dtype(a);
    if ((t == TL_I32 || t == TL_I64) && PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a)) return a;
    if (tl_py_check_u64_ids(a, name, -1) < 0) {
        tl_py_drop(a, obj);
        return NULL;
    }
    PyArrayObject *c = tl_py_cast(a, NPY_INT64);
    tl_py_drop(a, obj);
    if (c && !PyArray_IS_C_CONTIGUOUS(c)) { /* cast of a contiguous copy is contiguous */
        PyArrayObject *cc = (PyArrayObject *)PyArray_NewCopy(c, NPY_CORDER);
        Py_DECREF(c);
        c = cc;
    }
    return c;
}

/* graph.data as float32 or float64, contiguous (other dtypes: a float64
 * copy). Borrowed or new: release with tl_py_drop(a, obj). */
static PyArrayObject *tl_py_weight_array(PyObject *obj) {
    PyArrayObject *a = tl_py_array_arg(obj);
    if (!a) return NULL;
    int tn = PyArray_TYPE(a);
    if (!(PyTypeNum_ISFLOAT(tn) || PyTypeNum_ISINTEGER(tn))) {
        PyErr_Format(PyExc_TypeError, "graph.data must have a real numeric dtype, got %R", (PyObject *)PyArray_DESCR(a));
        tl_py_drop(a, obj);
        return NULL;
    }
    if (PyArray_NDIM(a) != 1) {
        PyErr_Format(PyExc_ValueError, "graph.data must be 1-dimensional, got %d dimension(s)", PyArray_NDIM(a));
        tl_py_drop(a, obj);
        return NULL;
    }
    int t = tl_py_dtype(a);
    if ((t == TL_F32 || t == TL_F64) && PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a)) return a;
    PyArrayObject *c = (PyArrayObject *)PyArray_FromAny((PyObject *)a, PyArray_DescrFromType(NPY_DOUBLE), 1, 1,
                                                        NPY_ARRAY_FORCECAST | NPY_ARRAY_IN_ARRAY, NULL);
    tl_py_drop(a, obj);
    return c;
}

static PyObject *tl_py_graph_error(const tl_spread_error *e, size_t n, size_t nnz) {
    switch (e->fault) {
    case TL_FAULT_SEED:
        return PyErr_Format(PyExc_ValueError, "seeds[%lld] = %lld is out of range for a graph of %zu nodes",
                            (long long)e->pos, (long long)e->ivalue, n);
    case TL_FAULT_INDPTR:
        return PyErr_Format(PyExc_ValueError,
                            "graph.indptr is not a valid row pointer at row %lld: indptr[%lld] = %lld, "
                            "indptr[%lld] = %lld (must be non-decreasing and within [0, %zu])",
                            (long long)e->pos, (long long)e->pos, (long long)e->ivalue,
                            (long long)e->pos + 1, (long long)e->ivalue2, nnz);
    case TL_FAULT_INDEX:
        return PyErr_Format(PyExc_ValueError, "graph.indices[%lld] = %lld is out of range for a graph of %zu nodes",
                            (long long)e->pos, (long long)e->ivalue, n);
    case TL_FAULT_WEIGHT: {
        PyObject *v = PyFloat_FromDouble(e->fvalue);
        PyErr_Format(PyExc_ValueError, "graph.data[%lld] = %R is not finite", (long long)e->pos, v);
        Py_XDECREF(v);
        return NULL;
    }
    case TL_FAULT_SHAPE:
        return PyErr_Format(PyExc_ValueError,
                            "graph.indptr must start at 0 and end at len(graph.indices) = %zu, "
                            "got indptr[0] = %lld and indptr[-1] = %lld",
                            nnz, (long long)e->ivalue, (long long)e->ivalue2);
    case TL_FAULT_NONE: break;
    }
    PyErr_SetString(PyExc_ValueError, "malformed graph");
    return NULL;
}

/* The most spreading steps one call takes: a step costs at least the frontier's
 * edges, so this bounds a call on a small cycle (decay_rate=0) to about a
 * second; kernels.py publishes it as MAX_DEPTH. */
#define TL_PY_MAX_DEPTH 1000000

/* The engine named by `obj` (tl_spread_engine), or -1 with ValueError. */
static long tl_py_spread_engine(PyObject *obj) {
    static const char *const engines[4] = {"auto", "dense", "sparse", "indexed"};
    for (int i = 0; i < 4 && PyUnicode_Check(obj); i++)
        if (PyUnicode_CompareWithASCIIString(obj, engines[i]) == 0) return i;
    PyErr_Format(PyExc_ValueError, "_engine must be 'auto', 'dense', 'sparse' or 'indexed', got %R", obj);
    return -1;
}

/* One spreading call's arguments, for its work without the GIL: one seed set
 * (set_ptr NULL), or nsets sets delimited by set_ptr (spread_activation_many). */
typedef struct tl_py_spread_call {
    const tl_csr *g;
    const int64_t *seeds;
    size_t nseeds;
    const size_t *set_ptr;
    size_t nsets;
    const double *act;
    size_t nact;
    const tl_spread_params *p;
    float *dense;
    size_t k;
    int64_t *ri;
    float *rv;
    size_t *count;
    tl_spread_error *err;
} tl_py_spread_call;

static int tl_py_spread_work(void *ctx, tl_scratch *s, tl_py_nogil *g) {
    tl_py_spread_call *c = ctx;
    (void)g;
    if (c->set_ptr)
        return tl_spread_activation_many(s, c->g, c->seeds, c->set_ptr, c->nsets, c->act, c->nact, c->p,
                                         c->dense, c->k, c->ri, c->rv, c->count, c->err);
    return tl_spread_activation(s, c->g, c->seeds, c->nseeds, c->act, c->nact, c->p, c->dense, c->k,
                                c->ri, c->rv, c->count, c->err);
}

/* The spreading parameters a[0..3] = decay_rate, threshold, max_depth, top_k
 * (None: no top-k), by the rules of docs/kernels.md. 0, or -1 with an
 * exception set. */
static int tl_py_spread_scalars(PyObject *const *a, double *decay_rate, double *threshold, Py_ssize_t *depth,
                                Py_ssize_t *k) {
    if (tl_py_real(a[0], "decay_rate", decay_rate) < 0 || tl_py_real(a[1], "threshold", threshold) < 0) return -1;
    if (!(*decay_rate >= 0.0) || *decay_rate == INFINITY) {
        PyErr_Format(PyExc_ValueError, "decay_rate must be finite and >= 0, got %R", a[0]);
        return -1;
    }
    if (*threshold != *threshold) {
        PyErr_Format(PyExc_ValueError, "threshold must not be NaN, got %R", a[1]);
        return -1;
    }
    if (a[2] == Py_None) {
        PyErr_Format(PyExc_TypeError, "max_depth must be an int, got None");
        return -1;
    }
    if (tl_py_opt_count(a[2], "max_depth", depth) < 0 || tl_py_opt_count(a[3], "top_k", k) < 0) return -1;
    if (*depth > TL_PY_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "max_depth must be <= %d (tlalloc.kernels.MAX_DEPTH), got %R",
                     TL_PY_MAX_DEPTH, a[2]);
        return -1;
    }
    return 0;
}

/* The graph a[0..2] = indptr, indices, data as arrays (*ip, *ix, *w: borrowed
 * or new, set as far as they got, for the caller to release with
 * tl_py_drop(*ip, a[0]) and so on), with the
 * lengths the kernel needs. 0, or -1 with an exception set. */
static int tl_py_graph(PyObject *const *a, PyArrayObject **ip, PyArrayObject **ix, PyArrayObject **w) {
    if (!(*ip = tl_py_index_array(a[0], "graph.indptr"))) return -1;
    if (!(*ix = tl_py_index_array(a[1], "graph.indices"))) return -1;
    if (!(*w = tl_py_weight_array(a[2]))) return -1;
    npy_intp nip = PyArray_DIM(*ip, 0), nnz = PyArray_DIM(*ix, 0);
    if (nip < 1) {
        PyErr_SetString(PyExc_ValueError, "graph.indptr must have at least one element (n + 1 for n nodes), got 0");
        return -1;
    }
    if ((npy_uintp)(nip - 1) >= ((npy_uintp)1 << 31)) {
        PyErr_Format(PyExc_ValueError, "graphs of at most 2**31 - 1 nodes are supported, got %zd", (Py_ssize_t)(nip - 1));
        return -1;
    }
    if (PyArray_DIM(*w, 0) != nnz) {
        PyErr_Format(PyExc_ValueError, "graph.data must have the length of graph.indices (%zd), got %zd",
                     (Py_ssize_t)nnz, (Py_ssize_t)PyArray_DIM(*w, 0));
        return -1;
    }
    return 0;
}

/* activation: a number or one value per seed (ns of them), finite. Returns a
 * private float64 copy (0-d or 1-d), checked here and read later with the GIL
 * released, or NULL with an exception set. */
static PyArrayObject *tl_py_activation(PyObject *arg, npy_intp ns) {
    PyArrayObject *a0 = tl_py_array(arg);
    if (!a0) return NULL;
    int tn = PyArray_TYPE(a0);
    if (!(PyTypeNum_ISFLOAT(tn) || PyTypeNum_ISINTEGER(tn)) || PyTypeNum_ISBOOL(tn)) {
        PyErr_Format(PyExc_TypeError, "activation must be a real number or one per seed, got dtype %R",
                     (PyObject *)PyArray_DESCR(a0));
        Py_DECREF(a0);
        return NULL;
    }
    if (PyArray_NDIM(a0) > 1 || (PyArray_NDIM(a0) == 1 && PyArray_DIM(a0, 0) != ns)) {
        PyErr_Format(PyExc_ValueError,
                     "activation must be a number or have one value per seed (%zd), got %zd values",
                     (Py_ssize_t)ns, (Py_ssize_t)PyArray_SIZE(a0));
        Py_DECREF(a0);
        return NULL;
    }
    PyArrayObject *act = (PyArrayObject *)PyArray_FromAny(
        (PyObject *)a0, PyArray_DescrFromType(NPY_DOUBLE), 0, 1,
        NPY_ARRAY_FORCECAST | NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY, NULL);
    Py_DECREF(a0);
    if (!act) return NULL;
    const double *av = PyArray_DATA(act);
    for (npy_intp i = 0; i < PyArray_SIZE(act); i++)
        if (!isfinite(av[i])) {
            PyObject *v = PyFloat_FromDouble(av[i]);
            if (PyArray_NDIM(act) == 0)
                PyErr_Format(PyExc_ValueError, "activation must be finite, got %R", v);
            else
                PyErr_Format(PyExc_ValueError, "activation[%zd] = %R is not finite", (Py_ssize_t)i, v);
            Py_XDECREF(v);
            Py_DECREF(act);
            return NULL;
        }
    return act;
}

/* What a spreading call returns after tl_py_run gave `rc`: the dense array or
 * the (indices, scores) pair, or NULL with the error set (a graph or seed
 * fault named as the kernel found it; with `many`, the seed's set named too). */
static PyObject *tl_py_spread_result(int rc, const tl_spread_error *err, size_t n, size_t nnz, int many,
                                     PyArrayObject *dense, PyArrayObject *ri, PyArrayObject *rv) {
    if (rc == TL_PY_RAISED) return NULL;
    if (rc == TL_K_EGRAPH) {
        if (many && err->fault == TL_FAULT_SEED)
            return PyErr_Format(PyExc_ValueError,
                                "seed set %lld: seeds[%lld] = %lld is out of range for a graph of %zu nodes",
                                (long long)err->set, (long long)err->pos, (long long)err->ivalue, n);
        return tl_py_graph_error(err, n, nnz);
    }
    if (rc != TL_K_OK) {
        tl_py_kernel_error(rc);
        return NULL;
    }
    if (dense) {
        Py_INCREF(dense);
        return (PyObject *)dense;
    }
    return PyTuple_Pack(2, (PyObject *)ri, (PyObject *)rv);
}

/* _spread_activation(indptr, indices, data, seeds, activation, decay_rate,
 *                    threshold, max_depth, top_k, scratch, engine) */
static PyObject *py_spread(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "_spread_activation takes 11 arguments");
        return NULL;
    }
    long engine = -1;
    if ((engine = tl_py_spread_engine(args[10])) < 0) return NULL;
    PyArrayObject *ip = NULL, *ix = NULL, *w = NULL, *seeds = NULL, *act = NULL;
    PyArrayObject *dense = NULL, *ri = NULL, *rv = NULL;
    PyObject *result = NULL;
    tl_scratch_kind kind;
    Py_ssize_t k, depth;
    double decay_rate, threshold;
    if (tl_py_scratch_kind(args[9], &kind) < 0) return NULL;
    if (tl_py_spread_scalars(args + 5, &decay_rate, &threshold, &depth, &k) < 0) return NULL;

    if (tl_py_graph(args, &ip, &ix, &w) < 0) goto done;
    npy_intp nip = PyArray_DIM(ip, 0), nnz = PyArray_DIM(ix, 0);
    /* seeds: an int or a 1-D sequence of ints */
    {
        PyArrayObject *s0 = tl_py_array(args[3]);
        if (!s0) goto done;
        if (!PyTypeNum_ISINTEGER(PyArray_TYPE(s0)) && !(PyArray_SIZE(s0) == 0 && PyArray_TYPE(s0) == NPY_DOUBLE)) {
            PyErr_Format(PyExc_TypeError, "seeds must be node ids (integers), got dtype %R", (PyObject *)PyArray_DESCR(s0));
            Py_DECREF(s0);
            goto done;
        }
        if (PyArray_NDIM(s0) > 1) {
            PyErr_Format(PyExc_ValueError, "seeds must be an int or a 1-dimensional sequence, got %d dimensions",
                         PyArray_NDIM(s0));
            Py_DECREF(s0);
            goto done;
        }
        if (tl_py_check_u64_ids(s0, "seeds", (Py_ssize_t)(nip - 1)) < 0) {
            Py_DECREF(s0);
            goto done;
        }
        seeds = (PyArrayObject *)PyArray_FromAny((PyObject *)s0, PyArray_DescrFromType(NPY_INT64), 0, 1,
                                                 NPY_ARRAY_FORCECAST | NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY, NULL);
        Py_DECREF(s0);
        if (!seeds) goto done;
    }
    npy_intp ns = PyArray_SIZE(seeds);
    act = tl_py_activation(args[4], ns);
    if (!act) goto done;
    size_t n = (size_t)(nip - 1);
    if (k < 0) {
        npy_intp dims[1] = {(npy_intp)n};
        dense = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_FLOAT, 0); /* calloc: lazily zeroed pages */
        if (!dense) goto done;
    } else {
        npy_intp dims[1] = {(npy_intp)((size_t)k < n ? (size_t)k : n)};
        ri = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
        rv = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT);
        if (!ri || !rv) goto done;
    }
    tl_arena *arena;
    if (tl_py_scratch_arena(kind, &arena) < 0) goto done;
    tl_csr g = {n, (size_t)nnz, PyArray_DATA(ip), (tl_dtype)tl_py_dtype(ip), PyArray_DATA(ix),
                (tl_dtype)tl_py_dtype(ix), PyArray_DATA(w), (tl_dtype)tl_py_dtype(w)};
    tl_spread_params p = {decay_rate, threshold, (size_t)depth, (tl_spread_engine)engine};
    tl_spread_error err;
    memset(&err, 0, sizeof err);
    size_t count = 0;
    size_t nact = PyArray_NDIM(act) == 0 ? 1 : (size_t)ns;
    if (ns == 0) nact = 0;
    tl_py_spread_call call = {.g = &g, .seeds = PyArray_DATA(seeds), .nseeds = (size_t)ns,
                              .act = PyArray_DATA(act), .nact = nact, .p = &p,
                              .dense = dense ? PyArray_DATA(dense) : NULL, .k = k < 0 ? 0 : (size_t)k,
                              .ri = ri ? PyArray_DATA(ri) : NULL, .rv = rv ? PyArray_DATA(rv) : NULL,
                              .count = &count, .err = &err};
    tl_py_scratch_arg sa = {kind, arena};
    int rc = tl_py_run(tl_py_spread_work, &call, &sa, NULL, tl_py_spread_bytes(n, (size_t)nnz, (size_t)depth, 1));
    result = tl_py_spread_result(rc, &err, n, (size_t)nnz, 0, dense, ri, rv);
done:
    tl_py_drop(ip, args[0]);
    tl_py_drop(ix, args[1]);
    tl_py_drop(w, args[2]);
    Py_XDECREF(seeds);
    Py_XDECREF(act);
    Py_XDECREF(dense);
    Py_XDECREF(ri);
    Py_XDECREF(rv);
    return result;
}

/* _spread_activation_many(indptr, indices, data, seed_ids, set_ptr, activation,
 *                         decay_rate, threshold, max_depth, top_k, scratch, engine)
 * Set i is seed_ids[set_ptr[i]:set_ptr[i+1]]; activation is a number or one
 * value per entry of seed_ids. Returns float32 (nsets, n), or int64 and float32
 * arrays of shape (nsets, min(top_k, n)). */
static PyObject *py_spread_many(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "_spread_activation_many takes 12 arguments");
        return NULL;
    }
    long engine = tl_py_spread_engine(args[11]);
    if (engine < 0) return NULL;
    PyArrayObject *ip = NULL, *ix = NULL, *w = NULL, *seeds = NULL, *ptr = NULL, *act = NULL;
    PyArrayObject *dense = NULL, *ri = NULL, *rv = NULL;
    PyObject *result = NULL;
    size_t *set_ptr = NULL;
    tl_scratch_kind kind;
    Py_ssize_t k, depth;
    double decay_rate, threshold;
    if (tl_py_scratch_kind(args[10], &kind) < 0) return NULL;
    if (tl_py_spread_scalars(args + 6, &decay_rate, &threshold, &depth, &k) < 0) return NULL;
    if (tl_py_graph(args, &ip, &ix, &w) < 0) goto done;
    npy_intp nip = PyArray_DIM(ip, 0), nnz = PyArray_DIM(ix, 0);
    /* seed ids and set boundaries: private int64 copies (read without the GIL) */
    {
        PyArrayObject *s0 = tl_py_index_array(args[3], "seed_ids");
        if (!s0) goto done;
        if (tl_py_check_u64_ids(s0, "seed_ids", (Py_ssize_t)(nip - 1)) < 0) {
            tl_py_drop(s0, args[3]);
            goto done;
        }
        seeds = (PyArrayObject *)PyArray_FromAny((PyObject *)s0, PyArray_DescrFromType(NPY_INT64), 1, 1,
                                                 NPY_ARRAY_FORCECAST | NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY, NULL);
        tl_py_drop(s0, args[3]);
        if (!seeds) goto done;
        PyArrayObject *p0 = tl_py_index_array(args[4], "set_indptr");
        if (!p0) goto done;
        ptr = (PyArrayObject *)PyArray_FromAny((PyObject *)p0, PyArray_DescrFromType(NPY_INT64), 1, 1,
                                               NPY_ARRAY_FORCECAST | NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY, NULL);
        tl_py_drop(p0, args[4]);
        if (!ptr) goto done;
    }
    npy_intp ns = PyArray_DIM(seeds, 0), np1 = PyArray_DIM(ptr, 0);
    const int64_t *pv = PyArray_DATA(ptr);
    if (np1 < 1 || pv[0] != 0 || pv[np1 - 1] != (int64_t)ns) {
        PyErr_Format(PyExc_ValueError,
                     "set_indptr must start at 0 and end at len(seed_ids) = %zd, got %zd value(s)%s",
                     (Py_ssize_t)ns, (Py_ssize_t)np1, np1 ? " with other ends" : "");
        goto done;
    }
    for (npy_intp i = 0; i + 1 < np1; i++)
        if (pv[i + 1] < pv[i]) {
            PyErr_Format(PyExc_ValueError, "set_indptr must be non-decreasing: set_indptr[%zd] = %lld > set_indptr[%zd] = %lld",
                         (Py_ssize_t)i, (long long)pv[i], (Py_ssize_t)(i + 1), (long long)pv[i + 1]);
            goto done;
        }
    size_t nsets = (size_t)(np1 - 1);
    set_ptr = PyMem_Malloc(np1 * sizeof(size_t));
    if (!set_ptr) {
        PyErr_NoMemory();
        goto done;
    }
    for (npy_intp i = 0; i < np1; i++) set_ptr[i] = (size_t)pv[i];
    act = tl_py_activation(args[5], ns);
    if (!act) goto done;
    size_t n = (size_t)(nip - 1);
    size_t kk = k < 0 ? 0 : ((size_t)k < n ? (size_t)k : n);
    if (k < 0) {
        npy_intp dims[2] = {(npy_intp)nsets, (npy_intp)n};
        dense = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_FLOAT, 0);
        if (!dense) goto done;
    } else {
        npy_intp dims[2] = {(npy_intp)nsets, (npy_intp)kk};
        ri = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64);
        rv = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT);
        if (!ri || !rv) goto done;
    }
    size_t *counts = PyMem_Calloc(nsets ? nsets : 1, sizeof(size_t));
    if (!counts) {
        PyErr_NoMemory();
        goto done;
    }
    tl_arena *arena;
    if (tl_py_scratch_arena(kind, &arena) < 0) {
        PyMem_Free(counts);
        goto done;
    }
    tl_csr g = {n, (size_t)nnz, PyArray_DATA(ip), (tl_dtype)tl_py_dtype(ip), PyArray_DATA(ix),
                (tl_dtype)tl_py_dtype(ix), PyArray_DATA(w), (tl_dtype)tl_py_dtype(w)};
    tl_spread_params p = {decay_rate, threshold, (size_t)depth, (tl_spread_engine)engine};
    tl_spread_error err;
    memset(&err, 0, sizeof err);
    size_t nact = PyArray_NDIM(act) == 0 ? 1 : (size_t)ns;
    if (ns == 0) nact = 1; /* no seed reads it */
    tl_py_spread_call call = {.g = &g, .seeds = PyArray_DATA(seeds), .nseeds = (size_t)ns,
                              .set_ptr = set_ptr, .nsets = nsets, .act = PyArray_DATA(act), .nact = nact,
                              .p = &p, .dense = dense ? PyArray_DATA(dense) : NULL, .k = kk,
                              .ri = ri ? PyArray_DATA(ri) : NULL, .rv = rv ? PyArray_DATA(rv) : NULL,
                              .count = counts, .err = &err};
    tl_py_scratch_arg sa = {kind, arena};
    int rc = tl_py_run(tl_py_spread_work, &call, &sa, NULL, tl_py_spread_bytes(n, (size_t)nnz, (size_t)depth, nsets));
    PyMem_Free(counts); /* every set's count is min(top_k, n): the rows are full */
    result = tl_py_spread_result(rc, &err, n, (size_t)nnz, 1, dense, ri, rv);
done:
    PyMem_Free(set_ptr);
    tl_py_drop(ip, args[0]);
    tl_py_drop(ix, args[1]);
    tl_py_drop(w, args[2]);
    Py_XDECREF(seeds);
    Py_XDECREF(ptr);
    Py_XDECREF(act);
    Py_XDECREF(dense);
    Py_XDECREF(ri);
    Py_XDECREF(rv);
    return result;
}

/* ---- decay --------------------------------------------------------------------------- */

static PyObject *tl_py_age_error(const char *p, PyArrayObject *ages, npy_intp pos, int with_pos) {
    PyObject *vo = PyArray_Scalar((void *)p, PyArray_DESCR(ages), (PyObject *)ages);
    if (!vo) return NULL;
    if (with_pos)
        PyErr_Format(PyExc_ValueError, "ages[%zd] = %S is negative or NaN; ages must be >= 0 seconds",
                     (Py_ssize_t)pos, vo);
    else
        PyErr_Format(PyExc_ValueError, "ages contains %S, which is negative or NaN; ages must be >= 0 seconds", vo);
    Py_XDECREF(vo);
    return NULL;
}

/* A time constant: a real number, finite and > 0. */
static int tl_py_time_constant(PyObject *obj, const char *name, double *out) {
    if (tl_py_real(obj, name, out) < 0) return -1;
    if (!(*out > 0.0) || *out == INFINITY) {
        PyErr_Format(PyExc_ValueError, "%s must be finite and > 0, got %R", name, obj);
        return -1;
    }
    return 0;
}

/* The arguments of one decay call, checked and converted. */
typedef struct tl_py_decay_args {
    PyArrayObject *s, *a, *out; /* strengths, ages, out (NULL: made here): borrowed or new */
    int res_type;               /* NPY_FLOAT or NPY_DOUBLE */
    tl_dtype sd, ad, od;        /* of s, a and the result */
    tl_decay_params p;
    tl_py_scratch_arg sa;
} tl_py_decay_args;

/* Check and convert _decay's arguments into *d (whose arrays the caller
 * releases with tl_py_drop, also on failure). Returns 0, or -1 with an
 * exception set. */
static int tl_py_decay_parse(PyObject *const *args, tl_py_decay_args *d) {
    long model = -1;
    if (PyUnicode_Check(args[2])) {
        if (PyUnicode_CompareWithASCIIString(args[2], "exponential") == 0) model = TL_DECAY_EXP;
        else if (PyUnicode_CompareWithASCIIString(args[2], "power") == 0) model = TL_DECAY_POWER;
    }
    if (model < 0) {
        PyErr_Format(PyExc_ValueError, "model must be 'exponential' or 'power', got %R", args[2]);
        return -1;
    }
    PyObject *tau_o = args[3] == tl_py_default_tau ? Py_None : args[3], *hl_o = args[4];
    double scale = 86400.0, alpha;
    if (hl_o != Py_None) {
        if (tau_o != Py_None) {
            PyErr_SetString(PyExc_TypeError, "give either tau or half_life, not both");
            return -1;
        }
        if (model != TL_DECAY_EXP) {
            PyErr_SetString(PyExc_ValueError, "half_life applies to the exponential model only; use tau");
            return -1;
        }
        if (tl_py_time_constant(hl_o, "half_life", &scale) < 0) return -1;
        model = TL_DECAY_HALF_LIFE;
    } else if (tau_o != Py_None && tl_py_time_constant(tau_o, "tau", &scale) < 0) {
        return -1;
    }
    if (tl_py_real(args[5], "alpha", &alpha) < 0) return -1;
    if (!isfinite(alpha)) {
        PyErr_Format(PyExc_ValueError, "alpha must be finite, got %R", args[5]);
        return -1;
    }
    if (tl_py_scratch_kind(args[7], &d->sa.kind) < 0) return -1;
    PyObject *out_obj = args[6];
    if (!(d->s = tl_py_float_array(args[0], "strengths"))) return -1;
    if (!(d->a = tl_py_array_arg(args[1]))) return -1;
    int tn = PyArray_TYPE(d->a);
    if (!(PyTypeNum_ISFLOAT(tn) || PyTypeNum_ISINTEGER(tn)) || PyTypeNum_ISBOOL(tn)) {
        PyErr_Format(PyExc_TypeError, "ages must have an integer or floating-point dtype, got %R",
                     (PyObject *)PyArray_DESCR(d->a));
        return -1;
    }
    if (tl_py_dtype(d->a) < 0 || !PyArray_ISALIGNED(d->a)) { /* long double, swapped: copy */
        PyArrayObject *c = tl_py_cast(d->a, PyTypeNum_ISFLOAT(tn) ? NPY_DOUBLE : (PyTypeNum_ISSIGNED(tn) ? NPY_INT64 : NPY_UINT64));
        tl_py_drop(d->a, args[1]);
        d->a = c;
        if (!d->a) return -1;
    }
    d->res_type = PyArray_TYPE(d->s) == NPY_DOUBLE ? NPY_DOUBLE : NPY_FLOAT;
    if (out_obj != Py_None) {
        if (!PyArray_Check(out_obj)) {
            PyErr_Format(PyExc_TypeError, "out must be a numpy.ndarray, got %.100s", Py_TYPE(out_obj)->tp_name);
            return -1;
        }
        d->out = (PyArrayObject *)out_obj; /* borrowed */
        if (PyArray_TYPE(d->out) != d->res_type || !PyArray_ISNOTSWAPPED(d->out)) {
            PyErr_Format(PyExc_TypeError, "out must have dtype %s (the result type for strengths of dtype %R), got %R",
                         d->res_type == NPY_DOUBLE ? "float64" : "float32", (PyObject *)PyArray_DESCR(d->s),
                         (PyObject *)PyArray_DESCR(d->out));
            return -1;
        }
        if (!PyArray_ISWRITEABLE(d->out) || !PyArray_ISALIGNED(d->out)) {
            PyErr_SetString(PyExc_ValueError, "out must be writeable and aligned");
            return -1;
        }
    }
    d->sd = (tl_dtype)tl_py_dtype(d->s);
    d->ad = (tl_dtype)tl_py_dtype(d->a);
    d->od = d->res_type == NPY_DOUBLE ? TL_F64 : TL_F32;
    d->p = (tl_decay_params){(tl_decay_model)model, scale, alpha};
    return tl_py_scratch_arena(d->sa.kind, &d->sa.arena);
}

/* A decay call's estimate: n elements of strengths, ages and the result. */
static size_t tl_py_decay_bytes(const tl_py_decay_args *d, size_t n) {
    size_t each = (size_t)PyArray_ITEMSIZE(d->s) + (size_t)PyArray_ITEMSIZE(d->a) + (d->od == TL_F64 ? 8 : 4);
    return tl_py_bytes3(n, each, 1);
}

/* 1-D arrays of one length, in one pass: ages checked, then decayed. */
typedef struct tl_py_decay_1d {
    const tl_py_decay_args *d;
    size_t n, bad;
} tl_py_decay_1d;

static int tl_py_decay_1d_work(void *ctx, tl_scratch *unused, tl_py_nogil *g) {
    tl_py_decay_1d *c = ctx;
    const tl_py_decay_args *d = c->d;
    (void)unused;
    (void)g;
    int rc = tl_decay_check_ages(PyArray_DATA(d->a), d->ad, PyArray_STRIDE(d->a, 0), c->n, &c->bad);
    if (rc != TL_K_OK) return rc;
    tl_scratch sc; /* opened after the check, so that bad ages take no scratch */
    rc = tl_py_scratch_open(&sc, &d->sa);
    if (rc != TL_K_OK) return rc;
    rc = tl_decay(&sc, PyArray_DATA(d->s), d->sd, PyArray_STRIDE(d->s, 0), PyArray_DATA(d->a), d->ad,
                  PyArray_STRIDE(d->a, 0), PyArray_DATA(d->out), d->od, PyArray_STRIDE(d->out, 0), c->n,
                  &d->p);
    tl_scratch_end(&sc);
    return rc;
}

/* Any shapes that broadcast: NumPy's iterator hands out 1-D strided chunks.
 * Pass 1 checks every age, pass 2 computes, so a bad age writes nothing. Both
 * poll between chunks (they may be short) and start over from the first
 * chunk after a signal. */
typedef struct tl_py_decay_iter {
    const tl_py_decay_args *d;
    NpyIter *it;
    NpyIter_IterNextFunc *next;
    char **ptrs;
    npy_intp *strides, *sizep;
    const char *badp; /* pass 1: the bad age */
} tl_py_decay_iter;

static int tl_py_decay_iter_reset(void *ctx) {
    tl_py_decay_iter *c = ctx;
    return NpyIter_Reset(c->it, NULL) == NPY_SUCCEED ? 0 : -1;
}

static int tl_py_decay_check_work(void *ctx, tl_scratch *unused, tl_py_nogil *g) {
    tl_py_decay_iter *c = ctx;
    size_t bad;
    int rc;
    (void)unused;
    do {
        rc = tl_decay_check_ages(c->ptrs[1], c->d->ad, c->strides[1], (size_t)*c->sizep, &bad);
        if (rc == TL_K_EAGES) c->badp = c->ptrs[1] + (npy_intp)bad * c->strides[1];
        if (rc == TL_K_OK && g->polled && tl_py_poll(g)) rc = TL_K_EINTR;
    } while (rc == TL_K_OK && c->next(c->it));
    return rc;
}

static int tl_py_decay_iter_work(void *ctx, tl_scratch *s, tl_py_nogil *g) {
    tl_py_decay_iter *c = ctx;
    const tl_py_decay_args *d = c->d;
    int rc;
    do {
        rc = tl_decay(s, c->ptrs[0], d->sd, c->strides[0], c->ptrs[1], d->ad, c->strides[1], c->ptrs[2], d->od,
                      c->strides[2], (size_t)*c->sizep, &d->p);
        if (rc == TL_K_OK && g->polled && tl_py_poll(g)) rc = TL_K_EINTR;
    } while (rc == TL_K_OK && c->next(c->it));
    return rc;
}

/* The iterator's refusal of the shapes, in the arguments' words. */
static void tl_py_decay_shape_error(const tl_py_decay_args *d) {
    PyErr_Clear();
    PyObject *shp_s = PyObject_GetAttrString((PyObject *)d->s, "shape");
    PyObject *shp_a = shp_s ? PyObject_GetAttrString((PyObject *)d->a, "shape") : NULL;
    PyObject *shp_o = shp_a && d->out ? PyObject_GetAttrString((PyObject *)d->out, "shape") : NULL;
    if (!shp_a || (d->out && !shp_o))
        ; /* the attribute lookup's exception stands */
    else if (d->out)
        PyErr_Format(PyExc_ValueError,
                     "strengths %R, ages %R and out %R do not have matching shapes "
                     "(out must have the broadcast shape of strengths and ages)",
                     shp_s, shp_a, shp_o);
    else
        PyErr_Format(PyExc_ValueError, "strengths of shape %R and ages of shape %R do not broadcast",
                     shp_s, shp_a);
    Py_XDECREF(shp_s);
    Py_XDECREF(shp_a);
    Py_XDECREF(shp_o);
}

/* The call for 1-D inputs of one length whose out (if any) does not partly
 * overlap them; *done = 0 where that does not hold (nothing done then). */
static PyObject *tl_py_decay_call_1d(tl_py_decay_args *d, int *done) {
    PyArrayObject *s = d->s, *a = d->a, *out = d->out;
    *done = 0;
    if (!(PyArray_NDIM(s) == 1 && PyArray_NDIM(a) == 1 && PyArray_DIM(s, 0) == PyArray_DIM(a, 0) &&
          (!out || (PyArray_NDIM(out) == 1 && PyArray_DIM(out, 0) == PyArray_DIM(s, 0)))))
        return NULL;
    npy_intp n = PyArray_DIM(s, 0);
    /* One pass is safe when out either does not overlap an input or is
     * exactly it (same start, stride and item size: element i is read before
     * it is written). Any other overlap goes through the iterator, which
     * copies. */
    if (out && n > 0 && (!tl_py_same_or_apart(out, s) || !tl_py_same_or_apart(out, a))) return NULL;
    *done = 1;
    if (!out) {
        npy_intp dims[1] = {n};
        if (!(d->out = (PyArrayObject *)PyArray_SimpleNew(1, dims, d->res_type))) return NULL;
    }
    tl_py_decay_1d call = {d, (size_t)n, 0};
    int rc = tl_py_run(tl_py_decay_1d_work, &call, NULL, NULL, tl_py_decay_bytes(d, (size_t)n));
    if (rc == TL_PY_RAISED) return NULL;
    if (rc == TL_K_EAGES)
        return tl_py_age_error((const char *)PyArray_DATA(a) + (npy_intp)call.bad * PyArray_STRIDE(a, 0), a,
                               (npy_intp)call.bad, 1);
    if (rc != TL_K_OK) return tl_py_kernel_error(rc);
    Py_INCREF(d->out);
    return (PyObject *)d->out;
}

/* The call for any shapes that broadcast (the iterator's two passes). */
static PyObject *tl_py_decay_call_iter(tl_py_decay_args *d) {
    PyArrayObject *ops[3] = {d->s, d->a, d->out};
    npy_uint32 op_flags[3] = {NPY_ITER_READONLY, NPY_ITER_READONLY,
                              NPY_ITER_WRITEONLY | NPY_ITER_ALLOCATE | NPY_ITER_NO_BROADCAST};
    PyArray_Descr *dts[3] = {NULL, NULL, PyArray_DescrFromType(d->res_type)};
    NpyIter *it = NpyIter_MultiNew(3, ops,
                                   NPY_ITER_EXTERNAL_LOOP | NPY_ITER_ZEROSIZE_OK | NPY_ITER_COPY_IF_OVERLAP,
                                   NPY_KEEPORDER, NPY_SAFE_CASTING, op_flags, dts);
    Py_DECREF(dts[2]);
    if (!it) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) tl_py_decay_shape_error(d);
        return NULL;
    }
    PyArrayObject *res = NpyIter_GetOperandArray(it)[2];
    Py_INCREF(res);
    if (NpyIter_GetIterSize(it) > 0) {
        const size_t bytes = tl_py_decay_bytes(d, (size_t)NpyIter_GetIterSize(it));
        tl_py_decay_iter c = {d, it, NpyIter_GetIterNext(it, NULL), NpyIter_GetDataPtrArray(it),
                              NpyIter_GetInnerStrideArray(it), NpyIter_GetInnerLoopSizePtr(it), NULL};
        int rc = TL_PY_RAISED;
        if (c.next) rc = tl_py_run(tl_py_decay_check_work, &c, NULL, tl_py_decay_iter_reset, bytes);
        if (rc == TL_K_EAGES) {
            tl_py_age_error(c.badp, d->a, 0, 0);
            rc = TL_PY_RAISED;
        } else if (rc == TL_K_OK) {
            rc = tl_py_decay_iter_reset(&c) < 0
                     ? TL_PY_RAISED
                     : tl_py_run(tl_py_decay_iter_work, &c, &d->sa, tl_py_decay_iter_reset, bytes);
        }
        if (rc != TL_K_OK && rc != TL_PY_RAISED) {
            tl_py_kernel_error(rc);
            rc = TL_PY_RAISED;
        }
        if (rc == TL_PY_RAISED) {
            NpyIter_Deallocate(it);
            Py_DECREF(res);
            return NULL;
        }
    }
    if (NpyIter_Deallocate(it) != NPY_SUCCEED) {
        Py_DECREF(res);
        return NULL;
    }
    return (PyObject *)res;
}

/* _decay(strengths, ages, model, tau, half_life, alpha, out, scratch): the
 * public keyword arguments as given; tau is the registered default object
 * unless given. */
static PyObject *py_decay(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "_decay takes 8 arguments");
        return NULL;
    }
    tl_py_decay_args d = {0};
    PyObject *result = NULL;
    if (tl_py_decay_parse(args, &d) == 0) {
        int done;
        result = tl_py_decay_call_1d(&d, &done);
        if (!done) result = tl_py_decay_call_iter(&d);
    }
    tl_py_drop(d.s, args[0]);
    tl_py_drop(d.a, args[1]);
    tl_py_drop(d.out, args[6]);
    return result;
}

/* ---- int8 corpora ------------------------------------------------------------------
 * kernels.quantize(C) gives a QuantizedCorpus: an immutable object that owns
 * one 64-byte-aligned block with the int8 rows, the float32 scales and the
 * int32 sums and sums of squares, all written by tl_quantize_i8 and never
 * again. The integer kernels trust the sums (the VNNI paths use sum_j c_j to
 * unbias their products), so nothing outside this file can make or change
 * one: the type has no constructor, no settable attribute and cannot be
 * subclassed; its arrays are read-only views whose base is the object (NumPy
 * refuses to make them writeable again). Being immutable, one corpus can be
 * scored from any number of threads, with or without the GIL. */

typedef struct tl_py_i8_corpus {
    PyObject_HEAD
    void *block;   /* rows, then scale, sum, sumsq */
    size_t mapped; /* block's bytes if mapped (tl_os_map_anchored), 0 if from aligned_alloc */
    int8_t *data;  /* rows x cols, row r at data + r * cols */
    float *scale;
    int32_t *sum, *sumsq;
    npy_intp rows, cols;
} tl_py_i8_corpus;

static PyTypeObject TlI8Corpus_Type;

static void i8_corpus_dealloc(PyObject *self) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    if (c->mapped) tl_os_unmap_range(c->block, c->mapped);
    else free(c->block);
    Py_TYPE(self)->tp_free(self);
}

/* A corpus of rows x cols with its block allocated (contents unset), or NULL
 * with MemoryError. Sizes are checked for overflow (a broadcast view can claim
 * 2**40 rows without holding them). */
static tl_py_i8_corpus *i8_corpus_alloc(npy_intp rows, npy_intp cols) {
    size_t n = (size_t)rows, d = (size_t)cols;
    if (d && n > (SIZE_MAX / 2) / d) return (tl_py_i8_corpus *)PyErr_NoMemory();
    size_t data_bytes = (n * d + 63) & ~(size_t)63;
    if (n > (SIZE_MAX / 2 - data_bytes) / 12) return (tl_py_i8_corpus *)PyErr_NoMemory();
    /* Large corpora are mapped on huge-page boundaries, with the advice NumPy
     * also gives its large arrays: a DRAM pass over 4 KiB pages costs a TLB
     * miss per page (36-40 ms instead of 26-28 ms for 1,000,000 x 768). */
    const size_t align = data_bytes >= ((size_t)4 << 20) ? (size_t)2 << 20 : 64;
    if (data_bytes + 12 * n > SIZE_MAX / 2 - align) return (tl_py_i8_corpus *)PyErr_NoMemory();
    size_t total = (data_bytes + 12 * n + align - 1) & ~(align - 1);
    tl_py_i8_corpus *c = PyObject_New(tl_py_i8_corpus, &TlI8Corpus_Type);
    if (!c) return NULL;
    c->mapped = align > 64 ? total : 0;
    c->block = c->mapped ? tl_os_map_anchored(total, align, 0) : aligned_alloc(64, total ? total : 64);
    if (!c->block) {
        c->mapped = 0;
        Py_DECREF(c);
        return (tl_py_i8_corpus *)PyErr_NoMemory();
    }
    if (c->mapped) (void)tl_os_advise_huge(c->block, total); /* advice only: 4 KiB pages work too */
    c->data = c->block;
    c->scale = (float *)((char *)c->block + data_bytes);
    c->sum = (int32_t *)(c->scale + n);
    c->sumsq = c->sum + n;
    c->rows = rows;
    c->cols = cols;
    return c;
}

/* A read-only view of nd dims over `ptr` (owned by `self`), or NULL. */
static PyObject *i8_corpus_view(PyObject *self, void *ptr, int type_num, int nd, npy_intp *dims) {
    PyObject *a = PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(type_num), nd, dims, NULL, ptr, 0,
                                       NULL);
    if (!a) return NULL;
    if (PyArray_SetBaseObject((PyArrayObject *)a, Py_NewRef(self)) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static PyObject *i8_corpus_get_data(PyObject *self, void *Py_UNUSED(c)) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    npy_intp dims[2] = {c->rows, c->cols};
    return i8_corpus_view(self, c->data, NPY_INT8, 2, dims);
}

static PyObject *i8_corpus_get_scale(PyObject *self, void *Py_UNUSED(c)) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    return i8_corpus_view(self, c->scale, NPY_FLOAT, 1, &c->rows);
}

static PyObject *i8_corpus_get_sum(PyObject *self, void *Py_UNUSED(c)) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    return i8_corpus_view(self, c->sum, NPY_INT32, 1, &c->rows);
}

static PyObject *i8_corpus_get_sumsq(PyObject *self, void *Py_UNUSED(c)) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    return i8_corpus_view(self, c->sumsq, NPY_INT32, 1, &c->rows);
}

static PyObject *i8_corpus_get_shape(PyObject *self, void *Py_UNUSED(c)) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    return Py_BuildValue("(nn)", (Py_ssize_t)c->rows, (Py_ssize_t)c->cols);
}

static PyObject *i8_corpus_get_nbytes(PyObject *self, void *Py_UNUSED(c)) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    return PyLong_FromSize_t((size_t)c->rows * ((size_t)c->cols + 12));
}

/* dequantize(): the float32 values the rows stand for, data[r, j] * scale[r]. */
static PyObject *i8_corpus_dequantize(PyObject *self, PyObject *Py_UNUSED(ignored)) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    npy_intp dims[2] = {c->rows, c->cols};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT);
    if (!out) return NULL;
    float *o = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp r = 0; r < c->rows; r++)
        for (npy_intp j = 0; j < c->cols; j++)
            o[r * c->cols + j] = (float)c->data[r * c->cols + j] * c->scale[r];
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *i8_corpus_repr(PyObject *self) {
    tl_py_i8_corpus *c = (tl_py_i8_corpus *)self;
    return PyUnicode_FromFormat("QuantizedCorpus(rows=%zd, cols=%zd, dtype=int8)", (Py_ssize_t)c->rows,
                                (Py_ssize_t)c->cols);
}

static Py_ssize_t i8_corpus_len(PyObject *self) { return (Py_ssize_t)((tl_py_i8_corpus *)self)->rows; }

static PyGetSetDef i8_corpus_getset[] = {
    {"data", i8_corpus_get_data, NULL, "The int8 rows, shape (n, d) (read-only).", NULL},
    {"scale", i8_corpus_get_scale, NULL, "One float32 scale per row: row r stands for data[r] * scale[r].", NULL},
    {"sum", i8_corpus_get_sum, NULL, "int32 sum of each row's int8 values.", NULL},
    {"sumsq", i8_corpus_get_sumsq, NULL, "int32 sum of the squares of each row's int8 values.", NULL},
    {"shape", i8_corpus_get_shape, NULL, "(n, d).", NULL},
    {"nbytes", i8_corpus_get_nbytes, NULL, "Bytes held: n * d for the rows plus 12 per row.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef i8_corpus_methods[] = {
    {"dequantize", i8_corpus_dequantize, METH_NOARGS,
     "dequantize() -> float32 array (n, d): data[r, j] * scale[r], the values the corpus stands for."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods i8_corpus_as_seq = {.sq_length = i8_corpus_len};

static PyTypeObject TlI8Corpus_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tlalloc.kernels.QuantizedCorpus",
    .tp_basicsize = sizeof(tl_py_i8_corpus),
    .tp_dealloc = i8_corpus_dealloc,
    .tp_repr = i8_corpus_repr,
    .tp_as_sequence = &i8_corpus_as_seq,
    .tp_flags = Py_TPFLAGS_DEFAULT, /* no BASETYPE, no tp_new: made by quantize() only */
    .tp_doc = "An int8 corpus with one float32 scale per row, made by tlalloc.kernels.quantize() (immutable).",
    .tp_getset = i8_corpus_getset,
    .tp_methods = i8_corpus_methods,
};

/* The first non-finite element of row `r` of src, as "C[r, j] = value is not
 * finite" (GIL held; the kernel reported the row, this names the column). */
static void i8_bad_row_error(PyArrayObject *src, size_t r) {
    const char *row = (const char *)PyArray_DATA(src) + (npy_intp)r * PyArray_STRIDE(src, 0);
    for (npy_intp j = 0; j < PyArray_DIM(src, 1); j++) {
        PyObject *v = PyArray_GETITEM(src, row + j * PyArray_STRIDE(src, 1));
        if (!v) return;
        double x = PyFloat_AsDouble(v);
        if (x == -1.0 && PyErr_Occurred()) {
            Py_DECREF(v);
            return;
        }
        if (!isfinite(x)) {
            PyErr_Format(PyExc_ValueError, "C[%zu, %zd] = %R is not finite (int8 quantization needs finite values)",
                         r, (Py_ssize_t)j, v);
            Py_DECREF(v);
            return;
        }
        Py_DECREF(v);
    }
    PyErr_Format(PyExc_ValueError, "C row %zu has a non-finite value (changed while it was quantized?)", r);
}

typedef struct tl_py_quantize_call {
    tl_mat src;
    tl_py_i8_corpus *dst;
    size_t bad_row;
} tl_py_quantize_call;

static int tl_py_quantize_work(void *ctx, tl_scratch *s, tl_py_nogil *g) {
    tl_py_quantize_call *c = ctx;
    (void)g;
    return tl_quantize_i8(s, &c->src, c->dst->data, (ptrdiff_t)c->dst->cols, c->dst->scale, c->dst->sum,
                          c->dst->sumsq, &c->bad_row);
}

/* _quantize(C, scratch) -> QuantizedCorpus. */
static PyObject *py_quantize(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_quantize(C, scratch)");
        return NULL;
    }
    tl_scratch_kind kind;
    if (tl_py_scratch_kind(args[1], &kind) < 0) return NULL;
    tl_dtype dt;
    PyArrayObject *src = tl_py_cos_array(args[0], "C", &dt);
    if (!src) return NULL;
    tl_py_i8_corpus *corpus = NULL;
    if (PyArray_NDIM(src) != 2) {
        PyErr_Format(PyExc_ValueError, "C must be 2-dimensional (n, d), got %d dimension(s)", PyArray_NDIM(src));
        goto fail;
    }
    if (PyArray_DIM(src, 1) > TL_I8_MAX_COLS) {
        PyErr_Format(PyExc_ValueError, "C has %zd columns; an int8 corpus holds at most %d per row",
                     (Py_ssize_t)PyArray_DIM(src, 1), TL_I8_MAX_COLS);
        goto fail;
    }
    corpus = i8_corpus_alloc(PyArray_DIM(src, 0), PyArray_DIM(src, 1));
    if (!corpus) goto fail;
    tl_arena *arena;
    if (tl_py_scratch_arena(kind, &arena) < 0) goto fail;
    tl_py_quantize_call call = {{PyArray_DATA(src), dt, (size_t)corpus->rows, (size_t)corpus->cols,
                                 PyArray_STRIDE(src, 0), PyArray_STRIDE(src, 1)},
                                corpus, 0};
    tl_py_scratch_arg sa = {kind, arena};
    int rc = tl_py_run(tl_py_quantize_work, &call, &sa, NULL,
                       tl_py_bytes3((size_t)corpus->rows, (size_t)corpus->cols, (size_t)PyArray_ITEMSIZE(src)));
    if (rc == TL_PY_RAISED) goto fail;
    if (rc == TL_K_EINVAL) {
        i8_bad_row_error(src, call.bad_row);
        goto fail;
    }
    if (rc != TL_K_OK) {
        tl_py_kernel_error(rc);
        goto fail;
    }
    tl_py_drop(src, args[0]);
    return (PyObject *)corpus;
fail:
    tl_py_drop(src, args[0]);
    Py_XDECREF(corpus);
    return NULL;
}

/* One int8 scoring call's arguments, for its work without the GIL. */
typedef struct tl_py_i8_call {
    tl_mat q;
    tl_i8_mat c;
    tl_i8_metric metric;
    Py_ssize_t k; /* top_k, or -1: every score into out */
    int64_t *ri;
    float *rs;
    size_t count;
    float *out;
    ptrdiff_t ors, ocs;
} tl_py_i8_call;

static int tl_py_i8_work(void *ctx, tl_scratch *s, tl_py_nogil *g) {
    tl_py_i8_call *c = ctx;
    (void)g;
    if (c->k >= 0) return tl_i8_topk_batch(s, &c->q, &c->c, c->metric, (size_t)c->k, c->ri, c->rs, &c->count);
    return tl_i8_score_batch(s, &c->q, &c->c, c->metric, c->out, c->ors, c->ocs);
}

static const char *const tl_i8_metric_names[2] = {"cosine", "dot"};

/* _score_int8(queries, corpus, top_k, out, metric, scratch): cosine_similarity
 * (and metric="dot") against a QuantizedCorpus. The corpus's memory is its own,
 * so out can only overlap the queries. */
static PyObject *py_score_int8(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "_score_int8(queries, corpus, top_k, out, metric, scratch)");
        return NULL;
    }
    if (!Py_IS_TYPE(args[1], &TlI8Corpus_Type)) {
        PyErr_Format(PyExc_TypeError, "candidates must be a QuantizedCorpus made by tlalloc.kernels.quantize(), "
                     "got %.100s", Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    tl_py_i8_corpus *corpus = (tl_py_i8_corpus *)args[1];
    Py_ssize_t k;
    int metric = TL_I8_COSINE;
    tl_scratch_kind kind;
    if (tl_py_scratch_kind(args[5], &kind) < 0 || tl_py_opt_count(args[2], "top_k", &k) < 0 ||
        tl_arg_choice(args[4], "metric", tl_i8_metric_names, 2, &metric) < 0)
        return NULL;
    PyObject *out_obj = args[3];
    if (k >= 0 && out_obj != Py_None) {
        PyErr_SetString(PyExc_TypeError, "out cannot be combined with top_k (top_k returns new arrays)");
        return NULL;
    }
    PyArrayObject *q = NULL, *out = NULL, *ri = NULL, *rs = NULL;
    PyObject *result = NULL;
    tl_dtype qdt;
    q = tl_py_cos_array(args[0], "queries", &qdt);
    if (!q) goto done;
    const int batched = PyArray_NDIM(q) == 2;
    if (PyArray_NDIM(q) != 1 && !batched) {
        PyErr_Format(PyExc_ValueError, "queries must be 1-dimensional (d,) or 2-dimensional (m, d), got %d dimension(s)",
                     PyArray_NDIM(q));
        goto done;
    }
    npy_intp mq = batched ? PyArray_DIM(q, 0) : 1, d = PyArray_DIM(q, batched), n = corpus->rows;
    if (corpus->cols != d) {
        PyErr_Format(PyExc_ValueError, "candidates has rows of %zd values; queries of length %zd do not match",
                     (Py_ssize_t)corpus->cols, (Py_ssize_t)d);
        goto done;
    }
    npy_intp dims[2] = {mq, n};
    if (out_obj != Py_None) {
        if (!PyArray_Check(out_obj)) {
            PyErr_Format(PyExc_TypeError, "out must be a numpy.ndarray, got %.100s", Py_TYPE(out_obj)->tp_name);
            goto done;
        }
        out = (PyArrayObject *)out_obj; /* borrowed */
        if (PyArray_TYPE(out) != NPY_FLOAT || !PyArray_ISNOTSWAPPED(out)) {
            PyErr_Format(PyExc_TypeError, "out must have dtype float32, got %R", (PyObject *)PyArray_DESCR(out));
            goto done;
        }
        const int want = batched ? 2 : 1;
        if (PyArray_NDIM(out) != want || PyArray_DIM(out, 0) != dims[2 - want] ||
            (batched && PyArray_DIM(out, 1) != n)) {
            PyObject *shape = PyObject_GetAttrString((PyObject *)out, "shape");
            if (shape) {
                if (batched)
                    PyErr_Format(PyExc_ValueError, "out must have shape (%zd, %zd) (queries x candidates), got %R",
                                 (Py_ssize_t)mq, (Py_ssize_t)n, shape);
                else
                    PyErr_Format(PyExc_ValueError, "out must have shape (%zd,), got %R", (Py_ssize_t)n, shape);
                Py_DECREF(shape);
            }
            goto done;
        }
        if (!PyArray_ISWRITEABLE(out) || !PyArray_ISALIGNED(out)) {
            PyErr_SetString(PyExc_ValueError, "out must be writeable and aligned");
            goto done;
        }
        if (tl_py_may_overlap(out, q)) {
            PyErr_SetString(PyExc_ValueError, "out must not overlap queries");
            goto done;
        }
    } else if (k < 0) {
        out = (PyArrayObject *)PyArray_SimpleNew(batched ? 2 : 1, batched ? dims : dims + 1, NPY_FLOAT);
        if (!out) goto done;
    }
    if (k >= 0) {
        npy_intp kd[2] = {mq, k < n ? k : n};
        ri = (PyArrayObject *)PyArray_SimpleNew(batched ? 2 : 1, batched ? kd : kd + 1, NPY_INT64);
        rs = (PyArrayObject *)PyArray_SimpleNew(batched ? 2 : 1, batched ? kd : kd + 1, NPY_FLOAT);
        if (!ri || !rs) goto done;
    }
    tl_arena *arena;
    if (tl_py_scratch_arena(kind, &arena) < 0) goto done;
    /* A 1-D query is the batched form with one query (row stride 0). */
    tl_py_i8_call call = {
        {PyArray_DATA(q), qdt, (size_t)mq, (size_t)d, batched ? PyArray_STRIDE(q, 0) : 0, PyArray_STRIDE(q, batched)},
        {corpus->data, (size_t)n, (size_t)d, (ptrdiff_t)d, corpus->scale, corpus->sum, corpus->sumsq},
        (tl_i8_metric)metric,
        k,
        ri ? PyArray_DATA(ri) : NULL,
        rs ? PyArray_DATA(rs) : NULL,
        0,
        out ? PyArray_DATA(out) : NULL,
        out && batched ? PyArray_STRIDE(out, 0) : 0,
        out ? PyArray_STRIDE(out, batched) : 0};
    tl_py_scratch_arg sa = {kind, arena};
    int rc = tl_py_run(tl_py_i8_work, &call, &sa, NULL, tl_py_bytes3((size_t)mq, (size_t)n, (size_t)d));
    if (rc == TL_PY_RAISED) goto done;
    if (rc != TL_K_OK) {
        tl_py_kernel_error(rc);
        goto done;
    }
    result = k >= 0 ? PyTuple_Pack(2, (PyObject *)ri, (PyObject *)rs) : Py_NewRef((PyObject *)out);
done:
    tl_py_drop(q, args[0]);
    tl_py_drop(out, out_obj);
    Py_XDECREF(ri);
    Py_XDECREF(rs);
    return result;
}

/* Optional extensions (tl_kernels_ext) by name, as a tuple. */
#define TL_PY_NUM_EXT 3
static const char *const tl_ext_names[TL_PY_NUM_EXT] = {"avx512_vnni", "avx_vnni", "avx512_bf16"};
static const unsigned tl_ext_bits[TL_PY_NUM_EXT] = {TL_EXT_AVX512_VNNI, TL_EXT_AVX_VNNI,
                                                    TL_EXT_AVX512_BF16};
#define TL_PY_EXT_LIST "'avx512_vnni', 'avx_vnni', 'avx512_bf16'"

static PyObject *tl_py_ext_tuple(unsigned ext) {
    Py_ssize_t n = 0;
    for (int b = 0; b < TL_PY_NUM_EXT; b++) n += (ext & tl_ext_bits[b]) != 0;
    PyObject *t = PyTuple_New(n);
    Py_ssize_t i = 0;
    for (int b = 0; t && b < TL_PY_NUM_EXT; b++) {
        if (!(ext & tl_ext_bits[b])) continue;
        PyObject *s = PyUnicode_FromString(tl_ext_names[b]);
        if (!s) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i++, s);
    }
    return t;
}

static PyObject *py_ext(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return tl_py_ext_tuple(tl_kernels_ext());
}

static PyObject *py_best_ext(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return tl_py_ext_tuple(tl_kernels_best_ext());
}

/* Testing aid: use only the named extensions (an iterable of names, e.g. () or
 * ("avx_vnni",)); returns the previous set. */
static PyObject *py_set_ext(PyObject *Py_UNUSED(m), PyObject *arg) {
    if (PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "ext must be a tuple of names (" TL_PY_EXT_LIST "), got %R", arg);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arg, "ext must be a tuple of names (" TL_PY_EXT_LIST ")");
    if (!seq) return NULL;
    unsigned ext = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        int which = -1;
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (item == Py_None || tl_arg_choice(item, "ext", tl_ext_names, TL_PY_NUM_EXT, &which) < 0 || which < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "ext must hold one of " TL_PY_EXT_LIST ", got %R", item);
            Py_DECREF(seq);
            return NULL;
        }
        ext |= tl_ext_bits[which];
    }
    Py_DECREF(seq);
    int prev = tl_kernels_set_ext(ext);
    if (prev < 0) {
        PyObject *want = tl_py_ext_tuple(ext), *best = tl_py_ext_tuple(tl_kernels_best_ext());
        if (want && best) PyErr_Format(PyExc_ValueError, "this CPU does not support %R (it has %R)", want, best);
        Py_XDECREF(want);
        Py_XDECREF(best);
        return NULL;
    }
    return tl_py_ext_tuple((unsigned)prev);
}

static PyMethodDef tl_i8_methods[] = {
    {"_quantize", (PyCFunction)(void (*)(void))py_quantize, METH_FASTCALL,
     "_quantize(C, scratch) -> QuantizedCorpus: see tlalloc.kernels.quantize."},
    {"_score_int8", (PyCFunction)(void (*)(void))py_score_int8, METH_FASTCALL,
     "_score_int8(queries, corpus, top_k, out, metric, scratch): see tlalloc.kernels.cosine_similarity."},
    {"_kernels_ext", py_ext, METH_NOARGS, "Optional extensions the int8 kernels use now (a tuple of names)."},
    {"_kernels_best_ext", py_best_ext, METH_NOARGS, "Optional extensions this CPU supports (a tuple of names)."},
    {"_kernels_set_ext", py_set_ext, METH_O,
     "Testing aid: use only the named extensions (a tuple of names); returns the previous ones."},
    {NULL, NULL, 0, NULL},
};

static int tl_py_i8_init(PyObject *m) {
    if (PyType_Ready(&TlI8Corpus_Type) < 0) return -1;
    if (PyModule_AddObjectRef(m, "QuantizedCorpus", (PyObject *)&TlI8Corpus_Type) < 0) return -1;
    return PyModule_AddFunctions(m, tl_i8_methods);
}

/* ---- introspection (tests and benchmarks) ------------------------------------------- */

static const char *const tl_isa_names[3] = {"portable", "avx2", "avx512"};

static PyObject *py_isa(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyUnicode_FromString(tl_isa_names[tl_kernels_isa()]);
}

static PyObject *py_best_isa(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    return PyUnicode_FromString(tl_isa_names[tl_kernels_best_isa()]);
}

/* Testing aid: the size above which single-query cosine streams rows one at a
 * time (tl_cosine_set_stream_bytes); None reads it. Returns the previous one. */
static PyObject *py_cos_stream_bytes(PyObject *Py_UNUSED(m), PyObject *arg) {
    if (arg == Py_None) return PyLong_FromSize_t(tl_cosine_set_stream_bytes((size_t)-1));
    Py_ssize_t v;
    if (tl_py_opt_count(arg, "bytes", &v) < 0) return NULL;
    return PyLong_FromSize_t(tl_cosine_set_stream_bytes((size_t)v));
}

static PyObject *py_set_isa(PyObject *Py_UNUSED(m), PyObject *arg) {
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    for (int i = 0; name && i < 3; i++)
        if (strcmp(name, tl_isa_names[i]) == 0) {
            int prev = tl_kernels_set_isa((tl_isa)i);
            if (prev < 0)
                return PyErr_Format(PyExc_ValueError, "this CPU does not support %R (best: %s)", arg,
                                    tl_isa_names[tl_kernels_best_isa()]);
            return PyUnicode_FromString(tl_isa_names[prev]);
        }
    return PyErr_Format(PyExc_ValueError, "isa must be 'portable', 'avx2' or 'avx512', got %R", arg);
}

static PyObject *py_shared_stats(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_arena_stats st;
    tl_scratch_shared_stats(&st);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "capacity_bytes", (unsigned long long)st.capacity_bytes,
                         "used_bytes", (unsigned long long)st.used_bytes, "peak_bytes",
                         (unsigned long long)st.peak_bytes, "num_allocations",
                         (unsigned long long)st.num_allocations, "num_overflows",
                         (unsigned long long)st.num_overflows, "fallback_bytes",
                         (unsigned long long)st.fallback_bytes, "num_resets", (unsigned long long)st.num_resets);
}

/* {kernel name: {counter: value}} for every kernel (tl_scratch_kernel_stats). */
static PyObject *py_kernel_scratch_stats(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    PyObject *all = PyDict_New();
    if (!all) return NULL;
    for (unsigned k = TL_SCRATCH_COSINE; k < TL_SCRATCH_NUM_KERNELS; k++) {
        tl_scratch_kernel_stats st;
        tl_scratch_kernel_get_stats((tl_scratch_kernel)k, &st);
        PyObject *d = Py_BuildValue(
            "{s:K,s:K,s:K,s:K,s:K,s:K}", "num_spilled_calls", (unsigned long long)st.num_spilled_calls,
            "num_spills", (unsigned long long)st.num_spills, "spilled_bytes", (unsigned long long)st.spilled_bytes,
            "peak_need_bytes", (unsigned long long)st.peak_need_bytes, "fit_capacity_bytes",
            (unsigned long long)st.fit_capacity_bytes, "spill_capacity_bytes",
            (unsigned long long)st.spill_capacity_bytes);
        if (!d || PyDict_SetItemString(all, tl_scratch_kernel_name((tl_scratch_kernel)k), d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(all);
            return NULL;
        }
        Py_DECREF(d);
    }
    return all;
}

static PyObject *py_kernel_scratch_reset(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(ignored)) {
    tl_scratch_kernel_reset_stats();
    Py_RETURN_NONE;
}

static PyMethodDef kernel_methods[] = {
    {"_cosine_similarity", (PyCFunction)(void (*)(void))py_cosine, METH_FASTCALL,
     "_cosine_similarity(query, candidates, top_k, out, scratch): see tlalloc.kernels."},
    {"_spread_activation", (PyCFunction)(void (*)(void))py_spread, METH_FASTCALL,
     "_spread_activation(indptr, indices, data, seeds, activation, decay_rate, threshold, max_depth, "
     "top_k, scratch, engine): see tlalloc.kernels."},
    {"_spread_activation_many", (PyCFunction)(void (*)(void))py_spread_many, METH_FASTCALL,
     "_spread_activation_many(indptr, indices, data, seed_ids, set_indptr, activation, decay_rate, threshold, "
     "max_depth, top_k, scratch, engine): see tlalloc.kernels.spread_activation_many."},
    {"_decay", (PyCFunction)(void (*)(void))py_decay, METH_FASTCALL,
     "_decay(strengths, ages, model, tau, half_life, alpha, out, scratch): see tlalloc.kernels."},
    {"_set_thread_scratch", py_set_thread_scratch, METH_O,
     "Set the calling thread's default scratch strategy; returns the previous one."},
    {"_get_thread_scratch", py_get_thread_scratch, METH_NOARGS,
     "The calling thread's default scratch strategy."},
    {"_set_default_tau", py_set_default_tau, METH_O, "Register decay()'s default tau object."},
    {"_kernels_keep_gil_bytes", (PyCFunction)(void (*)(void))py_keep_gil_bytes, METH_FASTCALL,
     "_kernels_keep_gil_bytes(n=None) -> int: calls whose estimated work is below n bytes keep the GIL; "
     "n sets it (testing and measuring aid), returns the previous value."},
    {"_kernels_set_main_thread", py_set_main_thread, METH_O,
     "Record the main thread's ident (the only thread whose kernel calls poll for SIGINT)."},
    {"_kernels_isa", py_isa, METH_NOARGS, "Instruction set the kernels use now."},
    {"_kernels_best_isa", py_best_isa, METH_NOARGS, "Best instruction set this CPU supports."},
    {"_cosine_stream_bytes", py_cos_stream_bytes, METH_O,
     "Testing aid: set (or with None read) the size above which cosine streams rows; returns the previous one."},
    {"_kernels_set_isa", py_set_isa, METH_O, "Testing aid: force an instruction set; returns the previous one."},
    {"_kernel_scratch_stats", py_kernel_scratch_stats, METH_NOARGS,
     "Per-kernel scratch statistics: {kernel: {counter: value}} (tlalloc.kernels.scratch_stats)."},
    {"_kernel_scratch_reset", py_kernel_scratch_reset, METH_NOARGS,
     "Zero every kernel's scratch statistics (tests)."},
    {"_shared_scratch_stats", py_shared_stats, METH_NOARGS,
     "Statistics of the arena behind the 'shared' scratch strategy."},
    {NULL, NULL, 0, NULL},
};

int tl_py_kernels_init(PyObject *m) {
    if (tl_py_i8_init(m) < 0) return -1;
    return PyModule_AddFunctions(m, kernel_methods);
}
