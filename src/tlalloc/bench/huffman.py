"""Huffman benchmark: block-parallel coding on a global-lock heap, per-thread pools, tlalloc.

Reproduces, measured, the program tlalloc grew from: the input is cut into
1 KiB blocks, 20 worker threads build a Huffman tree per block (every node a
small allocation) in batches, and the allocator is one of ``global-lock`` (one
2 MiB heap, first-fit free list, one mutex), ``pooled`` (a 32 KiB pool per
thread carved from that heap, bump without a lock) and ``tlalloc`` (the thread
arena, reset after each block). For every input (deterministic text-like data
of 1 MiB and 5 MiB, or ``--input FILE``) it prints time, speed-up over
``global-lock``, lock acquisitions and the reduction in locks, and checks that
every allocator's stream decodes to the input and that all streams are identical.

Example:
    $ tlalloc bench huffman
    $ tlalloc bench huffman --input big.txt --threads 8 --json huffman.json
"""

from __future__ import annotations

import argparse
import os
import random
import time
from typing import Any

from tlalloc import huffman
from tlalloc._config import parse_size
from tlalloc._report import format_table
from tlalloc.bench._common import (
    Progress,
    describe_machine,
    machine_info,
    size_list,
    thread_counts,
    write_json,
)

DEFAULT_SIZES = "1MiB,5MiB"
BASELINE = "global-lock"

# English letter frequencies (percent), for words that look like text to a coder.
_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
_LETTER_WEIGHTS = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4,
                   2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07]


