"""The MLflow sink against real stores: a SQLite file, and an `mlflow server` (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from bench import metrics as M
from bench.results.mlflow_sink import (
    BENCHMARK_CONFIG_ARTIFACT,
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_KIND_TRAINING,
    STANDING_ARTIFACT,
    TAG_DEVICE,
    TAG_ERROR,
    TAG_PRECISION,
    TAG_SEARCH_NAME,
    TAG_STATUS,
    TAG_TRIAL_KEY,
    TRIAL_CONFIG_ARTIFACT,
    MlflowSink,
    RunSource,
    default_tracking_uri,
    normalize_tracking_uri,
    param_value,
    truncate,
)
from bench.results.schema import Phase, TrialStatus

PARENT = "mlflow.parentRunId"


# ------------------------------------------------------------------------------ URIs (no store)


def test_default_tracking_uri_is_absolute_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert default_tracking_uri(tmp_path).startswith("sqlite:////")
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri("results") == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("sqlite:///mlflow.db", "sqlite:///{cwd}/mlflow.db"),
        ("sqlite:///runs/../x/mlflow.db", "sqlite:///{cwd}/x/mlflow.db"),
        ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
        ("sqlite:///db.sqlite?timeout=30", "sqlite:///{cwd}/db.sqlite?timeout=30"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("mlruns", "file://{cwd}/mlruns"),
        ("./a/mlruns", "file://{cwd}/a/mlruns"),
        ("/abs/mlruns", "file:///abs/mlruns"),
        ("file:relative/mlruns", "file://{cwd}/relative/mlruns"),
        ("file:///abs/mlruns", "file:///abs/mlruns"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://mlflow.example.org/prefix", "https://mlflow.example.org/prefix"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("databricks", "databricks"),
        ("databricks://profile", "databricks://profile"),
    ],
)
def test_normalize_tracking_uri(uri: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_tracking_uri(uri) == expected.format(cwd=tmp_path.resolve())


def test_truncate_and_param_values() -> None:
    long = "x" * (MAX_PARAM_VAL_LENGTH + 500)
    value = param_value(long)
    assert len(value) == MAX_PARAM_VAL_LENGTH and value.endswith("chars]") and "truncated" in value
    assert param_value({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'
    assert param_value(Phase.SEARCH) == "search"
    assert param_value(0.1) == "0.1"
    for n in range(0, 60):
        for limit in (1, 10, 30):
            assert len(truncate("y" * n, limit)) <= limit


# ------------------------------------------------------------------------------ SQLite store


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module (creating one takes seconds); one experiment per test."""
    return default_tracking_uri(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture
def experiment_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"\W", "_", request.node.name)


def _all_runs(client: MlflowClient, experiment_id: str) -> list:
    return list(client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000))


