"""kill -9 while Tune's saved state lags the record, then the folder moved: the resumed run
trusts the rows and studies, in the folder's new place.

Tune saves its experiment state every few seconds (``TUNE_GLOBAL_CHECKPOINT_S``); trials that end
between two saves have rows and told studies that Tune's state does not know. Here the save
period is an hour, so the state the resumed run finds is (nearly) the one of the first moments,
and every trial that ended before the kill ended "after the last save". The resumed run must
still give every method exactly its budget, run each final seed once, and leave the studies
agreeing with the rows.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.results.parquet import read_rows
from bench.run_record import load_records
from bench.search.studies import ATTR_RUN_ID, default_storage, load_study, study_name
from tests.curve_checks import assert_each_row_has_its_curve
from tests.runner import sharpbench_command

pytestmark = pytest.mark.slow

TRIALS, SEEDS = 4, [1, 2]
STATE = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED, "failed": TrialState.FAIL}


def _command(config: Path, results: Path) -> list[str]:
    return sharpbench_command("run", str(config), "--results", str(results), "--num-cpus", "2")


def test_kill_9_with_a_stale_tune_state_keeps_budgets_seeds_and_studies_exact(tmp_path, repo_root):
    raw = {
        "benchmark": "lag",
        "dataset": {"name": "digits", "max_train_samples": 256},
        "model": {"name": "mlp", "options": {"hidden": 16, "depth": 1}},
        "training": {"epochs": 24, "batch_size": 32},
        "search": {
            "trials_per_method": TRIALS,
            "checkpoint_every": 4,
            "asha": {"grace_period": 2, "reduction_factor": 2},
            "space": {"learning_rate": {"low": 0.001, "high": 0.5, "log": True}},
        },
        "final": {"seeds": SEEDS},
        "regularizers": ["erm", "sam"],
    }
    config = tmp_path / "lag.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    first = subprocess.Popen(
        _command(config, results),
        cwd=repo_root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": "3600"},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and read_rows(results).num_rows < 5:
        time.sleep(0.1)
    assert first.poll() is None, "the run ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    killed_with = read_rows(results).num_rows
    assert 5 <= killed_with < 2 * (TRIALS + len(SEEDS))

    # ... and the folder is moved before the rerun (to another disk, a shared volume): it resumes
    # in its new place, with its own MLflow store and studies there.
    moved = tmp_path / "elsewhere" / "results"
    moved.parent.mkdir()
    os.replace(results, moved)
    done = subprocess.run(
        _command(config, moved), cwd=repo_root, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not results.exists()  # nothing recreated at the old place (no stray mlflow.db)
    # MLflow fixed the experiment's artifact folder at the old place: said once, nothing logged there
    assert done.stderr.count("so this run logs no artifacts") == 1
    results = moved
    rows = read_rows(results).to_pylist()
    instance = load_records(results)["lag"].instance
    for method in ("erm", "sam"):
        search = [r for r in rows if r["regularizer"] == method and r["phase"] == "search"]
        finals = [r for r in rows if r["regularizer"] == method and r["phase"] == "final"]
        assert len(search) == TRIALS, (
            method,
            collections.Counter(r["status"] for r in search),
        )  # the equal budget, exactly
        assert sorted(r["seed"] for r in finals) == SEEDS and len({r["selected_from_run_id"] for r in finals}) == 1
        # The study holds each search trial once, in the state of its row.
        study = load_study(default_storage(results), study_name("lag", method, instance))
        assert {t.user_attrs[ATTR_RUN_ID]: t.state for t in study.trials} == {
            r["run_id"]: STATE[r["status"]] for r in search
        }
        assert all(r["epochs_run"] < 24 for r in search if r["status"] == "stopped")
    assert_each_row_has_its_curve(results)  # every epoch once, across the kill and the move
    # MLflow: every row's run ended as its row says; a run an interrupted trial left RUNNING that
    # no resumed trial continued is ended KILLED ("abandoned"), none stays RUNNING.
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lag")
    children = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=500)
        if "mlflow.parentRunId" in r.data.tags
    ]
    parents = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=500)
        if "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 4 and {r.data.tags["mlflow.parentRunId"] for r in children} == {
        p.info.run_id for p in parents
    }  # method × phase
    by_id = {r.info.run_id: r for r in children}
    expected = {"completed": "FINISHED", "stopped": "FINISHED", "failed": "FAILED"}
    assert {r["run_id"]: by_id[r["mlflow_run_id"]].info.status for r in rows} == {
        r["run_id"]: expected[r["status"]] for r in rows
    }
    assert sorted(by_id) == sorted(row["mlflow_run_id"] for row in rows)  # one visible trial run per row
    # Runs no resumed trial continued: KILLED, tagged, and (soft-)deleted, so a parent lists its trials only.
    every = client.search_runs([experiment.experiment_id], max_results=500, run_view_type=ViewType.ALL)
    others = [r for r in every if "mlflow.parentRunId" in r.data.tags and r.info.run_id not in by_id]
    assert all(
        r.info.status == "KILLED"
        and r.data.tags["sharpbench.status"] == "abandoned"
        and r.info.lifecycle_stage == "deleted"
        for r in others
    ), [(r.info.status, r.data.tags.get("sharpbench.trial_key")) for r in others]
