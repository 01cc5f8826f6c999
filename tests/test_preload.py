"""libtlalloc.so, the pool as a whole process's malloc.

Real programs run under ``LD_PRELOAD`` of the library and without it, and must
give the same results: Python scripts with threads (also ones Python did not
create) and fork, a C stress program, a few of NumPy's own test files, part of
this project's test suite, ``git`` and ``gcc``. Each run under the library also
checks that the pool really was the malloc (the library exports the pool's
statistics). The settings it reads from the environment follow Python's rules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tlalloc
from tlalloc.pool import preload_path, settings_from_environ

REPO = Path(__file__).resolve().parent.parent
# The ASan step of CI preloads libasan for the sanitized extension; a child
# that preloads the pool instead cannot import that extension.
SANITIZED_RUN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _env(preload: bool, keep_sanitizer: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a run with the library, or without any preload (also
    when this suite itself runs under one, as in CI); ``keep_sanitizer`` keeps
    the ASan step's libasan for a child that imports the sanitized extension."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLALLOC_")}
    outer = env.pop("LD_PRELOAD", "")
    if preload:
        env["LD_PRELOAD"] = preload_path()
    elif keep_sanitizer and SANITIZED_RUN:
        env["LD_PRELOAD"] = outer
    env.update(extra)
    return env


def _run(cmd: list[str], preload: bool, timeout: float = 300, cwd: str | Path | None = None,
         **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(preload, **extra), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# Run inside a preloaded Python: the pool's counters, read through the
# functions the library exports (the same struct as tl_pool_stats).
POOL_STATS = """
import ctypes, os, sys
def pool_allocations():
    lib = ctypes.CDLL(os.environ["LD_PRELOAD"])
    buf = (ctypes.c_uint64 * 128)()  # tl_pool_stats, with room for fields added later
    lib.tl_pool_get_stats(buf)
    return buf[4]  # num_allocations
"""


def test_preload_path_and_cli() -> None:
    path = preload_path()
    assert os.path.basename(path) == "libtlalloc.so" and os.path.isfile(path)
    assert tlalloc.preload_path() == path
    out = subprocess.run([sys.executable, "-m", "tlalloc", "preload-path"], capture_output=True,
                         text=True, env=_env(False, keep_sanitizer=True), timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == path
    bad = subprocess.run([sys.executable, "-m", "tlalloc", "preload-path", "extra"],
                         capture_output=True, text=True, env=_env(False, keep_sanitizer=True),
                         timeout=120)
    assert bad.returncode == 2 and "takes no arguments" in bad.stderr


def test_exports_only_the_malloc_api_and_the_pool_api() -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", preload_path()], capture_output=True,
                         text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    malloc_api = {"malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
                  "aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size",
                  "malloc_trim", "mallinfo", "mallinfo2"}
    assert malloc_api <= names
    # C++'s replaceable operator new and delete (Itanium ABI names), as
    # mimalloc, jemalloc and tcmalloc export them.
    cxx_api = {f"{op}{args}" for op in ("_Znwm", "_Znam") for args in
               ("", "RKSt9nothrow_t", "St11align_val_t", "St11align_val_tRKSt9nothrow_t")}
    cxx_api |= {f"{op}{args}" for op in ("_ZdlPv", "_ZdaPv") for args in
                ("", "m", "RKSt9nothrow_t", "St11align_val_t", "mSt11align_val_t",
                 "St11align_val_tRKSt9nothrow_t")}
    assert len(cxx_api) == 20 and cxx_api <= names
    assert {n for n in names - malloc_api - cxx_api if not n.startswith("tl_pool_")} == set()
    assert "tl_pool_first_use" not in names and "tl_pool_fork_lock" not in names


THREADS_AND_FORK = POOL_STATS + r"""
import threading
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.restype = ctypes.c_size_t
libc.malloc_usable_size.argtypes = [ctypes.c_void_p]

results = []
blocks = []
lock = threading.Lock()

def work(tag):
    # Python objects beyond pymalloc's 512 bytes come from malloc.
    data = [bytes([i % 251]) * (1000 + 37 * i) for i in range(300)]
    ok = all(len(d) == 1000 + 37 * i and d[:1] == bytes([i % 251]) for i, d in enumerate(data))
    p = libc.malloc(100000)
    ok = ok and libc.malloc_usable_size(p) >= 100000
    ctypes.memset(p, 7, 100000)
    with lock:
        blocks.append(p)  # freed by another thread
        results.append((tag, ok))

