"""The extension's type stubs name exactly what the extension defines."""

from __future__ import annotations

import ast
import importlib.resources

import tlalloc
from tlalloc import _tlalloc


def stub_names() -> set[str]:
    text = importlib.resources.files("tlalloc").joinpath("_tlalloc.pyi").read_text()
    names = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names - STUB_ONLY


# Names that exist only in the stub file, as typing helpers.
STUB_ONLY = {"_", "_Shape", "_Scratch"}


def test_every_extension_name_has_a_stub():
    module_names = {n for n in dir(_tlalloc) if not n.startswith("__")}
    missing = module_names - stub_names()
    assert not missing, f"names without a stub in _tlalloc.pyi: {sorted(missing)}"


def test_every_stub_exists_in_the_extension():
    stale = {n for n in stub_names() if not hasattr(_tlalloc, n)}
    assert not stale, f"stubs for names the extension lacks: {sorted(stale)}"


def test_py_typed_marker_is_installed():
    assert importlib.resources.files("tlalloc").joinpath("py.typed").is_file()
    assert tlalloc.__version__
