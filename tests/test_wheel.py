"""The installed package holds everything a wheel must carry: the extension, the
two plain shared libraries (libtlalloc.so for LD_PRELOAD, liblivecount.so), the
type stubs. Checked wherever tlalloc is installed (a wheel, `pip install .`); a
development build on PYTHONPATH (scripts/dev-build.sh) has no plain libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tlalloc

PKG = Path(tlalloc.__file__).resolve().parent
INSTALLED = "site-packages" in PKG.parts or "dist-packages" in PKG.parts
pytestmark = pytest.mark.skipif(not INSTALLED, reason=f"tlalloc is not installed here: {PKG}")


def test_package_carries_its_libraries_and_stubs() -> None:
    assert list(PKG.glob("_tlalloc*.so")), sorted(p.name for p in PKG.iterdir())
    for lib in ("libtlalloc.so", "liblivecount.so"):
        path = PKG / "_lib" / lib
        assert path.is_file() and path.stat().st_size > 0, path
    assert (PKG / "_tlalloc.pyi").is_file() and (PKG / "py.typed").is_file()


def test_preload_library_of_the_package_runs_a_program() -> None:
    from tlalloc.pool import preload_path

    lib = preload_path()
    assert Path(lib).resolve().parent == PKG / "_lib"
    env = dict(os.environ, LD_PRELOAD=lib)
    r = subprocess.run([sys.executable, "-c", "print(sum(len(str(i)) for i in range(10000)))"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "38890", r.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tlalloc"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (not a venv install)")
    r = subprocess.run([str(script), "preload-path"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("libtlalloc.so")
