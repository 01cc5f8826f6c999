/* module.c: tlalloc._tlalloc, the extension module (multi-phase init).
 *
 * The module keeps no state of its own besides the C core's, so it declares
 * that it does not need the GIL on free-threaded CPython: every shared structure
 * in the core is protected by its own lock or by atomics.
 */
#define TL_BINDING_MAIN
#include "binding.h"

static int tl_module_exec(PyObject *m) {
    /* Thread arenas, the pool and their objects are process-wide and hold
     * objects of one interpreter: refuse every other one, on every Python
     * (the slot below does it for isolated interpreters on 3.12+ only; this
     * check also covers 3.10/3.11 and legacy subinterpreters). */
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_ImportError,
                        "tlalloc._tlalloc does not support subinterpreters: import tlalloc "
                        "in the main interpreter only");
        return -1;
    }
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    if (tl_py_args_init(m) < 0) return -1;
    if (tl_py_arena_init(m) < 0) return -1;
    if (tl_py_kernels_init(m) < 0) return -1;
    if (tl_py_pool_init(m) < 0) return -1;
    if (tl_py_huffman_init(m) < 0) return -1;
    return 0;
}

static PyModuleDef_Slot tl_module_slots[] = {
    {Py_mod_exec, (void *)tl_module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef tl_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tlalloc._tlalloc",
    .m_doc = "C core of tlalloc: arenas, thread arenas, pool, kernels (binding).",
    .m_size = 0,
    .m_slots = tl_module_slots,
};

PyMODINIT_FUNC PyInit__tlalloc(void) { return PyModuleDef_Init(&tl_module_def); }
