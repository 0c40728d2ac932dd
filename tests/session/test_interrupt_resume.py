"""Ctrl-C in the middle of a search, then the same command again: the search resumes from the
trials' checkpoints, every trial keeps its single MLflow run and its single Optuna study trial,
and Parquet gets one row per trial."""

from __future__ import annotations

import signal
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.results.parquet import read_rows
from bench.run_record import load_records
from bench.search import default_storage, load_study, study_name
from tests.curve_checks import assert_each_row_has_its_curve

pytestmark = pytest.mark.slow

EPOCHS = 120


def test_interrupted_search_resumes_into_the_same_runs(tmp_path, start_run, child_runs):
    config = {
        "benchmark": "resume",
        "dataset": {"name": "digits"},
        "model": {"name": "cnn", "options": {"width": 8}},
        "training": {"epochs": EPOCHS, "batch_size": 32},
        "search": {
            "trials_per_method": 2,
            "asha": {"enabled": False},
            "checkpoint_every": 1,
            "max_concurrent_trials": 2,
        },
        "regularizers": ["sam"],
    }
    config_path = tmp_path / "resume.yaml"
    config_path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")

    first = start_run(config_path, results)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        # Only once the run has made its store (its Tune folder comes after): no race on its schema.
        children = child_runs(client, "resume") if (results / "ray" / "resume").exists() else []
        if len(children) == 2 and all(
            len(client.get_metric_history(c.info.run_id, "val_accuracy")) >= 3 for c in children
        ):
            break
        time.sleep(0.5)
    assert first.poll() is None, "the search finished before it could be interrupted"
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-2000:]
    assert "Resume with: sharpbench run" in stderr
    interrupted = {c.info.run_id for c in child_runs(client, "resume")}
    assert len(interrupted) == 2
    assert read_rows(results).num_rows == 0  # nothing finished, nothing written

    second = start_run(config_path, results)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stdout[-2000:] + stderr[-2000:]

    children = child_runs(client, "resume")
    assert {c.info.run_id for c in children} == interrupted  # no second run for a resumed trial
    for child in children:
        assert child.info.status == "FINISHED"
        steps = {m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")}
        assert steps == set(range(1, EPOCHS + 1))
    table = read_rows(results)
    assert table.num_rows == 2
    assert table.column("epochs_run").to_pylist() == [EPOCHS, EPOCHS]
    assert set(table.column("mlflow_run_id").to_pylist()) == interrupted
    # The method's Optuna study: each trial once, told COMPLETE, every epoch's value once.
    instance = load_records(results)["resume"].instance
    study = load_study(default_storage(results), study_name("resume", "sam", instance))
    assert sorted(t.user_attrs["run_id"] for t in study.trials) == sorted(table.column("run_id").to_pylist())
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(sorted(t.intermediate_values) == list(range(1, EPOCHS + 1)) for t in study.trials)
    # The learning curves: every epoch once, those before the interrupt as those after.
    assert_each_row_has_its_curve(results)
