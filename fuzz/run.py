"""Run the fuzz targets for a bounded time each (CI) or as long as asked.

    python fuzz/run.py --seconds 20                    # every target, 20 s each
    python fuzz/run.py --seconds 3600 huffman_decode   # one target, an hour
    python fuzz/run.py --sanitized build/asan-site --seconds 20

With --sanitized SITE each target runs twice: first coverage-guided against
the plain build (the tlalloc that Python imports), which grows the corpus, then
against the extension built with TLALLOC_SANITIZE=1 into SITE (pip install
--target SITE), with AddressSanitizer + UndefinedBehaviorSanitizer preloaded
as .ci/run does for the tests: fuzz/mutate.py runs that corpus and random
mutations of all of it. (Preloading gcc's libasan hides atheris's coverage
hooks behind its own stubs, so libFuzzer's loop would keep one input; hence a
plain, coverage-guided phase first and a round-robin mutator second.)

Each target starts from its committed seeds (fuzz/corpus/TARGET) plus what
earlier runs found (build/fuzz/corpus/TARGET, not committed); crash
inputs go to build/fuzz/crashes/. A crash becomes a regression test: copy the
input into the seeds and fix the cause. Exit status: 0 if no target found
anything, else 1.

Coverage: atheris instruments the Python code (the targets and tlalloc's
wrappers); the C extension is built with gcc, which has no libFuzzer
instrumentation, so inside C the fuzzer is guided only by what the Python side
sees (exception kinds and messages), and the sanitizers catch the faults.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = ("huffman_decode", "kernel_args", "arena_args")


def _gcc_lib(name: str) -> str:
    return subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help=f"targets to run (default: all of {', '.join(TARGETS)})")
    p.add_argument("--seconds", type=int, default=20, help="time per target (default 20)")
    p.add_argument("--sanitized", metavar="SITE",
                   help="folder holding the TLALLOC_SANITIZE=1 build of tlalloc")
    args = p.parse_args(argv)
    if args.seconds < 1:
        p.error("--seconds must be >= 1")
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    args.targets = args.targets or list(TARGETS)
    plain = dict(os.environ)
    plain["PYTHONPATH"] = os.pathsep.join(x for x in (HERE, plain.get("PYTHONPATH", "")) if x)
    phases = [("", plain)]
    if args.sanitized:
        if not os.path.isdir(os.path.join(args.sanitized, "tlalloc")):
            p.error(f"--sanitized {args.sanitized!r} holds no tlalloc build")
        san = dict(plain)
        san["PYTHONPATH"] = os.pathsep.join((os.path.abspath(args.sanitized), plain["PYTHONPATH"]))
        san["LD_PRELOAD"] = f"{_gcc_lib('libasan.so')}:{_gcc_lib('libubsan.so')}"
        san["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=0:halt_on_error=1:"
                               "allocator_may_return_null=1")
        san["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
        phases.append((" (sanitized)", san))
    work = os.path.join(ROOT, "build", "fuzz")
    crashes = os.path.join(work, "crashes")
    os.makedirs(crashes, exist_ok=True)
    failed = []
    for t in args.targets:
        corpus = os.path.join(work, "corpus", t)
        os.makedirs(corpus, exist_ok=True)
        seeds = os.path.join(HERE, "corpus", t)
        cmd = [sys.executable, os.path.join(HERE, f"fuzz_{t}.py"), corpus, seeds,
               f"-max_total_time={args.seconds}", "-timeout=20", "-rss_limit_mb=4096",
               f"-artifact_prefix={crashes}{os.sep}{t}-", "-print_final_stats=1"]
        for label, env in phases:
            print(f"==== fuzz {t}: {args.seconds} s{label}", flush=True)
            run = cmd if not label else [sys.executable, os.path.join(HERE, "mutate.py"), t,
                                         str(args.seconds), corpus, seeds]
            r = subprocess.run(run, env=env, cwd=ROOT)
            if r.returncode != 0:
                failed.append(t + label)
                print(f"==== fuzz {t}{label}: FAILED (exit {r.returncode}); the report is above, "
                      f"inputs (when libFuzzer could save them) in {crashes}", flush=True)
                break
    if failed:
        print(f"fuzzing found problems in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
