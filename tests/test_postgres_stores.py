"""The cluster's stores on a real PostgreSQL server: Optuna studies through ``optuna_storage`` and
an `mlflow server` over a PostgreSQL backend, each written by several processes at once, lose
nothing (the cluster guide's recipe instead of SQLite on a shared volume)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import Postgres

WRITERS, EACH = 4, 12

OPTUNA_WRITER = """
import sys
import optuna
from bench.stores import optuna_storage

url, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
study = optuna.load_study(study_name="shared", storage=optuna_storage(url))
for i in range(count):
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("writer", f"{worker}/{i}")
    study.tell(trial, x + worker)
"""

MLFLOW_WRITER = """
import sys
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

url, experiment, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = MlflowClient(tracking_uri=url)
for i in range(count):
    run = client.create_run(experiment, run_name=f"w{worker}-{i}")
    metrics = [Metric("val_accuracy", worker + i / 100 + step / 1e4, 0, step) for step in range(20)]
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param("writer", f"{worker}/{i}")])
    client.set_terminated(run.info.run_id)
"""


def _writers(script: str, *args: str) -> None:
    """``WRITERS`` processes running ``script`` at once, each given its index; all must succeed."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, args[0], *args[1:-1], str(worker), args[-1]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for worker in range(WRITERS)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]


def test_optuna_studies_on_postgres_keep_every_concurrent_trial(postgres: Postgres) -> None:
    import optuna

    from bench.stores import optuna_storage

    url = postgres.create_database("optuna")
    study = optuna.create_study(study_name="shared", storage=optuna_storage(url), direction="maximize")
    _writers(OPTUNA_WRITER, url, str(EACH))

    trials = optuna.load_study(study_name="shared", storage=optuna_storage(url)).trials
    assert len(trials) == WRITERS * EACH
    assert sorted(t.number for t in trials) == list(range(WRITERS * EACH))  # no number given twice
    assert {t.user_attrs["writer"] for t in trials} == {f"{w}/{i}" for w in range(WRITERS) for i in range(EACH)}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # each value is its own trial's, not a neighbour's
        assert t.value == pytest.approx(t.params["x"] + int(t.user_attrs["writer"].split("/")[0]), abs=1e-12)
    assert study.best_value == max(t.value for t in trials)


def test_an_mlflow_server_on_postgres_keeps_every_concurrent_run(
    postgres: Postgres, mlflow_servers, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    server = mlflow_servers(tmp_path / "server", postgres.create_database("mlflow"))
    client = MlflowClient(tracking_uri=server.url)
    experiment = client.create_experiment("shared")
    _writers(MLFLOW_WRITER, server.url, experiment, str(EACH // 2))

    runs = client.search_runs([experiment], max_results=1000)
    assert len(runs) == WRITERS * (EACH // 2)
    assert {r.data.params["writer"] for r in runs} == {f"{w}/{i}" for w in range(WRITERS) for i in range(EACH // 2)}
    for run in runs:
        assert run.info.status == "FINISHED"
        worker, i = map(int, run.data.params["writer"].split("/"))
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(20))
        assert all(m.value == pytest.approx(worker + i / 100 + m.step / 1e4, abs=1e-12) for m in history)
    # and the rows are in PostgreSQL, not in a file beside the server
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user={postgres.user} dbname=mlflow") as connection:
        (count,) = connection.execute("SELECT count(*) FROM runs").fetchone()
    assert count == WRITERS * (EACH // 2)
    assert not list((tmp_path / "server").glob("*.db"))