def make_text(nbytes: int, seed: int = 2024) -> bytes:
    """Deterministic text-like bytes: Zipf-distributed words over English letter
    frequencies, sentences, capitals, punctuation, digits and line breaks (about
    70 distinct symbols per 1 KiB block, so that the codes are not trivial).

    Example:
        >>> t = make_text(2000)
        >>> len(t), t == make_text(2000), len(set(t)) > 40
        (2000, True, True)
    """
    if nbytes < 1:
        raise ValueError(f"nbytes={nbytes!r} must be positive")
    rng = random.Random(seed)
    vocab = []
    for _ in range(5000):
        length = max(1, min(14, round(rng.gauss(5.0, 2.5))))
        vocab.append("".join(rng.choices(_LETTERS, _LETTER_WEIGHTS, k=length)))
    cum: list[float] = []
    total = 0.0
    for rank in range(len(vocab)):
        total += 1.0 / (rank + 1.0)
        cum.append(total)
    parts: list[str] = []
    size = 0
    line = 0
    capital = True
    while size < nbytes:
        for word in rng.choices(vocab, cum_weights=cum, k=4096):
            r = rng.random()
            if r < 0.01:
                word = str(rng.randint(0, 100_000))
            elif capital or r < 0.03:
                word = word.capitalize()
            capital = False
            r = rng.random()
            if r < 0.07:
                sep, capital = rng.choice([". ", ". ", "? ", "! "]), True
            elif r < 0.13:
                sep = rng.choice([", ", ", ", "; ", ": ", " - "])
            else:
                sep = " "
            line += len(word) + len(sep)
            if line > 72:
                sep, line = sep.rstrip() + "\n", 0
            parts.append(word + sep)
            size += len(word) + len(sep)
    return "".join(parts).encode("ascii")[:nbytes]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench huffman``."""
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"comma-separated sizes of generated text (default {DEFAULT_SIZES})")
    parser.add_argument("--input", metavar="FILE", action="append", default=[],
                        help="code this file instead of generated text (repeatable)")
    parser.add_argument("--block-size", type=int, default=1024,
                        help="bytes per block (default 1024)")
    parser.add_argument("--threads", type=int, default=20,
                        help="worker threads, the batch size (default 20)")
    parser.add_argument("--allocators", default=",".join(huffman.ALLOCATORS),
                        help="comma-separated allocators (default: all; global-lock first)")
    parser.add_argument("--heap-bytes", default=None,
                        help="heap of global-lock and pooled (default 2MiB)")
    parser.add_argument("--pool-bytes", default=None,
                        help="per-thread pool of pooled (default 32KiB)")
    parser.add_argument("--cpus", default=None,
                        help="comma-separated CPU counts to pin the run to in turn, e.g. 1,2 "
                             "(default: the CPUs the process may use)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per allocator, interleaved; the best time is kept (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 256 KiB of text, 2 runs")
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_allocators(text: str) -> list[str]:
    """Parse ``"pooled,tlalloc"``; names must be known and not repeated.

    Example:
        >>> parse_allocators("tlalloc, global-lock")
        ['tlalloc', 'global-lock']
    """
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in huffman.ALLOCATORS]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(
            f"--allocators must list distinct names from {', '.join(huffman.ALLOCATORS)}, "
            f"got {text!r}"
        )
    return names


def parse_cpus(text: str | None, usable: int) -> list[int | None]:
    """Parse ``--cpus``: counts between 1 and the usable CPUs; ``None`` means as is.

    Example:
        >>> parse_cpus("1,2", 4), parse_cpus(None, 4)
        ([1, 2], [None])
    """
    if text is None:
        return [None]
    try:  # the shared rule for thread counts: ASCII digits, no empty items
        counts = thread_counts(text, usable) and [int(c) for c in text.split(",")]
    except argparse.ArgumentTypeError:
        counts = []
    if not counts or any(not 1 <= c <= usable for c in counts):
        raise ValueError(f"--cpus must list counts between 1 and {usable}, got {text!r}")
    return list(counts)


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def measure(
    data: bytes,
    allocators: list[str],
    *,
    block_size: int = 1024,
    threads: int = 20,
    repeat: int = 5,
    heap_bytes: int | None = None,
    pool_bytes: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Encode ``data`` with every allocator, ``repeat`` interleaved rounds (so that
    machine noise hits all alike), keep the best time; then check the round trip
    of each stream and that all streams are identical.

    Example:
        >>> r = measure(make_text(4096), ["global-lock", "tlalloc"], repeat=1)
        >>> r["round_trip_ok"], r["identical"], r["rows"][1]["lock_acquisitions"]
        (True, True, 0)
    """
    best: dict[str, float] = {}
    stats: dict[str, huffman.HuffmanStats] = {}
    streams: dict[str, bytes] = {}
    for _ in range(repeat):
        for a in allocators:
            t0 = time.perf_counter()
            res = huffman.encode(data, block_size=block_size, threads=threads, allocator=a,
                                 heap_bytes=heap_bytes, pool_bytes=pool_bytes)
            dt = time.perf_counter() - t0
            if a not in best or dt < best[a]:
                best[a] = dt
                stats[a] = res.stats
            streams[a] = res.data
            if progress is not None:
                progress.update()
    round_trip = {
        a: huffman.decode(streams[a], threads=threads, allocator=a, heap_bytes=heap_bytes,
                          pool_bytes=pool_bytes) == data
        for a in allocators
    }
    identical = len(set(streams.values())) == 1
    base = BASELINE if BASELINE in allocators else allocators[0]
    rows = []
    for a in allocators:
        s = stats[a]
        base_locks = stats[base].lock_acquisitions
        rows.append({
            "allocator": a,
            "seconds": best[a],
            "mb_per_s": len(data) / best[a] / 1e6,
            "speedup": best[base] / best[a],
            "lock_acquisitions": s.lock_acquisitions,
            "locks_per_block": s.locks_per_block,
            "lock_reduction": 1.0 - s.lock_acquisitions / base_locks if base_locks else 0.0,
            "lock_contended": s.lock_contended,
            "num_allocations": s.num_allocations,
            "heap_allocations": s.heap_allocations,
            "heap_bytes": s.heap_bytes,
            "heap_peak_bytes": s.heap_peak_bytes,
            "num_blocks": s.num_blocks,
            "num_batches": s.num_batches,
            "num_threads": s.num_threads,
            "encoded_bytes": s.output_bytes,
            "round_trip_ok": round_trip[a],
        })
    return {
        "bytes": len(data),
        "baseline": base,
        "rows": rows,
        "round_trip_ok": all(round_trip.values()),
        "identical": identical,
        "encoded_bytes": len(streams[allocators[0]]),
    }


def _label(nbytes: int) -> str:
    if nbytes % (1 << 20) == 0:
        return f"{nbytes >> 20} MiB"
    if nbytes % (1 << 10) == 0:
        return f"{nbytes >> 10} KiB"
    return f"{nbytes:,} B"


