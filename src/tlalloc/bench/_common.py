"""Helpers shared by the benchmark suites: machine description, timing, intervals
(bootstrap over samples or paired rounds), optional progress bars, JSON output,
the graph inputs of the kernels and the BLAS thread limit. The suites' tables are
drawn by :mod:`tlalloc._report`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn


def machine_info() -> dict[str, Any]:
    """Describe the machine a benchmark ran on (CPU model, cores, versions).

    Example:
        >>> info = machine_info()
        >>> info["cpu_count"] >= 1
        True
    """
    import numpy as np

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count() or 1,
        "usable_cpus": usable,
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "gil_disabled": bool(getattr(sys, "_is_gil_enabled", lambda: True)() is False),
        "numpy": np.__version__,
    }


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU, cores and versions.

    Example:
        >>> "cores" in describe_machine()
        True
    """
    info = info or machine_info()
    mem = info.get("memory_bytes")
    mem_s = f", {mem / 2**30:.0f} GiB" if mem else ""
    return (
        f"{info['cpu_model'] or 'unknown CPU'}, {info['usable_cpus']} usable cores{mem_s}; "
        f"Python {info['python']}, NumPy {info['numpy']}, {info['platform']}"
    )


# ---- Command-line arguments: one rule per kind of argument, shared by every suite.
#
# Numbers are written in ASCII digits only (Python's int() and float() also take
# "\uff14" or "1_000", which no user means), must be finite (float() takes "nan",
# "inf" and "1e309"), and counts and durations must be positive. Each rule is an
# argparse ``type=`` function, so that argparse reports a bad value before any work.

_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose usage errors are one line, exit status 2.

    Example:
        >>> p = ArgumentParser(prog="tlalloc bench")
        >>> _ = p.add_argument("--repeat", type=positive_int)
        >>> p.parse_args(["--repeat", "0"])
        Traceback (most recent call last):
        SystemExit: 2
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


class BadArgument(SystemExit):
    """A bad command-line value found after parsing: exit status 2 and a one-line
    ``message`` (printed by ``tlalloc``'s entry point, which catches it).

    Example:
        >>> e = BadArgument("--threads must not be empty")
        >>> e.code, str(e)
        (2, '--threads must not be empty')
    """

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _int(text: str) -> int:
    s = text.strip()
    if not _INT_RE.fullmatch(s):
        raise argparse.ArgumentTypeError(f"must be a whole number in ASCII digits, got {text!r}")
    return int(s)


def positive_int(text: str) -> int:
    """A count: a whole number >= 1 (``--repeat``, ``--rounds``, sizes).

    Example:
        >>> positive_int("3")
        3
        >>> positive_int("0")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be a whole number >= 1, got '0'
    """
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return v


def nonnegative_int(text: str) -> int:
    """A count where 0 means "the default" (``--numpy-blas-threads``).

    Example:
        >>> nonnegative_int("0")
        0
        >>> nonnegative_int("-1")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be a whole number >= 0, got '-1'
    """
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A duration or other amount: a finite number > 0 (``--duration``, ``--seconds``).

    Example:
        >>> positive_float("0.5")
        0.5
        >>> positive_float("nan")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be a finite number > 0, got 'nan'
    """
    s = text.strip()
    v = float(s) if _FLOAT_RE.fullmatch(s) else math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def size_list(text: str, name: str = "--sizes") -> list[int]:
    """Comma-separated sizes, each by the library's size rule
    (:func:`tlalloc.parse_size`: ``"8192"``, ``"256KiB"``, ``"4MiB"``, ``"2MB"``) and at
    least 1 byte; an empty item or list is refused. A bad value ends the command
    (exit status 2) with a message naming the option and the value.

    Example:
        >>> size_list("8KiB, 4MiB,2MB")
        [8192, 4194304, 2000000]
        >>> try:
        ...     size_list("8KiB,,4MiB")
        ... except BadArgument as exc:
        ...     print(exc.code, exc)
        2 argument --sizes: must be comma-separated sizes of at least 1 byte, got '8KiB,,4MiB'
    """
    from tlalloc._config import parse_size  # the library's rule (the C parser)

    try:
        sizes = [parse_size(item, name) for item in text.split(",")]
    except (TypeError, ValueError):
        sizes = []
    if not sizes or min(sizes) < 1:
        raise BadArgument(
            f"argument {name}: must be comma-separated sizes of at least 1 byte, got {text!r}"
        )
    return sizes


def thread_counts(text: str, limit: int = 1024) -> list[int]:
    """A ``--threads`` list such as ``"1,2,4"``: sorted, distinct counts from 1 to ``limit``.

    Every item must be a count: ``"1,,2"``, ``"1,"`` and ``"\uff14"`` are refused.

    Example:
        >>> thread_counts("4, 1,2,2")
        [1, 2, 4]
        >>> thread_counts("1,,2")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be comma-separated whole numbers from 1 to 1024, got '1,,2'
    """
    try:
        counts = [_int(t) for t in text.split(",")]
    except argparse.ArgumentTypeError:
        counts = []
    if not counts or any(not 1 <= c <= limit for c in counts):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated whole numbers from 1 to {limit}, got {text!r}"
        )
    return sorted(set(counts))


def parse_threads(text: str | Sequence[int], limit: int = 1024) -> list[int]:
    """:func:`thread_counts` for a value read outside argparse: a bad value ends the
    command (exit status 2) with a message naming the option and the value.

    Example:
        >>> parse_threads("4, 1,2,2")
        [1, 2, 4]
        >>> parse_threads([2, 1])
        [1, 2]
    """
    if not isinstance(text, str):  # already parsed by argparse (type=thread_counts)
        return sorted(set(text))
    try:
        return thread_counts(text, limit)
    except argparse.ArgumentTypeError as exc:
        raise BadArgument(f"argument --threads: {exc}") from None


def check_finite_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every option of ``parser`` still declared with a bare ``type=int`` or
    ``type=float`` the shared rule (:func:`positive_int`, :func:`positive_float`).

    Example:
        >>> p = ArgumentParser(prog="x")
        >>> _ = p.add_argument("--duration", type=float)
        >>> check_finite_numbers(p)
        >>> p.parse_args(["--duration", "1e309"])
        Traceback (most recent call last):
        SystemExit: 2
    """
    for action in parser._actions:
        if action.type is int:
            action.type = positive_int
        elif action.type is float:
            action.type = positive_float


