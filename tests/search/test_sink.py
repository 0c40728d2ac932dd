"""The sink callback takes over the MLflow sink its caller opened (`sharpbench run` opens one to
check the store), rather than opening the store a second time."""

from __future__ import annotations

import io

from bench.config import parse_config
from bench.plan import plan_methods
from bench.results.mlflow_sink import MlflowSink, default_tracking_uri
from bench.search.live import LIVE, LiveRun
from bench.search.sink import EPOCH_FLUSH_SECONDS, SinkCallback
from bench.search.studies import default_storage


def _live(tmp_path, benchmark: str, opened: MlflowSink | None) -> LiveRun:
    config = parse_config({"benchmark": benchmark, "model": {"name": "mlp"}, "regularizers": ["erm"]})
    return LiveRun(
        config=config,
        plans={p.regularizer: p for p in plan_methods(config)},
        results_dir=tmp_path,
        tracking_uri=default_tracking_uri(tmp_path),
        optuna_storage=default_storage(tmp_path),
        mlflow_sink=opened,
    )


def test_the_callback_takes_over_an_opened_sink_for_its_store_and_benchmark(tmp_path):
    opened = MlflowSink(default_tracking_uri(tmp_path), experiment_name="unit")
    assert opened.epoch_flush_seconds == 0.0
    for benchmark, same in (("unit", True), ("other", False)):
        LIVE.bind(_live(tmp_path, benchmark, opened))
        try:
            callback = SinkCallback()
            callback.setup()
            sink = callback.mlflow
            assert (sink is opened) is same
            assert sink.experiment_name == benchmark and sink.epoch_flush_seconds == EPOCH_FLUSH_SECONDS
            callback.close()
        finally:
            LIVE.bind(None)


def test_experiment_end_ends_the_parent_of_every_phase_with_rows_by_its_rows(tmp_path):
    """kill -9 after a method's search ended, while Tune's saved state still predated that
    search: the resumed call runs none of its trials, so its callback never opens the search's
    parent run (left RUNNING by the killed call). Ending the experiment ends it all the same,
    found by its key, with its trial counts from the rows (seen: a parent RUNNING for good)."""
    from mlflow.tracking import MlflowClient

    from bench.config import DataConfig, ModelConfig, TrainingConfig
    from bench.results.parquet import ParquetSink
    from bench.results.rows import TrialOutcome, build_row
    from bench.results.schema import Phase, TrialStatus
    from bench.results.sinks import MlflowTrialSink
    from bench.results.vocabulary import trials_metric
    from bench.training import TrialSpec

    run = _live(tmp_path, "unit", None)
    plan = run.plans["erm"]
    spec = TrialSpec("unit", DataConfig(), ModelConfig(name="mlp"), TrainingConfig(epochs=2), "erm")
    search = plan.search_name(Phase.SEARCH.value)
    ParquetSink(str(tmp_path)).write(
        [
            build_row(TrialOutcome(search, trial_id, Phase.SEARCH.value, status, spec, 0, {}))
            for trial_id, status in (("a", TrialStatus.COMPLETED), ("b", TrialStatus.STOPPED))
        ]
    )
    # The killed call had opened the search's parent run; nothing ended it.
    killed = MlflowTrialSink(MlflowSink(run.tracking_uri, experiment_name="unit"))
    parent = SinkCallback()
    LIVE.bind(run)
    try:
        parent.setup()
        opened = killed.parent(parent._parent(plan, Phase.SEARCH))
        client = MlflowClient(run.tracking_uri)
        assert client.get_run(opened).info.status == "RUNNING"
        resumed = SinkCallback()  # a restored state that knows no parent
        resumed.setup()
        resumed.on_experiment_end([])
        resumed.close()
    finally:
        LIVE.bind(None)
    ended = client.get_run(opened)
    assert ended.info.status == "FINISHED"
    expected = {TrialStatus.COMPLETED: 1.0, TrialStatus.STOPPED: 1.0, TrialStatus.FAILED: 0.0}
    assert {s: ended.data.metrics[trials_metric(s)] for s in expected} == expected
    # No parent was made for the final phase, which has no rows.
    runs = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert [r.info.run_id for r in runs] == [opened]


def test_the_heartbeat_ticks_on_tune_steps_and_shows_trials_that_have_not_reported(tmp_path, monkeypatch):
    """A long first epoch (or workers still starting) reports nothing: the heartbeat still prints,
    from Tune's steps, with such a trial at epoch 0 of its planned epochs."""
    from types import SimpleNamespace

    from rich.console import Console

    from bench.console import RunProgress
    from bench.plan import METHOD_KEY, PHASE_KEY

    clock = iter([0.0, 10.0, 31.0])  # RunProgress's start, then one reading per heartbeat
    monkeypatch.setattr("bench.console.time.monotonic", lambda: next(clock))
    buffer = io.StringIO()
    run = _live(tmp_path, "unit", None)
    run.progress = RunProgress(Console(file=buffer, width=200, force_terminal=False), [("erm", 2, 0)])
    config = {METHOD_KEY: "erm", PHASE_KEY: "search"}
    started = SimpleNamespace(trial_id="a", config=config, last_result={}, status="RUNNING")
    waiting = SimpleNamespace(trial_id="b", config=config, last_result={}, status="PENDING")
    callback = SinkCallback()
    LIVE.bind(run)
    try:
        callback.on_step_end(1, [started, waiting])
        assert buffer.getvalue() == ""  # 10 s after the start: not due
        callback.on_step_end(2, [started, waiting])
    finally:
        LIVE.bind(None)
    epochs = run.config.training.epochs
    assert buffer.getvalue().strip() == f"… 0/2 trials done, ETA -; running: erm ep 0/{epochs}"
