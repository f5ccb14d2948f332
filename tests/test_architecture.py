"""The package's shape, read from its source (issue 17): what import-linter cannot see.

import-linter (``make lint``) checks the layers, the cycles and the Qt/torch boundaries;
these tests check the conventions that keep those contracts honest: imports of the
package's own modules inside functions only where the imported module is heavy (and
say so), no private name imported across modules, no function longer than 80 lines of
body without a stated reason, and nothing inside the package imports its root.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_topolens"
LONGEST_BODY = 80


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: list[str]


def _modules() -> list[Module]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        text = path.read_text(encoding="utf-8")
        modules.append(Module(".".join(parts), path, ast.parse(text), text.splitlines()))
    return modules


MODULES = _modules()
NAMES = {module.name for module in MODULES}


def _where(module: Module, node: ast.AST) -> str:
    return f"{module.path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"


def _imported_from(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if module.path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _own_imports(module: Module, node: ast.AST) -> list[tuple[str, str]]:
    """(imported module, imported name or '') for imports of the package's own code."""
    if isinstance(node, ast.Import):
        return [
            (alias.name, "") for alias in node.names if alias.name.startswith("napari_topolens")
        ]
    if isinstance(node, ast.ImportFrom):
        source = _imported_from(module, node)
        if source.startswith("napari_topolens"):
            return [(source, alias.name) for alias in node.names]
    return []


def _module_level_nodes(module: Module) -> set[int]:
    """Nodes run at import (including ``if TYPE_CHECKING:`` blocks), not inside defs."""
    ids: set[int] = set()
    for statement in module.tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        ids.update(id(node) for node in ast.walk(statement))
    return ids


def _has_reason(module: Module, line: int, tag: str) -> bool:
    here = module.lines[line - 1]
    above = module.lines[line - 2].strip() if line >= 2 else ""
    return f"# {tag}:" in here or above.startswith(f"# {tag}:")


def test_own_modules_are_imported_inside_functions_only_when_heavy():
    # the root's lazy re-exports are the one place meant to import on first use
    unexplained = [
        f"{_where(module, node)}  {module.lines[node.lineno - 1].strip()}"
        for module in MODULES
        if module.name != "napari_topolens"
        for node in ast.walk(module.tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and _own_imports(module, node)
        and id(node) not in _module_level_nodes(module)
        and not _has_reason(module, node.lineno, "heavy")
    ]
    assert not unexplained, (
        "import these at module level, or say why the imported module is heavy in a "
        "'# heavy: <module> imports <library>' comment:\n" + "\n".join(unexplained)
    )


def test_no_private_name_is_imported_across_modules():
    crossings = [
        f"{_where(module, node)}  {source}.{name}"
        for module in MODULES
        for node in ast.walk(module.tree)
        if isinstance(node, ast.ImportFrom)
        for source, name in _own_imports(module, node)
        if name.startswith("_")
        and not name.startswith("__")
        and f"{source}.{name}" not in NAMES  # a private module is not a private name
    ]
    assert not crossings, "promote these to public names or move them:\n" + "\n".join(crossings)


def test_nothing_inside_the_package_imports_its_root():
    importers = [
        _where(module, node)
        for module in MODULES
        if module.name != "napari_topolens"
        for node in ast.walk(module.tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for source, name in _own_imports(module, node)
        if source == "napari_topolens" and f"napari_topolens.{name}" not in NAMES
    ]
    assert not importers, "import napari_topolens._version (or the module itself) instead"


def _body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    first = body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    start = (first.end_lineno or first.lineno) + 1 if docstring else first.lineno
    if docstring and len(body) == 1:
        return 0
    return (function.end_lineno or function.lineno) - start + 1


def test_no_function_body_is_longer_than_80_lines_without_a_reason():
    long_ones = []
    for module in MODULES:
        for node in ast.walk(module.tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first_line = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if _body_lines(node) > LONGEST_BODY and not _has_reason(module, first_line, "long"):
                long_ones.append(f"{_where(module, node)}  {node.name}: {_body_lines(node)} lines")
    assert not long_ones, (
        "split these into named steps, or give the reason in a '# long: ...' comment "
        "on the line above the def:\n" + "\n".join(long_ones)
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    '''Doc.'''\n" + "    x = 1\n" * 81, True),
        ("def f():\n    '''Doc.'''\n" + "    x = 1\n" * 80, False),
        ("# long: a table\ndef f():\n" + "    x = 1\n" * 81, False),
    ],
)
def test_the_length_rule_counts_the_body_without_the_docstring(source, expected):
    tree = ast.parse(source)
    module = Module("napari_topolens.example", PACKAGE / "example.py", tree, source.splitlines())
    (function,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    first_line = function.lineno
    flagged = _body_lines(function) > LONGEST_BODY and not _has_reason(module, first_line, "long")
    assert flagged is expected