ts = [threading.Thread(target=work, args=("threading",)) for _ in range(8)]
for t in ts: t.start()
for t in ts: t.join()

# A thread Python did not create: pthread_create from ctypes.
CB = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
@CB
def native(arg):
    work("pthread")
    return None
tid = ctypes.c_ulong()
for _ in range(4):
    assert libc.pthread_create(ctypes.byref(tid), None, native, None) == 0
    assert libc.pthread_join(tid, None) == 0

for p in blocks: libc.free(p)

# fork with threads running.
stop = threading.Event()
def spin():
    while not stop.is_set():
        x = [bytearray(5000) for _ in range(50)]
        del x
bg = [threading.Thread(target=spin) for _ in range(2)]
for t in bg: t.start()
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work("child")
            t = threading.Thread(target=work, args=("child-thread",)); t.start(); t.join()
            code = 0 if all(ok for _, ok in results) else 1
        finally:
            os._exit(code)
    children.append(pid)
statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
stop.set()
for t in bg: t.join()
print(sorted(set(results)), "children", statuses)
if os.environ.get("LD_PRELOAD", "").endswith("libtlalloc.so"):
    print("pool allocations", pool_allocations(), file=sys.stderr)
"""


def test_python_threads_native_threads_and_fork_under_preload() -> None:
    plain = _run([sys.executable, "-c", THREADS_AND_FORK], preload=False)
    pooled = _run([sys.executable, "-c", THREADS_AND_FORK], preload=True)
    assert plain.returncode == 0, plain.stderr
    assert pooled.returncode == 0, pooled.stderr
    assert pooled.stdout == plain.stdout
    assert "[('pthread', True), ('threading', True)] children [0, 0, 0, 0]" in pooled.stdout
    m = re.search(r"pool allocations (\d+)", pooled.stderr)
    assert m and int(m.group(1)) > 1000, pooled.stderr  # the pool was the malloc


def test_c_stress_threads_exit_and_fork(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "preload_stress"
    subprocess.run([cc, "-std=c11", "-O2", "-pthread", str(REPO / "tests/c/preload_stress.c"),
                    "-o", str(exe)], check=True, timeout=300, env=_env(False))
    plain = _run([str(exe)], preload=False)
    pooled = _run([str(exe)], preload=True)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert pooled.returncode == 0, pooled.stdout + pooled.stderr
    assert "pool malloc: yes" in pooled.stderr and "pool malloc: no" in plain.stderr
    assert pooled.stdout == plain.stdout
    for line in ("480 key destructors, 0 bad", "12000 blocks passed between threads, 0 bad",
                 "8 of 8 children ran cleanly"):
        assert line in pooled.stdout


def test_cxx_new_and_delete(tmp_path: Path) -> None:
    """C++'s operator new and delete come from the library (they are the pool's
    malloc and free), with C++'s semantics: aligned new honours the alignment,
    new(0) is unique, a huge nothrow new returns nullptr, a huge new runs the
    new_handler and throws std::bad_alloc (tests/c/preload_cxx.cpp)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "preload_cxx"
    subprocess.run([cxx, "-std=c++17", "-O2", "-pthread", f"-I{REPO / 'include'}",
                    str(REPO / "tests/c/preload_cxx.cpp"), "-o", str(exe), "-ldl"],
                   check=True, timeout=300, env=_env(False))
    plain = _run([str(exe)], preload=False)
    pooled = _run([str(exe)], preload=True)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert pooled.returncode == 0, pooled.stdout + pooled.stderr
    assert "operator new from: libtlalloc.so" in pooled.stderr, pooled.stderr
    assert "operator new from: libtlalloc.so" not in plain.stderr
    assert "pool counted new: yes" in pooled.stderr and "agrees: 1001 of 1001" in pooled.stderr
    assert pooled.stdout == plain.stdout
    for line in ("objects and arrays: 2600 of 2600 intact", "new(0): non-null 1, distinct 1",
                 "alignas(64), alignas(4096): 100 of 100 aligned",
                 "align_val_t 1 MiB, 4 KiB, 64: 8 of 8 aligned",
                 "nothrow huge new: nullptr 1, new[] nullptr 1, aligned nullptr 1",
                 "huge new: bad_alloc 1, new_handler called 1 time(s)",
                 "huge aligned new: bad_alloc 1, new_handler called 1 time(s)",
                 "huge nothrow new with a new_handler: nullptr 1, new_handler called 1 time(s)"):
        assert line in pooled.stdout
    if _overcommit_mode() != 1:  # 64 TiB is refused, as glibc's malloc refuses it
        assert "new of 64 TiB: bad_alloc 1" in pooled.stdout


