"""The house rule "nothing low imports anything high", checked on the source: every import between
rooms (``bench.<room>``, ``regularizers``, ``sharpbench``), module-level or inside a function,
points to a strictly lower layer. A cycle between rooms is then impossible too.

A new room must be placed in :data:`LAYERS` (and in ARCHITECTURE.md, which shows the same order).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Lowest first. A room may import rooms of lower layers only.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer)
    for layer in (
        # words and numbers everyone shares: no sharpbench imports of their own
        {"bench.errors", "bench.metrics", "bench.provenance", "bench.signals", "bench.stats", "bench.console"},
        {"bench.naming", "bench.failures", "regularizers"},
        {"bench.config", "bench.stores", "bench.models"},
        # below the trial: datasets, instruments, the record (rows, Parquet, MLflow writer), checks
        {"bench.data", "bench.measure", "bench.results", "bench.preflight"},
        {"bench.training", "bench.catalog", "bench.selection", "bench.run_record", "bench.outcome"},
        {"bench.plan", "bench.leaderboard", "bench.merge"},
        # a method's standing as parent-run values: the leaderboard's numbers under MLflow's names
        {"bench.standing", "bench.preview"},
        # the search (Ray, Optuna), the report, the MLflow back-fill
        {"bench.search", "bench.report", "bench.sync"},
        # the lifecycle of a run, and the programs that measure sharpbench itself
        {"bench.session", "bench.benchmarks"},
        {"bench.suite"},
        {"bench.api"},
        {"bench.cli", "sharpbench"},
    )
)


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("regularizers", "sharpbench"):
        return parts[0]
    if parts[0] == "bench" and len(parts) > 1:
        return f"bench.{parts[1]}"
    return None


def _is_room(name: str) -> bool:
    """Whether ``bench.<name>`` is a module or package (``from bench import __version__`` is not)."""
    return (REPO / "bench" / f"{name}.py").exists() or (REPO / "bench" / name / "__init__.py").exists()


def _imported(tree: ast.AST) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "bench":  # ``from bench import metrics``: the names are the rooms
                yield from (f"bench.{alias.name}" for alias in node.names if _is_room(alias.name))
            else:
                yield node.module


def import_edges(root: Path = REPO) -> dict[tuple[str, str], str]:
    """(importing room, imported room) → one file where it happens."""
    edges: dict[tuple[str, str], str] = {}
    for package in ("bench", "regularizers", "sharpbench"):
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            source = _room(module)
            for name in _imported(ast.parse(path.read_text(encoding="utf-8"))):
                target = _room(name)
                if source and target and target != source:
                    edges.setdefault((source, target), str(path.relative_to(root)))
    return edges


def violations(edges: dict[tuple[str, str], str], layers: tuple[frozenset[str], ...] = LAYERS) -> list[str]:
    level = {room: index for index, layer in enumerate(layers) for room in layer}
    found = []
    for (source, target), where in sorted(edges.items()):
        for room in (source, target):
            if room not in level:
                found.append(f"{room} (imported or importing in {where}) is in no layer of tests/test_layers.py")
        if source in level and target in level and level[target] >= level[source]:
            found.append(f"{where}: {source} (layer {level[source]}) imports {target} (layer {level[target]})")
    return sorted(set(found))


def test_every_import_between_rooms_points_down():
    assert violations(import_edges()) == []


def test_every_room_has_a_layer():
    rooms = {_room(".".join(p.relative_to(REPO).with_suffix("").parts)) for p in (REPO / "bench").rglob("*.py")}
    rooms.discard("bench.__init__")
    placed = set().union(*LAYERS)
    assert sorted(room for room in rooms if room and room not in placed) == []


def test_the_check_sees_an_upward_import_and_a_cycle():
    edges = {("bench.results", "bench.search"): "bench/results/x.py", ("bench.search", "bench.results"): "y.py"}
    assert violations(edges) == ["bench/results/x.py: bench.results (layer 3) imports bench.search (layer 7)"]
    assert violations({("bench.nowhere", "bench.errors"): "z.py"}) == [
        "bench.nowhere (imported or importing in z.py) is in no layer of tests/test_layers.py"
    ]


@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_layers_do_not_overlap(layer):
    others = set().union(*(other for index, other in enumerate(LAYERS) if index != layer))
    assert not LAYERS[layer] & others
