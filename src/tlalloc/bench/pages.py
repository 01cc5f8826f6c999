"""Huge pages and prefaulting: what memory placement is worth on this machine.

1. The cosine-similarity kernel on 768-d x 100,000 float32 candidates that live in
   an arena backed by 4 KiB pages, against the same in an arena backed by
   transparent huge pages (the arena is large enough to hold the whole block).
2. Arena creation plus the first pass over its region, with and without
   prefaulting, so that the cost of page faults shows where it is paid.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import tlalloc
from tlalloc import kernels
from tlalloc._report import format_table
from tlalloc.bench._common import describe_machine, machine_info, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench pages``."""
    parser.add_argument("--candidates", type=int, default=100_000, help="rows (default 100,000)")
    parser.add_argument("--dim", type=int, default=768, help="dimension (default 768)")
    parser.add_argument("--repeat", type=int, default=15, help="timed calls per variant")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")


def _thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            mode = fh.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return False
    return mode in ("always", "madvise")


def cosine_on_pages(n: int, d: int, repeat: int) -> dict[str, Any]:
    """Seconds per cosine call with candidates in a 4 KiB-page arena vs a THP arena.

    Calls alternate between the two so that machine noise hits both alike.

    Example:
        >>> r = cosine_on_pages(1000, 16, 2)
        >>> r["default_s"] > 0 and r["page_kind_huge"] in ("thp", "default")
        True
    """
    rng = np.random.default_rng(7)
    src = rng.standard_normal((n, d), dtype=np.float32)
    q = rng.standard_normal(d, dtype=np.float32)
    nbytes = src.nbytes + (4 << 20)
    arenas = {
        "default": tlalloc.Arena(nbytes, huge_pages="off"),
        "huge": tlalloc.Arena(nbytes, huge_pages="thp"),
    }
    cands = {}
    for key, arena in arenas.items():
        c = arena.empty((n, d), np.float32)
        c[:] = src
        cands[key] = c
    out = np.empty(n, np.float32)
    expected = kernels.cosine_similarity(q, src)
    times: dict[str, list[float]] = {"default": [], "huge": []}
    for key in cands:  # warm up, and check the answers
        kernels.cosine_similarity(q, cands[key], out=out)
        if not np.allclose(out, expected, rtol=1e-5, atol=1e-6):
            raise AssertionError(f"cosine results differ ({key} pages)")
    for _ in range(repeat):
        for key in ("default", "huge"):
            t0 = time.perf_counter()
            kernels.cosine_similarity(q, cands[key], out=out)
            times[key].append(time.perf_counter() - t0)
    result = {
        "rows": n,
        "dim": d,
        "bytes": src.nbytes,
        "default_s": min(times["default"]),
        "huge_s": min(times["huge"]),
        "default_median_s": float(np.median(times["default"])),
        "huge_median_s": float(np.median(times["huge"])),
        "page_kind_default": arenas["default"].stats()["page_kind"],
        "page_kind_huge": arenas["huge"].stats()["page_kind"],
    }
    del cands, c
    return result


def prefault_cost(nbytes: int, repeat: int) -> dict[str, Any]:
    """Best seconds to create an arena and to write its whole region once, with and
    without prefaulting.

    Example:
        >>> r = prefault_cost(1 << 20, 1)
        >>> r["prefault_create_s"] >= 0 and r["lazy_first_pass_s"] >= 0
        True
    """
    res: dict[str, list[float]] = {k: [] for k in
                                   ("lazy_create", "lazy_first_pass", "prefault_create",
                                    "prefault_first_pass")}
    for _ in range(repeat):
        for mode in ("lazy", "prefault"):
            t0 = time.perf_counter()
            a = tlalloc.Arena(nbytes, prefault=(mode == "prefault"))
            t1 = time.perf_counter()
            x = a.empty(nbytes, np.uint8)
            x[::4096] = 1  # one write per page: exactly the page faults, little else
            t2 = time.perf_counter()
            res[f"{mode}_create"].append(t1 - t0)
            res[f"{mode}_first_pass"].append(t2 - t1)
            del x
            a.reset()
            del a
    out: dict[str, Any] = {"bytes": nbytes}
    for k, v in res.items():
        out[f"{k}_s"] = min(v)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the page benchmarks and print their tables."""
    n, d, repeat = args.candidates, args.dim, args.repeat
    if args.quick:
        n, d, repeat = 5_000, 128, 3
    if n < 1 or d < 1 or repeat < 1:
        raise SystemExit("--candidates, --dim and --repeat must be positive")
    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    if not _thp_available():
        print("transparent huge pages are disabled in this kernel: the 'huge' arena gets 4 KiB pages")
    cos = cosine_on_pages(n, d, repeat)
    gain = cos["default_s"] / cos["huge_s"] - 1
    print(f"\ncosine similarity, {n:,} x {d} float32 candidates in an arena "
          f"({cos['bytes'] / 2**20:.0f} MiB), best of {repeat}:")
    print(format_table(["pages", "obtained", "ms per call (best)", "ms (median)"], [
        ["4 KiB", cos["page_kind_default"], cos["default_s"] * 1e3, cos["default_median_s"] * 1e3],
        ["huge (thp)", cos["page_kind_huge"], cos["huge_s"] * 1e3, cos["huge_median_s"] * 1e3],
    ]))
    print(f"huge pages: {gain * 100:+.1f}% throughput (best of runs)")
    pf = prefault_cost(max(cos["bytes"] // 4, 1 << 20), max(3, repeat // 3))
    print(f"\narena of {pf['bytes'] / 2**20:.0f} MiB: creation and first write to every page (best):")
    print(format_table(["mode", "create ms", "first pass ms", "total ms"], [
        ["lazy (default)", pf["lazy_create_s"] * 1e3, pf["lazy_first_pass_s"] * 1e3,
         (pf["lazy_create_s"] + pf["lazy_first_pass_s"]) * 1e3],
        ["TLALLOC_PREFAULT=1", pf["prefault_create_s"] * 1e3, pf["prefault_first_pass_s"] * 1e3,
         (pf["prefault_create_s"] + pf["prefault_first_pass_s"]) * 1e3],
    ]))
    if args.json:
        write_json(args.json, {"suite": "pages", "cosine": cos, "prefault": pf,
                               "huge_page_gain": gain, "machine": info})
        print(f"\nwrote {args.json}")
    return 0
