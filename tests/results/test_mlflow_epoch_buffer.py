"""``MlflowSink(epoch_flush_seconds=...)``: a run's epochs go to MLflow at most once per period,
held back ones together in one ``log_batch``, each point still at its own step, value and time;
nothing is lost at the run's end."""

from __future__ import annotations

import re
import time

import pytest
from mlflow.tracking import MlflowClient

from bench import metrics as M
from bench.results.mlflow_sink import TAG_DEVICE, MlflowSink, default_tracking_uri
from bench.results.schema import TrialStatus


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return default_tracking_uri(tmp_path_factory.mktemp("mlflow"))  # one store per module: seconds to create


@pytest.fixture
def experiment_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"\W", "_", request.node.name)


def _trial(sink: MlflowSink, name: str = "t0") -> str:
    return sink.trial_run(sink.parent_run("s", "b", "r", "search", {}), f"s/{name}", name, {}, {})


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _spy_batches(sink: MlflowSink, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The real ``log_batch``, each call's keyword arguments recorded."""
    calls: list[dict] = []
    original = sink.client.log_batch
    monkeypatch.setattr(sink.client, "log_batch", lambda *a, **k: (calls.append(k), original(*a, **k))[1])
    return calls


def test_held_back_epochs_go_with_the_final_figures_in_one_batch(sqlite_uri, experiment_name, monkeypatch):
    sink = MlflowSink(sqlite_uri, experiment_name, epoch_flush_seconds=3600.0)
    run_id = _trial(sink)
    calls = _spy_batches(sink, monkeypatch)
    for epoch in range(1, 6):
        sink.log_epoch(
            run_id, epoch, {M.VAL_ACCURACY: epoch / 10, M.TRAIN_LOSS: 1 - epoch / 10}, tags={TAG_DEVICE: "cpu"}
        )
    client = MlflowClient(sqlite_uri)
    # The run's first epoch went at once (nothing was sent before); the next four wait.
    assert len(calls) == 1 and sink.pending_epochs == 8
    assert _history(client, run_id, M.VAL_ACCURACY) == [(1, 0.1)]
    sink.finish_trial(run_id, TrialStatus.COMPLETED, {M.TEST_ACCURACY: 0.7}, None)
    assert len(calls) == 2 and sink.pending_epochs == 0
    assert _history(client, run_id, M.VAL_ACCURACY) == [(e, e / 10) for e in range(1, 6)]
    assert _history(client, run_id, M.TRAIN_LOSS) == [(e, 1 - e / 10) for e in range(1, 6)]
    assert _history(client, run_id, M.TEST_ACCURACY) == [(5, 0.7)]  # at the last epoch's step
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[TAG_DEVICE] == "cpu"


def test_an_epoch_logged_a_period_after_the_last_send_goes_at_once_with_the_held_ones(
    sqlite_uri, experiment_name, monkeypatch
):
    period = 0.3
    sink = MlflowSink(sqlite_uri, experiment_name, epoch_flush_seconds=period)
    run_id = _trial(sink)
    calls = _spy_batches(sink, monkeypatch)
    sink.log_epoch(run_id, 1, {M.VAL_ACCURACY: 0.1})
    sink.log_epoch(run_id, 2, {M.VAL_ACCURACY: 0.2})
    assert len(calls) == 1 and [m.step for m in calls[0]["metrics"]] == [1]  # 2 came within the period
    time.sleep(period + 0.05)
    sink.log_epoch(run_id, 3, {M.VAL_ACCURACY: 0.3})
    assert len(calls) == 2 and sorted(m.step for m in calls[1]["metrics"]) == [2, 3]
    points = sorted(MlflowClient(sqlite_uri).get_metric_history(run_id, M.VAL_ACCURACY), key=lambda m: m.step)
    # Each point keeps the time it was logged at, not the time it was sent (ms resolution).
    assert points[2].timestamp - points[1].timestamp >= 1000 * period
    sink.log_epoch(run_id, 4, {M.VAL_ACCURACY: 0.4})  # within the period of the last send
    assert len(calls) == 2 and sink.pending_epochs == 1


def test_flush_sends_every_run_and_a_second_flush_sends_nothing(sqlite_uri, experiment_name, monkeypatch):
    sink = MlflowSink(sqlite_uri, experiment_name, epoch_flush_seconds=3600.0)
    runs = [_trial(sink, "a"), _trial(sink, "b")]
    for index, run_id in enumerate(runs):
        sink.log_epoch(run_id, 1, {M.VAL_LOSS: float(index)})  # sent: each run's first
        sink.log_epoch(run_id, 2, {M.VAL_LOSS: float(index) + 0.5})  # held back
    calls = _spy_batches(sink, monkeypatch)
    sink.flush(runs[0])
    assert len(calls) == 1 and sink.pending_epochs == 1
    sink.flush()
    sink.flush()
    assert len(calls) == 2 and sink.pending_epochs == 0
    client = MlflowClient(sqlite_uri)
    assert [_history(client, run_id, M.VAL_LOSS) for run_id in runs] == [[(1, 0.0), (2, 0.5)], [(1, 1.0), (2, 1.5)]]


def test_the_default_sends_every_epoch_at_once(sqlite_uri, experiment_name):
    sink = MlflowSink(sqlite_uri, experiment_name)
    run_id = _trial(sink)
    sink.log_epoch(run_id, 1, {M.VAL_ACCURACY: 0.5})
    assert sink.pending_epochs == 0
    assert _history(MlflowClient(sqlite_uri), run_id, M.VAL_ACCURACY) == [(1, 0.5)]


def test_a_negative_period_is_refused(sqlite_uri):
    with pytest.raises(ValueError, match="epoch_flush_seconds"):
        MlflowSink(sqlite_uri, "refused", epoch_flush_seconds=-1.0)