def _artifact_json(client: MlflowClient, run_id: str, path: str) -> object:
    """An artifact read back through ``client``'s store (its own tracking URI, not the global one)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(client.download_artifacts(run_id, path, folder)).read_text())


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_parent_child_params_metrics_status(sqlite_uri: str, experiment_name: str) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    parent = sink.parent_run("s-sam", "digits-mlp", "sam", Phase.SEARCH, {"num_samples": "16", "max_t": "3"})
    keys = {"done": TrialStatus.COMPLETED, "asha": TrialStatus.STOPPED, "boom": TrialStatus.FAILED}
    runs = {}
    for key, status in keys.items():
        run_id = sink.trial_run(
            parent,
            f"s-sam/{key}",
            f"trial-{key}",
            {"rho": 0.05, "adaptive": False, "layers": [64, 32], "note": "n" * (MAX_PARAM_VAL_LENGTH + 10)},
            {"benchmark": "digits-mlp", "regularizer": "sam"},
        )
        epochs = 1 if status is TrialStatus.STOPPED else 3
        for epoch in range(epochs):
            sink.log_epoch(run_id, epoch, {M.VAL_ACCURACY: 0.5 + epoch / 10, M.TRAIN_LOSS: 1.0 - epoch / 10})
        sink.finish_trial(
            run_id,
            status,
            {M.TEST_ACCURACY: 0.77, M.HESSIAN_TRACE: None},
            "Traceback...\n" + "e" * MAX_TAG_VAL_LENGTH if status is TrialStatus.FAILED else None,
        )
        runs[key] = run_id
    sink.finish_parent(parent, {M.VAL_ACCURACY: 0.7, "trials": 3.0})

    client = MlflowClient(sqlite_uri)  # read back through an independent client
    assert len(_all_runs(client, sink.experiment_id)) == 4
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.params == {"num_samples": "16", "max_t": "3"}
    assert parent_run.data.tags[TAG_SEARCH_NAME] == "s-sam"
    assert PARENT not in parent_run.data.tags
    assert parent_run.data.metrics == {M.VAL_ACCURACY: 0.7, "trials": 3.0}

    expected_status = {"done": ("FINISHED", "completed"), "asha": ("FINISHED", "stopped"), "boom": ("FAILED", "failed")}
    for key, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.data.tags[PARENT] == parent
        assert run.data.tags[TAG_TRIAL_KEY] == f"s-sam/{key}"
        assert run.data.tags["regularizer"] == "sam"
        assert run.info.run_name == f"trial-{key}"
        assert (run.info.status, run.data.tags[TAG_STATUS]) == expected_status[key]
        assert run.data.params["rho"] == "0.05"
        assert run.data.params["adaptive"] == "False"
        assert json.loads(run.data.params["layers"]) == [64, 32]
        assert len(run.data.params["note"]) == MAX_PARAM_VAL_LENGTH
        epochs = 1 if key == "asha" else 3
        assert _history(client, run_id, M.VAL_ACCURACY) == [(e, 0.5 + e / 10) for e in range(epochs)]
        assert _history(client, run_id, M.TRAIN_LOSS) == [(e, 1.0 - e / 10) for e in range(epochs)]
        # final metrics at the last epoch's step, None skipped
        assert _history(client, run_id, M.TEST_ACCURACY) == [(epochs - 1, 0.77)]
        assert M.HESSIAN_TRACE not in run.data.metrics
        if key == "boom":
            assert run.data.tags[TAG_ERROR].startswith("Traceback...")
            assert len(run.data.tags[TAG_ERROR]) == MAX_TAG_VAL_LENGTH
        else:
            assert TAG_ERROR not in run.data.tags


def test_log_epoch_is_one_batch_call(sqlite_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    run_id = sink.trial_run(sink.parent_run("s", "b", "r", "search", {}), "s/0", "t0", {}, {})
    calls = []
    original = sink.client.log_batch
    monkeypatch.setattr(sink.client, "log_batch", lambda *a, **k: (calls.append(k), original(*a, **k))[1])
    sink.log_epoch(run_id, 4, {f"reg/m{i}": float(i) for i in range(40)})
    assert len(calls) == 1 and len(calls[0]["metrics"]) == 40
    assert {m.step for m in calls[0]["metrics"]} == {4}
    calls.clear()
    sink.finish_trial(run_id, TrialStatus.COMPLETED, {M.TEST_ACCURACY: 0.5, M.TEST_LOSS: 0.2}, None)
    assert len(calls) == 1  # final metrics and status tag together


def _crash_and_resume(sink: MlflowSink) -> tuple[str, str]:
    parent = sink.parent_run("resumable", "digits-mlp", "erm", "search", {"num_samples": "4"})
    run_id = sink.trial_run(parent, "resumable/t1", "t1", {"lr": 0.1}, {"benchmark": "digits-mlp"})
    sink.log_epoch(run_id, 0, {M.VAL_ACCURACY: 0.4})
    sink.log_epoch(run_id, 1, {M.VAL_ACCURACY: 0.5})
    return parent, run_id  # ... the driver dies here: no finish_trial


def _finish_after_resume(sink: MlflowSink, parent: str, run_id: str) -> None:
    assert sink.parent_run("resumable", "digits-mlp", "erm", "search", {"num_samples": "4"}) == parent
    assert sink.trial_run(parent, "resumable/t1", "t1", {"lr": 0.1}, {"benchmark": "digits-mlp"}) == run_id
    sink.log_epoch(run_id, 2, {M.VAL_ACCURACY: 0.6})
    sink.finish_trial(run_id, TrialStatus.COMPLETED, {M.TEST_ACCURACY: 0.55}, None)
    sink.finish_parent(parent, {})


def _check_resumed(uri: str, experiment_id: str, parent: str, run_id: str) -> None:
    client = MlflowClient(uri)
    runs = _all_runs(client, experiment_id)
    assert sorted(r.info.run_id for r in runs) == sorted([parent, run_id])  # no second run
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert _history(client, run_id, M.VAL_ACCURACY) == [(0, 0.4), (1, 0.5), (2, 0.6)]
    assert _history(client, run_id, M.TEST_ACCURACY) == [(2, 0.55)]


def test_a_trial_known_to_be_new_is_created_without_a_lookup(sqlite_uri: str, experiment_name: str) -> None:
    """A sink without the in-memory map (a later call) finds an earlier run by its tag; told that
    the trial is new (its caller made it in this call) it creates one without searching."""
    parent, run_id = _crash_and_resume(MlflowSink(sqlite_uri, experiment_name))
    later = MlflowSink(sqlite_uri, experiment_name)
    assert later.trial_run(parent, "resumable/t1", "t1", {"lr": 0.1}, {}) == run_id  # found by its tag
    fresh = MlflowSink(sqlite_uri, experiment_name)
    created = fresh.trial_run(parent, "resumable/t1", "t1", {"lr": 0.1}, {}, find=False)
    assert created != run_id  # not looked up: a second run with the same key
    runs = _all_runs(MlflowClient(sqlite_uri), later.experiment_id)
    assert sorted(r.info.run_id for r in runs) == sorted([parent, run_id, created])


def test_resume_with_saved_state(sqlite_uri: str, experiment_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = MlflowSink(sqlite_uri, experiment_name)
    parent, run_id = _crash_and_resume(first)
    saved = json.loads(json.dumps(first.state()))  # what a Tune callback's get_state would keep

    second = MlflowSink(sqlite_uri, experiment_name)
    second.load_state(saved)

    def no_search(*args, **kwargs):
        raise AssertionError("the saved state should have answered")

    monkeypatch.setattr(second, "_find_run", no_search)
    _finish_after_resume(second, parent, run_id)
    _check_resumed(sqlite_uri, second.experiment_id, parent, run_id)


def test_resume_without_state_finds_runs_by_tag(sqlite_uri: str, experiment_name: str) -> None:
    first = MlflowSink(sqlite_uri, experiment_name)
    parent, run_id = _crash_and_resume(first)
    second = MlflowSink(sqlite_uri, experiment_name)  # fresh instance, state lost
    _finish_after_resume(second, parent, run_id)
    _check_resumed(sqlite_uri, second.experiment_id, parent, run_id)


def test_reused_runs_reopen_and_keep_first_params(sqlite_uri: str, experiment_name: str) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    parent = sink.parent_run("s", "b", "r", "search", {"a": "1"})
    run_id = sink.trial_run(parent, "s/t", "t", {"lr": 0.1}, {})
    sink.finish_trial(run_id, TrialStatus.FAILED, {}, "OOM")
    sink.finish_parent(parent, {})

    again = MlflowSink(sqlite_uri, experiment_name)
    assert again.parent_run("s", "b", "r", "search", {"a": "2", "b": "3"}) == parent
    assert again.trial_run(parent, "s/t", "t", {"lr": 0.2, "wd": 0.0}, {}) == run_id
    client = MlflowClient(sqlite_uri)
    assert client.get_run(parent).data.params == {"a": "1", "b": "3"}
    assert client.get_run(run_id).data.params == {"lr": "0.1", "wd": "0.0"}
    assert client.get_run(run_id).info.status == "RUNNING"  # a retried trial is running again
    assert len(_all_runs(client, again.experiment_id)) == 2


def test_distinct_keys_give_distinct_runs(sqlite_uri: str, experiment_name: str) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    p1 = sink.parent_run("search-a", "b", "sam", "search", {})
    p2 = sink.parent_run("search-b", "b", "erm", "search", {})
    assert p1 != p2
    # keys with quotes and any length are fine: the lookup uses a digest
    odd = 'search-a/it\'s "odd" ' + "k" * 9000
    t1 = sink.trial_run(p1, odd, "t", {}, {})
    t2 = sink.trial_run(p1, "search-a/other", "t", {}, {})
    assert t1 != t2
    assert MlflowSink(sqlite_uri, experiment_name).trial_run(p1, odd, "t", {}, {}) == t1


def test_load_state_rejects_unknown_version(sqlite_uri: str, experiment_name: str) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    with pytest.raises(ValueError, match="version"):
        sink.load_state({"version": 99, "trials": {}})


# ------------------------------------------------------------------------------ a training benchmark in the UI


def test_experiment_declares_itself_a_model_training_experiment(sqlite_uri: str, experiment_name: str) -> None:
    """MLflow 3's UI opens an experiment without this tag in its GenAI view ("Traces 0")."""
    client = MlflowClient(sqlite_uri)
    sink = MlflowSink(sqlite_uri, experiment_name)
    assert client.get_experiment(sink.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND_TRAINING
    # an experiment created before the tag existed gets it; a kind a user chose is kept
    older = client.create_experiment(experiment_name + "_older")
    MlflowSink(sqlite_uri, experiment_name + "_older")
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND_TRAINING
    chosen = client.create_experiment(experiment_name + "_chosen", tags={EXPERIMENT_KIND_TAG: "finetuning"})
    MlflowSink(sqlite_uri, experiment_name + "_chosen")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "finetuning"


@pytest.mark.parametrize(
    ("commit", "expected"),
    [
        ("0123abcd", {"mlflow.source.git.commit": "0123abcd", "mlflow.source.git.dirty": "false"}),
        ("0123abcd-dirty", {"mlflow.source.git.commit": "0123abcd", "mlflow.source.git.dirty": "true"}),
        (None, {}),
    ],
)
def test_every_run_carries_its_source_and_package_versions(sqlite_uri, experiment_name, commit, expected) -> None:
    source = RunSource(git_commit=commit, package_versions={"torch": "2.14.1", "mlflow": "3.17.2"})
    sink = MlflowSink(sqlite_uri, experiment_name, source=source)
    parent = sink.parent_run("s", "b", "erm", "search", {})
    trial = sink.trial_run(parent, "s/0", "t0", {}, {})
    client = MlflowClient(sqlite_uri)
    for run_id in (parent, trial):
        tags = client.get_run(run_id).data.tags
        assert tags["mlflow.source.name"] == "sharpbench" and tags["mlflow.source.type"] == "LOCAL"
        assert {k: v for k, v in tags.items() if k.startswith("mlflow.source.git")} == expected
        assert tags["sharpbench.package.torch"] == "2.14.1" and tags["sharpbench.package.mlflow"] == "3.17.2"


def test_default_source_is_this_checkout(sqlite_uri: str, experiment_name: str) -> None:
    from bench.provenance import git_commit, package_versions

    sink = MlflowSink(sqlite_uri, experiment_name)
    assert sink.source == RunSource(git_commit(), package_versions())


def test_config_artifacts_are_logged_once_and_read_back(sqlite_uri: str, experiment_name: str) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    benchmark = {"benchmark": "b", "final": {"seeds": [1, 2]}}
    parent = sink.parent_run("s", "b", "sam", "search", {}, config=benchmark)
    spec = {
        "training": {"learning_rate": 0.1, "precision": "auto"},
        "regularizer_hparams": {"perturbation_radius": 0.05},
        "seed": 0,
    }
    trial = sink.trial_run(parent, "s/0", "t0", {}, {}, config=spec)
    # A resumed trial finds its run and does not log the config again (a changed one is ignored).
    again = MlflowSink(sqlite_uri, experiment_name)
    assert again.trial_run(parent, "s/0", "t0", {}, {}, config={"other": 1}) == trial
    client = MlflowClient(sqlite_uri)
    assert _artifact_json(client, trial, TRIAL_CONFIG_ARTIFACT) == spec
    assert _artifact_json(client, parent, BENCHMARK_CONFIG_ARTIFACT) == benchmark
    assert [a.path for a in client.list_artifacts(trial)] == [TRIAL_CONFIG_ARTIFACT]


def test_device_and_precision_as_used_are_tags_updated_when_they_change(sqlite_uri: str, experiment_name: str) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    run_id = sink.trial_run(
        sink.parent_run("s", "b", "erm", "search", {}), "s/0", "t0", {"training.precision": "auto"}, {}
    )
    used = {TAG_DEVICE: "cpu", TAG_PRECISION: "float32"}
    sink.log_epoch(run_id, 1, {M.VAL_ACCURACY: 0.5}, tags=used)
    sink.log_epoch(run_id, 2, {M.VAL_ACCURACY: 0.6}, tags=used)
    client = MlflowClient(sqlite_uri)
    run = client.get_run(run_id)
    assert {k: run.data.tags[k] for k in used} == used and run.data.params["training.precision"] == "auto"
    sink.log_epoch(run_id, 3, {M.VAL_ACCURACY: 0.7}, tags={TAG_DEVICE: "cuda:0", TAG_PRECISION: "bfloat16"})
    assert client.get_run(run_id).data.tags[TAG_PRECISION] == "bfloat16"
    assert _history(client, run_id, M.VAL_ACCURACY) == [(1, 0.5), (2, 0.6), (3, 0.7)]


def test_parent_summary_and_artifacts(sqlite_uri: str, experiment_name: str, tmp_path: Path) -> None:
    sink = MlflowSink(sqlite_uri, experiment_name)
    parent = sink.parent_run("s-final", "b", "sam", "final", {})
    assert sink.find_parent_run("s-final") == parent
    assert MlflowSink(sqlite_uri, experiment_name).find_parent_run("s-final") == parent  # found by tag
    assert sink.find_parent_run("never-ran") is None
    sink.finish_parent(
        parent,
        {"final_test_accuracy_mean": 0.9, "n_seeds": 3.0, "skipped": None},
        tags={"sharpbench.best_run_id": "s/1"},
        standing={"standings": [{"regularizer": "sam"}]},
    )
    figure, table = tmp_path / "plot-7.png", tmp_path / "board.md"
    figure.write_bytes(b"\x89PNG fake bytes")
    table.write_text("| rank | method |\n")
    sink.log_parent_artifacts(parent, {"figures/accuracy.png": figure, "leaderboard.md": table})
    client = MlflowClient(sqlite_uri)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"final_test_accuracy_mean": 0.9, "n_seeds": 3.0}
    assert run.data.tags["sharpbench.best_run_id"] == "s/1"
    assert _artifact_json(client, parent, STANDING_ARTIFACT) == {"standings": [{"regularizer": "sam"}]}
    assert sorted(a.path for a in client.list_artifacts(parent)) == ["figures", "leaderboard.md", STANDING_ARTIFACT]
    assert [a.path for a in client.list_artifacts(parent, "figures")] == ["figures/accuracy.png"]
    downloaded = Path(client.download_artifacts(parent, "figures/accuracy.png", str(tmp_path)))
    assert downloaded.read_bytes() == figure.read_bytes()
    with pytest.raises(FileNotFoundError, match="missing.png"):
        sink.log_parent_artifacts(parent, {"figures/missing.png": tmp_path / "missing.png"})
    with pytest.raises(ValueError, match="relative path"):
        sink.log_parent_artifacts(parent, {"../escape.md": table})


