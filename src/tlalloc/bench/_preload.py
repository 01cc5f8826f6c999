"""Other allocators, preloaded into the programs the benchmark suites run.

Finding an allocator's shared library and its Debian package version, reading
``--preload NAME=PATH`` options, and running one program (under ``LD_PRELOAD``,
timed, its peak resident memory read by GNU time) for ``tlalloc bench
mimalloc-bench``, ``footprint`` and ``larson``.

Example:
    >>> find_library("libdoes-not-exist.so.9") is None
    True
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
            "/usr/local/lib")


def find_library(soname: str) -> str | None:
    """Path of a shared library found in the usual directories, or None.

    Example:
        >>> find_library("libdoes-not-exist.so.9") is None
        True
    """
    for d in LIB_DIRS:
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if line.strip().startswith(soname + " ") and "=>" in line:
            return line.split("=>", 1)[1].strip()
    return None


def package_version(package: str) -> str | None:
    """Installed version of a Debian package (dpkg-query), or None.

    Example:
        >>> package_version("no-such-package-xyz") is None
        True
    """
    if not shutil.which("dpkg-query"):
        return None
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                       text=True, check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


# Allocators found in the usual library directories when not named with --preload:
# (name, Debian package, shared library). tcmalloc is the minimal build, as
# mimalloc-bench's "tc" (libtcmalloc-minimal4, a dependency of libgoogle-perftools4).
KNOWN_PRELOADS = (
    ("jemalloc", "libjemalloc2", "libjemalloc.so.2"),
    ("mimalloc", "libmimalloc2.0", "libmimalloc.so.2"),
    ("tcmalloc", "libtcmalloc-minimal4", "libtcmalloc_minimal.so.4"),
)


def parse_preloads(items: list[str], tlalloc: str | None) -> dict[str, str]:
    """``NAME=PATH`` options into a dict, checking each path is a file.

    Example:
        >>> parse_preloads([], None)
        {}
        >>> parse_preloads(["x"], None)
        Traceback (most recent call last):
        ValueError: --preload 'x': expected NAME=PATH
    """
    out: dict[str, str] = {}
    pairs = [(item, *item.split("=", 1)) if "=" in item else (item, "", "") for item in items]
    if tlalloc is not None:
        pairs.append((f"--tlalloc {tlalloc}", "tlalloc", tlalloc))
    for item, name, path in pairs:
        if not name or not path:
            raise ValueError(f"--preload {item!r}: expected NAME=PATH")
        if name == "glibc":
            raise ValueError(f"--preload {item!r}: glibc is the run without a preload")
        if not os.path.isfile(path):
            raise ValueError(f"--preload {item!r}: {path!r} is not a file")
        out[name] = os.path.abspath(path)
    return out


def installed_preload() -> str | None:
    """Path of the ``libtlalloc.so`` installed with this package, or None.

    Example:
        >>> p = installed_preload()
        >>> p is None or p.endswith("libtlalloc.so")
        True
    """
    try:
        from tlalloc import pool
    except ImportError:
        return None
    fn = getattr(pool, "preload_path", None)
    if fn is None:
        return None
    try:
        return str(fn())
    except (FileNotFoundError, OSError):
        return None


def detect_allocators(preloads: dict[str, str], wanted: list[str] | None) -> dict[str, dict[str, Any]]:
    """Allocator name -> {"lib": path or None, "how": description}, in run order.

    Example:
        >>> list(detect_allocators({}, ["glibc"]))
        ['glibc']
    """
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    found: dict[str, dict[str, Any]] = {"glibc": {"lib": None, "how": f"no preload ({libc})"}}
    for name, pkg, soname in KNOWN_PRELOADS:
        if name in preloads:
            continue
        lib = find_library(soname)
        if lib:
            ver = package_version(pkg)
            found[name] = {"lib": lib, "how": f"{lib} (Debian {pkg} {ver or '?'})"}
    for name, lib in preloads.items():
        found[name] = {"lib": lib, "how": lib}
    if wanted is None:
        return found
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ValueError(f"--allocators: {', '.join(missing)} not found; available: "
                         f"{', '.join(found)} (add one with --preload NAME=PATH)")
    return {w: found[w] for w in wanted}


def gnu_time() -> str | None:
    """Path of GNU time (``/usr/bin/time``), or None.

    The peak RSS of a child comes from it: Linux keeps a process's RSS high-water
    mark across ``execve``, so ``wait4`` on a child forked from Python reports at
    least Python's own RSS; GNU time's child starts from time's small one (as in
    bench.sh, which uses it too).

    Example:
        >>> gnu_time() in (None, "/usr/bin/time")
        True
    """
    path = "/usr/bin/time"
    if not os.access(path, os.X_OK):
        return None
    try:
        r = subprocess.run([path, "-f", "%M", "true"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return path if r.returncode == 0 and r.stderr.strip().isdigit() else None


def run_once(cmd: list[str], env: dict[str, str], stdin_path: str | None,
             timeout: float, timer_cmd: str | None = None, preload: str | None = None,
             cwd: str | None = None) -> dict[str, Any]:
    """Run one command; wall time, user+sys time, peak RSS, minor page faults,
    voluntary and involuntary context switches (``nvcsw``: the program waited,
    on a lock or in a sleep; ``nivcsw``: it was preempted), status and output.

    With ``timer_cmd`` (GNU time) the peak RSS is the program's own; without,
    it is ``wait4``'s, which is at least this Python process's RSS. ``preload``
    is set as ``LD_PRELOAD`` for the program only (as bench.sh does, through
    ``env``), not for GNU time.

    Example:
        >>> r = run_once(["true"], dict(os.environ), None, 10, gnu_time())
        >>> r["status"], 0 < r["maxrss_bytes"]
        (0, True)
        >>> run_once(["sh", "-c", "kill -SEGV $$"], dict(os.environ), None, 10, gnu_time())["status"]
        -11
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".time") as tfile, \
            open(stdin_path or os.devnull, "rb") as inp:
        env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
        if preload and timer_cmd:
            cmd = ["/usr/bin/env", f"LD_PRELOAD={preload}", *cmd]
        elif preload:
            env["LD_PRELOAD"] = preload
        full = [timer_cmd, "-f", "%M", "-o", tfile.name, *cmd] if timer_cmd else cmd
        t0 = time.perf_counter()
        p = subprocess.Popen(full, stdin=inp, stdout=out, stderr=err, env=env, cwd=cwd,
                             start_new_session=True)
        killed = []

        def kill() -> None:
            killed.append(True)
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:  # e.g. Ctrl-C: the child is in its own session, end it too
            kill()
            os.wait4(p.pid, 0)
            p.returncode = -signal.SIGKILL
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # the Popen object must not wait again
        code = p.returncode
        maxrss = ru.ru_maxrss * 1024
        if timer_cmd:
            lines = tfile.read().strip().splitlines()
            m = re.search(r"terminated by signal (\d+)", "\n".join(lines))
            if m:
                code = -int(m.group(1))
            if lines and lines[-1].strip().isdigit():
                maxrss = int(lines[-1]) * 1024
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return {"status": code, "timed_out": bool(killed), "wall_s": wall,
            "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_bytes": maxrss,
            "minflt": ru.ru_minflt, "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw,
            "stdout": stdout, "stderr": stderr}
