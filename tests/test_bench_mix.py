"""`tlalloc bench` (its allocation-strategy comparison) and `tlalloc bench kernels`: run, verify, report."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tlalloc import cli, kernels
from tlalloc.bench import _common, cosine_peers, mix


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    mix.add_arguments(parser)
    ns = parser.parse_args([])
    ns.service = False  # the service has its tests (tests/test_bench_main.py)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_mix_runs_verifies_and_writes_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mix.json"
    png = tmp_path / "mix.png"
    args = _args(
        threads="1,2", duration=0.02, repeat=1, compare=False, progress=False, json=str(out), plot=str(png)
    )
    assert mix.run(args) == 0
    text = capsys.readouterr().out
    assert "verified: thread, shared and malloc agree bit for bit" in text
    assert "Thread-arena statistics" in text and "What thread arenas changed on this machine" in text
    assert "NOT met" not in text
    data = json.loads(out.read_text())
    cells = {(r["strategy"], r["threads"]) for r in data["results"]}
    assert cells == {(s, t) for s in mix.STRATEGIES for t in (1, 2)}
    assert all(r["ops"] > 0 and r["ops_per_s"] > 0 for r in data["results"])
    assert data["machine"]["cpu_count"] >= 1
    assert data["arena_stats_delta"]["num_overflows"] == 0
    assert {m["threads"] for m in data["margins"]} == {1, 2}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "skipped the plot: matplotlib is not installed" in text
    else:
        assert png.stat().st_size > 0


@pytest.mark.parametrize("kernel", ["cosine", "spread", "decay"])
def test_each_kernel_runs_alone(kernel: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(
        kernel=kernel,
        threads="1",
        strategies="thread,numpy",
        duration=0.01,
        repeat=1,
        compare=False,
        progress=False,
    )
    assert mix.run(args) == 0
    words = {"cosine": "cosine similarity", "spread": "spreading activation", "decay": "decay of"}
    assert f"one op = {words[kernel]}" in capsys.readouterr().out


def test_mix_refuses_to_time_strategies_that_disagree(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = mix.operation

    def broken(w: mix.Workload, strategy: str, kernel: str):  # type: ignore[no-untyped-def]
        fn = real(w, strategy, kernel)
        if strategy == "malloc":
            return lambda i: [np.zeros(3)] * len(fn(i))
        return fn

    monkeypatch.setattr(mix, "operation", broken)
    assert mix.run(_args(threads="1", duration=0.01, compare=False, progress=False)) == 1
    assert "verification FAILED" in capsys.readouterr().out


def test_the_cli_runs_the_mix_with_its_sections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tlalloc bench composes the mix with the sections of other suites (the kernel
    comparison, Python-level scratch): each prints its part, and one JSON file
    holds the figures of all."""
    out = tmp_path / "mix.json"
    args = _args(threads="1", strategies="thread", duration=0.01, repeat=1, quick=True,
                 compare=True, progress=False, json=str(out))
    assert cli.SECTIONS["mix"] == ("tlalloc.bench.kernel_compare", "tlalloc.bench.scratch")
    assert cli.run_suite("mix", args) == 0
    text = capsys.readouterr().out
    assert "smoke run: the single-thread kernel comparison (its verdicts) is left to" in text
    assert "Python-level scratch" in text and text.index("kernel comparison") < text.index("Python-level")
    assert text.index("Python-level") < text.index("(after the run)") < text.index(f"wrote {out}")
    data = json.loads(out.read_text())
    assert data["comparison"] is None and "scratch_scaling" in data
    assert len(data["load_average_end"]) == 3 and data["machine"]["cpu_count"] >= 1
    assert "unwritten" not in data and data["suite"] == "mix"


def test_bad_options() -> None:
    with pytest.raises(SystemExit):
        mix.parse_threads("1,x")
    with pytest.raises(SystemExit):
        mix.parse_threads("0")
    with pytest.raises(SystemExit):
        mix.parse_list("thread,gpu", mix.STRATEGIES, "--strategies")
    with pytest.raises(SystemExit):
        mix.run(_args(duration=0.0, compare=False, progress=False))


