"""MLflow is a mirror, Parquet the record (issue 12): a tracking server killed mid-run costs one
warning line, never a trial or the exit status; `sync-mlflow` back-fills it, idempotently; a
fresh SQLite store created by two processes at once does not race."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.results.mlflow_mirror import MlflowMirror, MlflowOutage
from bench.results.mlflow_sink import BOUNDED_HTTP_ENV, TAG_ROLE, TAG_SEARCH_NAME, TAG_STATUS, TAG_TRIAL_KEY, MlflowSink
from bench.results.parquet import read_rows
from bench.run_record import load_records
from tests.runner import sharpbench, sharpbench_command

TRIALS = 6


def _cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return sharpbench(*args, cwd=cwd, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    # The user's MLflow settings would change the time-outs under test: none.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "PYTHONUNBUFFERED": "1"}


def _config(tmp_path: Path) -> Path:
    raw = {
        "benchmark": "outage",
        "dataset": {"name": "digits", "max_train_samples": 128},
        "model": {"name": "mlp", "options": {"hidden": 8, "depth": 1}},
        "training": {"epochs": 2, "batch_size": 32},
        "search": {"trials_per_method": TRIALS, "max_concurrent_trials": 1, "asha": {"enabled": False},
                   "space": {"learning_rate": {"low": 0.02, "high": 0.2, "log": True}}},
        "regularizers": ["erm"],
    }  # fmt: skip
    path = tmp_path / "outage.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _trial_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("outage")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]


# --- the guard ------------------------------------------------------------------------------------


def test_mirror_says_once_then_skips_and_lets_interrupts_through() -> None:
    told: list[MlflowOutage] = []
    mirror = MlflowMirror("http://127.0.0.1:9", told.append)
    assert mirror.call("first", lambda: 7) == 7
    calls: list[str] = []

    def failing() -> int:
        calls.append("failing")
        raise ConnectionError("refused\nsecond line")

    assert mirror.call("log epoch", failing) is None
    assert mirror.call("finish trial", lambda: calls.append("skipped")) is None  # not run: MLflow is down
    assert calls == ["failing"] and mirror.down
    assert told == [MlflowOutage("http://127.0.0.1:9", "log epoch", "ConnectionError: refused")]

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        MlflowMirror("x").call("interrupt", interrupted)


def test_bounded_http_settings_keep_the_users_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in BOUNDED_HTTP_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")
    MlflowSink(f"sqlite:///{tmp_path / 'm.db'}", "bounded")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == BOUNDED_HTTP_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]


# --- a real server killed mid-run, then sync-mlflow twice ----------------------------------------------


@pytest.mark.slow
def test_server_killed_mid_run_then_sync_twice(tmp_path: Path, mlflow_servers) -> None:
    store = tmp_path / "store"
    first = mlflow_servers(store)
    results = tmp_path / "results"
    run = subprocess.Popen(
        sharpbench_command("run", str(_config(tmp_path)), "--results", str(results), "--tracking-uri", first.url),
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while read_rows(results).num_rows == 0 if (results / "leaderboard").exists() else True:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no trial finished in 300 s"
            time.sleep(0.2)
        os.killpg(first.proc.pid, signal.SIGKILL)  # the server dies as a crashed host would
        first.proc.wait(timeout=10)
        # Bounded: the bounded retries cost seconds once, never minutes per call.
        stdout, stderr = run.communicate(timeout=400)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == 0, stderr[-3000:]
    rows = read_rows(results).to_pylist()
    assert len(rows) == TRIALS and {r["status"] for r in rows} == {"completed"}, [r["status"] for r in rows]
    warnings = [line for line in stderr.splitlines() if "MLflow at" in line]
    assert len(warnings) == 1, stderr[-3000:]
    assert warnings[0].startswith(f"warning: MLflow at {first.url} unreachable (")
    assert f"sharpbench sync-mlflow {results} --tracking-uri {first.url}" in warnings[0]

    second = mlflow_servers(store)  # the same SQLite store behind a new server
    synced = _cli("sync-mlflow", str(results), "--tracking-uri", second.url, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    client = MlflowClient(tracking_uri=second.url)
    trial_runs = _trial_runs(client)
    by_key = {r.data.tags[TAG_TRIAL_KEY]: r for r in trial_runs}
    assert len(trial_runs) == len(by_key) == TRIALS  # no trial twice (runs created before the kill reused)
    instance = load_records(results)["outage"].instance
    parent_name = f"outage-erm-search@{instance}"
    for row in rows:
        run_ = by_key[row["run_id"]]
        assert run_.info.status == "FINISHED" and run_.data.tags[TAG_STATUS] == row["status"]
        parent = client.get_run(run_.data.tags["mlflow.parentRunId"])
        assert parent.data.tags[TAG_SEARCH_NAME] == parent_name and parent.info.status == "FINISHED"
        # float64 values stored by MLflow's SQLite store and sent as JSON over HTTP: round-trip
        # exact in principle; a relative 1e-12 allows a decimal text conversion on the way.
        for key in ("val_accuracy", "val_loss", "test_accuracy", "wall_seconds"):
            assert run_.data.metrics[key] == pytest.approx(row[key], rel=1e-12), key
        assert run_.data.metrics["forward_passes"] == row["forward_passes"]
    assert f"{TRIALS} already there" not in synced.stdout  # the outage left work to do
    before = {r.info.run_id: (r.info.end_time, r.info.status, dict(r.data.tags)) for r in client.search_runs(
        [client.get_experiment_by_name("outage").experiment_id], max_results=1000)}  # fmt: skip

    again = _cli("sync-mlflow", str(results), "--tracking-uri", second.url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (
        f"0 trial run(s) created, 0 completed, {TRIALS} already there; 0 parent run(s) created, 0 finished"
        in again.stdout
    )
    after = {r.info.run_id: (r.info.end_time, r.info.status, dict(r.data.tags)) for r in client.search_runs(
        [client.get_experiment_by_name("outage").experiment_id], max_results=1000)}  # fmt: skip
    assert after == before


# --- two processes create one fresh SQLite store -----------------------------------------------------


def _create_store(db: str, barrier, results) -> None:  # in a spawned process
    barrier.wait()  # both start the schema at the same moment
    results.put(MlflowSink(f"sqlite:///{db}", "race").experiment_id)


@pytest.mark.slow
def test_two_processes_create_one_fresh_sqlite_store(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each, as two runs would be
    for attempt in range(3):
        db = tmp_path / f"race{attempt}" / "mlflow.db"
        barrier, results = spawn.Barrier(2), spawn.Queue()
        procs = [spawn.Process(target=_create_store, args=(str(db), barrier, results)) for _ in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0], f"attempt {attempt}"
        ids = {results.get(timeout=5), results.get(timeout=5)}
        assert len(ids) == 1  # one experiment, found by the second process


# --- sync-mlflow's bad input ---------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case",
    ["missing folder", "a file, not a folder", "empty folder", "unreachable server", "not a tracking scheme"],
)
def test_sync_mlflow_bad_input_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "results"
    if case == "a file, not a folder":
        folder.write_text("")
    elif case != "missing folder":
        folder.mkdir()
    args = ["sync-mlflow", str(folder)]
    if case == "unreachable server":
        args += ["--tracking-uri", f"http://127.0.0.1:{_closed_port()}"]
    elif case == "not a tracking scheme":
        args += ["--tracking-uri", "ftp://example/x"]
    started = time.monotonic()
    done = _cli(*args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    if case == "a file, not a folder":
        assert lines[0] == f"error: {folder} is not a folder: give the --results folder of `sharpbench run`"
    assert time.monotonic() - started < 60  # bounded, not MLflow's minutes of retries
    assert not (folder / "mlflow.db").exists()
