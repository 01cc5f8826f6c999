/* args.c: the rules for arguments, shared by every file of the binding
 * (declared in binding.h). One rule per kind of value, each written once:
 *
 * - a size given as text ("4MiB", "1.5KB"): tl_parse_size of the C core
 *   (csrc/env.c), the parser libtlalloc.so applies to its environment, so
 *   that Python (tlalloc._config.parse_size, through _parse_size below) and
 *   the preloaded library accept and refuse the same texts;
 * - a delay as text ("250ms", "1.5s") and a flag as text ("0", "1"): likewise
 *   tl_parse_delay_ms and tl_parse_flag;
 * - a byte count: an int (operator.index, not bool), 0 .. PTRDIFF_MAX;
 * - an alignment: an int (operator.index, not bool), a power of two up to the
 *   limit of the allocator asked;
 * - a count (threads, blocks, top_k, ...): an int (operator.index, not bool)
 *   within the bounds the caller names;
 * - a flag given in Python: True or False (bool or numpy.bool_);
 * - a choice among names: a str equal to one of them;
 * - shape, dtype and order: NumPy's rules.
 *
 * Each raises TypeError (wrong type) or ValueError (wrong value) naming the
 * argument and the value.
 */
#include "binding.h"

#include <stdint.h>
#include <string.h>

/* ---- text: sizes, delays, flags (the C core's parsers) ------------------------------ */

/* The UTF-8 text of `text` for the C parsers, or NULL where it has none they
 * could accept (not a str, lone surrogates, an embedded NUL): such a text is
 * refused as unreadable, as the C library refuses the bytes it cannot read. */
static const char *tl_arg_text(PyObject *text) {
    Py_ssize_t n;
    const char *s = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
    if (!s) {
        PyErr_Clear();
        return NULL;
    }
    return strlen(s) == (size_t)n ? s : NULL;
}

static const char tl_size_help[] =
    "use bytes or a number with a unit (KiB, MiB, GiB, TiB as powers of 1024; KB, MB, GB, TB "
    "as powers of 1000)";

int tl_arg_size_text(PyObject *text, const char *name, uint64_t *out) {
    const char *s = tl_arg_text(text);
    int rc = s ? tl_parse_size(s, out) : TL_PARSE_SYNTAX;
    if (rc == TL_PARSE_OK) return 0;
    if (rc == TL_PARSE_FRACTION)
        PyErr_Format(PyExc_ValueError, "%s: %R is not a whole number of bytes", name, text);
    else if (rc == TL_PARSE_RANGE)
        PyErr_Format(PyExc_ValueError, "%s=%R is out of range: at most %llu bytes", name, text,
                     (unsigned long long)UINT64_MAX);
    else
        PyErr_Format(PyExc_ValueError, "%s: cannot read %R as a size; %s", name, text, tl_size_help);
    return -1;
}

/* The arguments (text: str, name: str) of the _parse_* functions below. */
static int tl_text_args(PyObject *const *args, Py_ssize_t nargs, const char *fn, PyObject **text,
                        const char **name) {
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_Format(PyExc_TypeError, "%s(text, name) takes two str", fn);
        return -1;
    }
    *text = args[0];
    *name = PyUnicode_AsUTF8(args[1]);
    return *name ? 0 : -1;
}

