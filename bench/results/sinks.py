"""Where a trial's record goes: one small protocol, one implementation per store.

A trial row is built once (:func:`bench.results.rows.build_row`) and handed to every sink. The
live run (the Tune callback, :mod:`bench.search.sink`) calls :meth:`TrialSink.start` when a trial
starts, :meth:`TrialSink.record` with its row when it ends and :meth:`TrialSink.finish` when the
experiment ends; the back-fill (:mod:`bench.sync`) uses the same MLflow implementation on rows
read back from Parquet. Parquet is the record; MLflow the mirror (names: :mod:`bench.results.vocabulary`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from mlflow.exceptions import MlflowException

from bench.results.mlflow_sink import MlflowSink
from bench.results.parquet import ParquetSink
from bench.results.schema import TrialRow, TrialStatus
from bench.results.vocabulary import (
    RUN_STATUS,
    RUNNING,
    TAG_STATUS,
    ParentFinish,
    ParentRun,
    PhaseTally,
    TrialRun,
    backfill_metrics,
    final_metrics,
    trial_params,
    trial_run_name,
    trial_tags,
    used_tags,
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialStart:
    """A trial that starts: who it is, its parent run, and its resolved spec (JSON-ready)."""

    trial: TrialRun
    parent: ParentRun
    config: Mapping[str, Any] | None = None
    #: Made by this call (not restored from an earlier one): no earlier run can exist for it,
    #: so the sink creates it without looking (a lookup by tag costs more as the store grows).
    new: bool = False


@dataclass(frozen=True)
class ParentEnd:
    """A method × phase that ends, and what its parent run records."""

    parent: ParentRun
    finish: ParentFinish


class TrialSink(Protocol):
    def start(self, start: TrialStart) -> str | None:
        """A trial starts; returns the sink's id for it (an MLflow run id), None if it keeps none."""

    def record(self, row: TrialRow) -> None:
        """A trial ended: its row (``row.mlflow_run_id`` is what :meth:`start` returned)."""

    def finish(self, ends: Sequence[ParentEnd]) -> None:
        """The experiment ended (or stopped): each method × phase it ran."""


class ParquetTrialSink:
    """The record: one Parquet file per row (:class:`bench.results.parquet.ParquetSink`)."""

    def __init__(self, results_dir: str) -> None:
        self.parquet = ParquetSink(results_dir)

    def start(self, start: TrialStart) -> str | None:
        return None  # a row is written whole, when the trial ends

    def record(self, row: TrialRow) -> None:
        self.parquet.write([row])

    def finish(self, ends: Sequence[ParentEnd]) -> None:
        return None  # the rows are the record; nothing summarizes them in Parquet


class Backfilled(str, Enum):
    """What :meth:`MlflowTrialSink.backfill` did for one row."""

    CREATED = "created"
    COMPLETED = "completed"  # found RUNNING without its end (an outage, a killed driver)
    ALREADY = "already"


