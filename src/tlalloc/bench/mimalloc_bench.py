"""mimalloc-bench programs under LD_PRELOAD: tlalloc against glibc, jemalloc, mimalloc, tcmalloc.

Runs the benchmark programs of an already built checkout of the public
daanx/mimalloc-bench (this project neither ships nor builds them: build its
``bench/CMakeLists.txt`` targets yourself into ``ROOT/out/bench``), each with the
arguments its own ``bench.sh`` gives it, once per allocator: the C library's
malloc (no preload), and every shared library named with ``--preload NAME=PATH``
(by default Debian's ``libjemalloc2``, ``libmimalloc2.0`` and tcmalloc when
installed), and ``libtlalloc.so``: ``--tlalloc PATH``, or by default the one
installed with this package (``tlalloc preload-path``).

Rounds are interleaved: round r runs every benchmark once under every allocator,
in an order rotated by r, so that drift in the machine's load hits each alike.
For every run it records the wall time, user+sys time and the child's peak RSS
(``wait4``), checks the exit status and the program's output (a result line that
parses, a factorisation that multiplies out, the same output as under glibc for
the deterministic programs), and takes the time ``bench.sh`` reports: the wall
time, except for the fixed-duration programs (larson, xmalloc-test, rptest,
glibc-thread) whose relative time comes from their own output.

The table gives, per benchmark and thread count, the subject's (tlalloc's) speed
ratio to each allocator (the other's time over the subject's: above 1 means the
subject is faster; medians over the rounds), its peak RSS and RSS ratio to
mimalloc's, then the geometric means and the pool's goals (speed at least glibc's
and 0.8x mimalloc's, peak RSS at most 1.2x mimalloc's). From 5 rounds on,
each ratio also gets its 95% interval (``ratio_interval``: a bootstrap over the
rounds), and each goal lists the cells whose interval holds its bound ("within
noise"): on 2 shared cores some programs' runs differ by half from one run to
the next, and a miss by 3% in 3 rounds is not a miss.

``--live`` also runs every program under ``liblivecount.so`` (installed with
the package; ``bench/c/lib/livecount.c``), placed before the allocator in
``LD_PRELOAD``: it counts the usable bytes the program holds and records their
peak, so that the table can give each allocator's peak RSS per peak live byte.
Where a program's own live set differs from run to run (rptest's peak is
5 MiB in one run and 13 MiB in the next, under any allocator), that ratio
says what peak RSS alone cannot. The library costs every allocation a call
to ``malloc_usable_size`` and a thread-local add, under every allocator alike;
speeds measured with ``--live`` include it.

``--metric cpu`` compares CPU time instead (``cpu_metric``): the user+sys
time of the fixed-work programs, and for the fixed-duration ones their
reported time times the share of the run's wall time they spent on a CPU. On
a machine shared with other work, a program that waits for a core loses wall
time but not CPU time: there the wall-clock ratios of one program differ by
half from round to round, the CPU ratios far less. It counts what the
allocator costs, not what it waits for (an allocator whose threads sleep on a
lock looks better by it, one whose threads spin does not). Every run records
both; ``--from-json`` prints an earlier run's table again, by either metric.

``--short`` applies the reductions listed in ``SHORT_CHANGES`` (shorter fixed
durations, fewer repetitions) to fit a 2-core machine's time budget; every run
prints the exact arguments used.

Example:
    $ tlalloc bench mimalloc-bench --bench-dir /tmp/mimalloc-bench --rounds 3 --json mb.json
    $ tlalloc bench mimalloc-bench --bench-dir /tmp/mimalloc-bench --tlalloc build/c/libtlalloc.so
    $ tlalloc bench mimalloc-bench --bench-dir /tmp/mimalloc-bench --quick
    $ tlalloc bench mimalloc-bench --bench-dir /tmp/mimalloc-bench --benchmarks rptest --live
    $ tlalloc bench mimalloc-bench --from-json mb.json --metric cpu
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlalloc._report import format_table
from tlalloc.bench._common import (
    INTERVAL_MIN_SAMPLES,
    describe_machine,
    machine_info,
    ratio_interval,
    write_json,
)
from tlalloc.bench._preload import (
    detect_allocators,
    gnu_time,
    installed_preload,
    parse_preloads,
    run_once,
)

CFRAC_NUMBER = "17545186520507317056371138836327483792789528"


@dataclass(frozen=True)
class Bench:
    """One benchmark of bench.sh: how to run it and how to read its output.

    ``args`` is a list of strings where ``{P}`` is the thread count and ``{SRC}``
    the checkout's ``bench`` folder (inputs); ``threaded`` says whether the
    thread count applies; ``metric`` turns the run's output and wall time into
    the time bench.sh reports, raising ValueError when the output is wrong.
    """

    name: str
    program: str
    args: tuple[str, ...]
    threaded: bool
    metric: Callable[[str, float, int], float]
    deterministic: bool = False  # output must match across allocators
    stdin: str | None = None  # a file under {SRC}
    max_threads: int | None = None
    # What the metric is per (for --metric cpu): "work" (a fixed amount of work
    # timed by the wall clock), "wall" (a rate over a fixed wall-clock time) or
    # "cpu" (a rate per CPU second already).
    per: str = "work"


def cpu_metric(bench: Bench, metric: float, wall_s: float, cpu_s: float) -> float:
    """The run's time per unit of work counted in CPU seconds instead of wall
    seconds (``--metric cpu``): what a loaded machine changes least, since a
    program that waits for a core loses wall time but not CPU time.

    A fixed amount of work: the user+sys time. A rate over a fixed wall-clock
    time (larson: operations per second of its run): the time bench.sh reports
    times the share of the wall time the program spent on a CPU. A rate per
    CPU second (rptest): unchanged.

    Example:
        >>> larson = next(b for b in BENCHES if b.name == "larson")
        >>> cpu_metric(larson, 10.0, 4.0, 2.0)  # half the wall time on a CPU
        5.0
        >>> cpu_metric(BENCHES[0], 3.0, 3.0, 1.5)  # cfrac: its CPU seconds
        1.5
    """
    if bench.per == "work":
        return cpu_s
    if bench.per == "wall":
        return metric * cpu_s / wall_s if wall_s > 0 else float("nan")
    return metric


def _wall(out: str, wall: float, threads: int) -> float:
    return wall


def _larson(out: str, wall: float, threads: int) -> float:
    m = re.search(r"relative time: ([0-9.]+)s", out)
    if not m:
        raise ValueError("no 'relative time:' line")
    return float(m.group(1))


def _xmalloc(out: str, wall: float, threads: int) -> float:
    m = re.search(r"^rtime: ([0-9.]+)", out, re.M)
    if not m:
        raise ValueError("no 'rtime:' line")
    return float(m.group(1))


def _rptest(out: str, wall: float, threads: int) -> float:
    m = re.search(r"\.\.\.(\d+) memory ops", out)
    if not m or int(m.group(1)) <= 0:
        raise ValueError("no '...N memory ops' result")
    return 2_000_000 / int(m.group(1))  # bench.sh: relative time = 2000000 / ops


def _glibc_thread(out: str, wall: float, threads: int) -> float:
    m = re.search(r"^(\d+) iterations", out, re.M)
    if not m or int(m.group(1)) <= 0:
        raise ValueError("no 'N iterations' result")
    return 1e9 / int(m.group(1))  # bench.sh: relative time = 1e9 / iterations


def _cfrac(out: str, wall: float, threads: int) -> float:
    m = re.search(r"^(\d+) = ([\d *]+)$", out, re.M)
    if not m:
        raise ValueError("no factorisation line")
    product = 1
    for f in m.group(2).split("*"):
        product *= int(f)
    if str(product) != m.group(1) or m.group(1) != CFRAC_NUMBER:
        raise ValueError(f"wrong factorisation: {m.group(0)!r}")
    return wall


def _alloc_test(out: str, wall: float, threads: int) -> float:
    m = re.search(r"(\d+) threads made (\d+) alloc/dealloc operations", out)
    if not m or int(m.group(1)) != threads or int(m.group(2)) != threads * 100_000_000:
        raise ValueError("no 'N threads made N*100000000 alloc/dealloc operations' line")
    return wall


def _expect(pattern: str) -> Callable[[str, float, int], float]:
    rx = re.compile(pattern, re.M)

    def check(out: str, wall: float, threads: int) -> float:
        if not rx.search(out):
            raise ValueError(f"output lacks {pattern!r}")
        return wall
    return check


# bench.sh's command for each test (function run_test), {P} being its $procs.
BENCHES: tuple[Bench, ...] = (
    Bench("cfrac", "cfrac", (CFRAC_NUMBER,), False, _cfrac, deterministic=True),
    Bench("espresso", "espresso", ("{SRC}/espresso/largest.espresso",), False, _wall),  # prints nothing
    Bench("barnes", "barnes", (), False, _expect(r"^COMPUTETIME"), stdin="barnes/input"),
    Bench("larson", "larson", ("5", "8", "1000", "5000", "100", "4141", "{P}"), True, _larson,
          per="wall"),
    Bench("larson-sized", "larson-sized", ("5", "8", "1000", "5000", "100", "4141", "{P}"), True,
          _larson, per="wall"),
    Bench("xmalloc-test", "xmalloc-test", ("-w", "{P}", "-t", "5", "-s", "64"), True, _xmalloc,
          per="wall"),
    Bench("mstress", "mstress", ("{P}", "50", "25"), True, _expect(r"^start with \d+ threads")),
    Bench("rptest", "rptest", ("{P}", "0", "1", "2", "500", "1000", "100", "8", "16000"), True,
          _rptest, per="cpu"),
    Bench("cache-scratch", "cache-scratch", ("{P}", "1000", "1", "2000000", "{P}"), True, _wall),
    Bench("cache-thrash", "cache-thrash", ("{P}", "1000", "1", "2000000", "{P}"), True, _wall),
    Bench("glibc-simple", "glibc-simple", (), False, _wall),
    Bench("glibc-thread", "glibc-thread", ("{P}",), True, _glibc_thread, per="wall"),
    Bench("alloc-test", "alloc-test", ("{P}",), True, _alloc_test, max_threads=16),
    Bench("malloc-large", "malloc-large", (), False, _wall),
    Bench("mleak10", "mleak", ("5",), False, _expect(r"^Using \d+ threads")),
    Bench("mleak100", "mleak", ("50",), False, _expect(r"^Using \d+ threads")),
)
BENCH_NAMES = tuple(b.name for b in BENCHES)

# --short: what changes from bench.sh's arguments, to fit the runs into a time budget
# on 2 cores. Each entry: benchmark -> (replacement args, why). The fixed-duration
# programs report a rate, so a shorter run measures the same quantity with more noise.
SHORT_CHANGES: dict[str, tuple[tuple[str, ...], str]] = {
    "larson": (("2", "8", "1000", "5000", "100", "4141", "{P}"), "2 s runs instead of 5"),
    "larson-sized": (("2", "8", "1000", "5000", "100", "4141", "{P}"), "2 s runs instead of 5"),
    "xmalloc-test": (("-w", "{P}", "-t", "2", "-s", "64"), "2 s runs instead of 5"),
    "rptest": (("{P}", "0", "1", "2", "50", "1000", "100", "8", "16000"),
               "50 loops instead of 500 (it reports ops per CPU second)"),
    "cache-scratch": (("{P}", "1000", "1", "500000", "{P}"), "500,000 repetitions instead of 2,000,000"),
    "cache-thrash": (("{P}", "1000", "1", "500000", "{P}"), "500,000 repetitions instead of 2,000,000"),
}
SHORT_MAX_THREADS = {"alloc-test": 2}  # 100M operations per thread, whatever the count
QUICK_BENCHES = ("cfrac", "larson", "xmalloc-test", "mstress", "glibc-thread", "mleak10")
# --quick: a smoke run of a few seconds per allocator.
QUICK_CHANGES: dict[str, tuple[str, ...]] = {
    "larson": ("1", "8", "1000", "5000", "100", "4141", "{P}"),
    "xmalloc-test": ("-w", "{P}", "-t", "1", "-s", "64"),
}


@dataclass
class Config:
    """One benchmark at one thread count, with the exact command line used."""

    bench: Bench
    threads: int
    args: tuple[str, ...]
    note: str = ""
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.bench.name}" + (f" x{self.threads}" if self.bench.threaded else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench mimalloc-bench``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> a = p.parse_args(["--bench-dir", "/x", "--preload", "foo=/lib/foo.so"])
        >>> a.preload, a.rounds
        (['foo=/lib/foo.so'], 3)
    """
    parser.add_argument("--bench-dir", default=None,
                        help="checkout of daanx/mimalloc-bench (its bench/ inputs; binaries in "
                             "out/bench unless --bin-dir); required unless --from-json")
    parser.add_argument("--bin-dir", default=None, help="folder of the built benchmark programs")
    parser.add_argument("--tlalloc", default=None, metavar="PATH",
                        help="libtlalloc.so (same as --preload tlalloc=PATH; default: the one "
                             "installed with the package, as 'tlalloc preload-path' prints)")
    parser.add_argument("--preload", action="append", default=[], metavar="NAME=PATH",
                        help="an allocator to preload (repeatable); jemalloc, mimalloc and "
                             "tcmalloc are found in the system library folders when not given")
    parser.add_argument("--allocators", default=None,
                        help="which allocators to run, in this order (default: glibc, then those "
                             "found, then the preloads given)")
    parser.add_argument("--subject", default="tlalloc",
                        help="the allocator the ratios are about (default tlalloc)")
    parser.add_argument("--benchmarks", default=",".join(BENCH_NAMES),
                        help=f"subset of {','.join(BENCH_NAMES)}")
    parser.add_argument("--threads", default="1,2,4,16",
                        help="thread counts for the threaded benchmarks (default 1,2,4,16)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--metric", choices=("time", "cpu"), default="time",
                        help="what the speed ratios compare: bench.sh's time (default) or the "
                             "CPU time per unit of work, which a loaded machine changes less "
                             "(fixed-work programs: user+sys; larson and the other fixed-duration "
                             "programs: their time times their CPU share of the wall time)"),
    parser.add_argument("--deadline", default=None, metavar="HH:MM",
                        help="after the first round, start no benchmark whose first-round runs "
                             "say it would end past this UTC time (later rounds may be partial)")
    parser.add_argument("--short", action="store_true",
                        help="the reduced arguments of SHORT_CHANGES (printed) to fit 2 cores")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {','.join(QUICK_BENCHES)}, threads 1,2, 1 round, "
                             "shorter durations")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds before a run is killed and counted as failed (default 600)")
    parser.add_argument("--live", nargs="?", const=True, default=None, metavar="PATH",
                        help="also measure each run's peak live bytes with liblivecount.so (PATH, or "
                             "by default the one installed with the package), preloaded before the "
                             "allocator, and give peak RSS per live byte")
    parser.add_argument("--from-json", default=None, metavar="PATH",
                        help="run nothing: summarize the runs a --json file of an earlier run "
                             "holds (with --metric, --subject, --markdown)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


LIVECOUNT_LIBRARY = "liblivecount.so"


def livecount_path(path: str | None = None) -> str:
    """Path of ``liblivecount.so``: ``path`` when given (it must be a file), else
    the one installed with this package (``tlalloc/_lib``).

    Raises ``ValueError`` when ``path`` is not a file (the rule of
    ``--preload``), ``FileNotFoundError`` when the package has none.

    Example:
        >>> livecount_path("/nonexistent/liblivecount.so")
        Traceback (most recent call last):
        ...
        ValueError: --live '/nonexistent/liblivecount.so': not a file
        >>> livecount_path("")
        Traceback (most recent call last):
        ...
        ValueError: --live '': not a file
    """
    if path is not None:
        if not os.path.isfile(path):
            raise ValueError(f"--live {path!r}: not a file")
        return os.path.abspath(path)
    from tlalloc.pool import installed_library
    return installed_library(LIVECOUNT_LIBRARY, "make tools")


def read_live_peak(path: str) -> int | None:
    """The peak live bytes liblivecount.so wrote to ``path`` (its first 8 bytes,
    a native unsigned integer), or None when it wrote none.

    Example:
        >>> import struct
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     _ = f.write(struct.pack("=Q", 5 << 20)); f.flush()
        ...     read_live_peak(f.name), read_live_peak("/nonexistent")
        (5242880, None)
    """
    try:
        with open(path, "rb") as f:
            data = f.read(8)
    except OSError:
        return None
    if len(data) != 8:
        return None
    v = int.from_bytes(data, sys.byteorder)
    return v or None


def make_configs(names: list[str], threads: list[int], short: bool, quick: bool) -> list[Config]:
    """The (benchmark, thread count, arguments) list, in bench.sh's test order.

    Example:
        >>> [c.label for c in make_configs(["larson", "cfrac"], [1, 2], False, False)]
        ['cfrac', 'larson x1', 'larson x2']
        >>> make_configs(["larson"], [4], False, False)[0].args
        ('5', '8', '1000', '5000', '100', '4141', '4')
    """
    configs = []
    for b in BENCHES:
        if b.name not in names:
            continue
        args, note = b.args, ""
        limit = b.max_threads
        if short and b.name in SHORT_CHANGES:
            args, note = SHORT_CHANGES[b.name]
        if short and b.name in SHORT_MAX_THREADS:
            limit = SHORT_MAX_THREADS[b.name]
            note = f"threads <= {limit} ({limit}x100M operations at most)"
        if quick and b.name in QUICK_CHANGES:
            args, note = QUICK_CHANGES[b.name], "quick"
        for t in (threads if b.threaded else [1]):
            if limit is not None and t > limit:
                continue
            configs.append(Config(b, t, tuple(a.replace("{P}", str(t)) for a in args), note))
    return configs


def _check(cfg: Config, r: dict[str, Any]) -> tuple[float | None, str | None]:
    """(bench.sh's time, error) of one run."""
    if r["timed_out"]:
        return None, "timed out"
    if r["status"] != 0:
        sig = -r["status"]
        what = (f"killed by signal {signal.Signals(sig).name}" if r["status"] < 0 and
                sig in signal.Signals._value2member_map_ else f"exit status {r['status']}")
        return None, what + (f": {r['stderr'].strip()[-200:]}" if r["stderr"].strip() else "")
    try:
        return cfg.bench.metric(r["stdout"] + "\n" + r["stderr"], r["wall_s"], cfg.threads), None
    except ValueError as exc:
        return None, f"bad output ({exc}): {(r['stdout'] + r['stderr']).strip()[-200:]!r}"


def _geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _deadline_ts(text: str | None) -> float | None:
    if text is None:
        return None
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"--deadline {text!r}: expected HH:MM (UTC)")
    now = time.time()
    day = now - now % 86400
    ts = day + int(m.group(1)) * 3600 + int(m.group(2)) * 60
    return ts if ts > now - 43200 else ts + 86400