# ------------------------------------------------------------------------------ tracking server


@pytest.mark.slow
def test_tracking_server(mlflow_server: str) -> None:
    assert normalize_tracking_uri(mlflow_server) == mlflow_server
    sink = MlflowSink(mlflow_server, "server-exp")
    parent = sink.parent_run("s-http", "digits-mlp", "sam", Phase.SEARCH, {"num_samples": "2"})
    run_id = sink.trial_run(
        parent,
        "s-http/t0",
        "t0",
        {"rho": 0.1, "long": "v" * (MAX_PARAM_VAL_LENGTH * 2)},
        {"x": "y"},
        config={"seed": 3},
    )
    for epoch in range(3):
        sink.log_epoch(run_id, epoch, {M.VAL_ACCURACY: epoch / 10, M.VAL_LOSS: 1 - epoch / 10})
    sink.finish_trial(run_id, TrialStatus.STOPPED, {M.TEST_ACCURACY: 0.3, M.TEST_LOSS: None}, None)
    sink.finish_parent(parent, {M.VAL_ACCURACY: 0.2})

    resumed = MlflowSink(mlflow_server, "server-exp")
    assert resumed.parent_run("s-http", "digits-mlp", "sam", Phase.SEARCH, {"num_samples": "2"}) == parent
    assert resumed.trial_run(parent, "s-http/t0", "t0", {"rho": 0.1}, {}) == run_id

    client = MlflowClient(mlflow_server)
    assert len(_all_runs(client, sink.experiment_id)) == 2
    run = client.get_run(run_id)
    assert run.data.tags[PARENT] == parent and run.data.tags[TAG_STATUS] == "stopped"
    assert len(run.data.params["long"]) == MAX_PARAM_VAL_LENGTH
    assert _history(client, run_id, M.VAL_ACCURACY) == [(0, 0.0), (1, 0.1), (2, 0.2)]
    assert client.get_run(parent).data.metrics == {M.VAL_ACCURACY: 0.2}
    # artifacts go through the server's artifact proxy
    assert _artifact_json(client, run_id, TRIAL_CONFIG_ARTIFACT) == {"seed": 3}


