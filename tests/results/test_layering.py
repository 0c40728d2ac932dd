"""The record wing sits low: ``bench.results`` imports only the rooms below it (imports inside
functions count), so nothing it writes depends on the search, the run's lifecycle or the
leaderboard, and no import cycle runs through it."""

from __future__ import annotations

import ast
from pathlib import Path

#: The rooms (``bench.<x>``) bench.results may import: the names, failures and stores it writes with.
ALLOWED = {
    "bench.metrics",
    "bench.failures",
    "bench.naming",
    "bench.stores",
    "bench.provenance",
    "bench.config",
    "bench.results",
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bench" and len(parts) > 1 else None


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from bench import x`` imports the room bench.x
            names += [f"{node.module}.{a.name}" for a in node.names] if node.module == "bench" else [node.module]
    return names


def test_bench_results_imports_nothing_above_it(repo_root):
    upward = sorted(
        f"{path.relative_to(repo_root)}: {name}"
        for path in (repo_root / "bench" / "results").rglob("*.py")
        for name in _imports(ast.parse(path.read_text()))
        if (room := _room(name)) is not None and room not in ALLOWED
    )
    assert upward == []


def test_the_layering_check_sees_an_upward_import():
    tree = ast.parse("def f():\n    from bench.plan import plan_methods\n    from bench import leaderboard\n")
    assert {_room(name) for name in _imports(tree)} == {"bench.plan", "bench.leaderboard"}


def test_repo_root_is_the_checkout(repo_root):
    assert Path(repo_root, "bench", "results", "vocabulary.py").is_file()
