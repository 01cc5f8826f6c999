/* huffman_py.c: binding for the block-parallel Huffman coder (csrc/demo/huffman.c).
 *
 * huffman_encode(data, block_size, threads, allocator, heap_bytes, pool_bytes)
 *     -> (bytes, dict of statistics)
 * huffman_decode(data, threads, allocator, heap_bytes, pool_bytes) -> bytes
 *
 * Both release the GIL while the C core codes (the input buffer stays
 * exported, so it cannot be resized meanwhile, but another thread may write
 * it: the core reads what it validates once, so such a writer can only cause
 * a CorruptStreamError / ValueError or wrong bytes, never a bad access). Argument checking with
 * friendly messages lives in tlalloc/huffman.py; the C core checks again and
 * its messages surface here. A malformed stream raises
 * HuffmanCorruptStreamError (a ValueError, tlalloc.huffman.CorruptStreamError).
 */
#include "binding.h"

#include <stdlib.h>

static PyObject *tl_HuffmanCorruptStreamError;

/* Turn a failed status into a Python exception. */
static PyObject *huff_raise(const tl_huff_error *err) {
    PyObject *kind;
    switch (err->status) {
    case TL_HUFF_ECORRUPT: kind = tl_HuffmanCorruptStreamError; break;
    case TL_HUFF_ENOMEM: kind = PyExc_MemoryError; break;
    case TL_HUFF_ETHREAD: kind = PyExc_RuntimeError; break;
    default: kind = PyExc_ValueError; break;
    }
    PyErr_SetString(kind, err->message[0] ? err->message : "Huffman coding failed");
    return NULL;
}

/* Options shared by both calls; returns -1 with an exception set. */
static int huff_options(tl_huff_options *o, PyObject *threads_obj, const char *allocator,
                        Py_ssize_t heap_bytes, Py_ssize_t pool_bytes) {
    memset(o, 0, sizeof *o);
    Py_ssize_t threads = TL_HUFF_DEFAULT_THREADS;
    if (threads_obj &&
        tl_arg_count(threads_obj, "threads", 1, (Py_ssize_t)TL_HUFF_MAX_THREADS, &threads) < 0)
        return -1;
    if (tl_huff_allocator_parse(allocator, &o->allocator) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "allocator='%s' is not one of 'global-lock', 'pooled', 'tlalloc'",
                     allocator);
        return -1;
    }
    if (heap_bytes < 0 || pool_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "heap_bytes and pool_bytes must not be negative");
        return -1;
    }
    o->threads = (unsigned)threads;
    o->heap_bytes = (size_t)heap_bytes;
    o->pool_bytes = (size_t)pool_bytes;
    return 0;
}

#define STAT(name) {#name, offsetof(tl_huff_stats, name)}
static const struct {
    const char *name;
    size_t offset;
} huff_stat_fields[] = {
    STAT(input_bytes),      STAT(output_bytes),     STAT(num_blocks),
    STAT(num_batches),      STAT(num_threads),      STAT(lock_acquisitions),
    STAT(lock_contended),   STAT(num_allocations),  STAT(num_frees),
    STAT(heap_allocations), STAT(pool_allocations), STAT(arena_resets),
    STAT(heap_bytes),       STAT(heap_peak_bytes),  STAT(elapsed_ns),
};
#undef STAT

static PyObject *huff_stats_dict(const tl_huff_stats *s) {
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    for (size_t i = 0; i < sizeof huff_stat_fields / sizeof huff_stat_fields[0]; i++) {
        uint64_t v;
        memcpy(&v, (const char *)s + huff_stat_fields[i].offset, sizeof v);
        PyObject *x = PyLong_FromUnsignedLongLong(v);
        if (x == NULL || tl_dict_set(d, huff_stat_fields[i].name, x) < 0) {
            Py_XDECREF(x);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(x);
    }
    return d;
}

static PyObject *py_huffman_encode(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data",      "block_size", "threads", "allocator",
                             "heap_bytes", "pool_bytes", NULL};
    Py_buffer view;
    Py_ssize_t block_size = (Py_ssize_t)TL_HUFF_DEFAULT_BLOCK_SIZE;
    Py_ssize_t heap_bytes = 0, pool_bytes = 0;
    PyObject *threads = NULL, *block_size_obj = NULL;
    const char *allocator = "tlalloc";
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|OOsnn:huffman_encode", kwlist, &view,
                                     &block_size_obj, &threads, &allocator, &heap_bytes,
                                     &pool_bytes))
        return NULL;
    tl_huff_options o;
    if (huff_options(&o, threads, allocator, heap_bytes, pool_bytes) < 0) goto fail;
    if (block_size_obj && tl_arg_count(block_size_obj, "block_size", 1,
                                       (Py_ssize_t)TL_HUFF_MAX_BLOCK_SIZE, &block_size) < 0)
        goto fail;
    o.block_size = (size_t)block_size;

    uint8_t *out = NULL;
    size_t out_len = 0;
    tl_huff_stats stats;
    tl_huff_error err;
    tl_huff_status st;
    Py_BEGIN_ALLOW_THREADS
    st = tl_huff_encode(view.buf, (size_t)view.len, &o, &out, &out_len, &stats, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (st != TL_HUFF_OK) return huff_raise(&err);

    PyObject *bytes = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)out_len);
    free(out);
    if (bytes == NULL) return NULL;
    PyObject *d = huff_stats_dict(&stats);
    if (d == NULL) {
        Py_DECREF(bytes);
        return NULL;
    }
    PyObject *res = PyTuple_Pack(2, bytes, d);
    Py_DECREF(bytes);
    Py_DECREF(d);
    return res;
