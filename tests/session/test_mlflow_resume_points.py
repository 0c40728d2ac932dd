"""kill -9 in the middle of a trial, then the same command again: the resumed trial continues from
its checkpoint and trains again the epochs after it, which MLflow already holds. Every per-epoch
metric of the trial's run keeps exactly one point per epoch (issue 20: 38 points for 30 epochs).

The driver is killed once MLflow holds ``AHEAD`` epochs past the trial's newest checkpoint and
Tune's saved experiment state knows of a checkpoint: the resumed trial restores one no newer than
that, so it surely repeats epochs MLflow has (without the fix: 97 points for 90 epochs).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
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
from tests.runner import kill_session, sharpbench_command

pytestmark = pytest.mark.slow

BENCHMARK = "points"
#: ~0.15 s an epoch (batch size 8): a checkpoint every ~4 s, MLflow sends a run's epochs every 2 s.
EPOCHS, EVERY = 90, 30
#: Epochs MLflow must hold past the newest checkpoint at the kill: the resumed trial repeats them.
AHEAD = 3
PER_EPOCH = (VAL_ACCURACY, VAL_LOSS, TRAIN_LOSS, EPOCH)


def _command(config: Path, results: Path) -> list[str]:
    return sharpbench_command("run", str(config), "--results", str(results), "--num-cpus", "2")


def _trial_runs(client: MlflowClient):
    experiment = client.get_experiment_by_name(BENCHMARK)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _steps(client: MlflowClient, run_id: str, key: str = EPOCH) -> list[int]:
    return [int(point.step) for point in client.get_metric_history(run_id, key)]


def _checkpoints(results: Path) -> list[Path]:
    return sorted((results / "ray" / BENCHMARK).glob("*/run_trial_*/checkpoint_*"), key=lambda p: p.name)


def _newest_epochs(results: Path) -> int | None:
    """Epochs trained at the newest checkpoint that can be read (one being written cannot)."""
    for checkpoint in reversed(_checkpoints(results)):
        try:
            state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)
            return int(state["epochs_done"])
        except (OSError, EOFError, RuntimeError, KeyError, pickle.UnpicklingError):
            continue
    return None


def _state_saved_after(results: Path, moment: float) -> bool:
    """Whether Tune saved its experiment state after ``moment`` (then it knows that checkpoint)."""
    states = (results / "ray" / BENCHMARK).glob("*/experiment_state-*.json")
    return any(state.stat().st_mtime > moment for state in states)


def _held_ahead(client: MlflowClient, results: Path) -> bool:
    """MLflow holds ``AHEAD`` epochs past the newest checkpoint; Tune's saved state knows the first one."""
    checkpoints = _checkpoints(results)
    try:
        if not checkpoints or not _state_saved_after(results, checkpoints[0].stat().st_mtime + 0.5):
            return False
    except FileNotFoundError:
        return False
    newest = _newest_epochs(results)
    runs = _trial_runs(client)
    if newest is None or len(runs) != 1:
        return False
    run_id = runs[0].info.run_id
    return len(_steps(client, run_id, VAL_ACCURACY)) >= 4 and max(_steps(client, run_id), default=0) >= newest + AHEAD


def test_a_resumed_trial_logs_each_epoch_to_mlflow_once(tmp_path, repo_root):
    config = {
        "benchmark": BENCHMARK,
        "dataset": {"name": "digits"},
        "model": {"name": "cnn", "options": {"width": 8}},
        "training": {"epochs": EPOCHS, "batch_size": 8},
        "search": {
            "trials_per_method": 1,
            "asha": {"enabled": False},
            "checkpoint_every": EVERY,
            "max_concurrent_trials": 1,
        },
        "regularizers": ["erm"],
    }
    config_path = tmp_path / f"{BENCHMARK}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    client = MlflowClient(tracking_uri=default_tracking_uri(results))

    log = tmp_path / "first.log"
    with log.open("w") as out:  # a file, not a pipe nobody reads while it runs
        first = subprocess.Popen(
            _command(config_path, results),
            cwd=repo_root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            # Only once the run has made its store (its Tune folder comes after): no race on its schema.
            if (results / "ray" / BENCHMARK).exists() and _held_ahead(client, results):
                break
            time.sleep(0.2)
        assert first.poll() is None, "the run ended before it could be killed:\n" + log.read_text()[-3000:]
        os.kill(first.pid, signal.SIGKILL)  # the driver: its MLflow sink dies with the epochs it held back
        killed_at = time.time()
    finally:
        kill_session(first.pid)
        first.wait(timeout=60)
    # What the killed run left: MLflow's points and the trial's checkpoints (the resumed trial
    # restores one of them, at `newest` epochs or fewer).
    (run,) = _trial_runs(client)
    held, newest = max(_steps(client, run.info.run_id)), _newest_epochs(results)
    assert newest is not None and newest + AHEAD <= held < EPOCHS, (newest, held)
    assert read_rows(results).num_rows == 0

    second = subprocess.run(
        _command(config_path, results),
        cwd=repo_root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    rows = read_rows(results).to_pylist()
    assert [(r["status"], r["epochs_run"]) for r in rows] == [("completed", EPOCHS)]
    # Resumed from a checkpoint (its first attempt's start came with it), not from scratch, in the
    # run it had: it trained again the epochs after that checkpoint, up to `held` at least.
    assert rows[0]["started_at"].timestamp() < killed_at
    (resumed,) = _trial_runs(client)
    assert resumed.info.run_id == run.info.run_id == rows[0]["mlflow_run_id"]
    assert resumed.info.status == "FINISHED"
    assert resumed.info.start_time / 1000 < killed_at < resumed.info.end_time / 1000
    for key in PER_EPOCH:
        steps = _steps(client, run.info.run_id, key)
        repeated = sorted({s for s in steps if steps.count(s) > 1})
        assert len(steps) == len(set(steps)) == rows[0]["epochs_run"], (key, len(steps), "points, repeated:", repeated)
        assert sorted(steps) == list(range(1, EPOCHS + 1)), key
