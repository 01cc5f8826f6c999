"""Footprint of real programs: peak RSS, RSS once everything is freed, and speed,
under glibc's malloc and under ``libtlalloc.so`` (and any other preload), side by side.

Each workload is a real program run as a child process, once per allocator per
round, the allocators' order rotated every round so that none always runs first:

- ``git-log``: ``git log -p`` over a repository (``--git-repo``; by default the
  one holding the current directory);
- ``gcc``: ``gcc -O2 -c`` of a generated C file of a few thousand lines;
- ``numpy``: a Python script with pandas (NumPy alone when pandas is missing)
  whose temporaries are 160 KB to 8 MB;
- ``sqlite``: bulk inserts, an index and a query with the ``sqlite3`` shell (or
  Python's ``sqlite3`` module when the shell is missing), into a file database;
- ``threads``: a C program that starts 1,000 threads, 16 at a time, which
  allocate, hand half of their blocks to other threads, free blocks other
  threads allocated, and exit; it needs a C compiler.

The peak RSS is GNU time's ``%M`` when ``/usr/bin/time`` is there (a child forked
from Python would otherwise report at least Python's own RSS). The ``numpy`` and
``threads`` programs also read their own RSS (``/proc/self/statm``) once
everything they allocated is freed, then again after ``--idle`` seconds of
sleep with no allocation at all: that second reading is what a service that
frees its memory and then only computes or waits keeps resident.

Ratios are tlalloc's figure over glibc's (RSS: lower is better; speed: glibc's
time over tlalloc's, higher is better), medians over the rounds, with a 95%
bootstrap interval from 5 rounds up.

Example:
    $ tlalloc bench footprint                  # every workload, 3 rounds
    $ tlalloc bench footprint --rounds 7 --json footprint.json
    $ tlalloc bench footprint --workloads threads,sqlite --quick
    $ tlalloc bench footprint --purge-thread   # also tlalloc with its purge thread from the start
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tlalloc._report import format_table
from tlalloc.bench._common import (
    describe_machine,
    machine_info,
    positive_float,
    positive_int,
    ratio_interval,
    write_json,
)
from tlalloc.bench._preload import detect_allocators, gnu_time, installed_preload, parse_preloads, run_once

WORKLOADS = ("git-log", "gcc", "numpy", "sqlite", "threads")
# --purge-thread: libtlalloc.so again, its background purge thread started by
# the library's constructor (by default the thread starts itself later, at an
# allocation once something freed waits for the purge delay).
PURGE_ENV = "TLALLOC_POOL_PURGE_THREAD"
PURGE_VARIANT = "tlalloc+purge"

# The 1,000-thread program. Each thread allocates BLOCKS blocks of 16 B to 4 KiB
# (a few large ones of 64 KiB too), frees half of them itself, puts the other half
# into a shared exchange and frees what another thread left there, then exits.
# Once every thread is gone, main frees what is left, reports its RSS, sleeps
# IDLE seconds without allocating and reports its RSS again.
THREADS_C = r"""
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS 4096
static void *exchange[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int blocks;

static long rss_kib(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *worker(void *arg) {
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    void **mine = malloc((size_t)blocks * sizeof *mine);
    if (!mine) abort();
    for (int i = 0; i < blocks; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t size = (i % 97 == 0) ? 65536 : 16 + (size_t)(x % 4080);
        mine[i] = malloc(size);
        if (!mine[i]) abort();
        memset(mine[i], (int)i, size < 256 ? size : 256);
    }
    for (int i = 0; i < blocks; i += 2) free(mine[i]);
    pthread_mutex_lock(&lock);
    for (int i = 1; i < blocks; i += 2) {
        size_t s = (size_t)((x >> 3) + (uint64_t)i * 2654435761u) % SLOTS;
        void *old = exchange[s];
        exchange[s] = mine[i];
        mine[i] = old; /* freed below, outside the lock: a block of another thread */
    }
    pthread_mutex_unlock(&lock);
    for (int i = 1; i < blocks; i += 2) free(mine[i]);
    free(mine);
    return NULL;
}

int main(int argc, char **argv) {
    int nthreads = argc > 1 ? atoi(argv[1]) : 1000;
    int wave = argc > 2 ? atoi(argv[2]) : 16;
    blocks = argc > 3 ? atoi(argv[3]) : 2000;
    double idle = argc > 4 ? atof(argv[4]) : 2.0;
    pthread_t *t = malloc((size_t)wave * sizeof *t);
    if (!t || nthreads < 1 || wave < 1 || blocks < 2) return 2;
    for (int done = 0; done < nthreads; done += wave) {
        int n = nthreads - done < wave ? nthreads - done : wave;
        for (int i = 0; i < n; i++)
            if (pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(done + i + 1)) != 0) {
                perror("pthread_create");
                return 1;
            }
        for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    }
    for (int s = 0; s < SLOTS; s++) free(exchange[s]);
    free(t);
    printf("rss_after_free_kib %ld\n", rss_kib());
    fflush(stdout);
    usleep((useconds_t)(idle * 1e6));
    printf("rss_after_idle_kib %ld\n", rss_kib());
    return 0;
}
"""

# The pandas / NumPy script: temporaries of 160 KB to 8 MB (20,000 to 1,000,000
# float64 values), then everything dropped, the RSS read, an idle sleep, read again.
NUMPY_PY = r"""
import gc, sys, time
import numpy as np
try:
    import pandas as pd
except ImportError:
    pd = None

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (__import__("os").sysconf("SC_PAGE_SIZE") // 1024)

rounds, idle = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(7)
checksum = 0.0
for r in range(rounds):
    for n in (20_000, 50_000, 200_000, 1_000_000):
        a, b, c = rng.random(n), rng.random(n), rng.random(n)
        x = a * b + c
        y = np.sort(x)[: n // 2].cumsum()
        checksum += float(y[-1]) + float(np.sqrt(x).sum())
        if pd is not None:
            df = pd.DataFrame({"k": (a * 64).astype(np.int64), "x": x, "b": b})
            g = df.groupby("k")["x"].agg(["sum", "mean"])
            checksum += float(g["sum"].sum())
            df["z"] = df["x"].rolling(16).mean()
            checksum += float(df["z"].iloc[-1])
            m = df.merge(g, left_on="k", right_index=True)
            checksum += float(m["mean"].sum())
            del df, g, m
        del a, b, c, x, y
gc.collect()
print("engine", "pandas" if pd is not None else "numpy")
print("checksum %.6e" % checksum)
print("rss_after_free_kib", rss_kib(), flush=True)
time.sleep(idle)
print("rss_after_idle_kib", rss_kib())
"""

SQLITE_SQL = """PRAGMA cache_size=-65536;
PRAGMA journal_mode=OFF;
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL, payload BLOB);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
INSERT INTO t SELECT x, printf('name-%08d', (x * 7919) % {rows}), x * 0.5, randomblob(120) FROM c;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(v) FROM t WHERE name > 'name-0001';
"""

SQLITE_PY = r"""
import sqlite3, sys
sql = sys.stdin.read()
script, query = sql.rsplit("SELECT count", 1)
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.executescript(script)
print(con.execute("SELECT count" + query.rstrip().rstrip(";")).fetchone())
con.close()
"""

# gcc: a generated translation unit, FUNCS functions with loops and switches.
def gcc_source(funcs: int) -> str:
    """A C translation unit of ``funcs`` functions that keeps ``gcc -O2`` busy.

    Example:
        >>> src = gcc_source(2)
        >>> "int f1(" in src and src.count("switch") == 2
        True
    """
    parts = ["#include <string.h>\n", "struct s { int a[16]; double d[8]; char name[32]; };\n"]
    for i in range(funcs):
        parts.append(
            f"int f{i}(struct s *p, int n, const char *q) {{\n"
            f"    int acc = {i};\n"
            f"    for (int j = 0; j < n; j++) {{\n"
            f"        switch ((j + {i}) % 7) {{\n"
            f"        case 0: acc += p->a[j & 15] * {i % 13 + 1}; break;\n"
            f"        case 1: acc ^= (int)(p->d[j & 7] * {i % 5 + 2}.5); break;\n"
            f"        case 2: acc -= (int)strlen(q + (j & 3)); break;\n"
            f"        case 3: p->a[(j + 1) & 15] = acc; break;\n"
            f"        case 4: p->d[j & 7] += acc / {i % 9 + 1}.0; break;\n"
            f"        case 5: acc = acc * 31 + p->name[j & 31]; break;\n"
            f"        default: acc += j;\n"
            f"        }}\n"
            f"    }}\n"
            f"    return acc;\n"
            f"}}\n"
        )
    return "".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench footprint``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> a = p.parse_args(["--workloads", "threads", "--rounds", "2"])
        >>> a.workloads, a.rounds, a.idle
        ('threads', 2, 2.0)
    """
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, from {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="interleaved rounds (default 3; 5 or more give intervals)")
    parser.add_argument("--allocators", default="glibc,tlalloc",
                        help="comma-separated allocators to run (default glibc,tlalloc; jemalloc, "
                             "mimalloc and tcmalloc are found when installed, others with --preload)")
    parser.add_argument("--tlalloc", metavar="PATH", default=None,
                        help="libtlalloc.so to measure (default: the one installed with the package)")
    parser.add_argument("--preload", action="append", default=[], metavar="NAME=PATH",
                        help="another allocator to preload (repeatable)")
    parser.add_argument("--purge-thread", action="store_true",
                        help="also run libtlalloc.so with its background purge thread started "
                             "at once (TLALLOC_POOL_PURGE_THREAD=1; by default it starts itself "
                             "once something is due) as the allocator 'tlalloc+purge'")
    parser.add_argument("--git-repo", metavar="DIR", default=None,
                        help="repository for git-log (default: the one holding the current directory)")
    parser.add_argument("--idle", type=idle_seconds, default=2.0,
                        help="seconds the numpy and threads programs sleep before their last RSS "
                             "reading (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="small inputs (a smoke test, not a measurement)")
    parser.add_argument("--timeout", type=positive_float, default=600.0,
                        help="seconds before one run is killed (default 600)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")


class Workload:
    """One program: its command, its input files, and what it reports itself."""

    def __init__(self, name: str, cmd: list[str], stdin: str | None = None,
                 note: str = "", setup: Any = None) -> None:
        self.name, self.cmd, self.stdin, self.note = name, cmd, stdin, note
        self.setup = setup  # called before each run (e.g. removes the sqlite database)


def idle_seconds(text: str) -> float:
    """``--idle``: a finite number of seconds from 0 to 3600 (0: no idle sleep).

    Example:
        >>> idle_seconds("1.5"), idle_seconds("0")
        (1.5, 0.0)
        >>> idle_seconds("nan")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be a number of seconds from 0 to 3600, got 'nan'
    """
    if text.strip() in ("0", "0.0"):
        return 0.0
    try:
        v = positive_float(text)
    except argparse.ArgumentTypeError:
        v = -1.0
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 0 to 3600, got {text!r}")
    return v


def parse_workloads(text: str) -> list[str]:
    """The workloads named by ``--workloads``, in the order of ``WORKLOADS``.

    Example:
        >>> parse_workloads("threads, gcc")
        ['gcc', 'threads']
        >>> parse_workloads("git")
        Traceback (most recent call last):
        ...
        ValueError: --workloads 'git': unknown workload 'git'; choose from git-log, gcc, ...
    """
    names = [w.strip() for w in text.split(",")]
    for w in names:
        if w not in WORKLOADS:
            raise ValueError(f"--workloads {text!r}: unknown workload {w!r}; choose from "
                             f"{', '.join(WORKLOADS)}")
    return [w for w in WORKLOADS if w in names]


def _git_repo(path: str | None) -> str | None:
    try:
        r = subprocess.run(["git", "-C", path or os.getcwd(), "rev-parse", "--show-toplevel"],
                           capture_output=True, text=True, check=False)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def build_workloads(names: list[str], work: Path, args: argparse.Namespace) -> tuple[list[Workload],
                                                                                     list[str]]:
    """The runnable workloads among ``names`` (files prepared under ``work``), and
    a line for each one skipped and why."""
    quick = args.quick
    out: list[Workload] = []
    skipped: list[str] = []
    idle = f"{args.idle:g}"
    for name in names:
        if name == "git-log":
            repo = _git_repo(args.git_repo)
            if repo is None or shutil.which("git") is None:
                skipped.append(f"git-log: no git repository at {args.git_repo or os.getcwd()!r} "
                               "(name one with --git-repo)")
                continue
            n = ["-n", "40"] if quick else []
            out.append(Workload(name, ["git", "-C", repo, "log", "-p", "--no-color", *n],
                                note=f"git log -p over {repo}"))
        elif name == "gcc":
            cc = shutil.which("gcc")
            if cc is None:
                skipped.append("gcc: gcc not found")
                continue
            src = work / "unit.c"
            src.write_text(gcc_source(60 if quick else 1500))
            out.append(Workload(name, [cc, "-O2", "-c", str(src), "-o", str(work / "unit.o")],
                                note=f"gcc -O2 -c of {1500 if not quick else 60} generated functions"))
        elif name == "numpy":
            script = work / "numpy_temps.py"
            script.write_text(NUMPY_PY)
            out.append(Workload(name, [sys.executable, str(script), "1" if quick else "6", idle],
                                note="pandas/NumPy temporaries of 160 KB to 8 MB"))
        elif name == "sqlite":
            rows = 5000 if quick else 400_000
            sql = work / "bulk.sql"
            sql.write_text(SQLITE_SQL.format(rows=rows))
            db = work / "bulk.db"

            def remove_db(db: Path = db) -> None:
                for p in (db, Path(str(db) + "-journal")):
                    p.unlink(missing_ok=True)
            shell = shutil.which("sqlite3")
            if shell:
                cmd = [shell, str(db)]
                how = "the sqlite3 shell"
            else:
                script = work / "sqlite_bulk.py"
                script.write_text(SQLITE_PY)
                cmd = [sys.executable, str(script), str(db)]
                how = "Python's sqlite3 module"
            out.append(Workload(name, cmd, stdin=str(sql), setup=remove_db,
                                note=f"{rows:,} rows inserted and indexed with {how}"))
        elif name == "threads":
            cc = shutil.which("cc") or shutil.which("gcc")
            if cc is None:
                skipped.append("threads: no C compiler to build the program")
                continue
            src = work / "threads.c"
            src.write_text(THREADS_C)
            exe = work / "threads"
            r = subprocess.run([cc, "-O2", "-pthread", str(src), "-o", str(exe)],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                skipped.append(f"threads: the program did not build: {r.stderr.strip()[-200:]}")
                continue
            nthreads, blocks = (64, 200) if quick else (1000, 2000)
            out.append(Workload(name, [str(exe), str(nthreads), "16", str(blocks), idle],
                                note=f"{nthreads:,} threads, 16 at a time, {blocks:,} blocks each"))
    return out, skipped


def _reported(stdout: str, key: str) -> int | None:
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].lstrip("-").isdigit():
            v = int(parts[1])
            return v * 1024 if v >= 0 else None
    return None


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def run(args: argparse.Namespace) -> int:
    """Run ``tlalloc bench footprint``; returns the exit status."""
    try:
        names = parse_workloads(args.workloads)
        tl = args.tlalloc
        if tl is not None and not os.path.isfile(tl):
            raise ValueError(f"--tlalloc {tl!r}: not a file")
        tl = os.path.abspath(tl) if tl else installed_preload()
        preloads = parse_preloads(args.preload, tl)
        wanted = [w.strip() for w in args.allocators.split(",")]
        if "" in wanted:
            raise ValueError(f"--allocators {args.allocators!r}: an empty name")
        allocators = detect_allocators(preloads, wanted)
        if args.purge_thread:
            if "tlalloc" not in allocators:
                raise ValueError("--purge-thread: tlalloc is not among --allocators")
            allocators[PURGE_VARIANT] = {
                "lib": allocators["tlalloc"]["lib"],
                "how": f"{allocators['tlalloc']['how']} with {PURGE_ENV}=1",
                "env": {PURGE_ENV: "1"}}
    except ValueError as exc:
        print(f"tlalloc bench footprint: {exc}", file=sys.stderr)
        return 2
    timer = gnu_time()
    print(f"machine: {describe_machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if timer is None:
        print("note: /usr/bin/time (GNU time) is missing: peak RSS includes this Python's own")
    for name, a in allocators.items():
        print(f"  {name}: {a['how']}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="tlalloc-footprint-") as tmp:
        workloads, skipped = build_workloads(names, Path(tmp), args)
        for line in skipped:
            print(f"skipped: {line}")
        order = list(allocators)
        failures = 0
        for rnd in range(args.rounds):
            for i, w in enumerate(workloads):
                k = (rnd + i) % len(order)
                for alloc in order[k:] + order[:k]:
                    if w.setup is not None:
                        w.setup()
                    env = {k: v for k, v in os.environ.items() if k != PURGE_ENV}
                    env.update(allocators[alloc].get("env", {}))
                    r = run_once(w.cmd, env, w.stdin, args.timeout, timer,
                                 preload=allocators[alloc]["lib"])
                    ok = r["status"] == 0 and not r["timed_out"]
                    if not ok:
                        failures += 1
                        print(f"  {w.name} under {alloc}: failed (status {r['status']}"
                              f"{', timed out' if r['timed_out'] else ''}): "
                              f"{r['stderr'].strip()[-300:]}", file=sys.stderr)
                    run_rec = {
                        "round": rnd, "ok": ok, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                        "maxrss_bytes": r["maxrss_bytes"], "minflt": r["minflt"],
                        "rss_after_free_bytes": _reported(r["stdout"], "rss_after_free_kib"),
                        "rss_after_idle_bytes": _reported(r["stdout"], "rss_after_idle_kib"),
                    }
                    results.setdefault(w.name, {}).setdefault(alloc, []).append(run_rec)
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    table, summary = summarize(workloads, results, order)
    print()
    print(table)
    if args.json:
        write_json(args.json, {"suite": "footprint", "rounds": args.rounds, "quick": args.quick,
                               "idle_s": args.idle, "allocators": allocators,
                               "workloads": {w.name: {"cmd": w.cmd, "note": w.note}
                                             for w in workloads},
                               "skipped": skipped, "runs": results, "summary": summary,
                               "machine": machine_info(),
                               "load_average_after": list(os.getloadavg())})
        print(f"wrote {args.json}")
    return 1 if failures else 0


def summarize(workloads: list[Workload], results: dict[str, dict[str, list[dict[str, Any]]]],
              order: list[str]) -> tuple[str, dict[str, Any]]:
    """The table printed at the end, and the same figures as a dict.

    Every allocator other than glibc is compared with glibc (glibc is the first
    column when it ran; otherwise the first allocator is the reference).

    Example:
        >>> w = [Workload("x", ["true"])]
        >>> runs = {"x": {"glibc": [{"round": 0, "ok": True, "wall_s": 2.0, "maxrss_bytes": 4 << 20,
        ...                           "rss_after_free_bytes": None, "rss_after_idle_bytes": None}],
        ...               "tlalloc": [{"round": 0, "ok": True, "wall_s": 1.0, "maxrss_bytes": 2 << 20,
        ...                           "rss_after_free_bytes": None, "rss_after_idle_bytes": None}]}}
        >>> table, s = summarize(w, runs, ["glibc", "tlalloc"])
        >>> s["x"]["tlalloc"]["peak_ratio"], s["x"]["tlalloc"]["speed_ratio"]
        (0.5, 2.0)
    """
    ref = "glibc" if "glibc" in order else order[0]
    others = [a for a in order if a != ref]
    rows = []
    summary: dict[str, Any] = {}
    mib = float(1 << 20)

    def by_round(runs: list[dict[str, Any]], key: str) -> dict[int, float]:
        return {r["round"]: float(r[key]) for r in runs if r["ok"] and r[key] is not None}

    for w in workloads:
        per = results.get(w.name, {})
        base = per.get(ref, [])
        b_peak, b_wall = by_round(base, "maxrss_bytes"), by_round(base, "wall_s")
        b_idle = by_round(base, "rss_after_idle_bytes")
        summary[w.name] = {ref: {"peak_bytes": _median(list(b_peak.values())),
                                 "wall_s": _median(list(b_wall.values())),
                                 "rss_after_idle_bytes": _median(list(b_idle.values())) if b_idle
                                 else None}}
        for alloc in others:
            runs = per.get(alloc, [])
            peak, wall = by_round(runs, "maxrss_bytes"), by_round(runs, "wall_s")
            idle_rss = by_round(runs, "rss_after_idle_bytes")
            common = sorted(set(peak) & set(b_peak))
            pr = (_median([peak[r] for r in common]) / _median([b_peak[r] for r in common])
                  if common else float("nan"))
            common_w = sorted(set(wall) & set(b_wall))
            sr = (_median([b_wall[r] for r in common_w]) / _median([wall[r] for r in common_w])
                  if common_w else float("nan"))
            pci = ratio_interval(peak, b_peak)
            sci = ratio_interval(b_wall, wall)
            idle_diff = None
            if idle_rss and b_idle:
                idle_diff = _median(list(idle_rss.values())) - _median(list(b_idle.values()))
            summary[w.name][alloc] = {
                "peak_bytes": _median(list(peak.values())), "wall_s": _median(list(wall.values())),
                "peak_ratio": pr, "peak_ratio_interval": pci, "speed_ratio": sr,
                "speed_ratio_interval": sci,
                "rss_after_idle_bytes": _median(list(idle_rss.values())) if idle_rss else None,
                "rss_after_idle_minus_ref_bytes": idle_diff,
            }

            def cell(v: float, ci: tuple[float, float] | None) -> str:
                return f"{v:.2f}x" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
            rows.append([
                w.name, alloc,
                f"{_median(list(b_peak.values())) / mib:.1f}",
                f"{_median(list(peak.values())) / mib:.1f}",
                cell(pr, pci),
                "-" if idle_diff is None else
                f"{_median(list(b_idle.values())) / mib:.1f} / {_median(list(idle_rss.values())) / mib:.1f}",
                cell(sr, sci),
            ])
    headers = ["workload", "allocator", f"{ref} peak MiB", "peak MiB", f"peak / {ref}",
               f"idle RSS MiB ({ref} / this)", f"speed vs {ref}"]
    notes = [f"  {w.name}: {w.note}" for w in workloads]
    text = format_table(headers, rows) + "\n" + "\n".join(
        ["peak: lower is better; speed: " + ref + "'s wall time over this allocator's, higher is "
         "better; idle RSS: after everything is freed and an idle sleep", *notes])
    return text, summary
