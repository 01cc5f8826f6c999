"""Larson server benchmark: the tlalloc pool against glibc, jemalloc and mimalloc.

Builds ``bench/c/larson.c`` twice from a source checkout (``make``): once on the
tlalloc pool and once on the C library's ``malloc``. The system build also runs
under ``LD_PRELOAD`` of jemalloc and mimalloc when their shared libraries are
found (``--install`` installs Debian's ``libjemalloc2`` and ``libmimalloc2.0``
with apt-get when they are missing). The pool runs twice: with its per-thread
caches and with ``TLALLOC_POOL_CACHE=0`` (one locked heap), which shows what the
caches are worth. Every configuration runs at each thread count in the same
invocation, interleaved, with mimalloc-bench's arguments
(``larson SECONDS 8 1000 5000 100 4141 THREADS``).

It prints operations per second (one free plus one allocation each), the
ratios to glibc and mimalloc, resident memory at the end and its ratio to
glibc's, and for the pool its cache hit rate and depot lock acquisitions. A
second table times NumPy temporaries (``a * b + c`` on 1000-element arrays,
from 2 threads) under the tlalloc data-memory handler against NumPy's default.

Example:
    $ tlalloc bench larson
    $ tlalloc bench larson --threads 1,4 --seconds 2 --repeat 3 --json larson.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tlalloc._report import format_table
from tlalloc.bench._common import describe_machine, machine_info, parse_threads, write_json
from tlalloc.bench._preload import find_library, package_version

LARSON_ARGS = ("8", "1000", "5000", "100", "4141")  # min, max, chunks, rounds, seed
ALLOCATORS = ("glibc", "jemalloc", "mimalloc", "tlalloc", "tlalloc-nocache")
# Debian package and shared library of each preloadable allocator.
PRELOAD = {
    "jemalloc": ("libjemalloc2", "libjemalloc.so.2"),
    "mimalloc": ("libmimalloc2.0", "libmimalloc.so.2"),
}
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench larson``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--threads", "1,2"]).threads
        '1,2'
    """
    parser.add_argument("--threads", default="1,2,4,16", help="thread counts (default 1,2,4,16)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="run time of each larson run (default 5, as mimalloc-bench)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each configuration, interleaved; the median is shown")
    parser.add_argument("--allocators", default=",".join(ALLOCATORS),
                        help=f"subset of {','.join(ALLOCATORS)}")
    parser.add_argument("--install", action="store_true",
                        help="apt-get install libjemalloc2 and libmimalloc2.0 if missing")
    parser.add_argument("--repo", default=None, help="source checkout (default: found from here)")
    parser.add_argument("--build-dir", default=None,
                        help="where make builds the binaries (default REPO/build/larson)")
    parser.add_argument("--skip-numpy", action="store_true", help="skip the NumPy temporaries table")
    parser.add_argument("--numpy-only", action="store_true", help="only the NumPy temporaries table")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def find_repo(start: str | None = None) -> Path | None:
    """The source checkout holding ``bench/c/larson.c``: ``start``, or searched
    upwards from the working directory and from this file.

    Example:
        >>> find_repo("/") is None
        True
    """
    candidates = [Path(start)] if start else [Path.cwd(), Path(__file__).resolve()]
    for c in candidates:
        for d in [c, *c.parents]:
            if (d / "bench" / "c" / "larson.c").is_file() and (d / "Makefile").is_file():
                return d
            if start:
                break
    return None


def _install(packages: list[str]) -> str:
    if not shutil.which("apt-get"):
        return "apt-get is not available"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "installing needs root (run: sudo apt-get install -y " + " ".join(packages) + ")"
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}"
    return "installed"


def detect_allocators(wanted: list[str], install: bool) -> dict[str, dict[str, Any]]:
    """Which allocators can run: glibc and tlalloc always; jemalloc and mimalloc
    when their library is found (installed first with ``install``).

    Example:
        >>> sorted(detect_allocators(["glibc"], False))
        ['glibc']
    """
    found: dict[str, dict[str, Any]] = {}
    missing = [a for a in wanted if a in PRELOAD and not find_library(PRELOAD[a][1])]
    note = ""
    if missing and install:
        note = _install([PRELOAD[a][0] for a in missing])
    for a in wanted:
        if a == "glibc":
            libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
            found[a] = {"available": True, "how": f"system malloc ({libc or 'C library'})"}
        elif a in ("tlalloc", "tlalloc-nocache"):
            how = "tlalloc pool" + (", TLALLOC_POOL_CACHE=0" if a.endswith("nocache") else "")
            found[a] = {"available": True, "how": how}
        else:
            pkg, soname = PRELOAD[a]
            lib = find_library(soname)
            if lib:
                ver = package_version(pkg)
                found[a] = {"available": True, "lib": lib,
                            "how": f"LD_PRELOAD={lib}" + (f" (Debian {pkg} {ver})" if ver else "")}
            else:
                why = f"{soname} not found"
                why += f"; --install: {note}" if install else f"; pass --install or apt-get install {pkg}"
                found[a] = {"available": False, "how": why}
    return found


