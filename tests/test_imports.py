"""The dependency rule, checked from the source (style.md, issue 13).

Dependencies point inward:

* ``merkle`` imports only the standard library;
* ``format``, ``verify``, ``notes`` and ``proofs`` import neither ``writer``, ``cold``,
  ``projections`` nor ``cli``;
* ``cold`` does not import ``writer``;
* only ``cli`` imports typer or rich.

Files are parsed with ``ast`` (nothing is imported), so a module may be a file or a
package (``verify.py`` or ``verify/``) and the test still applies. Every import
counts, also one inside a function.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "ledger"

# Edges that break the rule today in a module being restructured elsewhere (issue 13).
# Each names its file; remove it when the edge is gone.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (``from . import x`` gives ``pkg.x``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # ``from . import writer`` imports the module ledger.writer
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def _modules() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(LIB.rglob("*.py"))}


def _in(module: str, area: str) -> bool:
    """``module`` is ``area`` or inside it (``ledger.cold.stores`` is in ``ledger.cold``)."""
    return module == area or module.startswith(area + ".")


def _violations() -> list[str]:
    bad = []
    inner = [f"ledger.{m}" for m in ("format", "verify", "notes", "proofs")]
    outer = [f"ledger.{m}" for m in ("writer", "cold", "projections", "cli")]
    for module, imported in _modules().items():
        for target in sorted(imported):
            top = target.split(".")[0]
            edge = (module, target)
            if edge in KNOWN_EXCEPTIONS:
                continue
            if _in(module, "ledger.merkle") and top not in sys.stdlib_module_names and top != "__future__":
                bad.append(f"{module} -> {target}: merkle imports only the standard library")
            if any(_in(module, m) for m in inner) and any(_in(target, o) for o in outer):
                bad.append(f"{module} -> {target}: format/verify/notes/proofs must not import {target}")
            if _in(module, "ledger.cold") and _in(target, "ledger.writer"):
                bad.append(f"{module} -> {target}: the cold tier must not import the writer")
            if top in ("typer", "rich", "click") and not _in(module, "ledger.cli"):
                bad.append(f"{module} -> {target}: only the CLI imports typer or rich")
    return bad


def test_modules_are_found():
    modules = _modules()
    assert "ledger.merkle" in modules and "ledger.layout" in modules and "ledger.cold.archive" in modules
    assert "ledger.layout" in modules["ledger.writer"]  # `from . import layout` is resolved


def test_dependencies_point_inward():
    bad = _violations()
    assert not bad, "\n".join(bad)


def test_known_exceptions_are_still_needed():
    """An exception that no longer occurs is removed, so the rule tightens as modules move."""
    edges = {(m, t) for m, imported in _modules().items() for t in imported}
    assert edges >= KNOWN_EXCEPTIONS, KNOWN_EXCEPTIONS - edges


def test_the_checker_sees_a_forbidden_edge(tmp_path, monkeypatch):
    """The rule is live: an edge like the one cold.archive had before hot.py is caught."""
    lib = tmp_path / "ledger"
    (lib / "cold").mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    (lib / "cold" / "__init__.py").write_text("")
    (lib / "cold" / "archive.py").write_text("from ..writer import SEALS_DIR\n")
    (lib / "merkle.py").write_text("import msgspec\n")
    (lib / "verify.py").write_text("def f():\n    from .cold import stores\n")
    (lib / "tail.py").write_text("import rich\n")
    monkeypatch.setattr(sys.modules[__name__], "LIB", lib)
    bad = "\n".join(_violations())
    assert "ledger.cold.archive -> ledger.writer" in bad
    assert "ledger.merkle -> msgspec" in bad
    assert "ledger.verify -> ledger.cold" in bad
    assert "ledger.tail -> rich" in bad
