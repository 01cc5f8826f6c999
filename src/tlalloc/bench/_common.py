"""Helpers shared by the benchmark suites: machine description, timing, tables,
optional progress bars and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any


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


def parse_threads(text: str, limit: int = 1024) -> list[int]:
    """Parse a ``--threads`` value such as ``"1,2,4"`` into sorted, distinct counts.

    A bad value ends the command with a message naming the option and the value.

    Example:
        >>> parse_threads("4, 1,2,2")
        [1, 2, 4]
    """
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"--threads must be comma-separated integers, got {text!r}") from None
    if not counts or any(not 1 <= c <= limit for c in counts):
        raise SystemExit(f"--threads must list counts between 1 and {limit}, got {text!r}")
    return sorted(set(counts))


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


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render rows as an aligned plain-text table.

    Example:
        >>> print(format_table(["a", "b"], [[1, 2.5]]))
        a  b
        -  ---
        1  2.5
    """
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in body:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths).rstrip())
    for r in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


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
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")


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