LATE_KEY = POOL_STATS + r"""
import threading
libc = ctypes.CDLL(None)
lib = ctypes.CDLL(os.environ["LD_PRELOAD"])
keys = (ctypes.c_uint * 40)()
for i in range(40):  # glibc keeps keys >= 32 in blocks it callocs on first use per thread
    assert libc.pthread_key_create(ctypes.byref(keys, 4 * i), None) == 0
opts = (ctypes.c_char * 256)()  # tl_pool_options, with room for fields added later
lib.tl_pool_get_options(opts)
assert opts[0] == b"\0"  # cache off (TLALLOC_POOL_CACHE=0): no thread cache, no key yet
opts[0] = b"\1"
assert lib.tl_pool_configure(opts) == 0
def work():
    x = [bytearray(3000) for _ in range(100)]
    del x
ts = [threading.Thread(target=work) for _ in range(3)]
for t in ts: t.start()
for t in ts: t.join()
stats = (ctypes.c_uint64 * 128)()
lib.tl_pool_get_stats(stats)
print("caches created", stats[14] > 0)  # num_threads
"""


def test_thread_cache_with_a_late_pthread_key() -> None:
    # The pool's key is created at the first thread cache. Made after 40 others,
    # it is one whose value glibc keeps in a block that pthread_setspecific
    # callocs: that calloc comes back into the pool before the thread's cache
    # is set up, and must be served (by the locked heap) instead of recursing.
    out = _run([sys.executable, "-c", LATE_KEY], preload=True, timeout=120, TLALLOC_POOL_CACHE="0")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "caches created True"


# ---- settings ------------------------------------------------------------------

SHOW_OPTIONS = POOL_STATS + """
class Options(ctypes.Structure):  # tl_pool_options
    _fields_ = [("cache", ctypes.c_int), ("retain_bytes", ctypes.c_size_t),
                ("large_cache_bytes", ctypes.c_size_t), ("purge_delay_ms", ctypes.c_uint),
                ("room", ctypes.c_char * 256)]  # for fields added later
o = Options()
ctypes.CDLL(os.environ["LD_PRELOAD"]).tl_pool_get_options(ctypes.byref(o))
print(o.cache, o.retain_bytes, o.large_cache_bytes, o.purge_delay_ms)
"""

ENV_NAMES = {"retain": "TLALLOC_POOL_RETAIN", "cache": "TLALLOC_POOL_CACHE",
             "large": "TLALLOC_POOL_LARGE_CACHE", "delay": "TLALLOC_POOL_PURGE_DELAY"}


@pytest.mark.parametrize(
    "setting",
    [{}, {"retain": "", "cache": ""}, {"retain": "1MiB", "cache": "0"},
     {"retain": " 64 mib ", "cache": " 1 "}, {"retain": "1.5KB"}, {"retain": "0"}, {"retain": "1TiB"},
     {"retain": "2TiB"}, {"retain": "12XB"}, {"retain": "1.5"}, {"retain": "-1"}, {"retain": "1e3"},
     {"retain": "0.5KiB"}, {"cache": "yes"}, {"cache": "2"}, {"cache": "01"},
     {"large": "256MiB", "delay": "1.5s"}, {"large": "0", "delay": "0"}, {"large": "2TiB"},
     {"large": "lots"}, {"delay": "250ms"}, {"delay": " 40 "}, {"delay": "0.5ms"}, {"delay": "2h"},
     {"delay": "250MS"}, {"delay": "3601s"}],
)
def test_settings_follow_the_python_rules(setting: dict[str, str]) -> None:
    env = {ENV_NAMES[k]: v for k, v in setting.items()}
    try:
        expected = settings_from_environ(env)
        error = None
    except ValueError as exc:
        expected, error = None, str(exc)
    out = _run([sys.executable, "-c", SHOW_OPTIONS], preload=True, timeout=120, **env)
    if expected is not None:
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(int(expected.cache)), str(expected.retain_bytes),
                                      str(expected.large_cache_bytes), str(expected.purge_delay_ms)]
    else:
        # Refused before the program runs, with the variable, the value and what
        # is accepted, as Python's ValueError says it.
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.startswith("libtlalloc.so: ")
        name = next(n for n in ENV_NAMES.values() if n in error)
        assert name in out.stderr and repr(env[name]) in out.stderr
        for reason in ("out of range", "cannot read", "not a whole number of", "use 0 or 1"):
            assert (reason in out.stderr) == (reason in error), (out.stderr, error)
        assert error.split(" ")[-1] in out.stderr  # the end of what is accepted