def build(repo: Path, build_dir: Path) -> tuple[Path, Path]:
    """Build the two larson binaries with make; returns (tlalloc, system) paths.

    Raises RuntimeError with make's output when the toolchain is missing or
    the build fails.

    Example:
        >>> build(Path("/nonexistent"), Path("/tmp/x"))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        RuntimeError: ...
    """
    if not shutil.which("make") or not (shutil.which("cc") or shutil.which("gcc")):
        raise RuntimeError("the C toolchain (make and cc) is not available")
    if not (repo / "Makefile").is_file():
        raise RuntimeError(f"{repo} is not a tlalloc source checkout (no Makefile)")
    pool_bin = build_dir / "bench" / "larson"
    sys_bin = build_dir / "bench" / "larson-system"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # e.g. a sanitizer's
    r = subprocess.run(["make", "-C", str(repo), f"BUILD={build_dir}", str(pool_bin), str(sys_bin)],
                       capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        raise RuntimeError("make failed:\n" + (r.stdout + r.stderr)[-3000:])
    return pool_bin, sys_bin


def parse_line(out: str) -> dict[str, Any]:
    """Parse larson's ``key=value`` result line into numbers where possible.

    Example:
        >>> parse_line("larson allocator=system threads=2 ops_per_sec=10.5")["ops_per_sec"]
        10.5
    """
    line = next((ln for ln in out.splitlines() if ln.startswith("larson ")), None)
    if line is None:
        raise ValueError(f"no result line in larson output: {out[-500:]!r}")
    res: dict[str, Any] = {}
    for tok in line.split()[1:]:
        key, _, val = tok.partition("=")
        try:
            res[key] = int(val)
        except ValueError:
            try:
                res[key] = float(val)
            except ValueError:
                res[key] = val
    return res


def run_one(alloc: str, info: dict[str, Any], pool_bin: Path, sys_bin: Path, threads: int,
            seconds: float) -> dict[str, Any]:
    """One larson run of one allocator; returns its parsed result line."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("TLALLOC_POOL_CACHE", None)
    binary = sys_bin
    if alloc in ("tlalloc", "tlalloc-nocache"):
        binary = pool_bin
        env["TLALLOC_POOL_CACHE"] = "0" if alloc == "tlalloc-nocache" else "1"
    elif alloc in PRELOAD:
        env["LD_PRELOAD"] = info["lib"]
    cmd = [str(binary), f"{seconds:g}", *LARSON_ARGS, str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                       timeout=seconds * 10 + 60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} ({alloc}) failed: {r.stderr.strip()[-500:]}")
    return parse_line(r.stdout)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def larson_table(args: argparse.Namespace) -> dict[str, Any] | None:
    """Build, run and print the larson comparison; None if it cannot run."""
    wanted = [a.strip() for a in args.allocators.split(",") if a.strip()]
    bad = [a for a in wanted if a not in ALLOCATORS]
    if bad:
        raise ValueError(f"--allocators: unknown {', '.join(bad)}; choose from {', '.join(ALLOCATORS)}")
    threads = parse_threads(args.threads)
    repo = find_repo(args.repo)
    if repo is None:
        print("tlalloc bench larson: the larson benchmark is C code built from a source checkout "
              "(bench/c/larson.c, make, cc); none was found here. Run it from the checkout or pass "
              "--repo PATH.", file=sys.stderr)
        return None
    build_dir = Path(args.build_dir) if args.build_dir else repo / "build" / "larson"
    try:
        pool_bin, sys_bin = build(repo, build_dir.resolve())
    except RuntimeError as exc:
        print(f"tlalloc bench larson: cannot build the larson binaries: {exc}", file=sys.stderr)
        return None
    found = detect_allocators(wanted, args.install)
    print("allocators:")
    for a in wanted:
        print(f"  {a:16s} {'used' if found[a]['available'] else 'SKIPPED'}: {found[a]['how']}")
    usable = [a for a in wanted if found[a]["available"]]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(a, t): [] for a in usable for t in threads}
    total = len(runs) * args.repeat
    done = 0
    t_start = time.perf_counter()
    for _ in range(args.repeat):  # interleaved, so that drift hits every allocator alike
        for t in threads:
            for a in usable:
                runs[(a, t)].append(run_one(a, found[a], pool_bin, sys_bin, t, args.seconds))
                done += 1
                print(f"\r  {done}/{total} runs ({time.perf_counter() - t_start:.0f} s)", end="",
                      file=sys.stderr, flush=True)
    print(file=sys.stderr)
    rows = []
    results: list[dict[str, Any]] = []
    for t in threads:
        med = {a: _median([r["ops_per_sec"] for r in runs[(a, t)]]) for a in usable}
        rss = {a: _median([r["rss_bytes"] for r in runs[(a, t)]]) for a in usable}
        for a in usable:
            rs = runs[(a, t)]
            entry: dict[str, Any] = {
                "allocator": a, "threads": t, "ops_per_sec": med[a], "rss_bytes": rss[a],
                "ops_per_sec_runs": [r["ops_per_sec"] for r in rs],
                "rss_bytes_runs": [r["rss_bytes"] for r in rs],
                "peak_rss_bytes": _median([r["peak_rss_bytes"] for r in rs]),
            }
            vs_glibc = med[a] / med["glibc"] if "glibc" in med else None
            vs_mi = med[a] / med["mimalloc"] if "mimalloc" in med else None
            rss_glibc = rss[a] / rss["glibc"] if "glibc" in rss else None
            entry.update(vs_glibc=vs_glibc, vs_mimalloc=vs_mi, rss_vs_glibc=rss_glibc)
            hit = locks = "-"
            if a.startswith("tlalloc"):
                entry["cache_hit_rate"] = _median([r["cache_hit_rate"] for r in rs])
                entry["num_depot_locks"] = _median([r["num_depot_locks"] for r in rs])
                hit = f"{entry['cache_hit_rate']:.2%}"
                locks = f"{entry['num_depot_locks']:,.0f}"
            results.append(entry)
            rows.append([t, a, f"{med[a] / 1e6:.2f}",
                         f"{vs_glibc:.2f}x" if vs_glibc else "-",
                         f"{vs_mi:.2f}x" if vs_mi else "-",
                         f"{rss[a] / 2**20:.1f}", f"{rss_glibc:.2f}x" if rss_glibc else "-",
                         hit, locks])
    print()
    print(f"larson {args.seconds:g} s per run, args {' '.join(LARSON_ARGS)}, median of "
          f"{args.repeat} run(s); {describe_machine()}")
    print(format_table(["threads", "allocator", "Mops/s", "vs glibc", "vs mimalloc", "RSS MiB",
                        "RSS vs glibc", "hit rate", "depot locks"], rows))
    return {"larson": results, "allocators": found, "seconds": args.seconds,
            "repeat": args.repeat, "larson_args": list(LARSON_ARGS)}


def _temporaries(n_threads: int, iters: int, size: int, use_pool: bool) -> float:
    """Seconds for n_threads threads each computing ``a * b + c`` iters times,
    with NumPy's default allocator or (``use_pool``) the tlalloc handler."""
    import numpy as np

    from tlalloc import numpy_alloc

    barrier = threading.Barrier(n_threads + 1)

    def work() -> None:
        # NumPy's handler is per context, that is per thread: set it in each worker.
        with numpy_alloc.pool_allocator() if use_pool else contextlib.nullcontext():
            a = np.ones(size)
            b = np.ones(size)
            c = np.ones(size)
            barrier.wait()
            for _ in range(iters):
                a * b + c
            barrier.wait()

    ts = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    barrier.wait()
    dt = time.perf_counter() - t0
    for t in ts:
        t.join()
    return dt


def numpy_table(repeat: int) -> dict[str, Any] | None:
    """Time NumPy temporaries under the tlalloc handler and NumPy's default."""
    try:
        from tlalloc import numpy_alloc  # noqa: F401
    except ImportError as exc:
        print(f"tlalloc bench larson: NumPy handler unavailable ({exc}); skipped", file=sys.stderr)
        return None
    size, iters, n_threads = 1000, 100_000, 2
    names = {False: "numpy default", True: "tlalloc handler"}
    times: dict[str, list[float]] = {n: [] for n in names.values()}
    rounds = max(3, repeat)
    for _ in range(rounds):  # interleaved
        for use_pool, name in names.items():
            times[name].append(_temporaries(n_threads, iters, size, use_pool))
    best = {k: min(v) for k, v in times.items()}
    base = best["numpy default"]
    rows = [[k, f"{v * 1e3:.1f}", f"{n_threads * iters / v / 1e6:.3f}", f"{base / v:.2f}x"]
            for k, v in best.items()]
    print()
    print(f"NumPy temporaries: a * b + c on {size}-element float64 arrays, {iters} times in each "
          f"of {n_threads} threads, best of {rounds}")
    print(format_table(["allocator", "ms", "M expr/s", "speed-up"], rows))
    return {"numpy_temporaries": {"size": size, "iters": iters, "threads": n_threads,
                                  "seconds": times, "ratio": base / best["tlalloc handler"]}}


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tlalloc bench larson``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> run(p.parse_args(["--repo", "/", "--skip-numpy"]))
        2
    """
    if args.repeat < 1:
        raise ValueError(f"--repeat={args.repeat!r} must be at least 1")
    if not args.seconds > 0:
        raise ValueError(f"--seconds={args.seconds!r} must be positive")
    payload: dict[str, Any] = {"machine": machine_info()}
    status = 0
    if not args.numpy_only:
        res = larson_table(args)
        if res is None:
            status = 2
        else:
            payload.update(res)
    if not args.skip_numpy and status == 0:
        res = numpy_table(args.repeat)
        if res is not None:
            payload.update(res)
    if args.json and status == 0:
        write_json(args.json, payload)
    return status
