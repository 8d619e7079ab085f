"""The house rules ARCHITECTURE.md states, checked on the source: no import circles among the package's modules
(module-level imports, and lazy ones inside functions too), and no function longer than 60 lines. Both read the code
(ast), nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autobackswap_cli"
MAX_FUNCTION_LINES = 60
# functions allowed to be longer than MAX_FUNCTION_LINES (none)
LENGTH_EXEMPT: set[str] = set()


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``autobackswap_cli/compose/core.py`` -> ``autobackswap_cli.compose.core`` (a package: its ``__init__``)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module, lazy: bool = False):
    """Import nodes that run when the module is imported: at the top, or inside module-level if/try/with blocks,
    but not under ``if TYPE_CHECKING:``; with ``lazy``, also those inside functions and classes (they run later,
    but a circle through them is a circle all the same)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            todo.extend(node.orelse if _is_type_checking(node.test) else node.body + node.orelse)
        elif isinstance(node, ast.Try):
            todo.extend(node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body])
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            todo.extend(node.body)
        elif lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While)):
            todo.extend(node.body + getattr(node, "orelse", []))


def _with_packages(target: str, importer: str, is_package: bool) -> list[str]:
    """``target`` and the packages above it that importing it runs first: those that are not the importer's own
    (a module's own packages are already importing when it runs)."""
    own = importer.split(".") if is_package else importer.split(".")[:-1]
    parts = target.split(".")
    above = [".".join(parts[:n]) for n in range(1, len(parts))]
    return [p for p in above if own[: len(p.split("."))] != p.split(".")] + [target]


def imports_of(name: str, path: Path, modules: dict[str, Path], lazy: bool = False) -> set[str]:
    """The package modules that module ``name`` (at ``path``) imports at module level (with ``lazy``: anywhere). Relative imports are
    resolved; ``from . import x`` counts as importing the submodule ``x`` when there is one; importing ``a.b.c``
    also imports the packages ``a.b`` and ``a`` (their ``__init__`` runs first) unless the importer is inside them."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _module_level_imports(ast.parse(path.read_text(), str(path)), lazy):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
        found.update(m for t in targets if t in modules for m in _with_packages(t, name, is_package) if m in modules and m != name)
    return found


def import_graph(root: Path = PACKAGE, lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (with ``lazy``: inside functions too)."""
    modules = package_modules(root)
    return {name: imports_of(name, path, modules, lazy) for name, path in modules.items()}


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(circles)


def long_functions(root: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES, exempt: set[str] = frozenset()) -> list[str]:
    """``file:line name (N lines)`` for every function or method longer than ``limit`` lines, counted from its
    ``def`` to the last line of its body (decorators not counted)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).as_posix() in exempt:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


# --------------------------------------------------------------------------- the rules


def test_the_package_has_no_import_circles():
    circles = find_circles(import_graph())
    assert not circles, "import circles (module-level imports):\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_package_has_no_import_circles_through_lazy_imports_either():
    circles = find_circles(import_graph(lazy=True))
    assert not circles, "import circles (counting imports inside functions):\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_no_function_is_longer_than_60_lines():
    found = long_functions(exempt=LENGTH_EXEMPT)
    assert not found, f"functions longer than {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


# --------------------------------------------------------------------------- the checks check


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for rel, text in files.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    return package


def test_a_circle_is_found(tmp_path):
    package = _write(tmp_path, {"__init__.py": "", "a.py": "from .b import x\n", "b.py": "from . import c\n",
                                "c.py": "from .a import y\n"})
    assert find_circles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.c"]]


@pytest.mark.parametrize("b_text", [
    "def f():\n    from .a import x\n",  # inside a function
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
    "import typing\nif typing.TYPE_CHECKING:\n    from .a import x\n",
])
def test_imports_that_do_not_run_at_import_time_are_no_circle(tmp_path, b_text):
    package = _write(tmp_path, {"__init__.py": "", "a.py": "from .b import x\n", "b.py": b_text})
    assert find_circles(import_graph(package)) == []


def test_a_lazy_circle_is_found_when_lazy_imports_count(tmp_path):
    package = _write(tmp_path, {"__init__.py": "def run():\n    from .step import Step\n",
                                "step.py": "class Step:\n    def go(self):\n        from . import run\n"})
    assert find_circles(import_graph(package)) == [] and find_circles(import_graph(package, lazy=True)) == [["pkg", "pkg.step"]]
    typing_only = _write(tmp_path / "t", {"__init__.py": "", "a.py": "from .b import x\n",
                                          "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n"})
    assert find_circles(import_graph(typing_only, lazy=True)) == []


def test_relative_imports_resolve_across_packages(tmp_path):
    package = _write(tmp_path, {"__init__.py": "", "top.py": "from .sub.leaf import x\n", "sub/__init__.py": "from .leaf import x\n",
                                "sub/leaf.py": "from ..top import y\n", "other.py": "import pkg.top\n"})
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.sub.leaf"} and graph["pkg.sub.leaf"] == {"pkg.top"} and graph["pkg.other"] == {"pkg.top"}
    assert graph["pkg.top"] == {"pkg.sub", "pkg.sub.leaf"}  # importing pkg.sub.leaf runs pkg/sub/__init__ first
    assert find_circles(graph) == [["pkg.sub", "pkg.sub.leaf", "pkg.top"]]


def test_a_long_function_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    package = _write(tmp_path, {"__init__.py": "", "m.py": f"def short():\n    pass\n\n\ndef long():\n{body}\n"})
    assert long_functions(package) == ["pkg/m.py:5 long (61 lines)"]


def test_a_circle_through_a_package_init_is_found(tmp_path):
    """``desc`` imports ``engine.errors``, which runs ``engine/__init__`` first, which imports ``engine.record``,
    which imports ``desc``: a circle, though no two modules name each other."""
    package = _write(tmp_path, {"__init__.py": "", "desc.py": "from .engine.errors import E\n", "engine/__init__.py": "from .record import r\n",
                                "engine/errors.py": "class E(Exception): pass\n", "engine/record.py": "from ..desc import d\n"})
    assert find_circles(import_graph(package)) == [["pkg.desc", "pkg.engine", "pkg.engine.record"]]


def test_no_hidden_state_in_context_variables():
    """What a step reads (DATA's class rule above all) is passed to it explicitly, as an ``engine.Dataset`` or a
    ``DatasetLayout``: no module of the package keeps state in a ``ContextVar`` that no signature shows."""
    offenders = []
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id == "ContextVar" or isinstance(node, ast.Attribute) and node.attr == "ContextVar":
                offenders.append(f"{name}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and node.module == "contextvars":
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"ContextVar state in {', '.join(offenders)}"