class MlflowTrialSink:
    """The mirror: a parent run per method × phase, a nested run per trial (:class:`MlflowSink`).

    ``parent_run_ids`` (``"<method>/<phase>"`` → run id) is the caller's, so a Tune callback keeps
    it with its own saved state. Not thread-safe: run it on one thread
    (:class:`bench.results.background.BackgroundWriter`).
    """

    def __init__(self, sink: MlflowSink, parent_run_ids: dict[str, str] | None = None) -> None:
        self.sink = sink
        self.parent_run_ids = parent_run_ids if parent_run_ids is not None else {}

    @staticmethod
    def parent_slot(regularizer: str, phase: str) -> str:
        return f"{regularizer}/{phase}"

    def parent(self, parent: ParentRun) -> str:
        """The parent run, made (or found by its key) on first use."""
        slot = self.parent_slot(parent.regularizer, parent.phase.value)
        if slot not in self.parent_run_ids:
            self.parent_run_ids[slot] = self.sink.parent_run(
                search_name=parent.key,
                benchmark=parent.benchmark,
                regularizer=parent.regularizer,
                phase=parent.phase.value,
                params=parent.params,
                config=parent.config,
            )
        return self.parent_run_ids[slot]

    def start(self, start: TrialStart) -> str:
        trial = start.trial
        return self.sink.trial_run(
            self.parent(start.parent),
            trial.key,
            run_name=trial_run_name(trial),
            params=trial_params(trial),
            tags=trial_tags(trial),
            config=start.config,
            find=not start.new,
        )

    def epochs(
        self, run_id: str, epochs: Iterable[tuple[int, Mapping[str, float]]], used: Mapping[str, str], checkpoint: bool
    ) -> None:
        """One report's epochs (held back and batched by the sink), tagged with what the trial
        ran on (``used``: :func:`~bench.results.vocabulary.used_tags` of the report). A report with
        a checkpoint sends them at once: a trial resumes from a checkpoint and re-runs (and
        re-logs) the epochs after it."""
        for epoch, values in epochs:
            self.sink.log_epoch(run_id, epoch, values, tags=used)
        if checkpoint:
            self.sink.flush(run_id)

    def record(self, row: TrialRow) -> None:
        if row.mlflow_run_id is None:  # MLflow was down when the trial started: sync-mlflow back-fills
            return
        # At step = epochs run, the last epoch's step: not the last step this process logged,
        # which a resumed trial that re-ran epochs MLflow already held never logged (its end
        # would land at step 0, under the earlier attempt's values at the last step).
        status = TrialStatus(row.status)
        self.sink.finish_trial(row.mlflow_run_id, status, final_metrics(row), row.error, step=row.epochs_run)

    def counters(self, parent: ParentRun, ended: PhaseTally) -> None:
        """The parent run's counters (:func:`~bench.results.vocabulary.phase_counters`) over the
        ``ended`` trials of its method × phase so far, at step = how many: logged as each trial
        ends, they chart the phase's progress."""
        self.sink.log_metrics(self.parent(parent), ended.counters(), step=len(ended))

    def finish(self, ends: Sequence[ParentEnd]) -> None:
        self.sink.flush()  # every epoch held back goes before the parents end
        for end in ends:
            done = end.finish
            self.sink.finish_parent(
                self.parent(end.parent), done.metrics, tags=done.tags, standing=done.standing, step=done.step
            )

    # --- after an interruption, and the back-fill ----------------------------------------------------

    def complete_from_row(self, run_id: str, row: TrialRow) -> None:
        """End run ``run_id`` as its Parquet ``row`` says: tags, every row metric (at step =
        epochs run) and status. For a run left RUNNING although its trial ended (an MLflow
        outage, or the driver killed before MLflow received the end)."""
        trial = TrialRun.of_row(row)
        self.sink.set_tags(run_id, {**trial_tags(trial), **used_tags(row.to_record())})
        self.sink.finish_trial(run_id, TrialStatus(row.status), backfill_metrics(row), row.error, step=row.epochs_run)

    def end_interrupted(self, parents: Iterable[ParentRun], continued: set[str], rows: Mapping[str, TrialRow]) -> int:
        """End the trial runs an interrupted run left RUNNING under ``parents`` that no trial in
        ``continued`` (trial keys) goes on with: as their row says when ``rows`` (by trial key)
        holds one, else abandoned. Returns how many were abandoned."""
        found = [run_id for parent in parents if (run_id := self.sink.find_parent_run(parent.key)) is not None]
        running = {key: run_id for key, run_id in self.sink.running_trial_runs(found).items() if key not in continued}
        abandoned = 0
        for key, run_id in running.items():
            if key in rows:
                self.complete_from_row(run_id, rows[key])
            else:
                self.sink.abandon(run_id)
                abandoned += 1
        return abandoned

    def backfill(self, row: TrialRow, parent: Callable[[], str]) -> Backfilled:
        """Make sure ``row``'s trial run exists, complete, under the run ``parent()`` returns
        (called only when the trial run must be created)."""
        status = TrialStatus(row.status)
        run_id = self._existing(row)
        if run_id is not None and self._is_complete(run_id, status):
            return Backfilled.ALREADY
        if run_id is not None:  # left RUNNING by an outage: add what it lacks
            self.complete_from_row(run_id, row)
            return Backfilled.COMPLETED
        trial = TrialRun.of_row(row)
        run_id = self.sink.trial_run(parent(), trial.key, trial_run_name(trial), trial_params(trial), trial_tags(trial))
        self.complete_from_row(run_id, row)
        return Backfilled.CREATED

    def _is_complete(self, run_id: str, status: TrialStatus) -> bool:
        run = self.sink.client.get_run(run_id)
        return run.info.status == RUN_STATUS[status] and run.data.tags.get(TAG_STATUS) == status.value

    def parent_running(self, run_id: str) -> bool:
        return self.sink.client.get_run(run_id).info.status == RUNNING

    def _existing(self, row: TrialRow) -> str | None:
        """The row's run in this store: its recorded ``mlflow_run_id`` if this experiment holds it
        (active), else the run tagged with its trial key."""
        recorded = row.mlflow_run_id
        if recorded:
            try:
                run = self.sink.client.get_run(recorded)
            except MlflowException:  # another store's id (the run wrote elsewhere): look it up by tag
                run = None
            if (
                run is not None
                and run.info.experiment_id == self.sink.experiment_id
                and run.info.lifecycle_stage == "active"
            ):
                return recorded
        return self.sink.find_trial_run(row.run_id)


__all__ = ["Backfilled", "MlflowTrialSink", "ParentEnd", "ParquetTrialSink", "TrialSink", "TrialStart"]
