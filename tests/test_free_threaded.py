"""Free-threaded CPython (3.13t): importing tlalloc must not turn the GIL back on.

On a free-threaded build, importing an extension module that does not declare
``Py_mod_gil = Py_MOD_GIL_NOT_USED`` re-enables the GIL for the whole process
(with a RuntimeWarning) unless ``PYTHON_GIL=0`` forces it off. So each module is
imported in a fresh interpreter with ``PYTHON_GIL`` unset, and the GIL must still
be off afterwards. Skipped with the GIL (there is nothing to re-enable).
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import sysconfig

import pytest

import tlalloc

pytestmark = pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"), reason="needs a free-threaded CPython"
)

# Imports NAME (argv[1]) and prints whether the GIL is enabled afterwards.
# tlalloc.__main__ runs the command-line tool on import: it exits (usage), so
# SystemExit is expected there.
PROBE = """
import importlib, sys
name = sys.argv[1]
sys.argv = ["tlalloc"]
try:
    importlib.import_module(name)
except SystemExit:
    pass
print("GIL", int(sys._is_gil_enabled()))
"""


def tlalloc_modules() -> list[str]:
    """Every module of the installed package: sub-packages, the extension, __main__."""
    names = ["tlalloc"]
    for info in pkgutil.walk_packages(tlalloc.__path__, "tlalloc."):
        names.append(info.name)
    return sorted(names)


def gil_after_import(name: str, gil_env: str | None) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    if gil_env is not None:
        env["PYTHON_GIL"] = gil_env
    r = subprocess.run(
        [sys.executable, "-c", PROBE, name], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("GIL ")]
    assert lines, f"importing {name} failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    return lines[-1] == "GIL 1", r.stderr


def test_module_list_covers_the_extension_and_the_benchmarks():
    names = tlalloc_modules()
    for expected in ("tlalloc", "tlalloc._tlalloc", "tlalloc.__main__", "tlalloc.bench.alloc"):
        assert expected in names, names


def test_the_probe_sees_the_gil():
    # Control: with PYTHON_GIL=1 the same probe reports the GIL on, so a module
    # that re-enabled it would be seen.
    enabled, _ = gil_after_import("tlalloc", "1")
    assert enabled


@pytest.mark.parametrize("name", tlalloc_modules())
def test_importing_does_not_enable_the_gil(name):
    enabled, stderr = gil_after_import(name, None)
    assert not enabled, f"importing {name} re-enabled the GIL:\n{stderr}"
