"""The package's layout holds (issue 15): imports point one way, `meta/` imports nothing of
ours, the pass (`sync/`) knows nothing of the web, the insights only read, and no module
imports itself through a cycle. Read from the source, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sheet_bridge"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sheet_bridge"):
                for alias in node.names:
                    whole = f"{node.module}.{alias.name}"
                    deps.add(whole if whole in modules else str(node.module))
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("sheet_bridge")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


GRAPH = _graph()


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# (which modules, what they must not import)
RULES = [
    ("sheet_bridge.meta", lambda d: not _in(d, "sheet_bridge.meta")),
    ("sheet_bridge.sheets", lambda d: not _in(d, "sheet_bridge.sheets", "sheet_bridge.config")),
    (
        "sheet_bridge.sync",
        lambda d: (
            _in(
                d,
                "sheet_bridge.web",
                "sheet_bridge.cli",
                "sheet_bridge.local",
                "sheet_bridge.insights",
            )
            or d == "sheet_bridge.checks"
        ),
    ),
    (
        "sheet_bridge.insights",
        lambda d: (
            _in(d, "sheet_bridge.web", "sheet_bridge.cli", "sheet_bridge.local")
            or _in(d, "sheet_bridge.sync.run", "sheet_bridge.sheets", "sheet_bridge.meta.client")
        ),
    ),
    ("sheet_bridge.config", lambda d: not _in(d, "sheet_bridge.meta")),
]


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_imports_point_one_way(package: str, forbidden: object) -> None:
    wrong = sorted(
        f"{m} → {d}"
        for m, deps in GRAPH.items()
        if _in(m, package)
        for d in deps
        if forbidden(d)  # type: ignore[operator]
    )
    assert wrong == []


def test_no_module_imports_itself_through_a_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert cycles == []


def test_the_graph_is_read_from_the_real_imports() -> None:
    # The graph is read from real imports: the ones the restructuring removed are absent.
    assert "sheet_bridge.config" not in GRAPH["sheet_bridge.meta.client"]
    assert "sheet_bridge.web.app" not in GRAPH["sheet_bridge.web.api"]
    assert "sheet_bridge.web.registry" in GRAPH["sheet_bridge.web.api"]
    assert "sheet_bridge.sync.ledger" in GRAPH["sheet_bridge.insights.funnel"]
