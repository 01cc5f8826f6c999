/* pool_py.c: binding for the pool part of the core (not written yet). */
#include "binding.h"

int tl_py_pool_init(PyObject *m) {
    (void)m;
    return 0;
}
