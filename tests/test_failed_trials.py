"""A trial that diverges is recorded as failed, with its reason, in Parquet and MLflow; the search
and the leaderboard go on."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.results.parquet import read_rows

pytestmark = pytest.mark.slow


def test_diverging_trials_are_recorded_as_failed_with_their_reason(tmp_path, repo_root):
    config = {
        "benchmark": "diverge",
        "dataset": {"name": "digits", "max_train_samples": 200},
        "model": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
        "training": {"epochs": 3, "batch_size": 50, "momentum": 0.0},
        # learning rates this large send the loss to inf/nan within the first epoch
        "search": {"trials_per_method": 2, "max_failures": 0, "asha": {"enabled": False},
                   "space": {"learning_rate": {"low": 1.0e8, "high": 1.0e9, "log": True}}},
        "regularizers": ["erm"],
    }
    config_path = tmp_path / "diverge.yaml"
    config_path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(config_path), "--results", str(results), "--num-cpus", "2"],
        cwd=repo_root, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    failed_lines = [line for line in done.stdout.splitlines() if line.startswith("[1/1 erm search ") and "] failed " in line]
    assert len(failed_lines) == 2 and all("FloatingPointError" in line for line in failed_lines), done.stdout

    table = read_rows(results)
    assert table.num_rows == 2
    assert table.column("status").to_pylist() == ["failed", "failed"]
    for error in table.column("error").to_pylist():
        assert error.startswith("FloatingPointError: training loss became")
    assert table.column("test_accuracy").null_count == 2

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("diverge")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["sharpbench.error"].startswith("FloatingPointError")

    board = subprocess.run([sys.executable, "-m", "bench.cli", "leaderboard", str(results)], capture_output=True, text=True, timeout=120)
    assert board.returncode == 0 and "2 (0/0/2)" in board.stdout
