"""``tlalloc stats [--json] [-o FILE] SCRIPT [ARGS...]``: run a script, then report.

The script runs in this process as ``python SCRIPT ARGS...`` would run it:
``sys.argv`` is ``[SCRIPT, *ARGS]``, the script's folder is first on ``sys.path``,
and it runs as ``__main__``. While it runs, a daemon thread samples the thread
arenas every ``SAMPLE_INTERVAL`` seconds, so that arenas of threads that end
before the script does are still in the report (figures as last sampled). When
the script ends (normally, by ``sys.exit`` or by an exception) the report of
:func:`tlalloc.summary.summary` (or, with ``--json``, :func:`summary_data` as
JSON) goes to stderr, or to ``-o FILE``, so that the script's own stdout stays
clean. Only the original process reports: a child the script forks and that
returns from the script exits with its status and writes nothing. The exit
status is the script's: its ``sys.exit`` code, 1 after an
uncaught exception (its traceback is printed), 2 if the script cannot be read.

Example:
    >>> from tlalloc._stats_cli import main
    >>> main(["/no/such/script.py"])
    2
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import threading
import traceback
from typing import Any

SAMPLE_INTERVAL = 0.1  # seconds between samples of the thread arenas while the script runs


def _parser() -> argparse.ArgumentParser:
    from tlalloc.bench._common import ArgumentParser

    p = ArgumentParser(
        prog="tlalloc stats",
        description="Run a Python script in this process, then report tlalloc's memory "
        "statistics and sizing advice.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the report to FILE instead of stderr")
    # Optional to argparse, so that its absence is reported as SCRIPT alone (argparse
    # would name ARGS as required too): main() checks it.
    p.add_argument("script", metavar="SCRIPT", nargs="?", help="the Python script to run")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    return p


class _Sampler:
    """Samples the thread arenas until stopped (see tlalloc.advise's time base)."""

    def __init__(self, interval: float) -> None:
        from tlalloc.advise import TRACKER

        self._tracker = TRACKER
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="tlalloc-stats-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._tracker.sample()

    def __enter__(self) -> _Sampler:
        self._tracker.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._tracker.sample()


def _run_script(path: str, args: list[str]) -> int:
    """Run ``path`` as ``__main__`` with ``sys.argv``/``sys.path`` set as Python sets them."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)  # sys.exit("message") prints it and exits with 1
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except BaseException:  # noqa: BLE001 - report every failure of the user's script
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.stdout.flush()


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return
    with open(output, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()  # a full disk (/dev/full) fails here, inside the caller's try


def main(argv: list[str]) -> int:
    """Run ``tlalloc stats`` with the given arguments and return the exit status.

    Example:
        >>> import os, tempfile
        >>> from tlalloc._stats_cli import main
        >>> d = tempfile.mkdtemp()
        >>> script, out = os.path.join(d, "job.py"), os.path.join(d, "report.json")
        >>> _ = open(script, "w").write("import sys; sys.exit(3)")
        >>> main(["--json", "-o", out, script])
        3
        >>> import json; sorted(json.load(open(out)))[:2]
        ['advice', 'config']
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.script is None:
        print("tlalloc stats: missing SCRIPT, the Python script to run "
              "(usage: tlalloc stats [--json] [-o FILE] SCRIPT [ARGS...])", file=sys.stderr)
        return 2
    script: str = args.script
    if not os.path.isfile(script):
        print(f"tlalloc stats: can't open file {script!r}: no such file", file=sys.stderr)
        return 2
    if args.output is not None:
        try:  # fail before the script runs, not after
            open(args.output, "w", encoding="utf-8").close()
        except OSError as exc:
            print(f"tlalloc stats: cannot write the report to {args.output!r}: {exc}", file=sys.stderr)
            return 2
    pid = os.getpid()
    with _Sampler(SAMPLE_INTERVAL):
        status = _run_script(script, list(args.args))
    if os.getpid() != pid:
        # A child the script forked (os.fork) that returned instead of calling
        # os._exit: the report belongs to the original process only, which
        # writes it once (and to -o FILE once).
        return status
    report: Any
    if args.json:
        from tlalloc.summary import summary_data

        data = summary_data()
        data["script"] = {"path": script, "args": list(args.args), "exit_status": status}
        report = json.dumps(data, indent=2)
    else:
        from tlalloc.summary import summary

        report = summary() + f"\n(script {script!r} exited with status {status})"
    try:
        _write(report, args.output)
    except OSError as exc:
        print(f"tlalloc stats: cannot write the report to {args.output!r}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    return status
