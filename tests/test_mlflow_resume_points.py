"""kill -9 in the middle of a trial, then the same command again: the resumed trial continues from
its checkpoint and trains again the epochs after it, which MLflow already holds. Every per-epoch
metric of every trial run keeps exactly one point per epoch (issue 20: 38 points for 30 epochs).

The driver is killed once MLflow holds epochs past the trial's newest checkpoint and Tune's saved
experiment state knows a checkpoint: the resumed trial then surely repeats epochs MLflow has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from bench.metrics import EPOCH, TRAIN_LOSS, VAL_ACCURACY, VAL_LOSS
from bench.results.mlflow_sink import default_tracking_uri
from bench.results.parquet import read_rows
from bench.search.trainable import STATE_FILE

pytestmark = pytest.mark.slow

BENCHMARK = "points"
EPOCHS = 90
#: Epochs MLflow must hold past the newest checkpoint at the kill: repeated by the resumed trial.
AHEAD = 3
PER_EPOCH = (VAL_ACCURACY, VAL_LOSS, TRAIN_LOSS, EPOCH)


def _command(config: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "run", str(config), "--results", str(results), "--num-cpus", "2"]


def _trial_runs(client: MlflowClient):
    experiment = client.get_experiment_by_name(BENCHMARK)
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id], max_results=100) if "mlflow.parentRunId" in r.data.tags]


def _steps(client: MlflowClient, run_id: str, key: str = EPOCH) -> list[int]:
    return [int(point.step) for point in client.get_metric_history(run_id, key)]


def _checkpoints(results: Path) -> list[Path]:
    return sorted((results / "ray" / BENCHMARK).glob("*/run_trial_*/checkpoint_*"), key=lambda p: p.stat().st_mtime)


def _epochs_in(checkpoint: Path) -> int:
    return int(torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)["epochs_done"])


def _state_saved_after(results: Path, moment: float) -> bool:
    """Whether Tune saved its experiment state after ``moment``: it then knows that checkpoint."""
    states = (results / "ray" / BENCHMARK).glob("*/experiment_state-*.json")
    return any(state.stat().st_mtime > moment for state in states)


def _held_ahead(client: MlflowClient, results: Path) -> bool:
    """MLflow holds ``AHEAD`` epochs past the newest checkpoint, which Tune's saved state knows of."""
    try:
        checkpoints = _checkpoints(results)
        if not checkpoints or not _state_saved_after(results, checkpoints[0].stat().st_mtime + 0.5):
            return False
        newest = _epochs_in(checkpoints[-1])
    except (FileNotFoundError, EOFError, RuntimeError, KeyError):  # a checkpoint being written
        return False
    runs = _trial_runs(client)
    return len(runs) == 1 and len(_steps(client, runs[0].info.run_id, VAL_ACCURACY)) >= 4 and \
        max(_steps(client, runs[0].info.run_id), default=0) >= newest + AHEAD


def test_a_resumed_trial_logs_each_epoch_to_mlflow_once(tmp_path, repo_root):
    config = {
        "benchmark": BENCHMARK,
        "dataset": {"name": "digits"},
        "model": {"name": "cnn", "options": {"width": 8}},
        "training": {"epochs": EPOCHS, "batch_size": 32},
        "search": {"trials_per_method": 1, "asha": {"enabled": False}, "checkpoint_every": 1, "max_concurrent_trials": 1},
        "regularizers": ["erm"],
    }
    config_path = tmp_path / f"{BENCHMARK}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    client = MlflowClient(tracking_uri=default_tracking_uri(results))

    first = subprocess.Popen(
        _command(config_path, results), cwd=repo_root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            # Only once the run has made its store (its Tune folder comes after): no race on its schema.
            if (results / "ray" / BENCHMARK).exists() and _held_ahead(client, results):
                break
            time.sleep(0.2)
        assert first.poll() is None, "the run ended before it could be killed"
        os.kill(first.pid, signal.SIGKILL)  # the driver: its MLflow sink dies with the epochs it held back
        killed_at = time.time()
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # the Ray processes it started (its session's group)
        except ProcessLookupError:
            pass
        first.communicate(timeout=60)
    # What the killed run left: MLflow's points, the trial's newest checkpoint.
    (run,) = _trial_runs(client)
    held = max(_steps(client, run.info.run_id))
    newest = _epochs_in(_checkpoints(results)[-1])
    assert newest + AHEAD <= held < EPOCHS, (newest, held)
    assert read_rows(results).num_rows == 0

    second = subprocess.run(_command(config_path, results), cwd=repo_root, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    rows = read_rows(results).to_pylist()
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["epochs_run"] == EPOCHS
    # The trial resumed from a checkpoint (its first attempt's start came with it), not from scratch,
    # into the run it had: it trained again the epochs after that checkpoint, up to `held` at least.
    assert rows[0]["started_at"].timestamp() < killed_at
    runs = _trial_runs(client)
    assert [r.info.run_id for r in runs] == [run.info.run_id] == [rows[0]["mlflow_run_id"]]
    assert runs[0].info.start_time / 1000 < killed_at < runs[0].info.end_time / 1000
    for key in PER_EPOCH:
        steps = _steps(client, run.info.run_id, key)
        assert len(steps) == len(set(steps)) == rows[0]["epochs_run"], (key, len(steps), len(set(steps)))
        assert sorted(steps) == list(range(1, EPOCHS + 1)), key
