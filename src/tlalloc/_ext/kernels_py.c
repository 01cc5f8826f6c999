/* kernels_py.c: binding for the kernels part of the core (not written yet). */
#include "binding.h"

int tl_py_kernels_init(PyObject *m) {
    (void)m;
    return 0;
}