def run_matrix(configs: list[Config], allocators: dict[str, dict[str, Any]], bin_dir: Path,
               src_dir: Path, rounds: int, timeout: float, deadline: float | None = None,
               log: Callable[[str], None] = lambda s: None, live: str | None = None) -> int:
    """Run every config under every allocator, ``rounds`` interleaved rounds;
    fills ``config.runs``. Returns the number of rounds begun.

    Round r runs the configs in order and, for config i, the allocators rotated
    by r + i, so no allocator always runs first or after the same neighbour.
    With a ``deadline`` (a time.time() value), the first round always runs
    whole and later rounds take the configs from the quickest (by their
    first-round runs) and stop before one that would end past the deadline, so
    that as many configs as possible get the extra runs. With ``live`` (the
    path of liblivecount.so), every run also records its peak live bytes.
    """
    names = list(allocators)
    for cfg in configs:
        cfg.runs = {a: [] for a in names}
    base_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    timer_cmd = gnu_time()
    done = 0
    first_round_s = [0.0] * len(configs)
    stop = False
    # rptest writes files into its working folder: each run gets a scratch one.
    scratch = tempfile.TemporaryDirectory(prefix="mimalloc-bench-")
    workdir = scratch.name
    for rnd in range(rounds):
        order = list(range(len(configs)))
        if rnd > 0 and deadline is not None:
            order.sort(key=lambda j: first_round_s[j])
        for i in order:
            cfg = configs[i]
            if rnd > 0 and deadline is not None and time.time() + first_round_s[i] > deadline:
                log(f"stopping in round {rnd + 1} before {cfg.label}: it would end past the deadline")
                stop = True
                break
            done = rnd + 1
            t_cfg = time.time()
            k = (rnd + i) % len(names)
            for a in names[k:] + names[:k]:
                args = [x.replace("{SRC}", str(src_dir)) for x in cfg.args]
                stdin = str(src_dir / cfg.bench.stdin) if cfg.bench.stdin else None
                lib = allocators[a]["lib"]
                env, live_file = base_env, None
                if live:
                    lib = f"{live} {lib}" if lib else live
                    live_file = os.path.join(workdir, "live-peak")
                    with open(live_file, "wb"):
                        pass
                    env = {**base_env, "TLALLOC_LIVE_FILE": live_file}
                r = run_once([str(bin_dir / cfg.bench.program), *args], env, stdin, timeout,
                             timer_cmd, lib, workdir)
                live_peak = read_live_peak(live_file) if live_file else None
                metric, error = _check(cfg, r)
                out_hash = hashlib.sha256(r["stdout"].encode()).hexdigest()[:16]
                cpu_time = None if metric is None else cpu_metric(cfg.bench, metric, r["wall_s"],
                                                                   r["cpu_s"])
                entry = {"round": rnd, "time_s": metric, "cpu_time_s": cpu_time,
                         "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                         "maxrss_bytes": r["maxrss_bytes"], "minflt": r["minflt"],
                         "nvcsw": r["nvcsw"], "nivcsw": r["nivcsw"],
                         "error": error, "stdout_sha256": out_hash}
                if live:
                    entry["live_peak_bytes"] = live_peak
                cfg.runs[a].append(entry)
                log(f"round {rnd + 1} {cfg.label:18s} {a:10s} "
                    + (f"{metric:8.3f} s  rss {r['maxrss_bytes'] / 2**20:7.1f} MiB"
                       + (f"  live {live_peak / 2**20:7.1f} MiB" if live_peak else "")
                       if error is None else f"FAILED: {error}"))
            if rnd == 0:
                first_round_s[i] = time.time() - t_cfg
        if stop:
            break
    scratch.cleanup()
    # The deterministic programs must print the same under every allocator.
    for cfg in configs:
        if not cfg.bench.deterministic or "glibc" not in cfg.runs:
            continue
        ref = {e["stdout_sha256"] for e in cfg.runs["glibc"] if e["error"] is None}
        for entries in cfg.runs.values():
            for e in entries:
                if e["error"] is None and ref and e["stdout_sha256"] not in ref:
                    e["error"] = "output differs from glibc's"
    return done