def test_bad_setting_stops_any_program() -> None:
    out = _run(["/bin/sh", "-c", "echo ran"], preload=True, timeout=60, TLALLOC_POOL_RETAIN="lots")
    assert out.returncode == 2 and out.stdout == ""
    assert "TLALLOC_POOL_RETAIN: cannot read 'lots' as a size" in out.stderr


# ---- real programs ----------------------------------------------------------------

def _summary(out: str) -> str:
    """pytest's last line without the time: '286 passed, 1 skipped'."""
    last = out.strip().splitlines()[-1]
    return re.sub(r"\s+in [\d.]+s.*$", "", last).strip("= ")


NUMPY_TEST_FILES = ["numpy._core.tests.test_item_selection", "numpy._core.tests.test_records",
                    "numpy._core.tests.test_half"]


def test_numpy_test_files_same_results(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "--pyargs", *NUMPY_TEST_FILES]
    plain = _run(cmd, preload=False, timeout=800, cwd=tmp_path)
    pooled = _run(cmd + ["-W", "ignore"], preload=True, timeout=800, cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert pooled.returncode == 0, pooled.stdout[-3000:]
    # warnings may differ (-W ignore above); the counts of outcomes may not.
    strip_warnings = re.compile(r",?\s*\d+ warnings?")
    assert strip_warnings.sub("", _summary(pooled.stdout)) == strip_warnings.sub("", _summary(plain.stdout))
    assert "passed" in _summary(pooled.stdout)


@pytest.mark.skipif(SANITIZED_RUN, reason="the sanitized extension needs libasan preloaded first")
def test_own_tests_under_preload() -> None:
    """A part of this suite (the whole suite runs under the library in CI)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "tests/test_pool.py", "tests/test_threads.py", "tests/test_fork.py"]
    out = _run(cmd, preload=True, timeout=800, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\d+ passed", out.stdout) and "failed" not in _summary(out.stdout)


GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.org",
           "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
           "GIT_CONFIG_NOSYSTEM": "1"}


def _git_session(root: Path, preload: bool) -> str:
    root.mkdir()
    env = dict(GIT_ENV, HOME=str(root))
    repo = root / "repo"

    def git(*args: str) -> str:
        out = _run(["git", *args], preload=preload, cwd=repo if repo.exists() else root, **env)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    log = [git("init", "-q", "-b", "main", "repo")]
    for i in range(40):
        (repo / f"f{i}.txt").write_text("".join(f"line {j} of {i}\n" for j in range(50 * i + 1)))
    log += [git("add", "."), git("commit", "-q", "-m", "first")]
    for i in range(0, 40, 3):
        (repo / f"f{i}.txt").write_text(f"changed {i}\n" * (i + 1))
    log += [git("commit", "-q", "-am", "second"), git("log", "--stat"), git("diff", "HEAD~1", "--stat"),
            git("gc", "-q"), git("fsck", "--full", "--strict"), git("rev-parse", "HEAD"),
            git("ls-tree", "-r", "HEAD")]
    return "".join(log)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_same_results(tmp_path: Path) -> None:
    plain = _git_session(tmp_path / "plain", preload=False)
    pooled = _git_session(tmp_path / "pooled", preload=True)
    assert pooled == plain and "40 files changed" in pooled


HELLO = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    double s = 0;
    char *buf = NULL;
    size_t n = 0;
    for (int i = 1; i <= 1000; i++) {
        s += sqrt((double)i);
        buf = realloc(buf, n + 16);
        n += (size_t)snprintf(buf + n, 16, "%d,", i % 10);
    }
    printf("hello %.6f %zu %.20s\n", s, strlen(buf), buf);
    free(buf);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_gcc_same_results(tmp_path: Path) -> None:
    src = tmp_path / "hello.c"
    src.write_text(HELLO)
    outs = []
    for preload in (False, True):
        exe = tmp_path / f"hello-{int(preload)}"
        cc = _run(["gcc", "-O2", "-Wall", "-o", str(exe), str(src), "-lm"], preload=preload, cwd=tmp_path)
        assert cc.returncode == 0 and cc.stderr == "", cc.stderr
        ran = _run([str(exe)], preload=preload)
        assert ran.returncode == 0
        outs.append((exe.read_bytes(), ran.stdout))
    assert outs[1][1] == outs[0][1] and outs[0][1].startswith("hello 21097.4")
    assert outs[1][0] == outs[0][0]  # gcc wrote the same executable


def _address_space_limit(kib: int):
    """A preexec_fn that sets RLIMIT_AS as ``ulimit -v KIB`` does."""
    def limit() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (kib * 1024, resource.RLIM_INFINITY))
    return limit


def _overcommit_mode() -> int:
    try:
        return int(Path("/proc/sys/vm/overcommit_memory").read_text())
    except (OSError, ValueError):
        return -1


@pytest.mark.skipif(SANITIZED_RUN, reason="libasan needs far more address space than the limit")
def test_memory_freed_is_found_again_under_an_address_space_limit(tmp_path: Path) -> None:
    """``ulimit -v 1000000``: 500,000 blocks of 1,000 B freed, a second with no
    call, then 700 blocks of 1 MiB and a thread: all served, as by the C
    library (the pool gives its free segments back when the OS refuses a
    mapping, then tries again; tests/c/preload_oom.c)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "preload_oom"
    subprocess.run([cc, "-std=c11", "-O2", "-pthread", str(REPO / "tests/c/preload_oom.c"),
                    "-o", str(exe)], check=True, timeout=300, env=_env(False))
    outs = []
    for preload in (False, True):
        ran = subprocess.run([str(exe), "limit"], env=_env(preload), capture_output=True, text=True,
                             timeout=300, preexec_fn=_address_space_limit(1_000_000))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        outs.append(ran.stdout)
    assert outs[1] == outs[0]
    for line in ("blocks of 1 MiB: 700 of 700\n", "pthread_create: ok\n",
                 "blocks of 1000 B afterwards: 1000 of 1000\n"):
        assert line in outs[1]
    # 64 TiB: NULL with ENOMEM where the kernel refuses it (not under "always").
    huge = [_run([str(exe), "huge"], preload=p).stdout for p in (False, True)]
    if _overcommit_mode() != 1:
        assert huge[0] == huge[1] == "malloc of 64 TiB: NULL, ENOMEM\ncalloc of 64 TiB: NULL, ENOMEM\n"


PYTHON_UNDER_LIMIT = r"""
import gc
def fill(make, most):
    out = []
    try:
        while len(out) < most:
            out.append(make())
    except MemoryError:
        pass
    n = len(out)
    out.clear()
    gc.collect()
    return n
small = fill(lambda: b"x" * 1000 + bytes(1), 10**8)  # 1 KB objects: malloc, not pymalloc
mib = fill(lambda: bytearray(1 << 20), 10**6)
big = fill(lambda: bytearray(50 << 20), 10**4)
again = fill(lambda: b"y" * 1000 + bytes(1), 100000)
print(small, mib, big, again)
"""


@pytest.mark.skipif(SANITIZED_RUN, reason="libasan needs far more address space than the limit")
def test_python_fills_memory_frees_it_and_fills_it_again_under_a_limit() -> None:
    """``ulimit -v 2000000``: Python objects of 1 KB fill the limit and are
    freed; then arrays of 1 MB, of 50 MB and small objects again fit about as
    many times as under the C library's malloc (the pool kept them all
    before: 0 arrays of 1 MB, 0 of 50 MB)."""
    counts = []
    for preload in (False, True):
        ran = subprocess.run([sys.executable, "-c", PYTHON_UNDER_LIMIT], env=_env(preload),
                             capture_output=True, text=True, timeout=300,
                             preexec_fn=_address_space_limit(2_000_000))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        counts.append([int(x) for x in ran.stdout.split()])
    (small0, mib0, big0, again0), (small1, mib1, big1, again1) = counts
    assert small0 > 100_000 and small1 > 100_000  # the limit was reached, not the cap
    assert mib1 >= 0.9 * mib0 and big1 >= big0 - 1, counts
    assert again0 == again1 == 100_000


IDLE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static long rss_kib(void) {
    long size = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &size, &rss) != 2) return -1;
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}
static void *volatile sink; /* so that the compiler keeps each malloc and free */
int main(void) {
    enum { N = 3000 };
    static void *p[N];
    for (int i = 0; i < N; i++) { p[i] = malloc(4000); memset(p[i], 1, 4000); }
    char *big = malloc(64 << 20);
    memset(big, 1, 64 << 20);
    sink = big;
    for (int i = 0; i < N; i++) free(p[i]);
    free(sink);
    long before = rss_kib(), low = before;
    for (int t = 0; t < 500 && before - low < 60 * 1024; t++) {  /* up to 10 s, no malloc */
        usleep(20000);
        long r = rss_kib();
        if (r < low) low = r;
    }
    printf("%s\n", before - low >= 60 * 1024 ? "fell" : "stayed");
    return 0;
}
"""


@pytest.mark.parametrize(("value", "expected"), [(None, "fell"), ("1", "fell"), ("0", "stayed")])
def test_purge_thread_from_the_environment(tmp_path: Path, value: str | None,
                                           expected: str) -> None:
    """A program that frees 76 MB and then only sleeps sees its RSS fall: by
    default (the thread starts itself at the first allocation slow path once
    something waits for the purge delay: here the stdio buffer of the first
    RSS reading) and with ``TLALLOC_POOL_PURGE_THREAD=1`` (the library's
    constructor started it); with 0 the memory waits for a later call (64 MiB
    stays cached)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "idle.c"
    src.write_text(IDLE_C)
    exe = tmp_path / "idle"
    subprocess.run([cc, "-O2", str(src), "-o", str(exe)], check=True, timeout=300, env=_env(False))
    setting = {} if value is None else {"TLALLOC_POOL_PURGE_THREAD": value}
    ran = _run([str(exe)], preload=True, TLALLOC_POOL_PURGE_DELAY="100", **setting)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == expected
    bad = _run([str(exe)], preload=True, TLALLOC_POOL_PURGE_THREAD="on")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "TLALLOC_POOL_PURGE_THREAD='on' is not accepted; use 0 or 1" in bad.stderr