/* _parse_size(text, name) -> int: tlalloc._config.parse_size for a str. */
static PyObject *py_parse_size(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    PyObject *text;
    const char *name;
    uint64_t v;
    if (tl_text_args(args, nargs, "_parse_size", &text, &name) < 0 ||
        tl_arg_size_text(text, name, &v) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(v);
}

/* _parse_delay_ms(text, name) -> int: milliseconds, as TLALLOC_POOL_PURGE_DELAY. */
static PyObject *py_parse_delay_ms(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    PyObject *text;
    const char *name;
    if (tl_text_args(args, nargs, "_parse_delay_ms", &text, &name) < 0) return NULL;
    const char *s = tl_arg_text(text);
    uint64_t v;
    int rc = s ? tl_parse_delay_ms(s, &v) : TL_PARSE_SYNTAX;
    if (rc == TL_PARSE_OK) return PyLong_FromUnsignedLongLong(v);
    if (rc == TL_PARSE_FRACTION)
        return PyErr_Format(PyExc_ValueError, "%s: %R is not a whole number of milliseconds", name,
                            text);
    if (rc == TL_PARSE_RANGE)
        return PyErr_Format(PyExc_ValueError, "%s=%R is out of range: at most %llu ms", name, text,
                            (unsigned long long)UINT64_MAX);
    return PyErr_Format(PyExc_ValueError,
                        "%s: cannot read %R as a delay; use milliseconds ('250' or '250ms') or "
                        "seconds ('1.5s')",
                        name, text);
}

/* _parse_flag(text, name) -> bool: "0" or "1", as every TLALLOC_* flag. */
static PyObject *py_parse_flag(PyObject *Py_UNUSED(m), PyObject *const *args, Py_ssize_t nargs) {
    PyObject *text;
    const char *name;
    int v;
    if (tl_text_args(args, nargs, "_parse_flag", &text, &name) < 0) return NULL;
    const char *s = tl_arg_text(text);
    if (s && tl_parse_flag(s, &v) == TL_PARSE_OK) return PyBool_FromLong(v);
    return PyErr_Format(PyExc_ValueError, "%s=%R is not accepted; use 0 or 1", name, text);
}

/* ---- numbers given in Python ---------------------------------------------------------- */

/* An int by operator.index, not bool; *out clipped to [PY_SSIZE_T_MIN, MAX]
 * with *clipped set when it was (the caller's range check names the value). */
static int tl_arg_index(PyObject *obj, const char *name, Py_ssize_t *out, int *clipped) {
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, got %R", name, obj);
        return -1;
    }
    PyObject *idx = PyNumber_Index(obj);
    if (!idx) return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (v == -1 && PyErr_Occurred()) return -1;
    *clipped = overflow != 0 || v > PY_SSIZE_T_MAX || v < PY_SSIZE_T_MIN;
    *out = overflow > 0 ? PY_SSIZE_T_MAX : overflow < 0 ? PY_SSIZE_T_MIN : (Py_ssize_t)v;
    return 0;
}