def summarize(configs: list[Config], subject: str, metric: str = "time") -> dict[str, Any]:
    """Per config: median time and peak RSS per allocator, the subject's ratios
    (speed: other's time / subject's, per round and of the medians; RSS: subject's /
    other's), and failures; then the geometric means and the goals. ``metric``
    "time" takes bench.sh's time of each run, "cpu" its CPU time (cpu_metric).

    Example:
        >>> b = BENCHES[0]
        >>> c = Config(b, 1, b.args, runs={
        ...     "glibc": [{"time_s": 2.0, "maxrss_bytes": 10, "error": None, "round": 0}],
        ...     "tlalloc": [{"time_s": 1.0, "maxrss_bytes": 20, "error": None, "round": 0}]})
        >>> s = summarize([c], "tlalloc")
        >>> s["rows"][0]["speed"]["glibc"], s["rows"][0]["rss_ratio"]["glibc"]
        (2.0, 2.0)
    """
    if metric not in ("time", "cpu"):
        raise ValueError(f"metric={metric!r}: expected 'time' or 'cpu'")
    tkey = "time_s" if metric == "time" else "cpu_time_s"
    rows = []
    names = list(configs[0].runs) if configs else []
    for cfg in configs:
        ok = {a: [e for e in es if e["error"] is None and e.get(tkey) is not None]
              for a, es in cfg.runs.items()}
        med_t = {a: _median([e[tkey] for e in es]) for a, es in ok.items()}
        med_rss = {a: _median([e["maxrss_bytes"] for e in es]) for a, es in ok.items()}
        failures = {a: [e["error"] for e in es if e["error"]] for a, es in cfg.runs.items()}
        row: dict[str, Any] = {
            "benchmark": cfg.bench.name, "threads": cfg.threads if cfg.bench.threaded else None,
            "args": list(cfg.args), "note": cfg.note, "time_s": med_t, "peak_rss_bytes": med_rss,
            "failures": {a: f for a, f in failures.items() if f}, "speed": {}, "speed_rounds": {},
            "rss_ratio": {}, "runs": len(ok.get(subject, []))}
        # Per allocator and round: time, peak RSS, RSS per live byte (--live);
        # for the medians and the 95% intervals (ratio_interval).
        by_round = {a: ({e["round"]: e[tkey] for e in es},
                        {e["round"]: e["maxrss_bytes"] for e in es},
                        {e["round"]: e["maxrss_bytes"] / e["live_peak_bytes"] for e in es
                         if e.get("live_peak_bytes")}) for a, es in ok.items()}
        # --live: median peak live bytes and median RSS per live byte of each allocator.
        per_live = {a: list(rounds[2].values()) for a, rounds in by_round.items()}
        if any(per_live.values()):
            row["live_peak_bytes"] = {
                a: _median([e["live_peak_bytes"] for e in es if e.get("live_peak_bytes")])
                for a, es in ok.items() if per_live[a]}
            row["rss_per_live"] = {a: _median(v) for a, v in per_live.items() if v}
            row["rss_per_live_ratio"] = {}
        if subject in ok and ok[subject]:
            subj_t, subj_rss, subj_rpl = by_round[subject]
            for a in names:
                if a == subject or not ok.get(a):
                    continue
                a_t, a_rss, a_rpl = by_round[a]
                row["speed"][a] = med_t[a] / med_t[subject]
                row["speed_rounds"][a] = [e[tkey] / subj_t[e["round"]] for e in ok[a]
                                          if e["round"] in subj_t]
                row["rss_ratio"][a] = med_rss[subject] / med_rss[a] if med_rss[a] else float("nan")
                intervals = {"speed_ci": ratio_interval(a_t, subj_t),
                             "rss_ratio_ci": ratio_interval(subj_rss, a_rss)}
                rpl = row.get("rss_per_live", {})
                if subject in rpl and a in rpl:
                    row["rss_per_live_ratio"][a] = rpl[subject] / rpl[a]
                    intervals["rss_per_live_ratio_ci"] = ratio_interval(subj_rpl, a_rpl)
                for key, ci in intervals.items():
                    if ci is not None:
                        row.setdefault(key, {})[a] = ci
        rows.append(row)
    others = [a for a in names if a != subject]
    geo = {a: _geomean([r["speed"][a] for r in rows if a in r["speed"]]) for a in others}
    geo_rss = {a: _geomean([r["rss_ratio"][a] for r in rows if a in r["rss_ratio"]]) for a in others}
    goals: dict[str, Any] = {}
    if "glibc" in others:
        goals["at least glibc's speed everywhere"] = _cell_goal(rows, "speed", "glibc", 1.0, "below")
    if "mimalloc" in others:
        goals["geomean speed >= mimalloc's"] = {"met": geo["mimalloc"] >= 1.0,
                                                "value": geo["mimalloc"]}
        goals["no benchmark below 0.8x mimalloc's speed"] = _cell_goal(rows, "speed", "mimalloc",
                                                                       0.8, "below")
        goals["peak RSS <= 1.2x mimalloc's everywhere"] = _cell_goal(rows, "rss_ratio", "mimalloc",
                                                                     1.2, "over")
        if any("rss_per_live_ratio" in r for r in rows):
            goals["(--live) peak RSS per live byte <= 1.2x mimalloc's everywhere"] = _cell_goal(
                rows, "rss_per_live_ratio", "mimalloc", 1.2, "over")
    failed = [f"{_row_label(r)} {a}" for r in rows for a in r["failures"]]
    goals["no failed run"] = {"met": not failed, "failed": failed}
    return {"subject": subject, "metric": metric, "rows": rows, "geomean_speed": geo,
            "geomean_rss_ratio": geo_rss, "goals": goals}


