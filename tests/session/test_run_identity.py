"""Run identity through the real CLI: a changed config never resumes into an old run's results,
--restart sets the old run aside, and one run at a time per folder. (A folder moved after kill -9:
tests/test_resume_record.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.results.parquet import read_rows
from bench.run_record import LOCK_FILENAME, SUPERSEDED_DIRNAME, load_records
from tests.runner import sharpbench, sharpbench_command

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, name: str = "ident", *, epochs: int = 1, low: float = 0.02, trials: int = 1) -> Path:
    raw = {
        "benchmark": "ident",
        "dataset": {"name": "digits", "max_train_samples": 128},
        "model": {"name": "mlp", "options": {"hidden": 8, "depth": 1}},
        "training": {"epochs": epochs, "batch_size": 32},
        "search": {
            "trials_per_method": trials,
            "asha": {"enabled": False},
            "checkpoint_every": 1,
            "space": {"learning_rate": {"low": low, "high": 0.2, "log": True}},
        },
        "regularizers": ["erm"],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return sharpbench(*args, cwd=cwd)


def _start(*args: str, cwd: Path) -> subprocess.Popen:
    # A session of its own: kill -9 of the group takes Ray's processes too, as a killed job would.
    return subprocess.Popen(
        sharpbench_command(*args),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _parents_and_children(store: Path) -> tuple[list, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("ident")
    if experiment is None:  # the store exists before the run creates its experiment
        return [], []
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, children


def _two_runs_with_epochs(
    process: subprocess.Popen, results: Path, *, timeout: float, phase: str | None = None
) -> list:
    """The MLflow trial runs (of ``phase``, if given) once two of them have logged 3 epochs, or
    what there is when ``process`` ends or ``timeout`` seconds pass."""
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline and process.poll() is None:
        # The Tune folder appears after the run has made its MLflow store: reading the store
        # before could race its schema creation (two processes creating one sqlite store).
        if (results / "ray" / "ident").exists():
            runs = [
                c
                for c in _parents_and_children(results / "mlflow.db")[1]
                if phase is None or c.data.tags.get("sharpbench.phase") == phase
            ]
            if len(runs) == 2 and all(len(client.get_metric_history(c.info.run_id, "val_accuracy")) >= 3 for c in runs):
                break
        time.sleep(0.5)
    return runs


def test_changed_config_stops_and_restart_sets_the_old_run_aside(tmp_path, repo_root):
    results = tmp_path / "results"
    done = _cli("run", str(_config(tmp_path)), "--results", str(results), "--num-cpus", "2", "--quiet", cwd=repo_root)
    assert done.returncode == 0, done.stderr[-2000:]
    first = read_rows(results).to_pylist()
    assert len(first) == 1 and first[0]["epochs_planned"] == 1
    old_instance = load_records(results)["ident"].instance

    changed = _config(tmp_path, "changed", epochs=2, low=0.05)
    started = time.monotonic()
    done = _cli("run", str(changed), "--results", str(results), "--num-cpus", "2", cwd=repo_root)
    assert time.monotonic() - started < 30  # refused before Ray starts
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "training.epochs" in lines[0] and "search.space.learning_rate.low" in lines[0] and "--restart" in lines[0]
    assert "search.trials_per_method" not in lines[0]  # only the keys that differ
    assert read_rows(results).to_pylist() == first  # nothing written

    done = _cli(
        "run", str(changed), "--results", str(results), "--num-cpus", "2", "--restart", "--quiet", cwd=repo_root
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = read_rows(results).to_pylist()
    assert row["epochs_planned"] == 2 and row["run_id"] != first[0]["run_id"]
    new_instance = load_records(results)["ident"].instance
    assert new_instance != old_instance
    aside = results / SUPERSEDED_DIRNAME / f"ident-{old_instance}"
    assert read_rows(aside).num_rows == 0  # set aside: never read as results
    assert len(list((aside / "rows").rglob("*.parquet"))) == 1 and (aside / "run.json").is_file()
    assert sorted(p.name for p in (aside / "ray").iterdir()) == ["ident"]
    # MLflow: the fresh run has a parent of its own (keyed by run instance), its trial under it
    parents, children = _parents_and_children(results / "mlflow.db")
    assert len(parents) == 2 and len(children) == 2
    (new_child,) = [c for c in children if c.info.run_id == row["mlflow_run_id"]]
    (new_parent,) = [p for p in parents if p.info.run_id == new_child.data.tags["mlflow.parentRunId"]]
    assert new_parent.data.tags["sharpbench.search_name"].endswith(f"@{new_instance}")


def test_a_second_run_into_a_busy_folder_stops_at_once(tmp_path, repo_root):
    results = tmp_path / "results"
    first = _start(
        "run", str(_config(tmp_path, epochs=200)), "--results", str(results), "--num-cpus", "2", cwd=repo_root
    )
    try:
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline and not read_rows(results).num_rows and not (results / "ray" / "ident").exists()
        ):
            time.sleep(0.5)
        assert (results / LOCK_FILENAME).exists()
        started = time.monotonic()
        second = _cli(
            "run", str(_config(tmp_path, epochs=200)), "--results", str(results), "--num-cpus", "2", cwd=repo_root
        )
        # A bound on a hang (the busy run holds the folder for minutes), not a speed target: the
        # refusal comes after imports and config checks, which take seconds on a loaded machine.
        assert time.monotonic() - started < 30
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert second.returncode == 2 and len(lines) == 1 and "in use by another sharpbench run (pid" in lines[0], (
            second.stderr
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=60)


def test_kill_9_in_the_final_phase_then_resume_counts_every_run_once(tmp_path, repo_root):
    raw = yaml.safe_load(_config(tmp_path, epochs=40).read_text())
    raw["search"]["space"] = {}  # nothing searched: one search trial, then the final seeds
    raw["final"] = {"seeds": [1, 2]}
    config = tmp_path / "finals.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    first = _start("run", str(config), "--results", str(results), "--num-cpus", "2", cwd=repo_root)
    finals = _two_runs_with_epochs(first, results, timeout=300, phase="final")
    assert first.poll() is None, "the run finished before its final phase could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    started = {c.info.run_id for c in finals}

    done = _cli("run", str(config), "--results", str(results), "--num-cpus", "2", "--quiet", cwd=repo_root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = read_rows(results).to_pylist()
    assert sorted((r["phase"], r["seed"]) for r in rows) == [("final", 1), ("final", 2), ("search", 0)]
    assert all(r["status"] == "completed" and r["epochs_run"] == 40 for r in rows), [
        (r["phase"], r["status"], r["epochs_run"], r["error"]) for r in rows
    ]
    parents, children = _parents_and_children(results / "mlflow.db")
    per_parent = {
        p.data.tags["sharpbench.phase"]: [c for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id]
        for p in parents
    }
    assert sorted(per_parent) == ["final", "search"] and len(per_parent["search"]) == 1
    assert (
        {c.info.run_id for c in per_parent["final"]}
        == started
        == {r["mlflow_run_id"] for r in rows if r["phase"] == "final"}
    )


def test_a_run_in_the_older_layout_is_refused_and_restart_sets_it_aside(tmp_path):
    """A folder whose run an older sharpbench started (one Tune experiment per method and phase)
    cannot be resumed by one experiment: starting afresh beside it would run its trials twice."""
    from bench.config import load_config
    from bench.run_record import IdentityMismatch, RunRecord, resolve

    config = load_config(_config(tmp_path))
    results = tmp_path / "results"
    old = RunRecord.new(config)
    old.save(results)
    legacy = results / "ray" / "ident-erm-search"
    legacy.mkdir(parents=True)
    (legacy / "experiment_state-2026.json").write_text("{}")
    with pytest.raises(IdentityMismatch, match="older sharpbench.*ray/ident-erm-search.*--restart"):
        resolve(config, results)
    assert legacy.is_dir() and load_records(results)["ident"].instance == old.instance  # nothing moved
    record = resolve(config, results, restart=True)
    assert record.instance != old.instance
    aside = results / SUPERSEDED_DIRNAME / f"ident-{old.instance}"
    assert not legacy.exists() and (aside / "ray" / "ident-erm-search" / "experiment_state-2026.json").is_file()
    assert resolve(config, results).instance == record.instance  # and the new run resumes as usual


def test_the_record_of_a_run_that_never_started_gives_way_to_a_changed_config(tmp_path):
    """A run stopped before its first trial (e.g. at a Ray cluster it could not join) left only
    its record; a corrected config then starts afresh instead of being refused as "another
    config". Once rows or Tune state exist, the record is protected again."""
    from bench.config import load_config
    from bench.results.parquet import ParquetSink
    from bench.run_record import IdentityMismatch, resolve
    from tests.results.conftest import make_row

    results = tmp_path / "results"
    first = resolve(load_config(_config(tmp_path, epochs=1)), results)
    changed = load_config(_config(tmp_path, "changed", epochs=2))
    second = resolve(changed, results)
    assert second.instance != first.instance and load_records(results)["ident"].config.training.epochs == 2
    assert not (results / SUPERSEDED_DIRNAME).exists()  # nothing to set aside

    (results / "ray" / "ident").mkdir(parents=True)  # Tune state: the run started
    with pytest.raises(IdentityMismatch, match="differs in training.epochs"):
        resolve(load_config(_config(tmp_path, "third", epochs=3)), results)
    (results / "ray" / "ident").rmdir()
    ParquetSink(results).write([make_row(benchmark="ident")])  # a row: the run started
    with pytest.raises(IdentityMismatch, match="differs in training.epochs"):
        resolve(load_config(_config(tmp_path, "third", epochs=3)), results)
    assert load_records(results)["ident"].instance == second.instance


