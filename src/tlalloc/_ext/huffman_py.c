/* huffman_py.c: binding for the huffman part of the core (not written yet). */
#include "binding.h"

int tl_py_huffman_init(PyObject *m) {
    (void)m;
    return 0;
}
