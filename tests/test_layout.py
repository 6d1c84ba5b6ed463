"""The layout holds: no import circles, no import that reaches up a layer, and few modules
directly in ``workloads/`` (read from the source with ``ast``, every import counted, also
those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("datamodel", "cluster", "profiling", "workloads")
LAYERS = {
    "datamodel": 0,
    "cluster": 1,
    "profiling": 1,
    "workloads.service": 2,
    "workloads.stack": 3,
    "workloads.load": 4,
    "workloads.runs": 5,
    "workloads": 6,
}
"""Lower layers never import higher ones: the shared data model, then the cluster and the
profiler, then in ``workloads/`` the service, the stack under load, the load, the runs,
and last the command lines and benchmarks (``workloads.run``, ``workloads.bench`` ...)."""
MOST_TOP_MODULES = 10


def modules() -> dict[str, Path]:
    """Every first-party module by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (``from pkg import mod`` is ``pkg.mod``;
    ``from pkg import name`` is ``pkg``)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            else:
                continue
            for name in names:
                target = resolve(name) if name.split(".")[0] in PACKAGES else None
                if target and target != module:
                    out[module].add(target)
    return out


def layer(module: str) -> int:
    """The layer of ``module``: its longest prefix in :data:`LAYERS`."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return LAYERS[".".join(parts[:k])]
    raise AssertionError(f"{module} is in no layer")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycles_finds_a_planted_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    assert cycles(edges(modules())) == []


def test_no_import_reaches_up_a_layer() -> None:
    graph = edges(modules())
    upward = sorted((a, b) for a, bs in graph.items() for b in bs if layer(b) > layer(a))
    assert upward == [], upward


def test_few_modules_directly_in_workloads() -> None:
    top = sorted(p.name for p in (ROOT / "workloads").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MOST_TOP_MODULES, top
