"""The single writer: every finished trial to Parquet and MLflow, from the driver.

Trials on other nodes need no access to the results folder or the tracking store. One callback
serves every method and phase of the experiment: a trial's method and phase are in its config.
It keeps its trial-id → MLflow-run-id map in ``get_state``/``set_state``, so a retried or
resumed trial logs into its existing run instead of opening a second one, and it binds at
``setup()`` to the live run (:mod:`bench.search.live`), never to what an earlier run pickled.

A thin adapter: Tune's events become calls of the record's sinks (:mod:`bench.results.sinks`):
the row is built once (:func:`bench.results.rows.build_row`) and handed to the Parquet sink, then
to the MLflow sink. MLflow calls run in order on one background writer thread of the driver
(:class:`bench.results.background.BackgroundWriter`, a bounded queue), never on Tune's event loop:
a trial waits for the driver after each report, and creating a run (~0.2 s on sqlite) or logging
an epoch there stalled every trial's next epoch and every free slot's next trial (measured by
:mod:`bench.benchmarks.orchestration`: slot utilization 0.71 with MLflow on the loop, 0.83 without
MLflow). The Parquet row, the record, is still written on the loop, with the trial's MLflow run
id (the loop waits for that one call if it is still queued). The queue is drained when the
experiment ends or is interrupted, Ctrl-C or SIGTERM (:meth:`SinkCallback.close`, called by the
driver); after a kill -9 the resumed run ends from their rows the trial runs left RUNNING.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ray.train.constants import CHECKPOINT_DIR_NAME
from ray.tune import Callback
from ray.tune.result import TIMESTAMP  # Unix time (whole seconds) Tune stamps on each result

from bench import metrics, standing
from bench.console import TrialLine
from bench.failures import trial_failure
from bench.plan import (
    METHOD_KEY,
    ORDINAL_KEY,
    PHASE_KEY,
    SEED_KEY,
    SELECTED_KEY,
    SUGGESTION_KEY,
    MethodPlan,
    trial_spec,
)
from bench.results.background import BackgroundWriter
from bench.results.curves import CurveKey, CurveWriter, Point, points_of
from bench.results.mlflow_mirror import mirror_for
from bench.results.mlflow_sink import MlflowSink, normalize_tracking_uri
from bench.results.parquet import read_rows
from bench.results.rows import TrialOutcome, build_row, row_of, trial_run
from bench.results.schema import FailureClass, Phase, TrialRow, TrialStatus
from bench.results.sinks import MlflowTrialSink, ParentEnd, ParquetTrialSink, TrialStart
from bench.results.vocabulary import ParentRun, PhaseTally, parent_finish, parent_params, used_tags
from bench.search.live import LIVE, LiveRun
from bench.search.space import sampler_settings

_R = TypeVar("_R")
_log = logging.getLogger(__name__)
#: A trial's epochs go to MLflow at most once per this many seconds, in one batch
#: (:class:`bench.results.mlflow_sink.MlflowSink`), not one SQLite write each.
EPOCH_FLUSH_SECONDS = 2.0


def failure_of(trial: Any) -> tuple[FailureClass, str] | None:
    """Why a trial failed, or None when it did not: what its last report says (a trial that
    ended itself as failed: it diverged), else, for a trial Tune marked ERROR, the exception it
    raised (:func:`bench.failures.trial_failure`, read from the trial's local folder: when
    ``on_trial_error`` runs Tune has written it on the driver, not yet synced to storage)."""
    result = trial.last_result or {}
    if result.get(metrics.FAILURE_CLASS):
        return FailureClass(result[metrics.FAILURE_CLASS]), str(result.get(metrics.FAILURE) or "failed")
    if getattr(trial, "status", None) == "ERROR":
        return trial_failure(trial)
    return None


def _ended_at(result: dict[str, Any]) -> dt.datetime | None:
    """When a trial that ended earlier ended, from its last result: its start plus its own wall
    time, or Tune's report time (whole seconds; later after a resume), whichever is later."""
    candidates = []
    if result.get(metrics.STARTED_AT) is not None and result.get(metrics.WALL_SECONDS) is not None:
        candidates.append(float(result[metrics.STARTED_AT]) + float(result[metrics.WALL_SECONDS]))
    if result.get(TIMESTAMP) is not None:
        candidates.append(float(result[TIMESTAMP]))
    return dt.datetime.fromtimestamp(max(candidates), dt.timezone.utc) if candidates else None


