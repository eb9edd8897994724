"""The import graph between our own modules has no circle (issue 12): serialization lives in
``streamdas.checkpoint``, which imports nothing else from streamdas, and the layers only point
down (core -> service, never back). Imports inside functions count too: a lazy import is still
an arrow."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streamdas", "consumers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its body), package inits aside."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        [
                            *package.split(".")[: len(package.split(".")) - node.level + 1],
                            *([base] if base else []),
                        ]
                    )
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                # the longest project module that the import names (from pkg import mod, or pkg.mod)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target not in PACKAGES:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_our_modules():
    graph = _graph()
    assert "streamdas.trainer" in graph["streamdas.estimators"]  # the checker sees real arrows
    assert _cycles(graph) == []


def test_serialization_sits_below_what_it_serializes():
    graph = _graph()
    assert graph["streamdas.checkpoint"] == set()
    for user in ("streamdas.estimators", "streamdas.trainer", "consumers.store"):
        assert "streamdas.checkpoint" in graph[user]
    assert not any(
        t.startswith("consumers") for m, ts in graph.items() if m.startswith("streamdas") for t in ts
    )


def test_the_service_uses_no_private_serialization_hooks():
    tree = ast.parse((ROOT / "consumers" / "store.py").read_text())
    imported = {
        a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names
    } | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "pickle" not in imported
    private = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & {
        "_state",
        "_from_state",
        "_extra_state",
        "_plain_params",
    }
    assert private == set()