def _cell_goal(rows: list[dict[str, Any]], key: str, a: str, bound: float,
               side: str) -> dict[str, Any]:
    """A goal every row must meet: row[key][a] at least ``bound`` (side
    "below" lists the rows under it) or at most ``bound`` (side "over").
    "within noise" lists the rows, met or not, whose 95% interval
    (ratio_interval, with enough rounds) holds the bound.

    Example:
        >>> rows = [{"benchmark": "b", "threads": 2, "speed": {"glibc": 0.97},
        ...          "speed_ci": {"glibc": (0.93, 1.02)}}]
        >>> _cell_goal(rows, "speed", "glibc", 1.0, "below")
        {'met': False, 'below': ['b x2'], 'within noise': ['b x2']}
    """
    def misses(v: float | None) -> bool:
        if v is None or not math.isfinite(v):
            return False
        return v < bound if side == "below" else v > bound
    missed = [_row_label(r) for r in rows if misses(r[key].get(a))]
    noisy = [_row_label(r) for r in rows
             if (ci := r.get(key + "_ci", {}).get(a)) is not None and ci[0] <= bound <= ci[1]]
    return {"met": not missed, side: missed, "within noise": noisy}


def _row_label(r: dict[str, Any]) -> str:
    return r["benchmark"] + (f" x{r['threads']}" if r["threads"] else "")


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2f}"


