"""The package's imports flow one way: no module of `etl` imports, even inside a function, a
module that imports it back (directly or through others). Imports made only for type checking
(`if TYPE_CHECKING:`) do not run, so they do not count."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]



def module_name(root: Path, file: Path) -> str:
    parts = file.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(node: ast.AST, modules: set[str]) -> set[str]:
    """The modules of `modules` that `node` imports when it runs (at the top or in a function)."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return set().union(*(runtime_imports(child, modules) for child in node.orelse))
    found: set[str] = set()
    if isinstance(node, ast.Import):
        found = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from etl.build import plan` imports the module etl.build.plan; `from etl.x import name`, etl.x.
        found = {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                 for alias in node.names}
    for child in ast.iter_child_nodes(node):
        found |= runtime_imports(child, modules)
    return found & modules


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(root, file): file for file in root.rglob("*.py")}
    modules = set(files)
    return {name: runtime_imports(ast.parse(file.read_text()), modules) - {name}
            for name, file in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import cycle as [a, b, ..., a], or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> Optional[list[str]]:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            cycle = visit(imported, path + [name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_no_module_of_etl_imports_itself_back():
    graph = import_graph(REPO / "etl")
    assert "etl.build.plan" in graph and graph["etl.build.plan"]  # the graph is really built
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_hidden_in_a_function_is_found_and_a_type_checking_import_is_not(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                                  "thing = 1\n")
    assert find_cycle(import_graph(package)) is None
    (package / "b.py").write_text("def later():\n    from pkg import a\n    return a\n\nthing = 1\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.a"]
