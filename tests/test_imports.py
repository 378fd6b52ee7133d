"""The import graph of src/npconv, built by parsing every import (those inside functions too),
has no cycle: lower floors never import higher ones. And the oracle imports no fast op.

Importing `a.b.c` runs the `__init__` of `a` and `a.b` first, so an edge to a module is also an
edge to each package above it, except the importer's own packages (already being imported).
"""

import ast
from pathlib import Path

import npconv

SRC = Path(npconv.__file__).resolve().parent

def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(name: str, path: Path, node: ast.AST, modules: dict) -> set[str]:
    """The npconv modules one import statement loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:
        package = name.split(".")[:len(name.split(".")) - node.level
                                  + (path.name == "__init__.py")]
        base = ".".join(package + ([base] if base else []))
    found = set()
    for alias in node.names:
        full = f"{base}.{alias.name}"
        found.add(full if full in modules else base)
    return found & set(modules)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _targets(name, path, node, modules):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):     # the target and its packages
                    dep = ".".join(parts[:i])
                    if dep in modules and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
                if target != name and name.startswith(target + "."):
                    graph[name].add(target)           # an explicit import of its own package
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_import_graph_is_acyclic():
    assert cycles(import_graph()) == []


def test_the_graph_builder_sees_cycles_and_function_imports():
    """A cycle closed by an import inside a function is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    node = ast.parse("def f():\n    from npconv import _kernels\n")
    modules = _modules()
    found = set().union(*(_targets("npconv.spec", SRC / "spec.py", n, modules)
                          for n in ast.walk(node)))
    assert found == {"npconv._kernels"}


def test_the_oracle_imports_no_fast_convolution():
    graph = import_graph()
    seen, todo = set(), ["npconv.reference"]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    fast = {"npconv.convolution", "npconv._kernels", "npconv.dask", "npconv.algorithms"}
    assert not seen & fast