def _fmt_ci(r: dict[str, Any], key: str, a: str) -> str:
    """ " (lo-hi)": the 95% interval of r[key][a], if the rounds gave one."""
    ci = r.get(key + "_ci", {}).get(a)
    return "" if ci is None else f" ({ci[0]:.2f}-{ci[1]:.2f})"


_CI_NOTE = ("(a-b) after a ratio: its 95% interval, a bootstrap over the rounds "
            f"(given from {INTERVAL_MIN_SAMPLES} rounds on)")


def format_summary(s: dict[str, Any], allocators: list[str]) -> str:
    """The results as text: one row per benchmark and thread count, then the
    geometric means and the goals.

    Example:
        >>> print(format_summary({"subject": "t", "rows": [], "geomean_speed": {},
        ...                       "geomean_rss_ratio": {}, "goals": {}}, ["t"]))  # doctest: +ELLIPSIS
        benchmark  threads  t s...
    """
    subject = s["subject"]
    others = [a for a in allocators if a != subject]
    rss_cols = [a for a in others if a in ("mimalloc", "glibc")]
    live = any("live_peak_bytes" in r for r in s["rows"])
    live_cols = rss_cols if live else []
    headers = ["benchmark", "threads", f"{subject} s", *[f"vs {a}" for a in others],
               f"{subject} RSS MiB", *[f"RSS/{a}" for a in rss_cols],
               *([f"{subject} live MiB", f"{subject} RSS/live"] if live else []),
               *[f"RSS/live /{a}" for a in live_cols], "range vs mimalloc", "runs"]
    rows = []
    for r in s["rows"]:
        t = r["time_s"].get(subject)
        rng = r["speed_rounds"].get("mimalloc", [])
        lv = r.get("live_peak_bytes", {}).get(subject)
        live_cells = ["-" if lv is None else f"{lv / 2**20:.1f}",
                      _fmt_ratio(r.get("rss_per_live", {}).get(subject))] if live else []
        rows.append([
            r["benchmark"], r["threads"] or "-", "-" if t is None or not math.isfinite(t) else f"{t:.3f}",
            *[_fmt_ratio(r["speed"].get(a)) + _fmt_ci(r, "speed", a) for a in others],
            "-" if subject not in r["peak_rss_bytes"] else f"{r['peak_rss_bytes'][subject] / 2**20:.1f}",
            *[_fmt_ratio(r["rss_ratio"].get(a)) + _fmt_ci(r, "rss_ratio", a) for a in rss_cols],
            *live_cells, *[_fmt_ratio(r.get("rss_per_live_ratio", {}).get(a))
                           + _fmt_ci(r, "rss_per_live_ratio", a) for a in live_cols],
            f"{min(rng):.2f}-{max(rng):.2f}" if rng else "-", r.get("runs", "-")])
    lines = [format_table(headers, rows)]
    if any(k.endswith("_ci") for r in s["rows"] for k in r):
        lines.append(_CI_NOTE)
    if s["geomean_speed"]:
        lines.append("geometric mean of the speed ratios: " + ", ".join(
            f"vs {a} {_fmt_ratio(v)}" for a, v in s["geomean_speed"].items()))
        lines.append("geometric mean of the peak RSS ratios: " + ", ".join(
            f"vs {a} {_fmt_ratio(v)}" for a, v in s["geomean_rss_ratio"].items()))
    for goal, g in s["goals"].items():
        extra = {k: v for k, v in g.items() if k != "met" and v}
        detail = "; ".join(f"{k}: {_fmt_ratio(v) if isinstance(v, float) else ', '.join(v)}"
                           for k, v in extra.items())
        lines.append(f"goal {'MET    ' if g['met'] else 'NOT MET'} {goal}"
                     + (f" ({detail})" if detail else ""))
    for r in s["rows"]:
        for a, errs in r["failures"].items():
            lines.append(f"FAILED {_row_label(r)} under {a}: {len(errs)} run(s): {errs[0]}")
    return "\n".join(lines)


