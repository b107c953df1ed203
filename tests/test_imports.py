"""The import rule (DESIGN.md), read from the code: data flows frontend -> IR -> passes -> fusion
-> codegen -> plan -> runtime.

- runtime/ and kernels/ import nothing of trident.compiler beyond config, errors, ir (with the
  plan, compiler/ir/) and ops;
- under compiler/, only build.py imports trident.runtime;
- no module imports itself back through others (no cycles), in any of trident's packages.

Imports are read from each file's syntax tree, those inside functions included (a function-level
import is still a dependency, only a later one). A second graph holds what runs at import time:
module-level imports only, and since importing a.b.c runs package a.b's __init__ first, an edge
to a.b as well (unless a.b is a package of the importer, already initializing). A cycle there is
an ImportError for whoever imports the wrong module first.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "kernels", "runtime", "tools", "models")
RUNTIME_MAY_USE = ("config", "errors", "ir", "ops")  # of trident.compiler, for runtime/ and kernels/


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """trident.<package>.<module> -> its file, for every .py file of the packages."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(["trident", *parts])] = path
    return out


def _imported_names(tree: ast.AST, module: str, is_package: bool, module_level: bool = False):
    """(line, dotted name) of everything imported anywhere in the tree (module_level: outside
    functions only); `from a import b` gives a.b (a submodule or a name in a; resolved against
    the modules later)."""
    for node in (_outside_functions(tree) if module_level else ast.walk(tree)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _outside_functions(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield node
            yield from _outside_functions(node)


def import_graph(files: dict[str, Path], import_time: bool = False) -> dict[str, dict[str, int]]:
    """module -> {trident module it imports: line of the first such import}; import_time: the
    module-level imports only, and the packages whose __init__ each one runs."""
    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        own_packages = _packages_of(module)
        edges: dict[str, int] = {}
        for line, name in _imported_names(tree, module, path.name == "__init__.py", import_time):
            target = resolve(name)
            if target is None:
                continue
            for imported in [target, *(_packages_of(target) if import_time else [])]:
                if imported in files and imported != module and imported not in own_packages:
                    edges.setdefault(imported, line)
        graph[module] = edges
    return graph


def _packages_of(module: str) -> list[str]:
    """The packages whose __init__ Python runs before `module`: a.b.c -> [a.b, a]."""
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a cycle
    path through it, sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_cycle_through(sorted(component), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _cycle_through(component: list[str], graph) -> list[str]:
    """One import path from the component's first module back to itself (breadth first)."""
    members, start = set(component), component[0]
    came_from = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while came_from[path[-1]] is not None:
                        path.append(came_from[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w in members and w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def describe(cycle: list[str], graph) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    allowed = {f"trident.compiler.{m}" for m in RUNTIME_MAY_USE}
    problems = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if module.startswith(("trident.runtime", "trident.kernels")) and \
                    target.startswith("trident.compiler") and \
                    not any(target == a or target.startswith(a + ".") for a in allowed):
                problems.append(f"{module} imports {target} (line {line}): the runtime and the kernel "
                                f"templates may use only trident.compiler.{{{', '.join(RUNTIME_MAY_USE)}}}")
            if module.startswith("trident.compiler") and module != "trident.compiler.build" and \
                    target.startswith("trident.runtime"):
                problems.append(f"{module} imports {target} (line {line}): under compiler/ only "
                                f"build.py imports the runtime")
    return problems


@pytest.fixture(scope="module")
def graph():
    return import_graph(module_files(ROOT))


@pytest.fixture(scope="module")
def import_time_graph():
    return import_graph(module_files(ROOT), import_time=True)


def test_the_walker_sees_trident(graph):
    assert len(graph) > 80
    assert "trident.runtime.engine" in graph["trident.compiler.build"]
    # a function-level import counts: compiler/__init__ builds engines through build.py
    assert "trident.compiler.build" in graph["trident.compiler"]
    # `from trident.compiler import config` is the config module, not the package
    assert "trident.compiler.config" in graph["trident.kernels.common"]


def test_runtime_and_kernels_are_leaves_and_only_build_imports_the_runtime(graph):
    problems = layer_violations(graph)
    assert not problems, "imports against the rule:\n" + "\n".join(problems)


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(c, graph) for c in found)


def test_no_import_time_cycles_through_package_inits(import_time_graph):
    found = cycles(import_time_graph)
    assert not found, "import-time cycles:\n" + "\n".join(describe(c, import_time_graph) for c in found)



def test_the_checks_fail_on_a_cycle_and_on_an_upward_import(tmp_path):
    """The checker itself: a made-up tree with a cycle through a function-level import, and a
    runtime module that reaches into the compiler's codegen."""
    files = {
        "compiler/__init__.py": "",
        "compiler/a.py": "from trident.compiler import b\n",
        "compiler/b.py": "def f():\n    from trident.compiler.a import g\n",
        "compiler/codegen.py": "",
        "runtime/__init__.py": "",
        "runtime/engine.py": "from trident.compiler.codegen import x\nfrom trident.compiler import config\n",
        "compiler/config.py": "from . import errors\n",
        "compiler/errors.py": "",
        "compiler/passes.py": "import trident.runtime.engine\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(module_files(tmp_path, ("compiler", "runtime")))
    assert graph["trident.compiler.config"] == {"trident.compiler.errors": 1}  # relative import
    assert cycles(graph) == [["trident.compiler.a", "trident.compiler.b", "trident.compiler.a"]]
    problems = layer_violations(graph)
    assert len(problems) == 2
    assert "trident.runtime.engine imports trident.compiler.codegen" in problems[1]
    assert "trident.compiler.passes imports trident.runtime.engine" in problems[0]
