"""The Parquet and MLflow sinks of one trial row, and the MLflow vocabulary they share: a trial
recorded live and the same row back-filled into another store read alike in MLflow."""

from __future__ import annotations

import dataclasses
import json

from mlflow.tracking import MlflowClient

from bench.results.mlflow_sink import MlflowSink, default_tracking_uri, param_value
from bench.results.parquet import read_rows
from bench.results.rows import row_of
from bench.results.schema import Phase
from bench.results.sinks import Backfilled, MlflowTrialSink, ParentEnd, ParquetTrialSink, TrialStart
from bench.results.vocabulary import (
    TAG_DEVICE,
    TAG_SELECTED_FROM,
    TAG_STATUS,
    ParentRun,
    PhaseTally,
    TrialRun,
    backfill_metrics,
    parent_finish,
    parent_run_name,
    trial_params,
    trial_run_name,
)


def _parent(row) -> ParentRun:
    key = row.run_id.rsplit("/", 1)[0]
    return ParentRun(key, row.benchmark, row.regularizer, Phase(row.phase), {"dataset": "digits"}, None)


def test_parquet_sink_records_the_row_it_is_given(tmp_path, row_factory):
    row = row_factory()
    sink = ParquetTrialSink(str(tmp_path))
    assert sink.start(TrialStart(TrialRun.of_row(row), _parent(row))) is None
    sink.record(row)
    assert [row_of(r) for r in read_rows(tmp_path).to_pylist()] == [row]


def test_a_live_trial_and_its_backfilled_row_have_the_same_params_and_tags(tmp_path, row_factory):
    row = row_factory(phase="final", selected_from_run_id="search-1/trial_00001", device="cpu", epochs_run=4)
    live = MlflowTrialSink(MlflowSink(default_tracking_uri(tmp_path / "live"), experiment_name="unit"))
    run_id = live.start(TrialStart(TrialRun.of_row(row), _parent(row)))
    live.epochs(run_id, [(1, {"val_accuracy": 0.5})], {TAG_DEVICE: "cpu"}, checkpoint=False)
    row.mlflow_run_id = run_id
    live.record(row)
    live.finish([ParentEnd(_parent(row), parent_finish([row], None))])

    back = MlflowTrialSink(MlflowSink(default_tracking_uri(tmp_path / "back"), experiment_name="unit"))
    assert back.backfill(row, lambda: back.parent(_parent(row))) is Backfilled.CREATED
    assert back.backfill(row, lambda: back.parent(_parent(row))) is Backfilled.ALREADY  # idempotent

    def read(sink: MlflowTrialSink):
        client = MlflowClient(tracking_uri=sink.sink.tracking_uri)
        return client.get_run(sink.sink.find_trial_run(row.run_id))

    live_run, back_run = read(live), read(back)
    expected = {key: param_value(value) for key, value in trial_params(TrialRun.of_row(row)).items()}
    assert live_run.data.params == back_run.data.params == expected
    assert json.loads(row.regularizer_hparams) and "seed" in expected
    for run in (live_run, back_run):
        assert run.info.status == "FINISHED"
        assert run.data.tags[TAG_STATUS] == "completed"
        assert run.data.tags[TAG_SELECTED_FROM] == "search-1/trial_00001"
        assert run.data.tags[TAG_DEVICE] == "cpu"
    # The back-fill has no epoch history: every row metric is logged at step = epochs run.
    assert {k for k, v in backfill_metrics(row).items() if v is not None} <= set(back_run.data.metrics)
    parent = MlflowClient(tracking_uri=live.sink.tracking_uri).get_run(live.parent_run_ids["sam/final"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_completed"] == 1.0


def test_end_interrupted_completes_runs_with_rows_and_abandons_the_others(tmp_path, row_factory):
    sink = MlflowTrialSink(MlflowSink(default_tracking_uri(tmp_path), experiment_name="unit"))
    ended, lost = row_factory(run_id="s/t1"), row_factory(run_id="s/t2")
    parent = _parent(ended)
    for row in (ended, lost):
        row.mlflow_run_id = sink.start(TrialStart(TrialRun.of_row(row), parent))
    assert sink.end_interrupted([parent], continued=set(), rows={ended.run_id: ended}) == 1
    client = MlflowClient(tracking_uri=sink.sink.tracking_uri)
    assert client.get_run(ended.mlflow_run_id).info.status == "FINISHED"
    gone = client.get_run(lost.mlflow_run_id)
    assert gone.info.status == "KILLED" and gone.info.lifecycle_stage == "deleted"


def test_parent_counters_chart_the_phase_as_its_trials_end(tmp_path, row_factory):
    """Counters are metrics with a point per ended trial (step = trials ended); the phase's end
    logs them once more without a second point; names carry benchmark, method, phase, trial."""
    sink = MlflowTrialSink(MlflowSink(default_tracking_uri(tmp_path), experiment_name="unit"))
    rows = [
        row_factory(run_id="s/a", status="completed", forward_passes=10, backward_passes=10, wall_seconds=1.0),
        row_factory(run_id="s/b", status="stopped", forward_passes=4, backward_passes=3, wall_seconds=0.5),
        row_factory(run_id="s/c", status="failed", forward_passes=0, backward_passes=0, wall_seconds=0.25),
    ]
    parent = _parent(rows[0])
    tally = PhaseTally()
    for ordinal, row in enumerate(rows):
        row.mlflow_run_id = sink.start(TrialStart(dataclasses.replace(TrialRun.of_row(row), ordinal=ordinal), parent))
        sink.record(row)
        tally.put(row.run_id, row)
        sink.counters(parent, tally)
    tally.put(rows[-1].run_id, rows[-1])
    sink.counters(parent, tally)  # a trial recorded again: the same point, not a second one
    sink.finish([ParentEnd(parent, parent_finish(rows, None))])

    client = MlflowClient(tracking_uri=sink.sink.tracking_uri)
    parent_id = sink.parent_run_ids["sam/search"]

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(parent_id, key))

    assert history("trials_completed") == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert history("trials_stopped") == [(1, 0.0), (2, 1.0), (3, 1.0)]
    assert history("trials_failed") == [(1, 0.0), (2, 0.0), (3, 1.0)]
    assert history("phase_forward_passes") == [(1, 10.0), (2, 14.0), (3, 14.0)]
    assert history("phase_backward_passes") == [(1, 10.0), (2, 13.0), (3, 13.0)]
    assert history("phase_wall_seconds") == [(1, 1.0), (2, 1.5), (3, 1.75)]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert client.get_run(parent_id).info.run_name == parent_run_name(parent) == "digits-mlp/sam/search"
    names = [client.get_run(row.mlflow_run_id).info.run_name for row in rows]
    assert names == ["digits-mlp/sam/search/t000", "digits-mlp/sam/search/t001", "digits-mlp/sam/search/t002"]
    # A run back-filled from its row (no ordinal) is named by its trial id.
    assert trial_run_name(TrialRun.of_row(rows[0])) == "digits-mlp/sam/search/a"
