"""The live run that Tune's pickled objects bind to.

Tune's restore brings back the searcher and the callbacks pickled by an earlier run and ignores
new ones, so they must take nothing from their pickled state but their own bookkeeping: they bind
to this module's :data:`LIVE`, which the current :func:`bench.search.run_benchmark` call fills
(config, plans, results folder, stores, run instance, console). A moved results folder, another
tracking URI or a resumed search then work like a fresh run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import BenchmarkConfig
from bench.console import RunProgress
from bench.plan import MethodPlan
from bench.search.finals import RecordedTrial

if TYPE_CHECKING:  # MLflow is the driver's import, never a worker's
    from bench.results.mlflow_sink import MlflowSink


@dataclass
class LiveRun:
    config: BenchmarkConfig
    plans: dict[str, MethodPlan]  # regularizer name -> plan, in the config's order
    results_dir: Path
    tracking_uri: str
    optuna_storage: str  # SQLAlchemy URL or journal file of the Optuna studies (bench.stores.optuna_storage)
    instance: str = ""  # bench.run_record's run instance: MLflow parent runs and studies are keyed by it
    progress: RunProgress | None = None
    #: Methods whose search phase is not part of this call (``sharpbench final``): their
    #: search trials are the rows already recorded.
    final_only: bool = False
    #: Restart the failed trials of a restored experiment (``sharpbench run --retry-failed``).
    retry_failed: bool = False
    #: Called when the experiment ends, interrupted or not (the sink's MLflow thread registers here).
    closers: list[Callable[[], None]] = field(default_factory=list)
    #: A sink the caller already opened on ``tracking_uri`` for this benchmark (`sharpbench run`
    #: opens one to check the store before anything starts). The sink callback takes it over:
    #: opening a store again makes MLflow verify its schema again (1–2 s of the driver's CPU here,
    #: while the first trial starts).
    mlflow_sink: MlflowSink | None = None
    #: The benchmark's rows by Tune trial id, read before the experiment (re)starts: the trials
    #: that ended, including those that ended after Tune last saved its state (the searcher
    #: counts them, the scheduler ends a re-run one as its row says).
    recorded: dict[str, RecordedTrial] = field(default_factory=dict)
    #: The ended search trials per method, as ``(Tune trial id, {epoch: search metric})`` from
    #: its study: the history its ASHA is rebuilt from (Tune does not save a scheduler's state).
    history: dict[str, list[tuple[str, dict[int, float]]]] = field(default_factory=dict)
    #: Ray Tune's list of the experiment's trials, set by the sink callback at each step: Tune
    #: tells the searcher of a failed trial by id only, before any callback hears of it.
    trials: list[Any] = field(default_factory=list)
    #: Tune trial ids of the trials lost to infrastructure faults (retried and still failed):
    #: recorded, not counted against their method's budget (the searcher issued replacements).
    lost_to_infra: set[str] = field(default_factory=set)
    #: What waits for a trial's row, by Tune trial id: the searcher's tell of the trial's study.
    #: A study learns an outcome only once its row is durable, so a kill -9 between the two leaves
    #: a row whose study trial is still running (the next run tells it from the row:
    #: :func:`bench.search.studies.tell_recorded`), never a told study trial without a row.
    awaiting_row: dict[str, Callable[[], None]] = field(default_factory=dict)

    def after_row(self, trial_id: str, action: Callable[[], None]) -> None:
        """Run ``action`` once the sink has written the row of ``trial_id`` (:meth:`row_written`)."""
        self.awaiting_row[trial_id] = action

    def row_written(self, trial_id: str) -> None:
        """The sink wrote the row of ``trial_id``: run what waited for it."""
        action = self.awaiting_row.pop(trial_id, None)
        if action is not None:
            action()


class _Slot:
    """Holds the one live run of this process (a driver runs one benchmark at a time)."""

    def __init__(self) -> None:
        self._run: LiveRun | None = None

    def bind(self, run: LiveRun | None) -> None:
        self._run = run

    @property
    def run(self) -> LiveRun:
        if self._run is None:
            raise RuntimeError("no live sharpbench run: bench.search.run_benchmark binds one before Tune starts")
        return self._run

    @property
    def bound(self) -> bool:
        return self._run is not None


LIVE = _Slot()