def test_a_started_run_resumes_only_with_the_optuna_storage_its_studies_are_in(tmp_path):
    """``optuna_storage`` is no part of a run's identity, but its studies are there: resumed with
    another one (e.g. the resume command without ``--optuna-storage``), the run would start empty
    studies beside its rows (seen: tracebacks, finals from a half search, a board mixing configs)."""
    from bench.config import load_config
    from bench.results.parquet import ParquetSink
    from bench.run_record import IdentityMismatch, resolve
    from tests.results.conftest import make_row

    results = tmp_path / "results"
    config = load_config(_config(tmp_path))
    elsewhere = config.model_copy(update={"optuna_storage": f"sqlite:///{tmp_path}/other.db"})
    first = resolve(elsewhere, results)
    assert resolve(config, results).instance == first.instance  # nothing started yet: nothing to protect
    resolve(elsewhere, results)
    ParquetSink(results).write([make_row(benchmark="ident")])  # a row: the run started
    with pytest.raises(
        IdentityMismatch,
        match=r"keeps its Optuna studies in sqlite:///.*other\.db; resume it with "
        r"--optuna-storage sqlite:///.*other\.db, not no --optuna-storage",
    ):
        resolve(config, results)
    assert resolve(elsewhere, results).instance == first.instance  # the right storage resumes it
    assert resolve(config, results, restart=True).instance != first.instance  # or --restart sets it aside


