"""The ``tlalloc`` console script.

``tlalloc bench [SUITE] [options]`` runs a benchmark suite (the kernel mix by
default); ``tlalloc stats SCRIPT [ARGS...]`` runs a script and reports the
allocator statistics when it ends; ``tlalloc preload-path`` prints the path of
``libtlalloc.so``, the pool as a whole process's malloc.

Example:
    $ tlalloc bench --quick
    $ tlalloc bench alloc --json alloc.json
    $ LD_PRELOAD=$(tlalloc preload-path) python script.py
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from tlalloc.bench._common import output_path_problem

__all__ = ["SUITES", "SECTIONS", "DEFAULT_SUITE", "main", "output_path_problem", "run_suite"]

# suite name -> module under tlalloc.bench that defines add_arguments(parser) and run(args).
SUITES: dict[str, str] = {
    "mix": "tlalloc.bench.mix",
    "kernels": "tlalloc.bench.kernel_compare",
    "alloc": "tlalloc.bench.alloc",
    "huffman": "tlalloc.bench.huffman",
    "larson": "tlalloc.bench.larson",
    "pages": "tlalloc.bench.pages",
    "scratch": "tlalloc.bench.scratch",
    "dask": "tlalloc.bench.dask",
    "numpy-alloc": "tlalloc.bench.numpy_alloc",
    "mimalloc-bench": "tlalloc.bench.mimalloc_bench",
    "footprint": "tlalloc.bench.footprint",
}
DEFAULT_SUITE = "mix"
# suite name -> modules whose section(args, payload) run after the suite's own
# run(args, payload), in order, before its finish(args, payload) writes the files:
# a suite that shows another's figures is composed here, never by importing it.
SECTIONS: dict[str, tuple[str, ...]] = {
    "mix": ("tlalloc.bench.kernel_compare", "tlalloc.bench.scratch"),
    "kernels": ("tlalloc.bench.cosine_peers", "tlalloc.bench.kernel_threads"),
}


def run_suite(suite: str, args: argparse.Namespace) -> int:
    """Run a suite with parsed options: its ``run(args)``, or for a suite with
    SECTIONS its ``run(args, payload)``, each section's ``section(args, payload)``
    and its ``finish(args, payload)``; ``payload`` holds the figures of the run.
    Returns the exit status (a failed ``run`` stops there).

    Example:
        >>> run_suite("no-such-suite", argparse.Namespace())
        Traceback (most recent call last):
        ...
        KeyError: "no suite 'no-such-suite'"
    """
    if suite not in SUITES:
        raise KeyError(f"no suite {suite!r}")
    mod = importlib.import_module(SUITES[suite])
    if suite not in SECTIONS:
        return int(mod.run(args) or 0)
    payload: dict[str, Any] = {}
    rc = int(mod.run(args, payload) or 0)
    if rc:
        return rc
    for name in SECTIONS[suite]:
        importlib.import_module(name).section(args, payload)
    return int(mod.finish(args, payload) or 0)


def _bench(argv: list[str]) -> int:
    suite = DEFAULT_SUITE
    if argv and not argv[0].startswith("-"):
        suite = argv[0]
        argv = argv[1:]
    if suite not in SUITES:
        print(
            f"tlalloc bench: unknown suite {suite!r}; choose one of {', '.join(SUITES)}",
            file=sys.stderr,
        )
        return 2
    try:
        mod = importlib.import_module(SUITES[suite])
    except ModuleNotFoundError as exc:
        if exc.name == SUITES[suite]:
            print(f"tlalloc bench: suite {suite!r} is not available yet", file=sys.stderr)
            return 2
        raise
    from tlalloc.bench._common import ArgumentParser, BadArgument, check_finite_numbers

    prog = f"tlalloc bench {suite}" if suite != DEFAULT_SUITE else "tlalloc bench"
    parser = ArgumentParser(
        prog=prog,
        description=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None,
    )
    mod.add_arguments(parser)
    check_finite_numbers(parser)
    try:
        args = parser.parse_args(argv)  # a bad value: one line, exit status 2
    except SystemExit as exc:  # or --help: 0
        return exc.code if isinstance(exc.code, int) else 2
    for opt in OUTPUT_OPTIONS:  # before the work: a benchmark can take minutes
        path = getattr(args, opt, None)
        problem = output_path_problem(path) if isinstance(path, str) else None
        if problem:
            print(f"{prog}: cannot write --{opt} {path!r}: {problem}", file=sys.stderr)
            return 2
    try:
        return run_suite(suite, args)
    except BadArgument as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        # The suites name the option first ("--rounds=0 must be at least 1"): a
        # bad value, not a bug, so one line and not a traceback.
        if not str(exc).startswith("--"):
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if isinstance(exc.code, str):  # SystemExit("message"): Python would exit with 1
            msg = exc.code if exc.code.startswith("tlalloc") else f"{prog}: {exc.code}"
            print(msg, file=sys.stderr)
            return 2
        raise


# Options of the suites that name a file to write.
OUTPUT_OPTIONS = ("json", "plot")



def _stats(argv: list[str]) -> int:
    mod = importlib.import_module("tlalloc._stats_cli")
    return int(mod.main(argv) or 0)


def _preload_path(argv: list[str]) -> int:
    if argv:
        print(f"tlalloc preload-path: takes no arguments, got {' '.join(argv)!r}", file=sys.stderr)
        return 2
    from tlalloc.pool import preload_path

    try:
        print(preload_path())
    except FileNotFoundError as exc:
        print(f"tlalloc preload-path: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tlalloc`` command.

    Example:
        >>> from tlalloc.cli import main
        >>> main(["bench", "no-such-suite"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: tlalloc bench [SUITE] [options]   (suites: "
        + ", ".join(SUITES)
        + f"; default {DEFAULT_SUITE})\n"
        "       tlalloc stats [--json] [-o FILE] SCRIPT [ARGS...]\n"
        "       tlalloc preload-path   (LD_PRELOAD=$(tlalloc preload-path) CMD: the pool as CMD's malloc)\n"
        "Run 'tlalloc bench [SUITE] --help' for a suite's options."
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        return _bench(rest)
    if cmd == "stats":
        return _stats(rest)
    if cmd == "preload-path":
        return _preload_path(rest)
    print(f"tlalloc: unknown command {cmd!r}\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