MALLINFO = POOL_STATS + r"""
import ctypes
libc = ctypes.CDLL(None)
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc_trim.argtypes = [ctypes.c_size_t]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
before = libc.mallinfo2()
small = [libc.malloc(3000) for _ in range(10000)]
big = libc.malloc(32 << 20)
ctypes.memset(big, 1, 32 << 20)
for p in small:
    ctypes.memset(p, 1, 3000)
during = libc.mallinfo2()
print("in use grew", during.uordblks - before.uordblks >= 30_000_000 + (32 << 20))
print("large mapped", during.hblkhd >= 32 << 20, "class bytes", during.arena >= 30_000_000)
for p in small:
    libc.free(p)
libc.free(big)
r0 = rss()
libc.malloc_trim(0)
after = libc.mallinfo2()
print("trim gave back", r0 - rss() >= 40 << 20, "kept free", after.fordblks < 2 << 20)
"""


def test_mallinfo2_and_malloc_trim_describe_the_pool() -> None:
    """``mallinfo2`` reports the pool (bytes in use, mapped for classes and for
    large blocks, free kept), not glibc's unused heap; ``malloc_trim(0)`` gives
    what the pool keeps free back to the OS."""
    ran = _run([sys.executable, "-c", MALLINFO], preload=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[:3] == ["in use grew True", "large mapped True class bytes True",
                                         "trim gave back True kept free True"]


FORK_WARNING = r"""
import os, sys, warnings
def threads():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("Threads:"))
b = bytearray(50 << 20)
del b  # a large block cached: due after the purge delay
x = [bytearray(3000) for _ in range(100)]  # allocations above 1 KiB: the thread starts
before = threads()
warnings.simplefilter("always", DeprecationWarning)  # CPython 3.12+: multi-threaded fork
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print(before)
"""


def _python_with_fork_warning() -> str | None:
    """An interpreter that warns at os.fork in a multi-threaded process (3.12+)."""
    if sys.version_info >= (3, 12):
        return sys.executable
    for name in ("python3.14", "python3.13", "python3.12"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", "import sys; assert sys.version_info >= (3, 12)"],
                                   capture_output=True, timeout=60).returncode == 0:
            return path
    return None


def test_fork_does_not_count_the_purge_thread() -> None:
    """The purge thread, started by itself, is stopped across fork: CPython's
    check of the parent's threads right after fork sees one thread and prints
    no multi-threaded-fork warning, while the thread ran before the fork (two
    threads)."""
    python = _python_with_fork_warning()
    if python is None:
        pytest.skip("no CPython 3.12 or later to run")
    ran = _run([python, "-c", FORK_WARNING], preload=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "2"
    assert "multi-threaded" not in ran.stderr
