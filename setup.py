"""Build description for tlalloc's extension module: the C core plus its binding.

Environment toggles (read at build time):

- ``TLALLOC_SANITIZE=1``: build with ``-fsanitize=address,undefined`` (run the
  tests with ``LD_PRELOAD`` of libasan, see ``.ci/run``).
- ``TLALLOC_FUZZ=1``: add libFuzzer's coverage instrumentation
  (``-fsanitize=fuzzer-no-link``; needs ``CC=clang``), so that atheris targets
  are guided by the C code's edges (``fuzz/run.py``; with ``TLALLOC_SANITIZE=1``).
- ``TLALLOC_DEBUG=1``: ``-O0 -g`` and the core's debug assertions.
"""

import glob
import os

import numpy
from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0")


cflags = ["-std=c11", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-fvisibility=hidden"]
ldflags = ["-lm", "-pthread"]
if _flag("TLALLOC_DEBUG"):
    cflags += ["-O0", "-g", "-UNDEBUG", "-DTLALLOC_DEBUG=1"]
else:
    cflags += ["-O2"]
if _flag("TLALLOC_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    cflags += san + ["-g"]
    ldflags += san
if _flag("TLALLOC_FUZZ"):
    cflags += ["-fsanitize=fuzzer-no-link"]
    ldflags += ["-fsanitize=fuzzer-no-link"]

sources = sorted(glob.glob("csrc/*.c")) + sorted(glob.glob("src/tlalloc/_ext/*.c"))

setup(
    ext_modules=[
        Extension(
            "tlalloc._tlalloc",
            sources=sources,
            include_dirs=["include", "csrc", numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
