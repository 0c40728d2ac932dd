"""bench.preflight in process: placement against per-node resources, the results-folder probe,
the tracking server's time-out, and no false alarm on any registered model's defaults."""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time

import pytest

from bench.config import parse_config
from bench.models import available_models
from bench.preflight import (
    JOURNAL_FILE,
    NETWORK_TIMEOUT_S,
    SQLITE_FILE,
    NodeResources,
    PreflightError,
    check_model_options,
    check_optuna_storage,
    check_placeable,
    check_results_folder,
    check_sqlite_file,
    check_tracking_uri,
)
from bench.stores import optuna_storage

GOOD = {"benchmark": "t", "regularizers": ["erm"], "model": {"name": "mlp"}}


def _config(**sections):
    return parse_config({**GOOD, **sections})


def test_a_trial_must_fit_on_one_node():
    config = _config(resources={"cpus_per_trial": 8, "gpus_per_trial": 1})
    # 8 CPUs on one node and a GPU on another: the cluster has both in total, no node has both
    split = [NodeResources(cpus=16, gpus=0), NodeResources(cpus=4, gpus=2)]
    with pytest.raises(PreflightError, match="gpus_per_trial is 1 but the cluster has at most 2 GPUs") as refused:
        check_placeable(config, split)
    assert "\n" not in str(refused.value)
    check_placeable(config, [*split, NodeResources(cpus=8, gpus=1)])  # exactly enough on one node


def test_cpu_shortage_names_cpus_and_fractions_below_one_pack():
    with pytest.raises(
        PreflightError, match=r"cpus_per_trial is 3 but this machine has at most 2 CPUs on one node \(see --num-cpus\)"
    ):
        check_placeable(_config(resources={"cpus_per_trial": 3}), [NodeResources(cpus=2, gpus=0)], where="this machine")
    # --num-cpus cannot add a GPU: not named when GPUs are short
    with pytest.raises(
        PreflightError, match=r"gpus_per_trial is 1 but this machine has at most 0 GPUs on one node: no trial"
    ) as refused:
        check_placeable(_config(resources={"gpus_per_trial": 1}), [NodeResources(cpus=2, gpus=0)], where="this machine")
    assert "--num-cpus" not in str(refused.value)
    check_placeable(_config(resources={"cpus_per_trial": 1, "gpus_per_trial": 0.25}), [NodeResources(cpus=1, gpus=1)])
    with pytest.raises(PreflightError, match="whole number"):  # even where 2 GPUs would cover it
        check_placeable(_config(resources={"gpus_per_trial": 1.5}), [NodeResources(cpus=8, gpus=2)])


def test_a_trial_whose_workers_never_fit_this_machine_is_refused():
    config = _config(resources={"cpus_per_trial": 1, "workers_per_trial": 3})
    with pytest.raises(PreflightError, match=r"workers_per_trial is 3 but this machine holds 2 such worker") as refused:
        check_placeable(config, [NodeResources(cpus=2, gpus=0)], where="this machine")
    assert "--num-cpus" in str(refused.value) and "\n" not in str(refused.value)
    check_placeable(config, [NodeResources(cpus=3, gpus=0)], where="this machine")
    # on a cluster one worker must fit a node; Ray Train spreads them, and an autoscaler may add nodes
    check_placeable(config, [NodeResources(cpus=1, gpus=0)])
    gpu = _config(resources={"cpus_per_trial": 1, "gpus_per_trial": 1, "workers_per_trial": 2})
    with pytest.raises(PreflightError, match="holds 1 such worker"):
        check_placeable(gpu, [NodeResources(cpus=8, gpus=1)], where="this machine")


def test_cuda_on_a_cluster_without_gpus():
    config = _config(training={"device": "cuda"})
    with pytest.raises(PreflightError, match="no node of the cluster has a GPU"):
        check_placeable(config, [NodeResources(cpus=4, gpus=0)])
    check_placeable(config, [NodeResources(cpus=4, gpus=0), NodeResources(cpus=4, gpus=1)])


def test_results_probe_leaves_nothing_behind(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    check_results_folder(existing)
    check_results_folder(tmp_path / "new" / "deeper")
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]
    assert list(existing.iterdir()) == []


def test_results_folder_under_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PreflightError, match="is a file, not a folder"):
        check_results_folder(tmp_path / "f" / "a" / "b")


@pytest.mark.parametrize("model", available_models())
def test_every_registered_model_passes_with_its_defaults(model):
    check_model_options(_config(model={"name": model}))


@pytest.fixture
def health_server():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's API
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_tracking_server_that_answers_passes(health_server):
    check_tracking_uri(health_server)
    check_tracking_uri(health_server + "/")


def test_a_tracking_server_that_never_answers_times_out():
    # Accepts the connection (the kernel completes it from the backlog) and never replies: the
    # hang a dead proxy causes. The check must give up after its time-out, not after minutes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(PreflightError, match="within 3 s"):
            check_tracking_uri(f"http://127.0.0.1:{silent.getsockname()[1]}")
        # a bound on a hang, not a speed target: the time-out plus generous slack for a busy machine
        assert time.monotonic() - started < NETWORK_TIMEOUT_S + 5


