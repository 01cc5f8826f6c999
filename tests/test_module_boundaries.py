"""The package's modules depend on each other one way, read from their source.

- No module imports another module's private name (one leading underscore), by
  ``from tlalloc.x import _name`` or as ``x._name``: what modules share is public
  within the package (the report formatting of ``tlalloc._report``, for one).
  The extension module ``tlalloc._tlalloc`` is the exception: its underscore
  names are the binding the Python modules are written on, kept out of users'
  sight.
- The library imports nothing from ``tlalloc.bench``; only the command line
  (``tlalloc.cli``, ``tlalloc._stats_cli``) does.
- A benchmark suite (a module ``tlalloc.cli.SUITES`` or ``tlalloc.cli.SECTIONS``
  names) imports no other suite, and no helper of the suites imports one: suites
  that run together are composed by the command line.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

import tlalloc
from tlalloc import cli

PACKAGE = Path(tlalloc.__file__).parent
EXTENSION = "tlalloc._tlalloc"
COMMAND_LINE = {"tlalloc.cli", "tlalloc._stats_cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("tlalloc", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_module(name: str) -> bool:
    if name in MODULES or name == EXTENSION:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str) -> Iterator[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for every import, those
    inside functions included; ``from a import b`` with ``a.b`` a module gives
    ``a.b`` and no name."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if source.startswith("tlalloc") and _is_module(sub):
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, source, alias.name


def _private_uses(module: str) -> Iterator[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    bound: dict[str, str] = {}  # local name -> package module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if source.startswith("tlalloc") and _is_module(sub):
                    bound[alias.asname or alias.name] = sub
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.startswith("tlalloc"):
                    bound[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if not source.startswith("tlalloc") or source in (module, EXTENSION):
                continue
            for alias in node.names:
                if _is_private(alias.name) and not _is_module(f"{source}.{alias.name}"):
                    yield f"line {node.lineno}: from {source} import {alias.name}"
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in bound and _is_private(node.attr)):
            target = bound[node.value.id]
            if target not in (module, EXTENSION) and not _is_module(f"{target}.{node.attr}"):
                yield f"line {node.lineno}: {node.value.id}.{node.attr} ({target})"


def _suites() -> set[str]:
    names = set(cli.SUITES.values())
    for modules in getattr(cli, "SECTIONS", {}).values():
        names.update(modules)
    return names


def test_the_walk_sees_every_module_and_the_suites() -> None:
    assert {"tlalloc", "tlalloc.advise", "tlalloc._report", "tlalloc.bench.mix"} <= set(MODULES)
    assert {"tlalloc.bench.mix", "tlalloc.bench.kernel_compare"} <= _suites() <= set(MODULES)
    lines = list(_imports("tlalloc.summary"))
    assert any(m == "tlalloc._report" for _, m, _ in lines)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_name(module: str) -> None:
    assert list(_private_uses(module)) == []


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if not m.startswith("tlalloc.bench") and m not in COMMAND_LINE))
def test_the_library_does_not_import_the_benchmarks(module: str) -> None:
    bad = [f"line {n}: {m}" for n, m, _ in _imports(module)
           if m == "tlalloc.bench" or m.startswith("tlalloc.bench.")]
    assert bad == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("tlalloc.bench.")))
def test_no_benchmark_module_imports_a_suite(module: str) -> None:
    suites = _suites()
    bad = [f"line {n}: {m}" for n, m, _ in _imports(module) if m in suites and m != module]
    assert bad == []


def test_the_checks_catch_what_they_forbid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules above fail on the imports they forbid (a module written here)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from tlalloc import advise\n"
        "from tlalloc.advise import _Tracker\n"
        "import tlalloc.bench.mix\n"
        "def f():\n"
        "    from tlalloc.bench import kernel_compare\n"
        "    return advise._Tracker, kernel_compare\n",
        encoding="utf-8",
    )
    monkeypatch.setitem(MODULES, "tlalloc.bench.probe", probe)
    assert len(list(_private_uses("tlalloc.bench.probe"))) == 2
    suites = _suites()
    found = {m for _, m, _ in _imports("tlalloc.bench.probe") if m in suites}
    assert found == {"tlalloc.bench.mix", "tlalloc.bench.kernel_compare"}
