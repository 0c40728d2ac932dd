"""A check the end-to-end tests share: every recorded trial has its learning curve, one point per
epoch it ran (kills and resumes included), ending where its row ends."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from bench.results.curves import read_curves
from bench.results.parquet import read_rows


def assert_each_row_has_its_curve(results: Path) -> None:
    rows = read_rows(results).to_pylist()
    points = collections.defaultdict(list)
    for point in read_curves(results).to_pylist():
        points[point["run_id"]].append(point)
    assert set(points) <= {row["run_id"] for row in rows}
    for row in rows:
        curve = points[row["run_id"]]
        assert [p["epoch"] for p in curve] == list(range(1, row["epochs_run"] + 1)), row["run_id"]
        assert all(p["seed"] == row["seed"] and p["phase"] == row["phase"] for p in curve)
        if curve and row["status"] != "failed":  # a failed trial's row also counts its last, unfinished epoch
            last = curve[-1]
            assert (last["forward_passes"], last["backward_passes"]) == (row["forward_passes"], row["backward_passes"])
            assert last["val_accuracy"] == pytest.approx(row["val_accuracy"], abs=0)
            assert last["wall_seconds"] == pytest.approx(row["wall_seconds"], abs=0)
