"""Build description for tlalloc's extension module: the C core plus its binding.

Environment toggles (read at build time):

- ``TLALLOC_SANITIZE=1``: build with ``-fsanitize=address,undefined`` (run the
  tests with ``LD_PRELOAD`` of libasan, see ``.ci/run``).
- ``TLALLOC_FUZZ=1``: add libFuzzer's coverage instrumentation
  (``-fsanitize=fuzzer-no-link``; needs ``CC=clang``), so that atheris targets
  are guided by the C code's edges (``fuzz/run.py``; with ``TLALLOC_SANITIZE=1``).
- ``TLALLOC_DEBUG=1``: ``-O0 -g`` and the core's debug assertions.

Besides the extension, the package ships ``tlalloc/_lib/libtlalloc.so``: the pool as
the process's ``malloc`` for ``LD_PRELOAD`` (``tlalloc preload-path`` prints
where it is). It is a plain shared library of the C core (no Python), built
the way ``make preload`` builds it, and never with the sanitizers (a preloaded
malloc cannot run under them), and ``tlalloc/_lib/liblivecount.so``, which
counts a program's peak live bytes under any allocator (``tlalloc bench
mimalloc-bench --live``).
"""

import glob
import os

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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

# The C core: one folder per part of csrc/ (arena, pool, kernels, demo,
# platform). csrc/pool/preload.c defines malloc itself: libtlalloc.so only.
PRELOAD_C = "csrc/pool/preload.c"


def _c_files(*folders: str) -> list[str]:
    return sorted(f for d in folders for f in glob.glob(f"csrc/{d}/*.c") if f != PRELOAD_C)


# The extension: every folder of the core, plus the allocation benchmark's loop
# (bench/c/lib/bench_alloc.c, `tlalloc bench alloc`; shared with bench/c/alloc.c).
sources = _c_files("*") + ["bench/c/lib/bench_alloc.c"] + sorted(glob.glob("src/tlalloc/_ext/*.c"))

# libtlalloc.so: the pool and what it calls, the platform layer (-z defs: a
# missing file fails the build, not the program that preloads the library).
# In a folder that is not a package: as tlalloc/libtlalloc.so, importlib would
# take it for an extension module (pkgutil.walk_packages lists it, and the
# doctest walker tries to import it).
PRELOAD_NAME = "tlalloc._lib.libtlalloc"  # built by BuildExt as tlalloc/_lib/libtlalloc.so
preload_sources = [PRELOAD_C] + _c_files("pool", "platform")
# -fexceptions: operator new's failure path (preload.c) may throw through C frames.
preload_cflags = ["-std=c11", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-pthread", "-fexceptions"]
preload_cflags += ["-O0", "-g", "-DTLALLOC_DEBUG=1"] if _flag("TLALLOC_DEBUG") else ["-O2"]


# liblivecount.so: a program's peak live bytes under any allocator (LD_PRELOAD
# before it; `tlalloc bench mimalloc-bench --live`). Standalone: no part of the pool.
LIVECOUNT_NAME = "tlalloc._lib.liblivecount"

# Plain shared libraries (no Python ABI tag, no Python): dotted name -> file name.
PLAIN_LIBS = {PRELOAD_NAME: "libtlalloc.so", LIVECOUNT_NAME: "liblivecount.so"}


class BuildExt(build_ext):
    """build_ext that also builds the plain shared libraries of PLAIN_LIBS
    (libtlalloc.so, liblivecount.so), in the package of the wheel, or of the
    source tree for editable and --inplace builds. Their objects go to folders
    of their own: the same core files are compiled for the extension with
    other flags."""

    def get_ext_filename(self, fullname: str) -> str:
        # Called with the dotted name, and (by get_ext_fullpath) with its last part.
        if fullname in PLAIN_LIBS:
            return os.path.join(*fullname.split(".")[:-1], PLAIN_LIBS[fullname])
        for name, file in PLAIN_LIBS.items():
            if fullname == name.rpartition(".")[2]:
                return file
        return super().get_ext_filename(fullname)

    def copy_extensions_to_source(self) -> None:  # editable installs, --inplace
        build_py = self.get_finalized_command("build_py")
        for name in PLAIN_LIBS:
            os.makedirs(build_py.get_package_dir(name.rpartition(".")[0]), exist_ok=True)
        super().copy_extensions_to_source()

    def build_extension(self, ext: Extension) -> None:
        if ext.name not in PLAIN_LIBS:
            super().build_extension(ext)
            return
        objects = self.compiler.compile(
            ext.sources,
            output_dir=os.path.join(self.build_temp, ext.name.rpartition(".")[2]),
            include_dirs=ext.include_dirs,
            extra_postargs=ext.extra_compile_args,
            depends=ext.depends,
        )
        self.compiler.link_shared_object(
            objects, self.get_ext_fullpath(ext.name), extra_postargs=ext.extra_link_args
        )


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "tlalloc._tlalloc",
            sources=sources,
            include_dirs=["include", "csrc", "bench/c/lib", numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        ),
        Extension(
            PRELOAD_NAME,
            sources=preload_sources,
            include_dirs=["include", "csrc"],
            depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/*/*.h") + glob.glob("include/tlalloc/*.h"))
            + ["csrc/pool/libtlalloc.map"],
            extra_compile_args=preload_cflags,
            extra_link_args=[
                "-pthread",
                "-Wl,--version-script=csrc/pool/libtlalloc.map",
                "-Wl,-z,defs",
                "-Wl,-Bsymbolic-functions",  # malloc -> tl_pool_malloc without the PLT (Makefile)
            ],
        ),
        Extension(
            LIVECOUNT_NAME,
            sources=["bench/c/lib/livecount.c"],
            extra_compile_args=preload_cflags,  # its operator new may throw through it too
            extra_link_args=["-pthread", "-Wl,-z,defs", "-ldl"],
        ),
    ],
)