def format_markdown(s: dict[str, Any], allocators: list[str]) -> str:
    """The results as a Markdown table (for BENCHMARKS.md); ratios that miss a
    goal of the pool are in bold (speed below glibc's or below 0.8x mimalloc's,
    peak RSS above 1.2x mimalloc's).

    Example:
        >>> row = {"benchmark": "larson", "threads": 2, "time_s": {"t": 1.0}, "speed": {"glibc": 0.9},
        ...        "speed_rounds": {}, "rss_ratio": {}, "peak_rss_bytes": {"t": 2**20}, "runs": 2}
        >>> print(format_markdown({"subject": "t", "rows": [row], "geomean_speed": {}}, ["glibc", "t"]))
        | benchmark | threads | t s | vs glibc | t peak RSS MiB | runs |
        |---|---|---|---|---|---|
        | larson | 2 | 1.000 | **0.90** | 1.0 | 2 |
    """
    subject = s["subject"]
    others = [a for a in allocators if a != subject]
    rss_cols = [a for a in others if a == "mimalloc"]
    live = any("live_peak_bytes" in r for r in s["rows"])
    live_cols = rss_cols if live else []
    headers = ["benchmark", "threads", f"{subject} s", *[f"vs {a}" for a in others],
               f"{subject} peak RSS MiB", *[f"RSS vs {a}" for a in rss_cols],
               *([f"{subject} peak live MiB"] if live else []),
               *[f"RSS per live byte vs {a}" for a in live_cols], "runs"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]

    def speed(r: dict[str, Any], a: str) -> str:
        v = r["speed"].get(a)
        txt = _fmt_ratio(v)
        bad = v is not None and math.isfinite(v) and (
            (a == "glibc" and v < 1.0) or (a == "mimalloc" and v < 0.8))
        return (f"**{txt}**" if bad else txt) + _fmt_ci(r, "speed", a)

    def rss_ratio(r: dict[str, Any], key: str, a: str) -> str:  # bold above 1.2
        v = r.get(key, {}).get(a)
        txt = f"**{_fmt_ratio(v)}**" if v is not None and v > 1.2 else _fmt_ratio(v)
        return txt + _fmt_ci(r, key, a)
    for r in s["rows"]:
        t = r["time_s"].get(subject)
        rss = r["peak_rss_bytes"].get(subject)
        cells = [r["benchmark"], str(r["threads"] or "-"),
                 "-" if t is None or not math.isfinite(t) else f"{t:.3f}",
                 *[speed(r, a) for a in others],
                 "-" if rss is None or not math.isfinite(rss) else f"{rss / 2**20:.1f}"]
        cells += [rss_ratio(r, "rss_ratio", a) for a in rss_cols]
        if live:
            lv = r.get("live_peak_bytes", {}).get(subject)
            cells.append("-" if lv is None else f"{lv / 2**20:.1f}")
        cells += [rss_ratio(r, "rss_per_live_ratio", a) for a in live_cols]
        cells.append(str(r.get("runs", "-")))
        lines.append("| " + " | ".join(cells) + " |")
    if s.get("geomean_speed"):
        cells = ["**geometric mean**", "", "", *[_fmt_ratio(s["geomean_speed"].get(a)) for a in others],
                 "", *[_fmt_ratio(s["geomean_rss_ratio"].get(a)) for a in rss_cols],
                 *([""] if live else []), *["" for _ in live_cols], ""]
        lines.append("| " + " | ".join(cells) + " |")
    if any(k.endswith("_ci") for r in s["rows"] for k in r):
        lines += ["", _CI_NOTE + "."]
    return "\n".join(lines)