def run(args: argparse.Namespace) -> int:
    """Run the Huffman benchmark, print its tables; 1 if a check fails."""
    try:
        allocators = parse_allocators(args.allocators)
        heap = None if args.heap_bytes is None else parse_size(args.heap_bytes, "--heap-bytes")
        pool = None if args.pool_bytes is None else parse_size(args.pool_bytes, "--pool-bytes")
        sizes = size_list(args.sizes)
        usable = _usable_cpus()
        cpu_counts = parse_cpus(args.cpus, len(usable))
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"tlalloc bench huffman: {exc}") from None
    repeat = 2 if args.quick else args.repeat
    if args.quick and args.sizes == DEFAULT_SIZES:
        sizes = [256 << 10]
    if repeat < 1:
        raise SystemExit("tlalloc bench huffman: --repeat must be at least 1")
    inputs: list[tuple[str, bytes]] = []
    if args.input:
        for path in args.input:
            try:
                with open(path, "rb") as fh:
                    inputs.append((os.path.basename(path), fh.read()))
            except OSError as exc:
                raise SystemExit(f"tlalloc bench huffman: --input {path}: {exc}") from None
    else:
        inputs = [(f"text {_label(s)}", make_text(s)) for s in sizes]
    for name, data in inputs:
        if not data:
            raise SystemExit(f"tlalloc bench huffman: input {name} is empty")

    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    print(f"blocks of {args.block_size} bytes, {args.threads} threads per batch, "
          f"best of {repeat} interleaved runs; speed-up and lock reduction against "
          f"{BASELINE if BASELINE in allocators else allocators[0]}\n")
    if cpu_counts != [None] and not hasattr(os, "sched_setaffinity"):
        raise SystemExit("tlalloc bench huffman: --cpus needs os.sched_setaffinity (Linux)")
    results = []
    ok = True
    total = len(inputs) * len(allocators) * repeat * len(cpu_counts)
    with Progress(total=total, desc="huffman", enabled=not args.no_progress) as bar:
        for cpus in cpu_counts:
            # Worker threads inherit the affinity of the thread that starts them.
            if cpus is not None:
                os.sched_setaffinity(0, usable[:cpus])
            try:
                for name, data in inputs:
                    r = measure(data, allocators, block_size=args.block_size,
                                threads=args.threads, repeat=repeat, heap_bytes=heap,
                                pool_bytes=pool, progress=bar)
                    r["input"] = name
                    r["cpus"] = cpus if cpus is not None else len(usable)
                    results.append(r)
                    ok = ok and r["round_trip_ok"] and r["identical"]
            except (ValueError, TypeError, MemoryError) as exc:
                raise SystemExit(f"tlalloc bench huffman: {exc}") from None
            finally:
                if cpus is not None:
                    os.sched_setaffinity(0, usable)
    for r in results:
        blocks = r["rows"][0]["num_blocks"]
        print(f"{r['input']} on {r['cpus']} CPU{'s' if r['cpus'] > 1 else ''}: "
              f"{r['bytes']:,} bytes, {blocks:,} blocks, encoded to "
              f"{r['encoded_bytes']:,} bytes ({r['encoded_bytes'] / r['bytes']:.1%})")
        table = [[
            row["allocator"],
            f"{row['seconds'] * 1e3:.1f}",
            f"{row['mb_per_s']:.1f}",
            f"{row['speedup']:.2f}x",
            f"{row['lock_acquisitions']:,}",
            f"{row['locks_per_block']:.2f}",
            f"{row['lock_reduction']:.3%}",
            f"{row['lock_contended']:,}",
            "ok" if row["round_trip_ok"] else "FAILED",
        ] for row in r["rows"]]
        print(format_table(["allocator", "time ms", "MB/s", "speed-up", "locks", "locks/block",
                            "fewer locks", "contended", "round trip"], table))
        print(f"identical encodings across allocators: {'yes' if r['identical'] else 'NO'}\n")
    if args.json:
        write_json(args.json, {
            "suite": "huffman",
            "config": {"block_size": args.block_size, "threads": args.threads,
                       "repeat": repeat, "allocators": allocators, "heap_bytes": heap,
                       "cpus": [r for r in cpu_counts if r is not None] or None,
                       "pool_bytes": pool},
            "results": results,
            "ok": ok,
            "machine": info,
        })
        print(f"wrote {args.json}")
    if not ok:
        print("FAILED: a stream did not decode to its input, or the allocators disagree")
        return 1
    return 0