int tl_arg_nbytes(PyObject *obj, const char *name, size_t *out) {
    Py_ssize_t v;
    int clipped;
    if (tl_arg_index(obj, name, &v, &clipped) < 0) return -1;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %R", name, obj);
        return -1;
    }
    if (clipped || (size_t)v > (size_t)PTRDIFF_MAX) {
        PyErr_Format(PyExc_ValueError, "%s=%R is out of range: at most %zd bytes", name, obj,
                     (Py_ssize_t)PTRDIFF_MAX);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int tl_arg_align(PyObject *obj, size_t max, size_t *out) {
    Py_ssize_t v;
    int clipped;
    if (tl_arg_index(obj, "align", &v, &clipped) < 0) return -1;
    if (clipped || v < 1 || (size_t)v > max || !tl_is_pow2((size_t)v)) {
        PyErr_Format(PyExc_ValueError, "align must be a power of two between 1 and %zu, got %R",
                     max, obj);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int tl_arg_count(PyObject *obj, const char *name, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t *out) {
    Py_ssize_t v;
    int clipped;
    if (tl_arg_index(obj, name, &v, &clipped) < 0) return -1;
    if (clipped || v < lo || v > hi) {
        if (hi != PY_SSIZE_T_MAX)
            PyErr_Format(PyExc_ValueError, "%s=%R is out of range (%zd .. %zd)", name, obj, lo, hi);
        else if (v < lo)
            PyErr_Format(PyExc_ValueError, "%s must be >= %zd, got %R", name, lo, obj);
        else
            PyErr_Format(PyExc_ValueError, "%s is out of range (at most %zd), got %R", name, hi, obj);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- flags and choices ---------------------------------------------------------------- */

int tl_arg_flag(PyObject *v, const char *name, int *out) {
    if (v == NULL || v == Py_None) return 0;
    if (!PyBool_Check(v) && !PyArray_IsScalar(v, Bool)) {
        PyErr_Format(PyExc_TypeError, "%s must be True or False, got %R", name, v);
        return -1;
    }
    int t = PyObject_IsTrue(v);
    if (t < 0) return -1;
    *out = t;
    return 0;
}

int tl_arg_choice(PyObject *v, const char *name, const char *const *names, int n, int *out) {
    if (v == NULL || v == Py_None) return 0;
    const char *s = PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
    for (int i = 0; s && i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    PyErr_Clear();
    PyObject *list = PyUnicode_FromString("");
    for (int i = 0; list && i < n; i++)
        Py_SETREF(list, PyUnicode_FromFormat("%U%s'%s'", list, i ? ", " : "", names[i]));
    if (!list) return -1;
    PyErr_Format(PyUnicode_Check(v) ? PyExc_ValueError : PyExc_TypeError,
                 "%s must be one of %U, got %R", name, list, v);
    Py_DECREF(list);
    return -1;
}

/* ---- arena capacity: None, an int or a size as text ---------------------------------- */

int tl_arg_capacity(PyObject *v, size_t *out) {
    if (v == NULL || v == Py_None) return 0;
    uint64_t c;
    if (PyUnicode_Check(v)) {
        if (tl_arg_size_text(v, "capacity", &c) < 0) return -1;
    } else {
        Py_ssize_t n;
        int clipped;
        if (PyBool_Check(v) || !PyIndex_Check(v)) {
            PyErr_Format(PyExc_TypeError,
                         "capacity must be an int (bytes) or a string such as '4MiB', got %R", v);
            return -1;
        }
        if (tl_arg_index(v, "capacity", &n, &clipped) < 0) return -1;
        c = clipped || n < 0 ? 0 : (uint64_t)n;
    }
    if (c < TL_ARENA_MIN_CAPACITY || c > TL_ARENA_MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError,
                     "capacity=%R is out of range: an arena holds between 4KiB (%zu bytes) and "
                     "1TiB (%zu bytes)",
                     v, (size_t)TL_ARENA_MIN_CAPACITY, (size_t)TL_ARENA_MAX_CAPACITY);
        return -1;
    }
    *out = (size_t)c;
    return 0;
}

/* ---- shape, dtype, order: NumPy's rules ----------------------------------------------- */

/* One dimension of `shape` (for the messages): an int >= 0 that fits. */
static int tl_arg_dim(PyObject *item, PyObject *shape, npy_intp *out) {
    Py_ssize_t v = PyNumber_AsSsize_t(item, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) {
        int too_big = PyErr_ExceptionMatches(PyExc_OverflowError);
        PyErr_Clear();
        if (too_big)
            PyErr_Format(PyExc_ValueError, "shape %R is too large", shape);
        else
            PyErr_Format(PyExc_TypeError, "shape must be an int or a sequence of ints, got %R", shape);
        return -1;
    }
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "negative dimensions are not allowed: shape=%R", shape);
        return -1;
    }
    *out = (npy_intp)v;
    return 0;
}

/* Shape, NumPy's rule: an integer (anything with __index__ but bool, such as
 * numpy.int64 or a 0-d integer array) or a sequence of them, each >= 0. */
int tl_arg_shape(PyObject *shape, npy_intp *dims, int *nd) {
    if (PyIndex_Check(shape) && !PyBool_Check(shape) &&
        !(PyArray_Check(shape) && PyArray_NDIM((PyArrayObject *)shape) != 0)) {
        if (tl_arg_dim(shape, shape, &dims[0]) < 0) return -1;
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
        if (tl_arg_dim(item, shape, &dims[i]) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    *nd = (int)n;
    Py_DECREF(seq);
    return 0;
}

/* Bytes for dims x itemsize, refusing anything beyond NPY_MAX_INTP. */
int tl_arg_shape_nbytes(const npy_intp *dims, int nd, size_t itemsize, PyObject *shape,
                        size_t *out) {
    size_t n = itemsize;
    for (int i = 0; i < nd; i++) {
        if (__builtin_mul_overflow(n, (size_t)dims[i], &n)) goto too_big;
    }
    /* A zero dimension makes the product 0 whatever the others are; NumPy still
     * requires each dimension alone to fit, which tl_arg_shape ensured. */
    if (n > (size_t)NPY_MAX_INTP) goto too_big;
    *out = n;
    return 0;
too_big:
    PyErr_Format(PyExc_ValueError,
                 "array is too big: shape %R with %zu-byte items needs more than %zd bytes",
                 shape, itemsize, (Py_ssize_t)NPY_MAX_INTP);
    return -1;
}

PyArray_Descr *tl_arg_dtype(PyObject *dtype) {
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
int tl_arg_order(PyObject *order, int *fortran, int keep) {
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

static PyMethodDef args_methods[] = {
    {"_parse_size", (PyCFunction)(void (*)(void))py_parse_size, METH_FASTCALL,
     "_parse_size(text, name) -> int: a size as text, by the C library's rules."},
    {"_parse_delay_ms", (PyCFunction)(void (*)(void))py_parse_delay_ms, METH_FASTCALL,
     "_parse_delay_ms(text, name) -> int: a delay as text, in milliseconds."},
    {"_parse_flag", (PyCFunction)(void (*)(void))py_parse_flag, METH_FASTCALL,
     "_parse_flag(text, name) -> bool: '0' or '1', surrounding spaces ignored."},
    {NULL, NULL, 0, NULL},
};

int tl_py_args_init(PyObject *m) { return PyModule_AddFunctions(m, args_methods); }
