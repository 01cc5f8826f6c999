"""Run the examples in the docstrings of the installed package's modules."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tlalloc

# Modules whose examples need an optional extra are skipped when it is missing.
OPTIONAL = {"tlalloc.metrics": "prometheus_client", "tlalloc.dask": "distributed"}


def _modules() -> list[str]:
    names = ["tlalloc"]
    for info in pkgutil.walk_packages(tlalloc.__path__, "tlalloc."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    extra = OPTIONAL.get(name)
    if extra:
        pytest.importorskip(extra)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_c_functions_have_examples():
    from tlalloc import _tlalloc

    for fn in (_tlalloc.thread_arena, _tlalloc.scratch):
        assert ">>>" in (fn.__doc__ or "")
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for fn in (_tlalloc.thread_arena, _tlalloc.scratch):
        for test in finder.find(fn, fn.__name__, globs={}):
            runner.run(test)
    assert runner.failures == 0