def configs_from_json(data: dict[str, Any]) -> list[Config]:
    """The configs, with their runs, of a ``--json`` file's contents; a run
    without a CPU time (a file written before there was one) gets it from its
    wall and CPU seconds (cpu_metric).

    Example:
        >>> run = {"round": 0, "time_s": 8.0, "wall_s": 4.0, "cpu_s": 2.0, "error": None,
        ...        "maxrss_bytes": 1}
        >>> c = configs_from_json({"runs": [{"benchmark": "larson", "threads": 2,
        ...                                  "args": ["2"], "runs": {"glibc": [run]}}]})
        >>> c[0].label, c[0].runs["glibc"][0]["cpu_time_s"]
        ('larson x2', 4.0)
    """
    by_name = {b.name: b for b in BENCHES}
    configs = []
    for item in data["runs"]:
        name = item["benchmark"]
        if name not in by_name:
            raise ValueError(f"--from-json: unknown benchmark {name!r}")
        bench = by_name[name]
        runs: dict[str, list[dict[str, Any]]] = {}
        for a, entries in item["runs"].items():
            runs[a] = []
            for e in entries:
                e = dict(e)
                if e.get("cpu_time_s") is None and e.get("time_s") is not None:
                    e["cpu_time_s"] = cpu_metric(bench, e["time_s"], e["wall_s"], e["cpu_s"])
                runs[a].append(e)
        configs.append(Config(bench, int(item["threads"]), tuple(item["args"]), runs=runs))
    return configs


