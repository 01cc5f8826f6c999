"""The ``tlalloc`` console script.

``tlalloc bench [SUITE] [options]`` runs a benchmark suite (the kernel mix by
default); ``tlalloc stats SCRIPT [ARGS...]`` runs a script and reports the
allocator statistics when it ends.

Example:
    $ tlalloc bench --quick
    $ tlalloc bench alloc --json alloc.json
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
}
DEFAULT_SUITE = "mix"


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
    parser = argparse.ArgumentParser(
        prog=f"tlalloc bench {suite}" if suite != DEFAULT_SUITE else "tlalloc bench",
        description=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None,
    )
    mod.add_arguments(parser)
    args = parser.parse_args(argv)
    return int(mod.run(args) or 0)


def _stats(argv: list[str]) -> int:
    mod = importlib.import_module("tlalloc._stats_cli")
    return int(mod.main(argv) or 0)


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
    print(f"tlalloc: unknown command {cmd!r}\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
