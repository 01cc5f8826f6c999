"""Run the fuzz targets for a bounded time each (CI) or as long as asked.

    python fuzz/run.py --seconds 20                    # every target, 20 s each
    python fuzz/run.py --seconds 3600 huffman_decode   # one target, an hour
    python fuzz/run.py --mode gcc --sanitized build/asan-site --seconds 20

Two modes; --mode auto (the default) takes clang when ``clang`` is on PATH.

clang (coverage-guided inside C): builds the extension with
``CC=clang TLALLOC_SANITIZE=1 TLALLOC_FUZZ=1`` (``-fsanitize=address,undefined,
fuzzer-no-link``) into build/fuzz/site (--reuse-site keeps an earlier one) and
runs each target once against it with atheris's ``asan_with_fuzzer.so`` (ASan,
UBSan and libFuzzer's runtime) preloaded. libFuzzer then sees the C code's
edges and comparisons, not just the Python wrappers', and AddressSanitizer +
UndefinedBehaviorSanitizer check every input. By hand, after a run:

    LD_PRELOAD=$(python -c "import atheris; print(atheris.path())")/asan_with_fuzzer.so \
    ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=build/fuzz/site:fuzz \
        python fuzz/fuzz_huffman_decode.py CORPUS_DIR -max_total_time=60

gcc (fallback when clang is missing): each target runs coverage-guided against
the plain build (the tlalloc that Python imports), which grows the corpus; with
--sanitized SITE (the extension built with TLALLOC_SANITIZE=1 by gcc, ``pip
install --target SITE``) it runs a second time there with gcc's libasan +
libubsan preloaded, as .ci/run does for the tests: fuzz/mutate.py runs that
corpus and random mutations of all of it. gcc has no libFuzzer
instrumentation, so inside C the fuzzer is guided only by what the Python side
sees (exception kinds and messages), and preloading gcc's libasan hides
atheris's coverage hooks behind its own stubs (libFuzzer's loop would keep one
input), hence the unguided mutator for the sanitized phase.

Each target starts from its committed seeds (fuzz/corpus/TARGET) plus what
earlier runs found (build/fuzz/corpus/TARGET, not committed); crash
inputs go to build/fuzz/crashes/. A crash becomes a regression test: copy the
input into the seeds and fix the cause. Exit status: 0 if no target found
anything, else 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = ("huffman_decode", "kernel_args", "arena_args")


def _gcc_lib(name: str) -> str:
    return subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _build_instrumented(site: str) -> None:
    """pip install --target site the clang + ASan/UBSan + libFuzzer-instrumented build."""
    shutil.rmtree(site, ignore_errors=True)
    env = dict(os.environ, CC="clang", TLALLOC_SANITIZE="1", TLALLOC_FUZZ="1")
    env.pop("LDSHARED", None)
    print(f"==== fuzz: building the instrumented extension into {site}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", site, ROOT], env=env, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help=f"targets to run (default: all of {', '.join(TARGETS)})")
    p.add_argument("--seconds", type=int, default=20, help="time per target (default 20)")
    p.add_argument("--mode", choices=("auto", "clang", "gcc"), default="auto",
                   help="clang: coverage inside C (default when clang is on PATH); gcc: fallback")
    p.add_argument("--reuse-site", action="store_true",
                   help="clang mode: keep build/fuzz/site if it holds a build")
    p.add_argument("--sanitized", metavar="SITE",
                   help="gcc mode: folder holding the TLALLOC_SANITIZE=1 build of tlalloc")
    args = p.parse_args(argv)
    if args.seconds < 1:
        p.error("--seconds must be >= 1")
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    args.targets = args.targets or list(TARGETS)
    mode = args.mode
    if mode == "auto":
        mode = "clang" if shutil.which("clang") else "gcc"
    if mode == "clang" and not shutil.which("clang"):
        p.error("--mode clang: no clang on PATH")
    work = os.path.join(ROOT, "build", "fuzz")
    crashes = os.path.join(work, "crashes")
    os.makedirs(crashes, exist_ok=True)
    plain = dict(os.environ)
    plain["PYTHONPATH"] = os.pathsep.join(x for x in (HERE, plain.get("PYTHONPATH", "")) if x)
    phases = []
    if mode == "clang":
        if args.sanitized:
            print("==== fuzz: clang mode, --sanitized (a gcc build) is not used", flush=True)
        runtime = os.path.join(atheris.path(), "asan_with_fuzzer.so")
        if not os.path.isfile(runtime):
            p.error(f"--mode clang: atheris has no {runtime}")
        site = os.path.join(work, "site")
        if not (args.reuse_site and os.path.isdir(os.path.join(site, "tlalloc"))):
            _build_instrumented(site)
        inst = dict(plain)
        inst["PYTHONPATH"] = os.pathsep.join((site, plain["PYTHONPATH"]))
        inst["LD_PRELOAD"] = runtime
        inst["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=0:halt_on_error=1:"
                                "allocator_may_return_null=1")
        inst["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
        phases.append((" (clang: ASan+UBSan, coverage inside C)", inst, False))
    else:
        phases.append(("", plain, False))
        if args.sanitized:
            if not os.path.isdir(os.path.join(args.sanitized, "tlalloc")):
                p.error(f"--sanitized {args.sanitized!r} holds no tlalloc build")
            san = dict(plain)
            san["PYTHONPATH"] = os.pathsep.join((os.path.abspath(args.sanitized),
                                                 plain["PYTHONPATH"]))
            san["LD_PRELOAD"] = f"{_gcc_lib('libasan.so')}:{_gcc_lib('libubsan.so')}"
            san["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=0:halt_on_error=1:"
                                   "allocator_may_return_null=1")
            san["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
            phases.append((" (gcc sanitized, unguided mutations)", san, True))
    failed = []
    for t in args.targets:
        corpus = os.path.join(work, "corpus", t)
        os.makedirs(corpus, exist_ok=True)
        seeds = os.path.join(HERE, "corpus", t)
        cmd = [sys.executable, os.path.join(HERE, f"fuzz_{t}.py"), corpus, seeds,
               f"-max_total_time={args.seconds}", "-timeout=20", "-rss_limit_mb=4096",
               f"-artifact_prefix={crashes}{os.sep}{t}-", "-print_final_stats=1"]
        for label, env, mutator in phases:
            print(f"==== fuzz {t}: {args.seconds} s{label}", flush=True)
            run = cmd if not mutator else [sys.executable, os.path.join(HERE, "mutate.py"), t,
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