# (a database URL is checked for its driver too: see the next test)
@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/mlflow.db", "file:///tmp/mlruns", "databricks"])
def test_store_schemes_mlflow_accepts_pass_without_network(uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to its file store
    check_tracking_uri(uri.format(tmp=tmp_path))


def test_a_database_store_whose_driver_is_missing_is_refused():
    # no test machine installs MySQLdb: named before anything runs (it used to fail after the folder was made)
    with pytest.raises(PreflightError, match="MLflow tracking URI mysql\\+mysqldb://u@h/db: No module named 'MySQLdb'"):
        check_tracking_uri("mysql+mysqldb://u@h/db")


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "/tmp/mlruns"])
def test_a_file_store_is_refused_as_mlflow_refuses_it_unless_opted_in(uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(
        PreflightError, match=r"MLFLOW_ALLOW_FILE_STORE=true is set; use a database, e.g. sqlite:////tmp/mlruns\.db$"
    ):
        check_tracking_uri(uri)
    # and MLflow itself refuses it, so this check says no more than MLflow would, only sooner
    import mlflow

    with pytest.raises(mlflow.exceptions.MlflowException, match="MLFLOW_ALLOW_FILE_STORE"):
        mlflow.MlflowClient(tracking_uri="file:///tmp/sharpbench-never-made").search_experiments()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "1")
    check_tracking_uri(uri)


def test_an_sqlite_file_must_be_able_to_become_a_database(tmp_path):
    import sqlite3

    url = lambda path: f"sqlite:///{path}"  # noqa: E731
    check_sqlite_file("it", url(tmp_path / "new.db"))  # SQLite creates it
    (tmp_path / "empty.db").touch()
    check_sqlite_file("it", url(tmp_path / "empty.db"))  # SQLite writes an empty file
    sqlite3.connect(tmp_path / "real.db").execute("create table t (x)").connection.close()
    check_sqlite_file("it", url(tmp_path / "real.db"))
    assert (tmp_path / "real.db").read_bytes()[:16] == SQLITE_FILE.header
    results = tmp_path / "results"  # not made yet: the run makes it
    check_sqlite_file("it", url(results / "optuna.db"), results=results)
    check_sqlite_file("it", url(results / "sub" / "optuna.db"), results=results)
    (tmp_path / "notes.txt").write_text("not a database")
    refusals = {
        url(tmp_path / "missing" / "x.db"): f"{tmp_path / 'missing'} is not an existing folder",
        url(tmp_path): f"{tmp_path} is a folder, not a database file",
        url(tmp_path / "notes.txt"): f"{tmp_path / 'notes.txt'} is not an SQLite database",
    }
    for bad, message in refusals.items():
        with pytest.raises(PreflightError, match=re.escape(f"cannot use it: {message}")):
            check_sqlite_file("it", bad, results=results)


def test_an_optuna_journal_path_must_be_able_to_become_a_journal(tmp_path):
    import optuna

    check_optuna_storage(str(tmp_path / "new.journal"))  # Optuna creates it
    written = tmp_path / "written.journal"
    optuna.create_study(storage=optuna_storage(str(written)), study_name="s").ask()
    check_optuna_storage(str(written))
    assert written.read_bytes()[:1] == JOURNAL_FILE.header
    results = tmp_path / "results"  # not made yet: the run makes it
    check_optuna_storage(str(results / "optuna.journal"), results=results)
    (tmp_path / "notes.journal").write_text("not a journal")
    (tmp_path / "folder.journal").mkdir()
    refusals = {
        str(tmp_path / "missing" / "x.journal"): f"{tmp_path / 'missing'} is not an existing folder",
        str(tmp_path / "folder.journal"): f"{tmp_path / 'folder.journal'} is a folder, not a journal file",
        str(tmp_path / "notes.journal"): f"{tmp_path / 'notes.journal'} is not an Optuna journal",
    }
    for bad, message in refusals.items():
        with pytest.raises(PreflightError, match=re.escape(f"cannot use Optuna storage {bad!r}: {message}")):
            check_optuna_storage(bad, results=results)
    with pytest.raises(PreflightError, match="neither a SQLAlchemy URL .* nor an Optuna journal file"):
        check_optuna_storage(str(tmp_path / "optuna.db"))


def test_node_resources_of_a_real_local_runtime():
    import ray
    import torch

    from bench import search

    search.init_ray(None, num_cpus=1)
    try:
        nodes = search.node_resources()
    finally:
        ray.shutdown()
    assert nodes == [NodeResources(cpus=1.0, gpus=float(torch.cuda.device_count()))]
    with pytest.raises(PreflightError, match="cpus_per_trial is 2 but the cluster has at most 1 CPU on one node"):
        check_placeable(_config(resources={"cpus_per_trial": 2}), nodes)