def test_a_new_sqlite_store_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """MLflow builds a store through a chain of migrations; kill -9 part-way once left a store no
    later run could open. The store is built beside its final name and moved there only when
    every migration has run: at the move, its schema is the one a normal creation reaches."""
    import os
    import sqlite3

    from mlflow.tracking import MlflowClient

    from bench.results import mlflow_sink

    def revision(path) -> str:
        with sqlite3.connect(path) as connection:
            return connection.execute("select version_num from alembic_version").fetchone()[0]

    reference = tmp_path / "reference.db"
    MlflowClient(tracking_uri=f"sqlite:///{reference}").search_experiments()
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    leftover = db.with_name(db.name + mlflow_sink.CREATING_SUFFIX + "999999")  # a killed creation's file
    leftover.write_bytes(b"half a store")
    moves = []
    real_replace = os.replace

    def watched(source, target):
        if str(target) == str(db):
            moves.append((revision(source), db.exists()))
        real_replace(source, target)

    monkeypatch.setattr(mlflow_sink.os, "replace", watched)
    sink = mlflow_sink.MlflowSink(f"sqlite:///{db}", experiment_name="whole")
    assert moves == [(revision(reference), False)]  # complete when moved; nothing at the final name before
    # the leftover is gone; the store is in WAL mode (its -wal and -shm files while it is open)
    assert set(p.name for p in db.parent.iterdir()) - {"mlflow.db-wal", "mlflow.db-shm"} == {
        "mlflow.db",
        "mlflow.db.lock",
    }
    assert sink.client.get_experiment(sink.experiment_id).name == "whole"
