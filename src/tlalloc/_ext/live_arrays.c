/* live_arrays.c: the arrays still alive when a scope ends or an arena is
 * reset, named in the BufferError (arena_py.c raises it).
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
#include "arena_py.h"

#include <string.h>

int tl_track;

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
PyObject *region_error(TlRegion *r, Py_ssize_t live, const char *what) {
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
int region_track(TlRegion *r, PyObject *obj) {
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

static PyMethodDef live_arrays_methods[] = {
    {"_set_track_allocations", (PyCFunction)py_set_track_allocations, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int tl_py_live_arrays_init(PyObject *m) { return PyModule_AddFunctions(m, live_arrays_methods); }