def test_cli_quick_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        [
            "bench",
            "--quick",
            "--threads",
            "1",
            "--strategies",
            "thread,shared",
            "--no-compare",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "ops/s" in capsys.readouterr().out


def test_kernel_comparison_reports_every_goal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.json"
    assert cli.main(["bench", "kernels", "--quick", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "What the kernels changed" in text and "NOT met" not in text
    assert text.count("faster than") >= 3
    data = json.loads(out.read_text())
    c = data["comparison"]
    assert c["cosine"]["speedup_vs_numpy"] > 0 and c["decay"]["speedup_vs_numpy"] > 0
    assert c["spread"]["touched_1k"] > 0 and c["spread"]["big_nodes"] == 20_000


def test_blas_thread_limit_is_restored() -> None:
    with _common.blas_threads(None) as before:
        pass
    with _common.blas_threads(1) as inside:
        assert inside in (1, None)
    with _common.blas_threads(None) as after:
        assert after == before


def _cosine_section(data: dict) -> dict:  # type: ignore[type-arg]
    r = data["cosine_peers"]
    assert r["mode"] == "quick"
    assert [(c["d"], c["n"]) for c in r["single"]] == cosine_peers.QUICK_GRID
    for cell in r["single"]:
        assert {"tlalloc", "tlalloc_top10", "matvec", "floor_sum", "floor_rowsum"} <= set(cell["times"])
        assert all(t["cpu_s"] > 0 and t["calls"] >= 1 for t in cell["times"].values())
    assert [c["m"] for c in r["batched"]] == [16, 64]
    for cell in r["batched"]:
        assert {"tlalloc_loop", "numpy_gemm"} <= set(cell["times"])
        # before and after the kernel learns 2-D queries: measured when it has them, said when not
        if cell["batched"] == "supported":
            assert {"tlalloc", "tlalloc_top10"} <= set(cell["times"])
        else:
            assert cell["batched"].startswith("not supported by this build")
            assert "tlalloc" not in cell["times"]
    assert {"tlalloc_f32", "floor_rowsum_f32"} <= set(r["half"]["times"])
    return r


def test_kernels_bench_cosine_section_with_installed_peers(tmp_path: Path) -> None:
    out = tmp_path / "k.json"
    assert cli.main(["bench", "kernels", "--quick", "--cosine-only", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "comparison" not in data  # --cosine-only
    r = _cosine_section(data)
    peer_keys = {
        "simsimd": ["simsimd"],
        "numkong": ["numkong", "numkong_packed"],
        "faiss": ["faiss_top10"],
        "usearch": ["usearch_top10"],
    }
    for name, keys in peer_keys.items():
        cells = r["single"] + r["batched"]
        for key in keys:
            if r["peers"][name] == "installed":
                assert all(key in c["times"] for c in cells) and name in r["versions"]
            else:
                assert r["peers"][name].startswith("skipped (not installed")
                assert not any(key in c["times"] for c in cells)
    if r["peers"]["numkong"] == "installed":
        half = {"numkong_f32", "numkong_f16", "numkong_f16_packed"}
        if r["half"]["bfloat16"] != "skipped (ml_dtypes not installed)":
            half |= {"numkong_bf16", "numkong_bf16_packed"}
        assert half <= set(r["half"]["times"])
    # every installed peer's scores or top 10 matched tlalloc's before they were timed
    assert all(c["agree"] for c in r["single"] + r["batched"] + [r["half"]])
    assert "verified: every peer agrees with tlalloc" in data["findings"]


def test_kernels_bench_reports_missing_peers_as_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for mod in ("simsimd", "numkong", "faiss", "usearch", "usearch.index"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import mod` raise ImportError
    out = tmp_path / "k.json"
    assert cli.main(["bench", "kernels", "--quick", "--cosine-only", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for name, dist in cosine_peers.PEERS.items():
        assert f"{name}: skipped (not installed: pip install {dist})" in text
    parts = ("Single query, float32 corpus", "fraction of the floor", "Batched queries", "Half precision")
    assert all(part in text for part in parts)
    r = _cosine_section(json.loads(out.read_text()))
    want = {f"skipped (not installed: pip install {d})" for d in cosine_peers.PEERS.values()}
    assert set(r["peers"].values()) == want
    peer_keys = {"simsimd", "numkong", "numkong_packed", "faiss_top10", "usearch_top10"}
    for cell in r["single"] + r["batched"]:
        assert not peer_keys & set(cell["times"])
    assert not any(k.startswith("numkong") for k in r["half"]["times"])


def test_cosine_section_reports_a_peer_that_disagrees() -> None:
    wrong = types.SimpleNamespace(cdist=lambda a, b, metric: np.zeros((len(a), len(b))), __version__="0")
    cell = cosine_peers.single_cell(16, 200, {"simsimd": wrong}, rounds=1, min_time=0.001)
    assert not cell["agree"] and cell["problems"][0].startswith("simsimd: differs from tlalloc")
    r = {"single": [cell], "batched": [], "peers": {"simsimd": "installed"}}
    assert cosine_peers.findings(r)[-1].startswith("DISAGREE: simsimd")


def test_numkong_cdist_and_packed_give_tlalloc_scores() -> None:
    # Every form the benchmark times (cdist and the packed corpus; float32, float16,
    # bfloat16), one query and a batch, against tlalloc's scores for the same
    # (rounded) queries.
    nk = pytest.importorskip("numkong")
    rng = np.random.default_rng(3)
    c = cosine_peers.corpus(300, 40)
    qs = rng.standard_normal((5, 40), dtype=np.float32)
    formats: list[object] = [np.float32, np.float16]
    try:
        import ml_dtypes
    except ImportError:
        pass
    else:
        formats.append(ml_dtypes.bfloat16)
    for fmt in formats:
        cf = c.astype(fmt)
        for q2 in (qs[:1].astype(fmt), qs.astype(fmt)):
            want = np.stack([kernels.cosine_similarity(q.astype(np.float32), cf) for q in q2])
            _, sims = cosine_peers.numkong_calls(nk, q2, cf)
            assert set(sims) == {"numkong", "numkong_packed"}
            for name, sim in sims.items():
                got = sim()
                assert got.shape == want.shape, (name, fmt)
                np.testing.assert_allclose(got, want, atol=cosine_peers._tol(40), err_msg=f"{name} {fmt}")
            # whichever output type the benchmark picks for cdist
            for out_dtype in cosine_peers.NUMKONG_OUTPUTS:
                kw = {} if out_dtype is None else {"out_dtype": out_dtype}
                got = 1 - np.asarray(nk.cdist(q2, cf, "angular", threads=1, **kw), np.float64)
                np.testing.assert_allclose(got, want, atol=cosine_peers._tol(40), err_msg=str(out_dtype))
    # the cells check them the same way before timing
    cell = cosine_peers.single_cell(40, 300, {"numkong": nk}, rounds=1, min_time=0.001)
    assert cell["agree"] and {"numkong", "numkong_packed"} <= set(cell["times"])
    half = cosine_peers.half_cell(300, 40, {"numkong": nk}, rounds=1, min_time=0.001)
    assert half["agree"] and {"numkong_f16", "numkong_f16_packed"} <= set(half["times"])


def test_cosine_section_reports_numkong_without_it_installed() -> None:
    # A stand-in module with NumKong's call shapes (cdist, dots_pack,
    # angulars_packed): the cells time and check both forms, the report prints
    # them, and a wrong answer is caught, whether or not numkong is installed.
    def cdist(
        q: np.ndarray, c: np.ndarray, metric: str, *, threads: int, out_dtype: str | None = None
    ) -> np.ndarray:
        assert (metric, threads, out_dtype) in {("angular", 1, "f32"), ("angular", 1, None)}
        q64, c64 = np.asarray(q, np.float64), np.asarray(c, np.float64)
        cos = (q64 @ c64.T) / np.linalg.norm(q64, axis=1)[:, None] / np.linalg.norm(c64, axis=1)
        return (1 - cos).astype(np.float32)

    packed_rows: list[int] = []

    def dots_pack(c: np.ndarray) -> np.ndarray:
        packed_rows.append(len(c))
        return np.array(c)

    fake = types.SimpleNamespace(
        cdist=cdist,
        dots_pack=dots_pack,
        angulars_packed=lambda q, packed: cdist(q, packed, "angular", threads=1, out_dtype="f32"),
        __version__="0",
    )
    cell = cosine_peers.single_cell(16, 200, {"numkong": fake}, rounds=1, min_time=0.001)
    assert cell["agree"], cell["problems"]
    assert {"numkong", "numkong_packed"} <= set(cell["times"]) and packed_rows == [200]
    batch = cosine_peers.batched_cell(3, 16, 100, {"numkong": fake}, rounds=1, min_time=0.001)
    assert batch["agree"] and {"numkong", "numkong_packed"} <= set(batch["times"])
    half = cosine_peers.half_cell(100, 16, {"numkong": fake}, rounds=1, min_time=0.001)
    assert half["agree"], half["problems"]
    assert {"numkong_f32", "numkong_f16", "numkong_f16_packed"} <= set(half["times"])
    r = {
        "isa": "avx2",
        "llc_bytes": 2**25,
        "versions": {"numkong": "0"},
        "single": [cell],
        "batched": [batch],
        "half": half,
        "peers": {"numkong": "installed"},
    }
    text = cosine_peers.report(r)
    assert "NumKong cdist" in text and "NumKong packed" in text and "NumKong angulars_packed" in text
    assert "NumKong packed, float16" in text and "with the faster output type" in text
    assert set(half["numkong_out_dtype"]) == {"numkong_f32", "numkong_f16"} | (
        {"numkong_bf16"} if "numkong_bf16" in half["times"] else set()
    )
    assert cosine_peers.findings(r)[-1] == "verified: every peer agrees with tlalloc"
    assert any("NumKong packed" in g for g, _ in cosine_peers.goals(r))

    fake.angulars_packed = lambda q, packed: np.ones((len(q), len(packed)))
    wrong = cosine_peers.single_cell(16, 200, {"numkong": fake}, rounds=1, min_time=0.001)
    assert not wrong["agree"] and wrong["problems"][0].startswith("numkong_packed: differs from tlalloc")


def test_cosine_section_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        cosine_peers.compare("fast", peers={})


def test_interleaved_rounds_time_every_function_and_rotate_the_order() -> None:
    order: list[str] = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    r = cosine_peers.interleaved(fns, rounds=3, min_time=0.0)
    assert set(r) == set("abc")
    assert order[3:] == list("abc") + list("bca") + list("cab")  # after one calibration call each


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_interleaved_sees_work_done_on_other_threads() -> None:
    # A persistent worker, as BLAS and OpenMP keep theirs (a thread that has exited
    # is no longer listed, so its time would not be seen).
    import queue
    import threading
    import time

    def spin() -> None:
        end = time.thread_time() + 0.06
        while time.thread_time() < end:
            pass

    jobs: queue.Queue[threading.Event | None] = queue.Queue()

    def worker() -> None:
        while (done := jobs.get()) is not None:
            spin()
            done.set()

    t = threading.Thread(target=worker)
    t.start()

    def handed_off() -> None:
        done = threading.Event()
        jobs.put(done)
        done.wait()

    try:
        r = cosine_peers.interleaved({"handed_off": handed_off, "inline": spin}, rounds=2, min_time=0.0)
    finally:
        jobs.put(None)
        t.join()
    assert r["handed_off"]["other_threads_share"] > 1 and r["inline"]["other_threads_share"] < 0.5
    assert cosine_peers.off_thread({"single": [{"times": r}], "batched": []}) == ["handed_off"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_blas_thread_limit_holds_with_a_second_openblas_loaded() -> None:
    # faiss-cpu's wheel loads its own OpenBLAS, whose path sorts before NumPy's:
    # limiting only the first one found left NumPy's matrix-vector product on two threads.
    pytest.importorskip("faiss")
    c = np.ones((20_000, 768), np.float32)
    q = np.ones(768, np.float32)
    with _common.blas_threads(1) as n:
        if n is None:
            pytest.skip("NumPy's BLAS is not an OpenBLAS found by name")
        before = cosine_peers.other_threads_cpu()
        for _ in range(100):
            c @ q
        assert cosine_peers.other_threads_cpu() - before < 0.05