def _selected_from(trial: Any) -> str | None:
    """A final trial's source: the run_id of the search trial whose config it re-runs."""
    return (trial.config or {}).get(SELECTED_KEY, {}).get("run_id")


class SinkCallback(Callback):
    """Writes every finished trial of the experiment to Parquet and MLflow."""

    def __init__(self) -> None:
        self.live: LiveRun | None = None  # bound at setup(); never pickled
        self._state_tracking_uri: str | None = None  # the store a restored state's run ids live in
        self.run_ids: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.parent_run_ids: dict[str, str] = {}  # "<method>/<phase>" -> MLflow parent run id
        self.sink_state: dict[str, Any] = {}
        self.finished: dict[str, str] = {}  # trial id -> status, written once
        self._mlflow: MlflowSink | None = None
        self._parquet: ParquetTrialSink | None = None
        self._calls: BackgroundWriter | None = None  # the MLflow writer thread
        self._recorded: set[str] = set()  # Tune trial ids with a row (when this call started, then written)
        self._rows_checked = False  # whether trials ended in an earlier call all have their rows
        self._run_futures: dict[str, Future] = {}  # Tune trial id -> its MLflow run id, once created
        #: "<method>/<phase>" -> the ended trials the parents' counters count, by trial key (the
        #: writer thread's; read from Parquet at its first use in a call, then kept up).
        self._ended: dict[str, PhaseTally] | None = None
        self._curves: CurveWriter | None = None
        #: Tune trial id -> the epochs of its curve seen so far (bench.results.curves), and whose curve it is.
        self._points: dict[str, dict[int, Point]] = {}
        self._curve_keys: dict[str, CurveKey] = {}
        #: Tune trial ids this call restored (its first step's trials): only these can have an
        #: MLflow run from an earlier call. None before the first step.
        self._restored: set[str] | None = None

    # Sinks hold clients and connections, the worker a thread: build them lazily, never pickle them.
    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_mlflow": None,
            "_parquet": None,
            "live": None,
            "_calls": None,
            "_run_futures": {},
            "_recorded": set(),
            "_rows_checked": False,
            "_ended": None,
            "_curves": None,
            "_points": {},
            "_curve_keys": {},
            "_restored": None,
        }

    @property
    def run(self) -> LiveRun:
        if self.live is None:
            self.live = LIVE.run
        return self.live

    @property
    def tracking_uri(self) -> str:
        return self.run.tracking_uri

    @property
    def mlflow(self) -> MlflowSink:
        if self._mlflow is None:
            opened, benchmark = self.run.mlflow_sink, self.run.config.benchmark
            same_store = opened is not None and opened.tracking_uri == normalize_tracking_uri(self.tracking_uri)
            if opened is not None and same_store and opened.experiment_name == benchmark:
                opened.epoch_flush_seconds = EPOCH_FLUSH_SECONDS
                self._mlflow = opened
            else:
                self._mlflow = MlflowSink(
                    self.tracking_uri, experiment_name=benchmark, epoch_flush_seconds=EPOCH_FLUSH_SECONDS
                )
            if self.sink_state:
                self._mlflow.load_state(self.sink_state)
        return self._mlflow

    def _to_mlflow(self, what: str, call: Callable[[MlflowTrialSink], _R]) -> Future:
        """Queue ``call(sink)`` for the MLflow writer thread (blocks while its queue is full),
        through this URI's mirror: the future's result is ``None`` once MLflow failed (said
        once), never an exception, so Parquet rows and trial outcomes never depend on MLflow."""
        if self._calls is None:
            self._calls = BackgroundWriter("sharpbench-mlflow")
        mirror = mirror_for(self.tracking_uri)
        # The sink is built on the writer thread: it holds the MLflow client that thread alone uses.
        return self._calls.submit(
            lambda: mirror.call(what, lambda: call(MlflowTrialSink(self.mlflow, self.parent_run_ids)))
        )

    def close(self) -> None:
        """Send what the MLflow writer still holds and stop it, after its queue drained (the
        driver calls this at the end: normal, Ctrl-C or SIGTERM)."""
        if self._calls is not None:
            if self._mlflow is not None:
                self._to_mlflow("log epochs", lambda sink: sink.sink.flush())
            self._calls.stop()
            self._calls = None

    @property
    def parquet(self) -> ParquetTrialSink:
        if self._parquet is None:
            self._parquet = ParquetTrialSink(str(self.run.results_dir))
        return self._parquet

    @property
    def curves(self) -> CurveWriter:
        if self._curves is None:
            self._curves = CurveWriter(self.run.results_dir)
        return self._curves

    def setup(self, **info: Any) -> None:
        self.live = LIVE.run  # bind to this call, whatever an earlier run pickled
        self.live.closers.append(self.close)
        self._mlflow = self._parquet = self._curves = None
        self._points, self._curve_keys = {}, {}
        self._restored = None
        self._rows_checked = False
        self._ended = None
        self._recorded = set(self.live.recorded)  # the rows the driver read before the experiment (re)started
        if self._state_tracking_uri not in (None, self.tracking_uri):
            # The restored MLflow run ids belong to another store: find or create runs here.
            self.run_ids, self.sink_state, self.parent_run_ids = {}, {}, {}

    # --- what a trial is ---------------------------------------------------------------------------

    def _plan(self, trial: Any) -> MethodPlan:
        return self.run.plans[(trial.config or {})[METHOD_KEY]]

    @staticmethod
    def _phase(trial: Any) -> Phase:
        return Phase((trial.config or {})[PHASE_KEY])

    def _trial_key(self, trial: Any) -> str:
        return f"{self._plan(trial).search_name(self._phase(trial).value)}/{trial.trial_id}"

    def _parent(self, plan: MethodPlan, phase: Phase) -> ParentRun:
        """The method × phase parent run (made, or found by its key, on first use by the MLflow sink)."""
        run = self.run
        return ParentRun(
            key=plan.parent_key(phase.value, run.instance),
            benchmark=run.config.benchmark,
            regularizer=plan.regularizer,
            phase=phase,
            params=parent_params(run.config, plan.described_space, plan.fixed),
            config=run.config.model_dump(mode="json"),
        )

    def _run_id(self, trial: Any) -> Future:
        """The trial's MLflow run id, made on the MLflow thread; ``None`` while MLflow is down
        (sync-mlflow back-fills it)."""
        if trial.trial_id in self.run_ids:
            done: Future = Future()
            done.set_result(self.run_ids[trial.trial_id])
            return done
        if trial.trial_id not in self._run_futures:
            run, plan, phase = self.run, self._plan(trial), self._phase(trial)
            spec = trial_spec(run.config, plan, trial.config or {})
            start = TrialStart(
                trial=trial_run(
                    spec,
                    plan.search_name(phase.value),
                    trial.trial_id,
                    phase,
                    _selected_from(trial),
                    (trial.config or {}).get(ORDINAL_KEY),
                ),
                parent=self._parent(plan, phase),
                config=spec.to_dict(),
                new=self._restored is not None and trial.trial_id not in self._restored,
            )
            trial_id = trial.trial_id

            def create(sink: MlflowTrialSink) -> str:
                run_id = sink.start(start)
                self.run_ids[trial_id] = run_id
                return run_id

            self._run_futures[trial_id] = self._to_mlflow("trial run", create)
        return self._run_futures[trial.trial_id]

    # --- Tune's hooks ------------------------------------------------------------------------------

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune's own list of trials (the same object every step): the searcher, which Tune tells
        # of a failure by trial id only, finds the failed trial's exception through it.
        self.run.trials = trials
        if self._restored is None:
            self._restored = {trial.trial_id for trial in trials}
        if not self._rows_checked and (trials or self.run.recorded):  # a resumed run, at its first step
            self._end_abandoned_runs(trials)
        self._rewrite_lost_rows(trials)

    def _end_abandoned_runs(self, trials: list) -> None:
        """Queue, before any trial of this call creates its MLflow run: the trial runs an
        interrupted run left RUNNING that no Tune trial continues. One whose trial has a row (its
        end had not reached MLflow) ends as its row says; the others ended as abandoned (their
        configs run again as new trials)."""
        run = self.run
        continued = {self._trial_key(trial) for trial in trials if METHOD_KEY in (trial.config or {})}
        parents = [self._parent(plan, phase) for plan in run.plans.values() for phase in Phase]

        def end(sink: MlflowTrialSink) -> None:
            mine = read_rows(run.results_dir, benchmarks=[run.config.benchmark])
            rows = {row["run_id"]: row_of(row) for row in mine.to_pylist()}  # run id = trial key
            abandoned = sink.end_interrupted(parents, continued, rows)
            if abandoned:
                _log.warning(
                    "%d MLflow trial run(s) of trials interrupted before Ray Tune saved them ended as KILLED; "
                    "their configs run again as new trials",
                    abandoned,
                )

        self._to_mlflow("end interrupted runs", end)

    def _rewrite_lost_rows(self, trials: list) -> None:
        """Once per call: a trial that an earlier call recorded as ended but whose row is gone
        (its Parquet file was unreadable and ``run`` set it aside at start-up) gets its row
        again, from the last result Tune saved with the experiment: the result the lost row was
        built from. Before any new trial starts, so a method's final seeds are chosen from all
        of its search rows."""
        if self._rows_checked:
            return
        self._rows_checked = True
        for trial in trials:
            status = self.finished.get(trial.trial_id)
            ours = METHOD_KEY in (trial.config or {})
            if status is None or not ours or metrics.EPOCH not in (trial.last_result or {}):
                continue
            if trial.trial_id in self._recorded:
                continue
            _log.warning(
                "the row of %s was lost; written again from the last result Ray Tune saved for it",
                self._trial_key(trial),
            )
            del self.finished[trial.trial_id]
            failure = failure_of(trial) if status == TrialStatus.FAILED.value else None
            if status == TrialStatus.FAILED.value and failure is None:
                failure = FailureClass.ERROR, "failed without an error message"
            self._finish(trial, TrialStatus(status), failure, rewritten=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.finished.get(trial.trial_id) == TrialStatus.FAILED.value:
            # A failed trial started again (``--retry-failed``): record its new outcome, in the
            # same MLflow run; the Parquet reader keeps the latest row of a run id.
            del self.finished[trial.trial_id]
            self._recorded.discard(trial.trial_id)
        self._run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # One report may stand for several epochs (bench.search.reporting): each is logged at its step.
        epochs = [
            (
                int(epoch.get(metrics.EPOCH, 0)),
                {
                    key: float(value)
                    for key, value in epoch.items()
                    if key not in metrics.TEXT_KEYS
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and metrics.is_reported(key)
                },
            )
            for epoch in metrics.epochs_of(result)
        ]
        used = used_tags(result)
        run_id = self._run_id(trial)

        checkpoint = bool(result.get(CHECKPOINT_DIR_NAME))  # Tune's key: the checkpoint's folder, None without one
        self._add_points(trial, result, save=checkpoint)

        def log(sink: MlflowTrialSink) -> None:
            if run_id.result() is None:  # queued before this call: already done; None while MLflow is down
                return
            sink.epochs(run_id.result(), epochs, used, checkpoint)

        self._to_mlflow("log epoch", log)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Every step of Tune's loop, not every report: a long first epoch, or trials waiting for
        # resources, still shows the run is alive (the heartbeat checks the clock first).
        if self.run.progress is not None:
            self.run.progress.heartbeat(lambda: self._running_and_best(trials), self.run.config.search.metric)

    def _curve_key(self, trial: Any) -> CurveKey:
        """Whose curve (built once per trial: every report of the trial needs it)."""
        key = self._curve_keys.get(trial.trial_id)
        if key is None:
            plan, phase = self._plan(trial), self._phase(trial)
            seed = trial_spec(self.run.config, plan, trial.config or {}).seed
            key = CurveKey(self._trial_key(trial), self.run.config.benchmark, plan.regularizer, phase.value, seed)
            self._curve_keys[trial.trial_id] = key
        return key

    def _add_points(self, trial: Any, result: dict[str, Any], *, save: bool) -> dict[int, Point]:
        """Keep the epochs ``result`` stands for in the trial's curve, over the curve an earlier
        call saved for it (a resumed trial re-reports only the epochs after its checkpoint; an
        epoch reported again replaces the saved one, as its re-recorded row replaces the old row).
        ``save``: write the curve so far (at a checkpoint)."""
        points = self._points.get(trial.trial_id)
        if points is None:  # first seen in this call
            points = self._points[trial.trial_id] = self.curves.read(self._curve_key(trial))
        points.update(points_of(result))
        if save:
            self.curves.write(self._curve_key(trial), points)
        return points

    def _running_and_best(self, trials: list) -> tuple[list[tuple[str, int, int]], dict[str, float]]:
        """For the heartbeat: each running trial's epoch, and each method's best search metric so far."""
        metric = self.run.config.search.metric
        better = max if metrics.OBJECTIVES[metric] == "max" else min
        running, best = [], {}
        for t in trials:
            if METHOD_KEY not in (t.config or {}):
                continue
            method = t.config[METHOD_KEY]
            if not t.last_result:
                if t.status == "RUNNING":  # started, no epoch reported yet
                    running.append((method, 0, trial_spec(self.run.config, self._plan(t), t.config).training.epochs))
                continue
            if t.trial_id not in self.finished and metrics.EPOCH in t.last_result:
                epoch, planned = t.last_result.get(metrics.EPOCH, 0), t.last_result.get(metrics.EPOCHS_PLANNED, 0)
                running.append((method, int(epoch), int(planned)))
            value = t.last_result.get(metric)
            if value is not None and not math.isnan(value):  # NaN: a failure report, no value
                best[method] = better(best.get(method, float(value)), float(value))
        return running, best

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        failure = failure_of(trial)  # a trial that ended itself as failed (it diverged) returned normally
        if failure is not None:
            self._finish(trial, TrialStatus.FAILED, failure)
            return
        status = TrialStatus.COMPLETED if metrics.ran_all_epochs(result) else TrialStatus.STOPPED
        self._finish(trial, status, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, TrialStatus.FAILED, trial_failure(trial))

    def _finish(
        self, trial: Any, status: TrialStatus, failure: tuple[FailureClass, str] | None, *, rewritten: bool = False
    ) -> None:
        """The trial's row, its MLflow run's end and its console line. ``rewritten``: the trial
        ended in an earlier call and its row was lost; the row keeps the trial's own end time."""
        if trial.trial_id in self.finished:
            self.run.row_written(trial.trial_id)  # written before: what waits for the row may go
            return
        run, plan, phase = self.run, self._plan(trial), self._phase(trial)
        failure_class, error = failure if failure is not None else (None, None)
        run_id = self._run_id(trial).result()  # the row names it: wait if its creation is still queued
        outcome = TrialOutcome(
            search_name=plan.search_name(phase.value),
            trial_id=trial.trial_id,
            phase=phase.value,
            status=status,
            spec=trial_spec(run.config, plan, trial.config or {}),
            search_seed=run.config.search.seed,
            search_metric=run.config.search.metric,
            sampler=json.dumps(sampler_settings(run.config.search, plan.budget.trials), sort_keys=True)
            if plan.params
            else None,
            # Set by the searcher on search trials only: null for final rows.
            suggestion_kind=(trial.config or {}).get(SUGGESTION_KEY) if phase is Phase.SEARCH else None,
            budget=plan.budget.to_json(),
            selected_from_run_id=_selected_from(trial),
            last_result=dict(trial.last_result or {}),
            error=error,
            failure_class=failure_class,
            mlflow_run_id=run_id,
            ended_at=_ended_at(trial.last_result or {}) if rewritten else None,
        )
        row = build_row(outcome)
        if not rewritten:  # a lost row's curve was written with it (or lost with the call that saw it)
            points = self._add_points(trial, outcome.last_result, save=False)
            # None beyond the row's end (saved before a resume from an older checkpoint, say).
            self.curves.write(self._curve_key(trial), {e: p for e, p in points.items() if e <= row.epochs_run})
            self._points.pop(trial.trial_id, None)
            self._curve_keys.pop(trial.trial_id, None)
        self.parquet.record(row)  # the record first: MLflow's end goes after it, off the loop
        run.row_written(trial.trial_id)  # the searcher's tell of the trial's study waited for the row
        if run_id is not None:
            self._to_mlflow("finish trial", lambda sink: sink.record(row))
        self._count(row, self._parent(plan, phase))
        self.finished[trial.trial_id] = status.value
        again = trial.trial_id in self._recorded  # kill -9 after it ended, before Tune saved that it had
        self._recorded.add(trial.trial_id)
        if run.progress is not None:
            run.progress.trial_finished(
                TrialLine(
                    method=plan.regularizer,
                    phase=phase.value,
                    status=status.value,
                    epochs_run=row.epochs_run,
                    epochs_planned=row.epochs_planned,
                    sampled=self._sampled(plan, phase, trial.config or {}),
                    val_accuracy=row.val_accuracy,
                    test_accuracy=row.test_accuracy,
                    wall_seconds=row.wall_seconds,
                    error=error,
                    again=again,
                    rewritten=rewritten,
                )
            )

    def _count(self, row: TrialRow, parent: ParentRun) -> None:
        """Queue the parent's counters with ``row`` ended (on the writer thread, in order)."""
        results_dir, benchmark = self.run.results_dir, self.run.config.benchmark
        slot = MlflowTrialSink.parent_slot(row.regularizer, row.phase)

        def count(sink: MlflowTrialSink) -> None:
            if self._ended is None:  # the rows earlier calls wrote (this one's row among them)
                self._ended = {}
                for record in read_rows(results_dir, benchmarks=[benchmark]).to_pylist():
                    if record["benchmark"] == benchmark:
                        ended = row_of(record)
                        where = sink.parent_slot(ended.regularizer, ended.phase)
                        self._ended.setdefault(where, PhaseTally()).put(ended.run_id, ended)
            mine = self._ended.setdefault(slot, PhaseTally())
            mine.put(row.run_id, row)  # a trial recorded again replaces its row
            sink.counters(parent, mine)

        self._to_mlflow("parent counters", count)

    @staticmethod
    def _sampled(plan: MethodPlan, phase: Phase, config: dict[str, Any]) -> dict[str, Any]:
        """The values this trial was given for the searched hyperparameters (a final run: its seed)."""
        if phase is Phase.FINAL:
            source = config.get(SELECTED_KEY, {}).get("run_id", "")
            return {SEED_KEY: config.get(SEED_KEY), "from": source.rsplit("/", 1)[-1]}
        values = {}
        for param in plan.params:
            value = config.get(param.namespace, {}).get(param.name)
            if value is not None:
                values[param.name] = value
        return values

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """End each method × phase parent run with its trial counts and the method's standing:
        the leaderboard's numbers from the rows just written (:mod:`bench.standing`).

        The parents are those this call opened and those of every method × phase of its phases
        with rows: after a kill -9 Tune's saved state lags the rows by up to
        ``TUNE_GLOBAL_CHECKPOINT_S``, so a resumed run may run no trial of a phase that ended
        meanwhile, and know nothing of its parent but its key. The counts come from the rows,
        by the rule the back-fill uses (:func:`bench.results.vocabulary.parent_finish`)."""
        run = self.run
        self._rewrite_lost_rows(trials)  # a restored experiment with nothing left to run takes no step
        results_dir, benchmark = run.results_dir, run.config.benchmark
        phases = {Phase.FINAL.value} if run.final_only else {phase.value for phase in Phase}

        def finish(sink: MlflowTrialSink) -> None:
            # On the writer thread, after every row's end queued before: the parents this run
            # made or found (their ids are the writer's), each with its method's standing. The
            # rows are read once for all of them (a read per parent was ~60 ms each, on the tail).
            ends = []
            table = read_rows(results_dir, benchmarks=[benchmark])
            ended: dict[str, list[TrialRow]] = {}
            for record in table.to_pylist():
                if record["benchmark"] == benchmark and record["phase"] in phases:
                    slot = MlflowTrialSink.parent_slot(record["regularizer"], record["phase"])
                    ended.setdefault(slot, []).append(row_of(record))
            boards: dict[str, Any] = {}
            for slot in dict.fromkeys([*self.parent_run_ids, *ended]):
                method, phase = slot.split("/", 1)
                plan = run.plans.get(method)
                if plan is None and slot not in self.parent_run_ids:
                    continue  # rows of a method this config does not run: no key to find its parent by
                if method not in boards:  # a method's search and final parents share its board
                    boards[method] = standing.method_board(str(results_dir), benchmark, method, table=table)
                board = boards[method]
                summary = standing.summarize(board, Phase(phase)) if board is not None else None
                parent = (
                    self._parent(plan, Phase(phase))
                    if plan is not None
                    else ParentRun(slot, benchmark, method, Phase(phase), {}, None)
                )  # its id is known: found by slot
                ends.append(ParentEnd(parent, parent_finish(ended.get(slot, []), summary)))
            sink.finish(ends)

        self._to_mlflow("finish parents", finish)

    def get_state(self) -> dict[str, Any]:
        return {
            "run_ids": dict(self.run_ids),
            "finished": dict(self.finished),
            "parent_run_ids": dict(self.parent_run_ids),
            "sink": self._mlflow.state() if self._mlflow is not None else self.sink_state,
            "tracking_uri": self.live.tracking_uri if self.live is not None else self._state_tracking_uri,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.run_ids.update(state.get("run_ids", {}))
        self.finished.update(state.get("finished", {}))
        self.parent_run_ids.update(state.get("parent_run_ids", {}))
        self.sink_state = state.get("sink") or {}
        self._state_tracking_uri = state.get("tracking_uri")
        if LIVE.bound and self._state_tracking_uri not in (None, LIVE.run.tracking_uri):
            # The restored MLflow run ids belong to another store: find or create runs here.
            self.run_ids, self.sink_state, self.parent_run_ids = {}, {}, {}
        if self._mlflow is not None and self.sink_state:
            self._mlflow.load_state(self.sink_state)
