"""The import graph of trainers/, tools/ and datasets/: no cycle, and trainers/ never imports datasets/.

Forks copy trainers/ alone (tools/adopt.py), so trainers/ must not need datasets/. A cycle makes import order matter
(a module sees a half-initialised partner) and was how datasets/cache.py <-> core.py <-> sampling.py used to hang
together. Imports are read with ``ast`` (nothing is imported), function-level (lazy) imports included because they
still close a cycle at run time; ``if TYPE_CHECKING:`` blocks are skipped because they never run.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Optional, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("trainers", "tools", "datasets")
MAX_LINES = 500


def module_files(root: str, packages=PACKAGES) -> Dict[str, str]:
    """Dotted module name -> file path of every .py file below the given top-level folders of ``root``."""
    out: Dict[str, str] = {}
    for pkg in packages:
        for base, dirs, files in os.walk(os.path.join(root, pkg)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(base, f), root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = os.path.join(base, f)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every Import/ImportFrom below ``node``, at any depth, except inside ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _resolve(name: str, modules: Dict[str, str]) -> Optional[str]:
    """The most specific known module ``name`` or a parent of it names (``a.b.func`` -> ``a.b``), else None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def imports_of(module: str, path: str, modules: Dict[str, str]) -> Set[str]:
    """The known modules that ``module`` (file ``path``) imports."""
    with open(path, "r", encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_pkg = os.path.basename(path) == "__init__.py"
    found: Set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub`` imports the submodule pkg.sub when there is one, else names of pkg itself
            targets = [f"{prefix}.{a.name}" for a in node.names]
        for t in targets:
            hit = _resolve(t, modules)
            if hit is not None and hit != module:
                found.add(hit)
    return found


def import_graph(root: str, packages=PACKAGES) -> Dict[str, Set[str]]:
    modules = module_files(root, packages)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted; [] when acyclic."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


# ------------------------------------------------------------------------------------------------ the checker
def _write(root, rel: str, text: str) -> None:
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def test_checker_finds_a_lazy_three_module_cycle_and_resolves_relative_imports(tmp_path):
    """The checker itself can fail: a -> b (relative), b -> c (absolute), c -> a (inside a function)."""
    _write(tmp_path, "pkg/__init__.py", "")
    _write(tmp_path, "pkg/a.py", "from .b import thing\n")
    _write(tmp_path, "pkg/b.py", "import pkg.c\nthing = 1\n")
    _write(tmp_path, "pkg/c.py", "def f():\n    from pkg import a\n    return a\n")
    _write(tmp_path, "pkg/sub/__init__.py", "from .. import b\nfrom .leaf import x\n")
    _write(tmp_path, "pkg/sub/leaf.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import sub\n"
                                        "x = 0\n")
    graph = import_graph(str(tmp_path), ("pkg",))
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.sub"] == {"pkg.b", "pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == set()  # TYPE_CHECKING imports never run
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    graph["pkg.c"] = set()
    assert find_cycles(graph) == []


def test_no_import_cycle_in_trainers_tools_datasets():
    graph = import_graph(ROOT)
    assert "datasets.cache" in graph and "trainers.core.diversify" in graph, sorted(graph)
    cycles = find_cycles(graph)
    assert cycles == [], "Import cycles (each a strongly connected group of modules): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_datasets_cache_core_sampling_cycle_is_gone():
    """The cycle the issue named: cache needs sampling, so neither sampling nor what cache writes with may need it."""
    graph = import_graph(ROOT)
    assert "datasets.sampling" in graph["datasets.cache"]
    assert "datasets.cache" not in graph["datasets.sampling"]
    assert "datasets.core" not in graph  # split by concern into errors/items/specs/paths/splits/readers/...


def test_trainers_never_import_datasets():
    """Forks copy trainers/ alone: nothing under trainers/ may import datasets/ (lazily or not)."""
    graph = import_graph(ROOT, ("trainers", "datasets"))
    bad = {m: sorted(t for t in targets if t.split(".")[0] == "datasets")
           for m, targets in graph.items() if m.split(".")[0] == "trainers"}
    bad = {m: t for m, t in bad.items() if t}
    assert bad == {}, f"trainers/ modules importing datasets/: {bad}; move the shared code into trainers/core."


def test_every_module_stays_under_the_line_limit():
    """No module under trainers/, tools/ or datasets/ exceeds 500 lines (one concern per module, issue 12)."""
    modules = module_files(ROOT, ("datasets", "trainers", "tools"))
    assert {"tools.results.protocols.base2new", "trainers.base", "trainers.core.synthesis"} <= set(modules)
    lines = {}
    for path in modules.values():
        with open(path, encoding="utf-8") as f:
            lines[path] = sum(1 for _ in f)
    long = {p: n for p, n in lines.items() if n > MAX_LINES}
    assert long == {}, f"Files over {MAX_LINES} lines: {long}"
