"""A finished run whose Parquet row of one trial was lost (the file unreadable, set aside by
`run` at start-up) gets that row back from Ray Tune's saved state when run again: the same
figures, nothing trained again, exit 0."""

from __future__ import annotations

import re
import subprocess

import pytest

from bench.results.parquet import read_rows
from tests.runner import sharpbench

pytestmark = pytest.mark.slow

KEPT = (
    "run_id",
    "status",
    "epochs_run",
    "val_accuracy",
    "test_accuracy",
    "wall_seconds",
    "mlflow_run_id",
    "seed",
    "training_hparams",
)


def _run(config, results, repo_root) -> subprocess.CompletedProcess:
    return sharpbench("run", str(config), "--results", str(results), cwd=repo_root)


def test_a_lost_row_is_written_again_from_tunes_state(tmp_path, repo_root):
    config = repo_root / "configs" / "smoke.yaml"
    results = tmp_path / "results"
    first = _run(config, results, repo_root)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {row["run_id"]: row for row in read_rows(results).to_pylist()}
    lost = next(row for row in before.values() if row["phase"] == "search")
    (file,) = [f for f in (results / "leaderboard").rglob("*.parquet") if _holds(f, lost["run_id"])]
    file.write_text("not parquet any more")

    again = _run(config, results, repo_root)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "moved unreadable Parquet file" in again.stderr
    assert f"the row of {lost['run_id']} was lost; written again" in again.stderr
    after = {row["run_id"]: row for row in read_rows(results).to_pylist()}
    assert sorted(after) == sorted(before)
    for run_id, row in before.items():
        assert {k: after[run_id][k] for k in KEPT} == {k: row[k] for k in KEPT}, run_id
    # The rebuilt row keeps the trial's own end (its start + wall time, or Tune's report time),
    # not the second run's clock: the leaderboard's elapsed search time reads it.
    ended = after[lost["run_id"]]["timestamp"].timestamp()
    assert lost["started_at"].timestamp() + lost["wall_seconds"] - 1e-3 <= ended <= lost["timestamp"].timestamp() + 1e-3
    # Nothing ran, so no trial line: the warning says what happened.
    trial_line = re.compile(r"^\[\d+/\d+ \w+ (?:search|final) \d+/\d+\]", flags=re.MULTILINE)
    assert len(trial_line.findall(first.stdout)) == len(before)
    assert not trial_line.findall(again.stdout), again.stdout
    # Nothing was trained again: no new MLflow run, no second row.
    third = _run(config, results, repo_root)
    assert third.returncode == 0 and "was lost" not in third.stderr
    assert read_rows(results).num_rows == len(before)


def _holds(path, run_id) -> bool:
    import pyarrow.parquet as pq

    return run_id in pq.read_table(path, columns=["run_id"]).column("run_id").to_pylist()
