"""The MLflow writer runs off the driver's loop, on a bounded queue: what it queued reaches MLflow
when the run is stopped with Ctrl-C or SIGTERM, and after a kill -9 the resumed run leaves MLflow with one
trial run per Parquet row, complete, none missing and none twice."""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from bench.results.mlflow_sink import param_value
from bench.results.parquet import read_rows
from bench.results.rows import row_of
from bench.results.schema import TrialRow, TrialStatus
from bench.results.vocabulary import RUN_STATUS, TAG_STATUS, TAG_TRIAL_KEY, TrialRun, final_metrics, trial_params

pytestmark = pytest.mark.slow

SMOKE_TRIALS = 8  # configs/smoke.yaml: 2 methods x (2 search trials + 2 final seeds)


def _wait_for_rows(run, results, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None and read_rows(results).num_rows < count:
        time.sleep(0.1)
    assert run.poll() is None, "the run ended before it could be stopped"
    assert read_rows(results).num_rows >= count


def _assert_every_row_mirrored(client: MlflowClient, children, rows: list[TrialRow]) -> None:
    """One active trial run per row, no other: its id is the row's, ended as the row says, with
    the row's params and final metrics."""
    by_key = Counter(child.data.tags[TAG_TRIAL_KEY] for child in children)
    assert not [key for key, n in by_key.items() if n > 1], f"trial runs twice: {by_key}"
    assert set(by_key) == {row.run_id for row in rows}
    runs = {child.data.tags[TAG_TRIAL_KEY]: child for child in children}
    for row in rows:
        run = client.get_run(runs[row.run_id].info.run_id)
        assert run.info.run_id == row.mlflow_run_id
        assert run.info.status == RUN_STATUS[TrialStatus(row.status)], row.run_id
        assert run.data.tags[TAG_STATUS] == row.status
        expected = {key: param_value(value) for key, value in trial_params(TrialRun.of_row(row)).items()}
        assert {key: run.data.params.get(key) for key in expected} == expected
        for name, value in final_metrics(row).items():
            if value is not None:
                assert math.isclose(run.data.metrics[name], value, rel_tol=1e-9), (row.run_id, name)


def test_ctrl_c_drains_the_queue_and_a_kill_9_resume_leaves_one_complete_trial_run_per_row(
    tmp_path, repo_root, start_run, child_runs
):
    """One folder, three runs: Ctrl-C (what it queued reaches MLflow; SIGTERM takes the same path,
    bench.signals, as test_hostile_environment checks), then kill -9 of the resumed run's whole
    process group, then the resume that finishes. SIGTERM and Ctrl-C share one code path."""
    results, config = tmp_path / "results", repo_root / "configs" / "smoke.yaml"
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    first = start_run(config, results)
    _wait_for_rows(first, results, 2)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-2000:]
    rows = [row_of(r) for r in read_rows(results).to_pylist()]
    assert 2 <= len(rows) < SMOKE_TRIALS
    # The trials Ctrl-C stopped have runs (left RUNNING, resumed later) but no rows: only ended ones count.
    ended = [c for c in child_runs(client, "smoke") if c.info.status != "RUNNING"]
    _assert_every_row_mirrored(client, ended, rows)

    second = start_run(config, results, new_session=True)
    _wait_for_rows(second, results, len(rows) + 1)
    os.killpg(second.pid, signal.SIGKILL)
    second.communicate(timeout=60)

    third = start_run(config, results)
    stdout, stderr = third.communicate(timeout=400)
    assert third.returncode == 0, stdout[-2000:] + stderr[-2000:]
    rows = [row_of(r) for r in read_rows(results).to_pylist()]
    assert len(rows) == SMOKE_TRIALS
    _assert_every_row_mirrored(client, child_runs(client, "smoke"), rows)
