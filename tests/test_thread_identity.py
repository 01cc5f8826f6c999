"""Thread identity and lifetime: thread-state teardown, threads made by C
libraries, races on one arena, hand-offs between threads, subinterpreters.

Each test checks a behaviour that a free-threaded build (or a C thread) puts at
risk (docs/threads.md); it runs on both builds (on the default build the GIL
hides some of the races, the test still checks the behaviour).
"""

from __future__ import annotations

import gc
import os
import queue
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time

import numpy as np
import pytest

import tlalloc
from conftest import run_python, settled_live_arenas, wait_for

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def test_thread_arena_survives_thread_state_teardown_for_finalizers():
    # A threading.local finalizer runs while the thread state is being torn
    # down; thread_arena() and scratch() called there must get the thread's own,
    # still-valid arena (an object freed before its finalizers ran would crash).
    code = textwrap.dedent(
        """
        import threading, numpy as np, tlalloc
        seen = []
        class Finalizer:
            def __init__(self, arena_id):
                self.arena_id = arena_id
            def __del__(self):
                a = tlalloc.thread_arena()
                with tlalloc.scratch() as s:
                    x = s.empty(1000, np.float64)
                    x[:] = 3.0
                    ok = float(x.sum()) == 3000.0
                    del x
                seen.append((id(a) == self.arena_id, ok, a.is_thread_arena))
        local = threading.local()
        def work():
            a = tlalloc.thread_arena()
            with a.scope():
                a.empty(10)
            local.f = Finalizer(id(a))
            del a  # only the thread state then holds the arena object
        for _ in range(50):
            t = threading.Thread(target=work); t.start(); t.join()
        print(len(seen), all(s == (True, True, True) for s in seen))
        """
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["50", "True"]


C_TRAMPOLINE = r"""
#include <pthread.h>
typedef void (*callback)(int);
static void *run(void *p) {
    callback cb = (callback)p;
    cb(0);   /* each call into Python gets a new thread state */
    cb(1);
    return 0;
}
int run_in_c_thread(callback cb) {
    pthread_t t;
    if (pthread_create(&t, 0, run, (void *)cb) != 0) return -1;
    return pthread_join(t, 0);
}
"""


@pytest.fixture(scope="module")
def c_thread_lib(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the test's C library")
    d = tmp_path_factory.mktemp("cthread")
    src, lib = d / "cthread.c", d / "libcthread.so"
    src.write_text(C_TRAMPOLINE)
    subprocess.run([cc, "-shared", "-fPIC", "-pthread", str(src), "-o", str(lib)], check=True)
    import ctypes

    dll = ctypes.CDLL(str(lib))
    cbtype = ctypes.CFUNCTYPE(None, ctypes.c_int)
    dll.run_in_c_thread.argtypes = [cbtype]
    dll.run_in_c_thread.restype = ctypes.c_int
    return dll, cbtype


def test_c_thread_calling_python_twice_shares_one_arena(c_thread_lib):
    # A thread made by a C library calls a Python callback twice (two thread
    # states). The array kept by the first call must block the second call's
    # reset(): the live-array accounting is the OS thread's, not a thread state's.
    dll, cbtype = c_thread_lib
    kept: list[np.ndarray] = []
    seen: dict[str, object] = {}

    def callback(call: int) -> None:
        try:
            a = tlalloc.thread_arena()
            if call == 0:
                seen["first"] = id(a)
                x = a.empty(1000, np.int64)
                x[:] = np.arange(1000)
                kept.append(x)
                return
            seen["same"] = id(a) == seen["first"]
            seen["live"] = a.live_arrays
            try:
                a.reset()
                seen["reset"] = "reset released live memory"
            except BufferError:
                seen["reset"] = "BufferError"
            y = a.empty(1000, np.int64)  # must not overlap the kept array
            y[:] = -1
            seen["overlap"] = bool(np.shares_memory(y, kept[0]))
            del y
        except BaseException as exc:  # reported below, not lost in the C thread
            seen["error"] = repr(exc)

    cb = cbtype(callback)
    assert dll.run_in_c_thread(cb) == 0
    assert "error" not in seen, seen["error"]
    assert seen["same"] is True
    assert seen["live"] == 1
    assert seen["reset"] == "BufferError"
    assert seen["overlap"] is False
    assert np.array_equal(kept[0], np.arange(1000))
    kept.clear()


def test_c_thread_arena_is_released_after_the_thread_exits(c_thread_lib):
    dll, cbtype = c_thread_lib
    baseline = settled_live_arenas()

    def callback(call: int) -> None:
        with tlalloc.scratch() as a:
            a.empty(100)

    cb = cbtype(callback)
    for _ in range(20):
        assert dll.run_in_c_thread(cb) == 0
    assert wait_for(lambda: tlalloc.stats().num_arenas == baseline)


def test_scope_from_another_thread_is_refused_and_leaks_nothing():
    # The owner loops over scopes while an intruder calls scope(): the intruder
    # gets RuntimeError before touching the scope cache or the refcount.
    a = tlalloc.Arena("64KiB")
    base_refs = sys.getrefcount(a)
    stop = threading.Event()
    intruder_errors = []
    other = []

    def intruder() -> None:
        while not stop.is_set():
            try:
                s = a.scope()
                other.append(s)  # must never get here
            except RuntimeError:
                intruder_errors.append(1)

    t = threading.Thread(target=intruder)
    t.start()
    try:
        for _ in range(20_000):
            with a.scope():
                a.empty(8)
    finally:
        stop.set()
        t.join()
    assert other == []
    assert intruder_errors
    gc.collect()
    assert sys.getrefcount(a) == base_refs
    assert a.depth == 0 and a.used == 0


def test_hand_off_with_a_collector_thread_never_raises_falsely():
    # The owner allocates in a scope and hands the array to a consumer, which
    # drops it and says so; a third thread collects garbage all the time. The
    # owner's scope exit must never see the dropped array as alive.
    rounds = 500
    to_consumer: queue.Queue = queue.Queue()
    done: queue.Queue = queue.Queue()
    stop = threading.Event()
    false_errors = []

    def consumer() -> None:
        while True:
            item = to_consumer.get()
            if item is None:
                return
            assert item[0] == item[-1]
            del item
            done.put(True)

    def collector() -> None:
        # Collections all the time, with a pause so that a free-threaded build's
        # stop-the-world collections leave the other two threads time to run.
        while not stop.is_set():
            gc.collect()
            time.sleep(0.0005)

    def owner() -> None:
        a = tlalloc.thread_arena()
        for i in range(rounds):
            try:
                with a.scope():
                    x = a.empty(64, np.int64)
                    x[:] = i
                    to_consumer.put(x)
                    del x
                    done.get()
            except BufferError as exc:
                false_errors.append(str(exc))
        to_consumer.put(None)

    threads = [threading.Thread(target=f) for f in (consumer, collector, owner)]
    for t in threads:
        t.start()
    threads[2].join()
    threads[0].join()
    stop.set()
    threads[1].join()
    assert false_errors == []


def test_hand_off_kept_by_consumer_is_still_refused():
    # The other half of exactness: memory is never reused while a consumer
    # thread holds an array from it.
    got: queue.Queue = queue.Queue()
    kept = []

    def consumer() -> None:
        kept.append(got.get())

    t = threading.Thread(target=consumer)
    t.start()
    a = tlalloc.Arena("64KiB")
    with pytest.raises(BufferError, match="1 array"):
        with a.scope():
            x = a.empty(16, np.int64)
            x[:] = 5
            got.put(x)
            del x
            t.join()
    assert a.stats().escaped_bytes == 128  # the consumer's array holds its memory
    with a.scope():
        y = a.empty(16, np.int64)
        assert not np.shares_memory(y, kept[0])
        del y
    assert np.all(kept[0] == 5)
    kept.clear()
    assert a.stats().escaped_bytes == 0
    a.reset()


def test_deep_chain_of_escaped_scopes_is_linear_and_iterative():
    # 100,000 nested scopes, each left with an array alive, closed innermost
    # first, in a thread with a small stack; then the arrays go. Scope exits are
    # O(1) (each escaped region holds its own memory, naming the live arrays
    # looks at a bounded part of each container) and nothing recurses. The bound is
    # a generous multiple of the linear cost (about 1 s here), not a benchmark.
    n = 100_000
    result: dict[str, object] = {}

    def work() -> None:
        import time

        t0 = time.monotonic()
        a = tlalloc.Arena("32MiB")
        scopes = [a.scope() for _ in range(n)]
        keep = []
        for s in scopes:
            s.__enter__()
            keep.append(a.empty(1, np.int8))
        raised = 0
        for s in reversed(scopes):
            try:
                s.__exit__(None, None, None)
            except BufferError:
                raised += 1
        result["raised"] = raised
        result["live"] = a.stats().escaped_bytes
        keep.clear()  # gives every escaped region's memory back
        result["live_after"] = a.stats().escaped_bytes
        a.reset()
        result["used"] = a.used
        result["seconds"] = time.monotonic() - t0

    old = threading.stack_size(256 * 1024)
    try:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    assert result["raised"] == n
    assert result["live"] >= 1
    assert result["live_after"] == 0
    assert result["used"] == 0
    assert result["seconds"] < 60, result


def test_thread_arena_objects_of_exited_threads_are_dropped():
    baseline = settled_live_arenas()
    ids = []

    def work() -> None:
        a = tlalloc.thread_arena()
        ids.append(id(a))
        assert tlalloc.thread_arena() is a

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for(lambda: tlalloc.stats().num_arenas == baseline)


SUBINTERP_CODE = """
try:
    import tlalloc._tlalloc
    result = "loaded"
except ImportError as exc:
    result = "ImportError: " + str(exc)
assert result.startswith("ImportError") and "subinterpreters" in result, result
"""


def test_subinterpreter_import_is_refused():
    code = (
        "try:\n"
        "    import _interpreters as interpreters\n"  # 3.13+
        "except ImportError:\n"
        "    import _xxsubinterpreters as interpreters\n"  # 3.10-3.12
        "interp = interpreters.create()\n"
        "try:\n"
        f"    out = interpreters.run_string(interp, {SUBINTERP_CODE!r})\n"
        "except Exception as exc:\n"  # 3.11/3.12 raise RunFailedError
        "    print('failed', exc)\n"
        "else:\n"
        "    print('failed' if out else 'refused', out)\n"
    )
    r = run_python(code)
    if "No module named" in r.stderr:
        pytest.skip("this Python has no subinterpreter module")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("refused"), r.stdout


def test_legacy_subinterpreter_import_is_refused():
    _testcapi = pytest.importorskip("_testcapi")
    if not hasattr(_testcapi, "run_in_subinterp"):
        pytest.skip("no _testcapi.run_in_subinterp")
    code = textwrap.dedent(
        """
        import _testcapi, os, tempfile
        fd, path = tempfile.mkstemp()
        os.close(fd)
        src = (
            "try:\\n"
            "    import tlalloc._tlalloc\\n"
            "    r = 'loaded'\\n"
            "except ImportError as exc:\\n"
            "    r = 'refused' if 'subinterpreters' in str(exc) else repr(exc)\\n"
            f"open({path!r}, 'w').write(r)\\n"
        )
        _testcapi.run_in_subinterp(src)
        print(open(path).read())
        os.unlink(path)
        """
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "refused", r.stdout


@pytest.mark.skipif(not FREE_THREADED, reason="only a free-threaded build can run without the GIL")
def test_import_keeps_the_gil_disabled():
    r = run_python("import sys, tlalloc, tlalloc.kernels, tlalloc.pool; print(sys._is_gil_enabled())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


FORK_CODE = """
import os, threading, tlalloc
ready, go = threading.Barrier(5), threading.Event()
def work():
    a = tlalloc.thread_arena()
    with a.scope():
        a.empty(10)
    del a  # a dead thread's frame still holding it would keep it alive in the child
    ready.wait()
    go.wait()
ts = [threading.Thread(target=work) for _ in range(4)]
for t in ts:
    t.start()
main = tlalloc.thread_arena()
ready.wait()
assert tlalloc.stats().num_arenas == 5
pid = os.fork()
if pid == 0:
    per = tlalloc.stats(per_thread=True)
    alive = [s for s in per if s.thread_alive]
    ok = (tlalloc.stats().num_arenas, len(alive), tlalloc.thread_arena() is main) == (1, 1, True)
    with tlalloc.scratch() as a:
        a.empty(100)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
go.set()
for t in ts:
    t.join()
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_keeps_only_the_forking_threads_arena():
    # In the child only the forking thread exists: the other threads' arena
    # objects and C arenas are released as their exits would have.
    r = run_python(FORK_CODE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", r.stdout + r.stderr


def test_scope_object_used_from_another_thread_is_refused():
    a = tlalloc.Arena("64KiB")
    s = a.scope()
    errors = []

    def other() -> None:
        for op in (s.__enter__, lambda: s.__exit__(None, None, None)):
            try:
                op()
            except RuntimeError as exc:
                errors.append(str(exc))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 2 and all("another thread" in e for e in errors)
    with s:  # still usable by its owner
        a.empty(4)
    assert a.depth == 0
