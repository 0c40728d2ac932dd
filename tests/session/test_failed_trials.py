"""A trial that diverges is recorded as failed (class ``diverged``), with its reason, in Parquet and
MLflow, without being retried; the search and the leaderboard go on."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.config import DataConfig
from bench.data import load_dataset
from bench.results.parquet import read_rows
from tests.runner import sharpbench_command

pytestmark = pytest.mark.slow


def test_diverging_trials_are_recorded_as_failed_with_their_reason(tmp_path, repo_root):
    config = {
        "benchmark": "diverge",
        "dataset": {"name": "digits", "max_train_samples": 200},
        "model": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
        "training": {"epochs": 3, "batch_size": 50, "momentum": 0.0},
        # learning rates this large send the loss to inf/nan within the first epoch
        # max_failures 1: a divergence must still run once (Tune retried it, twice the time, before)
        "search": {
            "trials_per_method": 2,
            "max_failures": 1,
            "asha": {"enabled": False},
            "space": {"learning_rate": {"low": 1.0e8, "high": 1.0e9, "log": True}},
        },
        "regularizers": ["erm"],
    }
    config_path = tmp_path / "diverge.yaml"
    config_path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"

    def run(*options: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.cli",
                "run",
                str(config_path),
                "--results",
                str(results),
                "--num-cpus",
                "2",
                *options,
            ],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        # Every trial failed: the leaderboard still prints, then one error line and exit status 1.
        assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
        error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and "diverged: training loss" in error_lines[0], done.stderr
        return done

    done = run()
    failed_lines = [
        line for line in done.stdout.splitlines() if line.startswith("[1/1 erm search ") and "] failed " in line
    ]
    assert len(failed_lines) == 2 and all("diverged: training loss" in line for line in failed_lines), done.stdout
    # Ended by the trial itself: Tune saw no exception, so it neither retried nor logged one.
    assert "Traceback" not in done.stdout + done.stderr
    assert not list(results.rglob("error.txt")), list(results.rglob("error.txt"))

    table = read_rows(results)
    assert table.num_rows == 2
    assert table.column("status").to_pylist() == ["failed", "failed"]
    steps = len(load_dataset(DataConfig.model_validate(config["dataset"])).train) // config["training"]["batch_size"]
    for error in table.column("error").to_pylist():
        # the loss is checked once per epoch: the first epoch's, after its last step
        assert re.fullmatch(rf"diverged: training loss (nan|inf|-inf) at epoch 1 \(step {steps}\)", error), error
    assert table.column("failure_class").to_pylist() == ["diverged", "diverged"]
    assert table.column("test_accuracy").null_count == 2
    # Honest cost: the loss is checked once per epoch, so each trial ran every step of epoch 1
    # (one forward and one backward pass per ERM step) before failing, and spent time doing it.
    train = load_dataset(DataConfig.model_validate(config["dataset"])).train
    steps = len(train) // config["training"]["batch_size"]  # drop_last: the split exceeds a batch
    assert table.column("forward_passes").to_pylist() == [steps, steps]
    assert table.column("backward_passes").to_pylist() == [steps, steps]
    assert all(seconds > 0 for seconds in table.column("wall_seconds").to_pylist())
    assert table.column("epochs_run").to_pylist() == [0, 0]  # no epoch finished

    # Running the finished folder again re-runs nothing: the failed trials stay failed ...
    stamps = dict(zip(table.column("run_id").to_pylist(), table.column("timestamp").to_pylist(), strict=True))
    again = run()
    assert "] failed " not in again.stdout, again.stdout
    table = read_rows(results)
    assert dict(zip(table.column("run_id").to_pylist(), table.column("timestamp").to_pylist(), strict=True)) == stamps
    # ... not even when asked: a divergence is the config's result, not a fault (--retry-failed
    # restarts trials that raised; these ended themselves, and would diverge again)
    retried = run("--retry-failed")
    assert "] failed " not in retried.stdout, retried.stdout
    table = read_rows(results)
    assert dict(zip(table.column("run_id").to_pylist(), table.column("timestamp").to_pylist(), strict=True)) == stamps

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("diverge")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["sharpbench.error"].startswith("diverged: training loss")

    board = subprocess.run(  # the trial counts are a column of the wide board
        sharpbench_command("leaderboard", str(results), "--wide"), capture_output=True, text=True, timeout=120
    )
    assert board.returncode == 0 and "2 (0/0/2)" in board.stdout
