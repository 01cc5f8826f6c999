"""``tlalloc bench dask``: skipped with a message without Dask; registered in the CLI."""

from __future__ import annotations

from conftest import run_python
from tlalloc import cli


def test_dask_suite_is_registered():
    assert cli.SUITES["dask"] == "tlalloc.bench.dask"


def test_bench_dask_is_skipped_with_a_message_without_dask():
    # As if Dask were not installed: importing distributed fails.
    code = ("import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
            "from tlalloc.cli import main\n"
            "sys.exit(main(['bench', 'dask', '--quick']))\n")
    r = run_python(code, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "tlalloc bench dask: skipped: Dask is not installed" in r.stdout
    assert 'pip install "tlalloc[dask]"' in r.stdout


def test_tlalloc_dask_without_dask_names_the_extra():
    code = ("import sys; sys.modules['distributed'] = None\n"
            "try:\n    import tlalloc.dask\nexcept ImportError as e:\n    print(e)\n")
    r = run_python(code, timeout=120)
    assert 'tlalloc.dask needs Dask: pip install "tlalloc[dask]"' in r.stdout, r.stderr