def test_a_run_recorded_before_a_config_key_existed_resumes_or_is_refused_by_name(tmp_path):
    """A record written before ``flatness.trace_estimator`` and ``trace_sketch_size`` existed
    (lacking both; its hash computed without them): the run resumes when the config keeps what
    the old run did (Hutchinson), and a config that keeps the new default (Hutch++) is refused
    naming the key, never resumed into a mix of two estimators."""
    import json

    from bench.config import load_config
    from bench.results.parquet import ParquetSink
    from bench.run_record import IdentityMismatch, record_path, resolve
    from tests.results.conftest import make_row

    results = tmp_path / "results"
    first = resolve(load_config(_config(tmp_path)), results)
    ParquetSink(results).write([make_row(benchmark="ident")])  # the run started
    path = record_path(results, "ident")
    stored = json.loads(path.read_text())
    for key in ("trace_estimator", "trace_sketch_size"):
        del stored["config"]["flatness"][key]
    stored["config_hash"] = "hash-of-an-older-schema"
    path.write_text(json.dumps(stored))

    with pytest.raises(IdentityMismatch, match=r"differs in flatness\.trace_estimator\)"):
        resolve(load_config(_config(tmp_path)), results)
    as_before = yaml.safe_load(_config(tmp_path).read_text())
    as_before["flatness"] = {"trace_estimator": "hutchinson"}
    kept = tmp_path / "kept.yaml"
    kept.write_text(yaml.safe_dump(as_before))
    resumed = resolve(load_config(kept), results)
    assert resumed.instance == first.instance  # the same run, its studies and parent runs
    assert not (results / SUPERSEDED_DIRNAME).exists()
