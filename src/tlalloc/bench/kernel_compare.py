"""Each kernel against the NumPy/SciPy code it replaces, side by side in one run.

- cosine similarity, 768-d x 1000 float32: against NumPy's
  ``(C @ q) / (np.linalg.norm(C, axis=1) * np.linalg.norm(q))`` and against the
  bare matrix-vector product ``C @ q``;
- decay of 10,000 float32 strengths: against ``s * np.exp(-a / tau)``;
- spreading activation on a 1000-node graph (10 edges per node): against the
  same meaning written with SciPy sparse matrix-vector products (the transpose
  built once, outside the timing); and on a 1,000,000-node graph of the same
  degree, one seed, same parameters, against the 1000-node call; and 16 seed
  sets on a 100,000-node graph, one ``spread_activation_many`` call against a
  loop of 16 calls.

Single thread, best of several timed rounds (``_common.best_time``). Run it alone
with ``tlalloc bench kernels``; ``tlalloc bench`` (the mix) prints it too.

``tlalloc bench kernels`` then runs the cosine section of
:mod:`tlalloc.bench.cosine_peers` (SimSIMD, NumKong, faiss, usearch when installed, the
memory-bandwidth floor, batched queries, float16 corpora); the mix does not.

Example:
    $ tlalloc bench kernels --json kernels.json
    $ tlalloc bench kernels --cosine-only --full-grid
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from tlalloc import kernels, kernels_reference
from tlalloc._report import format_table
from tlalloc.bench._common import (
    best_time,
    blas_threads,
    describe_machine,
    machine_info,
    random_graph,
    write_json,
)


def _time(fn: Callable[[], object], quick: bool) -> float:
    return best_time(fn, repeat=3 if quick else 7, min_time=0.01 if quick else 0.04)


def compare(quick: bool = False, big_nodes: int = 1_000_000) -> dict[str, Any]:
    """Measure every comparison; returns seconds per call and the ratios.

    Example:
        >>> r = compare(quick=True, big_nodes=20_000)
        >>> r["cosine"]["speedup_vs_numpy"] > 0
        True
    """
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"isa": kernels.isa()}

    # cosine similarity: NumPy's BLAS with one thread (one core, as the kernel
    # uses) and with its default thread count.
    c = rng.standard_normal((1000, 768), dtype=np.float32)
    q = rng.standard_normal(768, dtype=np.float32)
    scores = np.empty(1000, np.float32)
    t_k = _time(lambda: kernels.cosine_similarity(q, c, out=scores), quick)
    t_top = _time(lambda: kernels.cosine_similarity(q, c, top_k=10), quick)
    cos: dict[str, Any] = {"tlalloc_s": t_k, "tlalloc_top10_s": t_top}
    for label, n in (("1", 1), ("default", None)):
        with blas_threads(n) as got:
            cos[f"blas_threads_{label}"] = got
            cos[f"numpy_s_blas_{label}"] = _time(
                lambda: (c @ q) / (np.linalg.norm(c, axis=1) * np.linalg.norm(q)), quick
            )
            cos[f"matvec_s_blas_{label}"] = _time(lambda: c @ q, quick)
    cos["numpy_s"] = cos["numpy_s_blas_1"]
    cos["matvec_s"] = cos["matvec_s_blas_1"]
    cos["speedup_vs_numpy"] = cos["numpy_s"] / t_k
    cos["time_vs_matvec"] = t_k / cos["matvec_s"]
    cos["time_vs_matvec_blas_default"] = t_k / cos["matvec_s_blas_default"]
    out["cosine"] = cos

    # decay
    s = rng.random(10_000, dtype=np.float32)
    a = (rng.random(10_000, dtype=np.float32) * 1e6).astype(np.float32)
    t_d = _time(lambda: kernels.decay(s, a, tau=86400.0), quick)
    t_dn = _time(lambda: s * np.exp(-a / 86400.0), quick)
    out["decay"] = {"tlalloc_s": t_d, "numpy_s": t_dn, "speedup_vs_numpy": t_dn / t_d}

    # spreading activation
    small = random_graph(1000, 10, seed=1)
    seed = [0]
    t_s = _time(lambda: kernels.spread_activation(small, seed), quick)
    t_s_top = _time(lambda: kernels.spread_activation(small, seed, top_k=10), quick)
    spread: dict[str, Any] = {"tlalloc_1k_s": t_s, "tlalloc_1k_top10_s": t_s_top}
    try:
        import scipy.sparse as sp
    except ImportError:
        spread["scipy"] = "skipped: SciPy is not installed (pip install scipy)"
    else:
        at = sp.csr_array((small[2], small[1], small[0]), shape=(1000, 1000)).T.tocsr()
        t_sp = _time(lambda: kernels_reference.spread_activation_scipy(small, seed, transposed=at), quick)
        spread["scipy_1k_s"] = t_sp
        spread["speedup_vs_scipy"] = t_sp / t_s
    big = random_graph(big_nodes, 10, seed=2)
    t_b = _time(lambda: kernels.spread_activation(big, seed), quick)
    t_b_top = _time(lambda: kernels.spread_activation(big, seed, top_k=10), quick)
    # The largest scratch of the suite (~264 KiB): where the source of scratch shows.
    by_scratch = {
        sc: _time(lambda sc=sc: kernels.spread_activation(big, seed, top_k=10, _scratch=sc), quick)
        for sc in ("thread", "shared", "malloc")
    }
    touched_small = int(np.count_nonzero(kernels.spread_activation(small, seed)))
    touched_big = int(np.count_nonzero(kernels.spread_activation(big, seed)))
    spread.update(
        {
            "big_nodes": big_nodes,
            "tlalloc_big_s": t_b,
            "tlalloc_big_top10_s": t_b_top,
            "big_vs_1k_top10": t_b_top / t_s_top,
            "big_vs_1k_dense": t_b / t_s,
            "big_top10_by_scratch_s": by_scratch,
            "touched_1k": touched_small,
            "touched_big": touched_big,
        }
    )
    # many seed sets: 16 sets of 4 random seeds, one call against a loop of calls
    many_nodes = 20_000 if quick else 100_000
    mg = random_graph(many_nodes, 10, seed=3)
    sets = np.random.default_rng(5).integers(0, many_nodes, (16, 4)).tolist()
    t_loop = _time(lambda: [kernels.spread_activation(mg, st, top_k=10) for st in sets], quick)
    t_many = _time(lambda: kernels.spread_activation_many(mg, sets, top_k=10), quick)
    spread.update(
        {"many_nodes": many_nodes, "loop16_top10_s": t_loop, "many16_top10_s": t_many,
         "many_vs_loop": t_loop / t_many}
    )
    out["spread"] = spread
    return out


def goals(r: dict[str, Any]) -> list[tuple[str, bool]]:
    """The targets the kernels are built to meet, each with what was measured.

    Example:
        >>> goals({"cosine": {"speedup_vs_numpy": 4, "time_vs_matvec": 1.2},
        ...        "decay": {"speedup_vs_numpy": 3}, "spread": {"big_vs_1k_top10": 2}})[0][1]
        True
    """
    c, d, s = r["cosine"], r["decay"], r["spread"]
    g = [
        (
            f"cosine >= 3x faster than NumPy (measured {c['speedup_vs_numpy']:.2f}x)",
            c["speedup_vs_numpy"] >= 3,
        ),
        (
            f"cosine <= 1.3x the time of C @ q, BLAS 1 thread (measured {c['time_vs_matvec']:.2f}x; "
            f"{c.get('time_vs_matvec_blas_default', float('nan')):.2f}x against BLAS's default threads)",
            c["time_vs_matvec"] <= 1.3,
        ),
        (
            f"decay >= 2x faster than s * np.exp(-a / tau) (measured {d['speedup_vs_numpy']:.2f}x)",
            d["speedup_vs_numpy"] >= 2,
        ),
    ]
    if "speedup_vs_scipy" in s:
        g.append(
            (
                f"spread (1000 nodes) >= 5x faster than SciPy mat-vec "
                f"(measured {s['speedup_vs_scipy']:.2f}x)",
                s["speedup_vs_scipy"] >= 5,
            )
        )
    g.append(
        (
            f"spread on {s.get('big_nodes', 1_000_000):,} nodes <= 3x the 1000-node time, top_k=10 "
            f"(measured {s['big_vs_1k_top10']:.2f}x)",
            s["big_vs_1k_top10"] <= 3,
        )
    )
    return g


def findings(r: dict[str, Any]) -> list[str]:
    """What the comparison says to a user, in sentences (no pass/fail marks).

    Example:
        >>> findings({"cosine": {"speedup_vs_numpy": 4, "time_vs_matvec": 1.2},
        ...           "decay": {"speedup_vs_numpy": 3},
        ...           "spread": {"big_vs_1k_top10": 2, "big_nodes": 10_000}})[1]
        'decay: 3.00x faster than s * np.exp(-a / tau)'
    """
    c, d, s = r["cosine"], r["decay"], r["spread"]
    out = [
        f"cosine similarity: {c['speedup_vs_numpy']:.2f}x faster than the NumPy expression; "
        f"{c['time_vs_matvec']:.2f}x the time of a bare C @ q with BLAS on one thread "
        "(which computes no norms and no top-k)",
        f"decay: {d['speedup_vs_numpy']:.2f}x faster than s * np.exp(-a / tau)",
    ]
    if "speedup_vs_scipy" in s:
        out.append(
            f"spreading activation, 1000 nodes: {s['speedup_vs_scipy']:.2f}x faster than "
            "SciPy's sparse mat-vec"
        )
    out.append(
        f"spreading activation, {s.get('big_nodes', 1_000_000):,} nodes with top_k=10: "
        f"{s['big_vs_1k_top10']:.2f}x the 1000-node time (the cost follows the edges the "
        "pulse crosses, not the size of the graph)"
    )
    if "many_vs_loop" in s:
        out.append(
            f"spreading activation from 16 seed sets on {s['many_nodes']:,} nodes: one "
            f"spread_activation_many call is {s['many_vs_loop']:.2f}x faster than a loop of 16 calls"
        )
    return out


def report(r: dict[str, Any]) -> str:
    """The comparison as a table plus what it says to a user.

    Example:
        >>> "cosine" in report(compare(quick=True, big_nodes=20_000))
        True
    """
    us = 1e6
    c, d, s = r["cosine"], r["decay"], r["spread"]
    rows = [
        ["cosine 768-d x 1000 (f32)", "tlalloc", f"{c['tlalloc_s'] * us:.1f}", "1.00"],
        [
            "",
            "tlalloc, top_k=10",
            f"{c['tlalloc_top10_s'] * us:.1f}",
            f"{c['tlalloc_top10_s'] / c['tlalloc_s']:.2f}",
        ],
        [
            "",
            "NumPy (C@q)/(norm*norm), BLAS 1 thread",
            f"{c['numpy_s'] * us:.1f}",
            f"{c['numpy_s'] / c['tlalloc_s']:.2f}",
        ],
        [
            "",
            "bare C @ q, BLAS 1 thread",
            f"{c['matvec_s'] * us:.1f}",
            f"{c['matvec_s'] / c['tlalloc_s']:.2f}",
        ],
        [
            "",
            f"NumPy expression, BLAS {c['blas_threads_default'] or 'default'} threads",
            f"{c['numpy_s_blas_default'] * us:.1f}",
            f"{c['numpy_s_blas_default'] / c['tlalloc_s']:.2f}",
        ],
        [
            "",
            f"bare C @ q, BLAS {c['blas_threads_default'] or 'default'} threads",
            f"{c['matvec_s_blas_default'] * us:.1f}",
            f"{c['matvec_s_blas_default'] / c['tlalloc_s']:.2f}",
        ],
        ["decay 10,000 (f32)", "tlalloc", f"{d['tlalloc_s'] * us:.2f}", "1.00"],
        ["", "s * np.exp(-a / tau)", f"{d['numpy_s'] * us:.2f}", f"{d['speedup_vs_numpy']:.2f}"],
        ["spread 1000 nodes", "tlalloc", f"{s['tlalloc_1k_s'] * us:.1f}", "1.00"],
        [
            "",
            "tlalloc, top_k=10",
            f"{s['tlalloc_1k_top10_s'] * us:.1f}",
            f"{s['tlalloc_1k_top10_s'] / s['tlalloc_1k_s']:.2f}",
        ],
    ]
    if "scipy_1k_s" in s:
        rows.append(
            ["", "SciPy sparse mat-vec", f"{s['scipy_1k_s'] * us:.1f}", f"{s['speedup_vs_scipy']:.2f}"]
        )
    big = f"spread {s['big_nodes']:,} nodes"
    rows += [
        [
            big,
            "tlalloc, top_k=10",
            f"{s['tlalloc_big_top10_s'] * us:.1f}",
            f"{s['big_vs_1k_top10']:.2f} (vs 1000 nodes, top_k=10)",
        ],
        [
            "",
            "tlalloc, dense (n,) result",
            f"{s['tlalloc_big_s'] * us:.1f}",
            f"{s['big_vs_1k_dense']:.2f} (vs 1000 nodes, dense)",
        ],
    ]
    if "many_vs_loop" in s:
        rows += [
            [
                f"spread {s['many_nodes']:,} nodes, 16 seed sets",
                "loop of 16 calls, top_k=10",
                f"{s['loop16_top10_s'] * us:.1f}",
                f"{s['many_vs_loop']:.2f}",
            ],
            ["", "spread_activation_many, top_k=10", f"{s['many16_top10_s'] * us:.1f}", "1.00"],
        ]
    lines = [
        f"Kernels against NumPy/SciPy, one thread (vectorised path: {r['isa']}); the comparisons "
        "limit BLAS to one thread, as the kernel uses one core",
        format_table(["workload", "implementation", "us/call", "time / tlalloc time"], rows),
        f"  nodes reached from one seed: {s['touched_1k']} of 1000; "
        f"{s['touched_big']:,} of {s['big_nodes']:,}",
    ]
    if "big_top10_by_scratch_s" in s:
        b = s["big_top10_by_scratch_s"]
        lines.append(
            f"  scratch source, {s['big_nodes']:,}-node spread with top_k=10: "
            + ", ".join(f"{k} {v * us:.1f} us" for k, v in b.items())
            + f" (malloc / thread = {b['malloc'] / b['thread']:.2f}x)"
        )
    if isinstance(s.get("scipy"), str):
        lines.append(f"  {s['scipy']}")
    lines.append("What the kernels changed, against what you would use instead:")
    lines += [f"  {text}" for text in findings(r)]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlalloc bench kernels``."""
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: fewer rounds, 20,000-node graph, small cosine cells"
    )
    parser.add_argument(
        "--full-grid",
        action="store_true",
        help="cosine section: every d in 128, 384, 768, 1536 with every n in 1e3..1e6 (minutes, up to "
        "~13 GiB of memory) instead of the default subset",
    )
    parser.add_argument(
        "--cosine-only", action="store_true", help="run only the cosine section against the peers"
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")


def run(args: argparse.Namespace, payload: dict[str, Any] | None = None) -> int:
    """Run the comparison (unless ``--cosine-only``) and print it.

    Alone (``payload`` None) it ends the run too (:func:`finish`). ``tlalloc
    bench kernels`` passes ``payload``, the figures the JSON file will hold, and
    runs the cosine section of :mod:`tlalloc.bench.cosine_peers` before
    :func:`finish` (``tlalloc.cli.SECTIONS``).
    """
    standalone = payload is None
    payload = {} if payload is None else payload
    info = machine_info()
    print(f"machine: {describe_machine(info)}")
    payload.update({"suite": "kernels", "findings": [], "targets": [], "machine": info})
    if not args.cosine_only:
        r = compare(quick=args.quick, big_nodes=20_000 if args.quick else 1_000_000)
        print(report(r))
        payload["comparison"] = r
        payload["findings"] += findings(r)
        payload["targets"] += [{"target": g, "reached": ok} for g, ok in goals(r)]
    return finish(args, payload) if standalone else 0


def finish(args: argparse.Namespace, payload: dict[str, Any]) -> int:
    """Write the figures of the run and its sections (``--json``)."""
    if args.json:
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


def section(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """The comparison as a section of the mix (``tlalloc bench --compare``, the
    default): full size, its figures under ``payload["comparison"]``; a smoke
    run (``--quick``) leaves it to ``tlalloc bench kernels``."""
    if args.compare and args.quick:
        print("\nsmoke run: the single-thread kernel comparison (its verdicts) is left to "
              "'tlalloc bench kernels'")
    elif args.compare:
        print()
        payload["comparison"] = compare(quick=False, big_nodes=1_000_000)
        print(report(payload["comparison"]))
