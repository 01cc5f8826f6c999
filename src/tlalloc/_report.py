"""Plain-text report formatting shared by the package's reports.

:func:`tlalloc.summary.summary`, :meth:`tlalloc.dask.ClusterStats.format` and
the benchmark suites (``tlalloc bench``) render their tables here: sizes in
binary units, aligned columns, the frame of a report, and the columns of a
thread arena's statistics (names as in docs/naming.md).

Example:
    >>> print(format_table(ARENA_HEAD[:3], [arena_row({"capacity_bytes": 1 << 20})[:3]]))
    capacity  used  peak
    --------  ----  ----
    1MiB      0B    0B
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

WIDTH = 100  # characters of a report's rules
RULE, THIN = "=" * WIDTH, "-" * WIDTH


def format_size(nbytes: int | float, exact: bool = False) -> str:
    """Bytes in the largest binary unit that keeps them readable. With ``exact=True``
    the text reads back (``tlalloc.parse_size``) as exactly ``nbytes``, as a value for
    ``TLALLOC_ARENA_SIZE`` must: a size no unit shows exactly is given in bytes.

    Example:
        >>> format_size(4 << 20), format_size(1536), format_size(100), format_size(3 << 30)
        ('4MiB', '1.50KiB', '100B', '3GiB')
        >>> format_size(4097), format_size(4097, exact=True)
        ('4.00KiB', '4097B')
    """
    n = float(nbytes)
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            q = n / scale
            if q == int(q):
                return f"{int(q)}{unit}"
            if not exact or round(q, 2) * scale == n:
                return f"{q:.2f}{unit}"
            break
    return f"{int(n)}B" if n == int(n) else f"{n:.1f}B"


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


def indent(text: str) -> list[str]:
    """The lines of ``text``, each indented by two spaces (a section of a report).

    Example:
        >>> indent("a\\nb")
        ['  a', '  b']
    """
    return ["  " + line for line in text.splitlines()]


def _util(d: Mapping[str, Any]) -> str:
    cap = d.get("capacity_bytes", 0)
    return f"{100 * d.get('peak_bytes', 0) / cap:.1f}%" if cap else "-"


def _rate(d: Mapping[str, Any]) -> str:
    n, o = d.get("num_allocations", 0), d.get("num_overflows", 0)
    return f"{100 * o / n:.2f}%" if n else ("all" if o else "-")


# The columns of arena_row: one arena's (or a sum of arenas') statistics.
ARENA_HEAD = ["capacity", "used", "peak", "util", "allocs", "overflows", "ovf rate", "resets", "fallback"]


def arena_row(d: Mapping[str, Any]) -> list[str]:
    """The cells under ARENA_HEAD of a statistics dict (``tlalloc.stats()``, a
    thread's, or a sum); a missing figure reads as 0.

    Example:
        >>> arena_row({"capacity_bytes": 4 << 20, "peak_bytes": 1 << 20, "num_allocations": 200,
        ...            "num_overflows": 1})
        ['4MiB', '0B', '1MiB', '25.0%', '200', '1', '0.50%', '0', '0B']
    """
    return [
        format_size(d.get("capacity_bytes", 0)),
        format_size(d.get("used_bytes", 0)),
        format_size(d.get("peak_bytes", 0)),
        _util(d),
        str(d.get("num_allocations", 0)),
        str(d.get("num_overflows", 0)),
        _rate(d),
        str(d.get("num_resets", 0)),
        format_size(d.get("fallback_bytes", 0)),
    ]


def thread_table(threads: Sequence[Mapping[str, Any]]) -> str:
    """One row per thread arena: its thread, whether the thread is alive, the
    ARENA_HEAD columns, its page kind and NUMA policy.

    Example:
        >>> thread_table([{"thread_name": "MainThread", "thread_id": 1}]).splitlines()[2].split()[:4]
        ['MainThread', '1', 'yes', '0B']
    """
    rows = []
    for t in threads:
        alive = "yes" if t.get("thread_alive", True) else "no"
        pages = str(t.get("page_kind", "-"))
        if t.get("page_kind_requested", pages) != pages:
            pages += f" (asked {t['page_kind_requested']})"
        numa = str(t.get("numa_policy", "-"))
        if t.get("numa_node", -1) not in (-1, None):
            numa += f"@{t['numa_node']}"
        rows.append([str(t.get("thread_name", "?")), str(t.get("thread_id", "-")), alive,
                     *arena_row(t), pages, numa])
    return format_table(["thread", "tid", "alive", *ARENA_HEAD, "pages", "numa"], rows)


__all__ = ["ARENA_HEAD", "RULE", "THIN", "WIDTH", "arena_row", "format_size", "format_table", "indent",
           "thread_table"]