fail:
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *py_huffman_decode(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data", "threads", "allocator", "heap_bytes", "pool_bytes", NULL};
    Py_buffer view;
    Py_ssize_t heap_bytes = 0, pool_bytes = 0;
    PyObject *threads = NULL;
    const char *allocator = "tlalloc";
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|Osnn:huffman_decode", kwlist, &view,
                                     &threads, &allocator, &heap_bytes, &pool_bytes))
        return NULL;
    tl_huff_options o;
    PyObject *res = NULL;
    if (huff_options(&o, threads, allocator, heap_bytes, pool_bytes) < 0) goto done;

    uint64_t size = 0;
    tl_huff_error err;
    tl_huff_status st;
    Py_BEGIN_ALLOW_THREADS
    st = tl_huff_decoded_size(view.buf, (size_t)view.len, &size, &err);
    Py_END_ALLOW_THREADS
    if (st != TL_HUFF_OK) {
        huff_raise(&err);
        goto done;
    }
    if (size > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_MemoryError, "the decoded stream is too large for this machine");
        goto done;
    }
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (res == NULL) goto done;
    size_t len = 0;
    Py_BEGIN_ALLOW_THREADS
    st = tl_huff_decode(view.buf, (size_t)view.len, (uint8_t *)PyBytes_AS_STRING(res),
                        (size_t)size, &len, &o, NULL, &err);
    Py_END_ALLOW_THREADS
    if (st == TL_HUFF_EINVAL) {
        /* The options passed both checks above, so the only EINVAL left is a
         * decoded size that no longer fits `res`: the input changed between
         * the two calls (another thread writes it). */
        Py_CLEAR(res);
        PyErr_SetString(tl_HuffmanCorruptStreamError,
                        "corrupt stream: the input changed while it was being decoded");
    } else if (st != TL_HUFF_OK) {
        Py_CLEAR(res);
        huff_raise(&err);
    }
done:
    PyBuffer_Release(&view);
    return res;
}

static PyMethodDef huffman_methods[] = {
    {"huffman_encode", (PyCFunction)(void (*)(void))py_huffman_encode,
     METH_VARARGS | METH_KEYWORDS,
     "huffman_encode(data, block_size=1024, threads=20, allocator='tlalloc', heap_bytes=0, "
     "pool_bytes=0) -> (bytes, dict)\n--\n\nBlock-parallel Huffman encoding (GIL released); "
     "use tlalloc.huffman.encode."},
    {"huffman_decode", (PyCFunction)(void (*)(void))py_huffman_decode,
     METH_VARARGS | METH_KEYWORDS,
     "huffman_decode(data, threads=20, allocator='tlalloc', heap_bytes=0, pool_bytes=0) "
     "-> bytes\n--\n\nDecode a stream from huffman_encode (GIL released); use "
     "tlalloc.huffman.decode."},
    {NULL, NULL, 0, NULL},
};

int tl_py_huffman_init(PyObject *m) {
    if (PyModule_AddFunctions(m, huffman_methods) < 0) return -1;
    if (tl_HuffmanCorruptStreamError == NULL) {
        tl_HuffmanCorruptStreamError = PyErr_NewExceptionWithDoc(
            "tlalloc.huffman.CorruptStreamError",
            "An encoded Huffman stream is malformed, truncated or fails its checksums.",
            PyExc_ValueError, NULL);
        if (tl_HuffmanCorruptStreamError == NULL) return -1;
    }
    Py_INCREF(tl_HuffmanCorruptStreamError);
    if (PyModule_AddObject(m, "HuffmanCorruptStreamError", tl_HuffmanCorruptStreamError) < 0) {
        Py_DECREF(tl_HuffmanCorruptStreamError);
        return -1;
    }
    return 0;
}