def output_path_problem(path: str) -> str | None:
    """Why a file could not be written at ``path``, or None if it can.

    Tried before the work that fills it, without truncating an existing file:
    an existing file is opened for appending, a new one created and removed.

    Example:
        >>> output_path_problem("/no/such/dir/x.json")
        "the folder '/no/such/dir' does not exist"
        >>> output_path_problem(".") is not None
        True
    """
    if path == "":
        return "the path is empty"
    if os.path.isdir(path):
        return "it is a folder"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"the folder {folder!r} does not exist"
    try:
        if os.path.exists(path):
            with open(path, "a", encoding="utf-8"):
                pass
        else:
            with open(path, "x", encoding="utf-8"):
                pass
            os.unlink(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def best_time(fn: Callable[[], Any], *, repeat: int = 5, min_time: float = 0.05) -> float:
    """Best seconds per call of ``fn`` over ``repeat`` rounds of at least ``min_time``.

    Example:
        >>> best_time(lambda: None, repeat=2, min_time=0.001) > 0
        True
    """
    number = 1
    while True:  # calibrate the number of calls per round
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time or number >= 1 << 30:
            break
        number *= 2 if dt <= 0 else max(2, min(10, int(min_time / dt) + 1))
    best = dt / number
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


class Progress:
    """A progress bar from ``tqdm`` when the ``progress`` extra is installed, else silent.

    Example:
        >>> with Progress(total=2, desc="x", enabled=False) as p:
        ...     p.update()
    """

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self._bar = None
        self.skipped = False
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                self.skipped = True
            else:
                self._bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` plus the machine description to ``path`` as JSON.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "r.json")
        >>> write_json(p, {"x": 1})
        >>> json.load(open(p))["x"]
        1
    """
    data = dict(payload)
    data.setdefault("machine", machine_info())
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:  # checked before the run, but a disk can fill up (/dev/full)
        raise BadArgument(f"cannot write {path!r}: {exc.strerror or exc}") from None


def compare_phrase(ratio: float, spread: float, other: str) -> str:
    """How a throughput ratio (ours / ``other``'s) reads to a user: equal when
    it lies within the run-to-run ``spread`` of the two cells.

    Example:
        >>> compare_phrase(1.03, 0.05, "np.empty")
        'equal to np.empty (1.03x, within the 5% run-to-run spread)'
        >>> compare_phrase(2.0, 0.05, "malloc"), compare_phrase(0.5, 0.05, "malloc")
        ('2.00x the throughput of malloc', '2.00x slower than malloc')
    """
    if abs(ratio - 1) <= spread:
        return f"equal to {other} ({ratio:.2f}x, within the {spread:.0%} run-to-run spread)"
    if ratio > 1:
        return f"{ratio:.2f}x the throughput of {other}"
    return f"{1 / ratio:.2f}x slower than {other}"


# ---- The timing harness and the statistics of its samples.


def _own_copy(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    """A new function object with new closure cells (the same contents), so that
    threads calling it do not all write the reference counts of one function and
    its cells on every call (without the GIL, such writes contend). Callables
    that are not plain Python functions are returned as they are."""
    if not isinstance(fn, types.FunctionType):
        return fn
    cells = None
    if fn.__closure__ is not None:
        cells = tuple(types.CellType(c.cell_contents) for c in fn.__closure__)
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, cells)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def measure(
    fn: Callable[[int], Any] | None,
    threads: int,
    duration: float,
    *,
    make: Callable[[], Callable[[int], Any]] | None = None,
) -> dict[str, float]:
    """Run an operation ``op(i)`` from ``threads`` threads for about ``duration`` seconds.

    Nothing is shared between the threads on the path of an operation: each thread
    has its own copy of the operation (``make()`` builds one per thread; else a
    copy of ``fn`` with its own closure cells), its own counters, and its own
    deadline, read from the clock once per block of operations (blocks grow until
    they last about a millisecond). Each thread warms up with one call (creating
    its thread arena), then all start together at a barrier.

    Returns total operations per second (``ops_per_s``: operations over the
    time from the first thread's start to the last one's end), ``elapsed_s``,
    ``ops`` and each thread's own CPU time per operation averaged over the threads
    (``cpu_ns_per_op``, from ``time.thread_time``): on a loaded machine the
    throughput falls with the load, the CPU time only grows if the threads slow
    each other down (a lock, a contended cache line).

    Example:
        >>> r = measure(lambda i: None, 2, 0.01)
        >>> r["ops"] > 0 and r["ops_per_s"] > 0 and r["cpu_ns_per_op"] > 0
        True
    """
    if make is None:
        if fn is None:
            raise TypeError("measure() needs fn or make")
        base = fn

        def make() -> Callable[[int], Any]:
            return _own_copy(base)

    if not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a finite number of seconds > 0, got {duration!r}")
    results: list[tuple[int, float, float, float] | None] = [None] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)
    block_target = min(1e-3, duration / 50)

    def worker(k: int, step: int, op_maker: Callable[[], Callable[[int], Any]]) -> None:
        try:
            op = op_maker()
            clock, cpu_clock = time.perf_counter, time.thread_time
            op(k)
            barrier.wait()
            t0, c0 = clock(), cpu_clock()
            deadline, last = t0 + duration, t0
            i, n, block = k, 0, 1
            while True:
                for _ in range(block):
                    op(i)
                    i += step
                n += block
                now = clock()
                if now >= deadline:
                    break
                if now - last < block_target:  # blocks of about a millisecond
                    block *= 2
                last = now
            results[k] = (n, cpu_clock() - c0, t0, now)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            errors.append(exc)
            barrier.abort()

    ts = [
        threading.Thread(target=worker, args=(k, threads, make), name=f"bench-{k}")
        for k in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    done = [r for r in results if r is not None]
    ops = sum(r[0] for r in done)
    elapsed = max(r[3] for r in done) - min(r[2] for r in done)
    per_thread = [c / n * 1e9 for n, c, _, _ in done if n]
    return {
        "ops": ops,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed if elapsed > 0 else float("nan"),
        "cpu_ns_per_op": sum(per_thread) / len(per_thread) if per_thread else float("nan"),
    }


INTERVAL_MIN_SAMPLES = 5  # fewer samples (or paired rounds) give no interval
_RESAMPLES = 1000


def median_interval(samples: Sequence[float]) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the median of ``samples`` (fixed seed:
    the same samples always give the same interval); None with fewer than
    ``INTERVAL_MIN_SAMPLES``. The error bars of the plots.

    Example:
        >>> median_interval([2.0] * 6)
        (2.0, 2.0)
        >>> median_interval([1.0, 2.0]) is None
        True
    """
    n = len(samples)
    if n < INTERVAL_MIN_SAMPLES:
        return None
    rng = random.Random(20261130)
    meds = sorted(statistics.median(rng.choices(samples, k=n)) for _ in range(_RESAMPLES))
    return float(meds[int(0.025 * _RESAMPLES)]), float(meds[int(0.975 * _RESAMPLES) - 1])


def ratio_interval(num: dict[int, float], den: dict[int, float]) -> tuple[float, float] | None:
    """95% interval of median(num) / median(den), each a value per round.

    A percentile bootstrap over the rounds that both have, resampled in pairs:
    the two runs of one round share the machine's state of the moment, so
    resampling rounds keeps what they share. The generator's seed is fixed,
    so the same runs always give the same interval. None with fewer than
    ``INTERVAL_MIN_SAMPLES`` rounds in common (an interval from 3 runs says little).

    Example:
        >>> t = {r: 1.0 + 0.01 * r for r in range(8)}
        >>> lo, hi = ratio_interval({r: 2 * v for r, v in t.items()}, t)
        >>> round(lo, 3), round(hi, 3)
        (2.0, 2.0)
        >>> ratio_interval({0: 1.0}, {0: 2.0}) is None
        True
    """
    rounds = sorted(set(num) & set(den))
    n = len(rounds)
    if n < INTERVAL_MIN_SAMPLES:
        return None
    rng = random.Random(20261130)
    ratios = []
    for _ in range(_RESAMPLES):
        pick = [rounds[rng.randrange(n)] for _ in range(n)]
        d = statistics.median([den[r] for r in pick])
        if d > 0:
            ratios.append(statistics.median([num[r] for r in pick]) / d)
    if len(ratios) < _RESAMPLES // 2:
        return None
    ratios.sort()
    return float(ratios[int(0.025 * len(ratios))]), float(ratios[int(0.975 * len(ratios)) - 1])


def verdict(
    interval: tuple[float, float] | None, ratio: float, better: str, worse: str, other: str
) -> str:
    """A ratio (ours / ``other``'s, >1 is better for us) in words: equal when its 95%
    interval holds 1, no verdict without an interval.

    Example:
        >>> verdict((0.97, 1.06), 1.01, "the throughput of", "slower than", "malloc")
        'equal to malloc (1.01x, 95% interval 0.97-1.06 holds 1)'
        >>> verdict((1.8, 2.2), 2.0, "the throughput of", "slower than", "malloc")
        '2.00x the throughput of malloc (95% interval 1.80-2.20)'
        >>> verdict((0.4, 0.5), 0.45, "the throughput of", "slower than", "malloc")
        '2.22x slower than malloc (95% interval 2.00-2.50)'
        >>> verdict(None, 2.0, "the throughput of", "slower than", "malloc")
        'no verdict against malloc (2.00x, too few samples for an interval)'
    """
    if interval is None:
        return f"no verdict against {other} ({ratio:.2f}x, too few samples for an interval)"
    lo, hi = interval
    iv = f"95% interval {lo:.2f}-{hi:.2f}"
    if lo <= 1 <= hi:
        return f"equal to {other} ({ratio:.2f}x, {iv} holds 1)"
    if lo > 1:
        return f"{ratio:.2f}x {better} {other} ({iv})"
    # stated the other way round, the interval too: 1/hi to 1/lo
    return f"{1 / ratio:.2f}x {worse} {other} (95% interval {1 / hi:.2f}-{1 / lo:.2f})"


def load_average() -> str:
    """The machine's load averages (1, 5, 15 minutes) as text, printed before and
    after each run so that a reader knows what else ran.

    Example:
        >>> load_average().startswith("load average")
        True
    """
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def random_graph(n: int, degree: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """A CSR graph of ``n`` nodes, ``degree`` random out-edges each, weights in [0, 1).

    Example:
        >>> indptr, indices, weights = random_graph(10, 3)
        >>> int(indptr[-1]), indices.dtype.name, weights.dtype.name
        (30, 'int32', 'float32')
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n * degree + 1, degree, dtype=np.int64)
    indices = rng.integers(0, n, n * degree, dtype=np.int32)
    weights = rng.random(n * degree, dtype=np.float32)
    return indptr, indices, weights


_SET_NAMES = (
    "scipy_openblas_set_num_threads64_",
    "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads",
)
_GET_NAMES = (
    "scipy_openblas_get_num_threads64_",
    "openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads",
)


def _openblas() -> list[tuple[str, Any, Any]]:
    """(path, set, get) thread-count functions of every OpenBLAS loaded, NumPy's first.

    Other packages bring their own copy (faiss-cpu's wheel does): limiting only
    the first one found could leave NumPy's at its default thread count.
    """
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln}
    except OSError:
        return []
    found = []
    for path in sorted(paths, key=lambda p: ("scipy_openblas" not in p and "numpy" not in p, p)):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, n) for n in _SET_NAMES if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _GET_NAMES if hasattr(lib, n)), None)
        if setter is not None and getter is not None:
            found.append((path, setter, getter))
    return found


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[int | None]:
    """Limit every loaded OpenBLAS (NumPy's, and any other package's copy) to ``n``
    threads inside the block (None: leave them).

    Yields the thread count of NumPy's OpenBLAS in effect, or None if it cannot be
    known (another BLAS, or no OpenBLAS symbols found).

    Example:
        >>> with blas_threads(1) as n:
        ...     n in (1, None)
        True
    """
    libs = _openblas()
    if not libs:
        yield None
        return
    before = [int(getter()) for _, _, getter in libs]
    if n is not None:
        for _, setter, _ in libs:
            setter(n)
    try:
        yield int(libs[0][2]())
    finally:
        for (_, setter, _), b in zip(libs, before, strict=True):
            setter(b)