def _from_json(args: argparse.Namespace) -> int:
    with open(args.from_json) as f:
        data = json.load(f)
    configs = configs_from_json(data)
    allocators = list(data.get("allocators") or (configs[0].runs if configs else []))
    if args.subject not in allocators:
        print(f"tlalloc bench mimalloc-bench: --subject {args.subject!r} is not among the "
              f"allocators of {args.from_json} ({', '.join(allocators)})", file=sys.stderr)
        return 2
    s = summarize(configs, args.subject, args.metric)
    print(f"{args.from_json}: {data.get('rounds', '?')} round(s); load average "
          f"{data.get('load_start', '?')} at start, {data.get('load_end', '?')} at end; "
          f"speed from {'CPU time' if args.metric == 'cpu' else 'bench.sh' + chr(39) + 's time'}")
    print(format_summary(s, allocators))
    if args.markdown:
        print()
        print(format_markdown(s, allocators))
    return 0


def _commit(root: Path) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                           text=True, check=False)
    except OSError:
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tlalloc bench mimalloc-bench``.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> run(p.parse_args(["--bench-dir", "/nonexistent"]))
        2
    """
    if args.from_json:
        return _from_json(args)
    if args.bench_dir is None:
        raise ValueError("--bench-dir is required (the mimalloc-bench checkout) unless --from-json")
    root = Path(args.bench_dir)
    bin_dir = Path(args.bin_dir) if args.bin_dir else root / "out" / "bench"
    src_dir = root / "bench"
    if args.rounds < 1:
        raise ValueError(f"--rounds={args.rounds!r} must be at least 1")
    if not args.timeout > 0:
        raise ValueError(f"--timeout={args.timeout!r} must be positive")
    deadline = _deadline_ts(args.deadline)
    try:
        live = None if args.live is None else livecount_path(None if args.live is True else args.live)
    except FileNotFoundError as exc:
        print(f"tlalloc bench mimalloc-bench: {exc}", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    bad = [n for n in names if n not in BENCH_NAMES]
    if bad or not names:
        raise ValueError(f"--benchmarks {args.benchmarks!r}: unknown {', '.join(bad) or '(none)'}; "
                         f"choose from {', '.join(BENCH_NAMES)}")
    from tlalloc.bench._common import parse_threads
    threads = parse_threads(args.threads)
    rounds = args.rounds
    if args.quick:
        names = [n for n in names if n in QUICK_BENCHES] or list(QUICK_BENCHES)
        threads = [t for t in threads if t <= 2] or [1]
        rounds = 1
    tlalloc_lib = args.tlalloc
    if tlalloc_lib is None and not any(p.startswith("tlalloc=") for p in args.preload):
        tlalloc_lib = installed_preload()
    preloads = parse_preloads(args.preload, tlalloc_lib)
    wanted = [a.strip() for a in args.allocators.split(",")] if args.allocators else None
    allocators = detect_allocators(preloads, wanted)
    configs = make_configs(names, threads, args.short, args.quick)
    missing = sorted({c.bench.program for c in configs if not (bin_dir / c.bench.program).is_file()})
    if missing:
        print(f"tlalloc bench mimalloc-bench: {bin_dir} lacks {', '.join(missing)}: build "
              "mimalloc-bench's bench/CMakeLists.txt targets there first (or pass --bin-dir)",
              file=sys.stderr)
        return 2
    if args.subject not in allocators:
        print(f"tlalloc bench mimalloc-bench: --subject {args.subject!r} is not among the "
              f"allocators ({', '.join(allocators)}); pass --tlalloc PATH or --subject NAME",
              file=sys.stderr)
        return 2
    commit = _commit(root)
    print(f"mimalloc-bench {commit or '(not a git checkout)'} at {root}; binaries {bin_dir}")
    print(f"machine: {describe_machine()}; load average at start {_load()}")
    print("allocators:")
    for a, info in allocators.items():
        print(f"  {a:10s} {info['how']}")
    if live:
        print(f"peak live bytes: {live}, preloaded before each allocator")
    print("runs (bench.sh's arguments" + (", with --short's changes" if args.short else "") + "):")
    for c in configs:
        print(f"  {c.label:18s} {c.bench.program} {' '.join(c.args)}" + (f"   [{c.note}]" if c.note else ""))
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)
    load_start = _load()
    interrupted = False
    try:
        done = run_matrix(configs, allocators, bin_dir, src_dir, rounds, args.timeout, deadline, log,
                          live)
    except KeyboardInterrupt:  # Ctrl-C: report what has run (run_once ended the child)
        interrupted = True
        done = max((e["round"] + 1 for c in configs for es in c.runs.values() for e in es), default=0)
        log(f"interrupted in round {done}: the results below are of the runs finished so far")
    load_end = _load()
    s = summarize(configs, args.subject, args.metric)
    print()
    print(f"{done} interleaved round(s) in {time.time() - t0:.0f} s; load average {load_start} at "
          f"start, {load_end} at end. Speed = other's "
          + ("CPU time (--metric cpu)" if args.metric == "cpu" else "time")
          + f" / {args.subject}'s (>1: {args.subject} "
          f"faster), medians over rounds; RSS/x = {args.subject}'s peak RSS / x's.")
    print(format_summary(s, list(allocators)))
    if args.markdown:
        print()
        print(format_markdown(s, list(allocators)))
    if args.json:
        write_json(args.json, {
            "machine": machine_info(), "mimalloc_bench_commit": commit, "bench_dir": str(root),
            "allocators": allocators, "rounds": done, "short": args.short, "quick": args.quick,
            "load_start": load_start, "load_end": load_end, "summary": s, "interrupted": interrupted,
            "livecount": live,
            "peak_rss_from": "GNU time %M" if gnu_time() else "wait4 (at least this Python's RSS)",
            "runs": [{"benchmark": c.bench.name, "threads": c.threads, "args": list(c.args),
                      "runs": c.runs} for c in configs]})
    return 0 if s["goals"].get("no failed run", {}).get("met", True) else 1
