"""Early stopping per method: each method's search trials have their own ASHA.

One Tune experiment runs every method, but ASHA compares a trial with the others at the same
rung: a shared instance would stop SAM trials because ERM trials score higher at epoch 2. So
each method's search trials go to its own ASHA (``max_t`` its plan's longest trial); final
trials are never stopped early.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from bench import metrics
from bench.config import AshaConfig
from bench.plan import METHOD_KEY, PHASE_KEY, MethodPlan
from bench.results.schema import Phase, TrialStatus
from bench.search.live import LIVE


def asha_for(asha: AshaConfig, plan: MethodPlan) -> TrialScheduler:
    """ASHA over epochs with ``max_t`` the most epochs any trial of the plan can run (a trial
    planned for more would be cut at ``max_t`` and look stopped); FIFO when ASHA is off."""
    if not asha.enabled:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=metrics.EPOCH,
        max_t=plan.max_epochs,
        grace_period=_grace(asha, plan),
        reduction_factor=asha.reduction_factor,
    )


def _grace(asha: AshaConfig, plan: MethodPlan) -> int:
    return min(asha.grace_period, plan.max_epochs)


def rung_epochs(asha: AshaConfig, plan: MethodPlan) -> frozenset[int]:
    """The epochs at which the method's ASHA (:func:`asha_for`) decides on a search trial; empty
    when ASHA is off. A trial reports at least at these (:mod:`bench.search.reporting`).

    ASHA's rungs (one bracket: Tune's ``_Bracket`` with ``s = 0``) sit at ``grace × rf^k``
    epochs for ``k < int(log(max_t / grace) / log(rf) + 1)``; a trial reporting every epoch
    reaches a rung at the first epoch at or past it (``ceil``), and is stopped at ``max_t``.
    Source: Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys 2020),
    Algorithm 1, as implemented in ``ray.tune.schedulers.async_hyperband``.
    """
    if not asha.enabled:
        return frozenset()
    grace, max_t, rf = _grace(asha, plan), plan.max_epochs, asha.reduction_factor
    rungs = int(np.log(max_t / grace) / np.log(rf) + 1)  # numpy's log, as Tune computes it
    return frozenset(math.ceil(grace * rf**k) for k in range(rungs)) | {max_t}


def replay(scheduler: TrialScheduler, trial_id: str, values: dict[int, float]) -> None:
    """Record an ended trial in ``scheduler``'s rungs as it was recorded when it ran: at each rung
    it reached, the value it reported at the first epoch at or past the rung (``ceil``: it reports
    there, :func:`rung_epochs`). ``values``: epoch → search metric. A no-op for FIFO.

    Tune restores a searcher's state but not a scheduler's: without this, a resumed ASHA would
    judge new trials against the trials of this call alone. Reads Tune's ASHA bookkeeping
    (``_brackets``, each with ``_rungs`` of (milestone, {trial id: reward}); ``_metric_op``), as
    ``ray.tune.schedulers.async_hyperband`` keeps it; a test pins it against Tune's own decisions."""
    if not isinstance(scheduler, ASHAScheduler):
        return
    for bracket in scheduler._brackets:
        for milestone, recorded in sorted(bracket._rungs, key=lambda rung: rung[0]):
            epoch = math.ceil(milestone)
            if epoch in values and trial_id not in recorded:
                recorded[trial_id] = scheduler._metric_op * values[epoch]


class PerMethodScheduler(TrialScheduler):
    """Routes every trial event to the scheduler of the trial's method (search) or to FIFO (final).

    When the benchmark has trials that ended before this call (:data:`bench.search.live.LIVE`
    holds their rows and history: a resumed run), each method's ASHA is first rebuilt from them
    (:func:`replay`), and a trial that Tune runs again although its row says how it ended (it
    ended after Tune last saved its state) ends that way again: stopped at the recorded epoch,
    or run to the end."""

    def __init__(self, asha: AshaConfig, plans: list[MethodPlan]) -> None:
        super().__init__()
        self.by_method: dict[str, TrialScheduler] = {plan.regularizer: asha_for(asha, plan) for plan in plans}
        self.final = FIFOScheduler()
        self._replayed = False
        #: Tune trial id -> when it was added (0, 1, ...), for trials not ended: the FIFO order.
        self._added: dict[str, int] = {}
        self._adds = 0

    def _replay_history(self) -> None:
        """Once per process (the pickled scheduler Tune restores is the one of the experiment's start)."""
        if self._replayed or not LIVE.bound:
            return
        self._replayed = True
        for method, ended in LIVE.run.history.items():
            if method in self.by_method:
                for trial_id, values in ended:
                    replay(self.by_method[method], trial_id, values)

    def _as_recorded(self, trial: Any, result: dict, action: str) -> str:
        row = LIVE.run.recorded.get(trial.trial_id) if LIVE.bound else None
        if (
            row is None
            or row.phase != Phase.SEARCH.value
            or row.status not in (TrialStatus.COMPLETED.value, TrialStatus.STOPPED.value)
        ):
            return action
        if row.status == TrialStatus.STOPPED.value and int(result.get(metrics.EPOCH, 0)) >= row.epochs_run:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def _of(self, trial: Any) -> TrialScheduler:
        config = trial.config or {}
        if config.get(PHASE_KEY) == Phase.SEARCH.value:
            return self.by_method.get(config.get(METHOD_KEY), self.final)
        return self.final

    def _all(self) -> list[TrialScheduler]:
        return [*self.by_method.values(), self.final]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        done = [scheduler.set_search_properties(metric, mode, **spec) for scheduler in self._all()]
        self._metric, self._mode = metric, mode
        return all(done)

    @property
    def supports_buffered_results(self) -> bool:
        return all(scheduler.supports_buffered_results for scheduler in self._all())

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._replay_history()
        self._added.setdefault(trial.trial_id, self._adds)
        self._adds += 1
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._replay_history()
        return self._as_recorded(trial, result, self._of(trial).on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._added.pop(trial.trial_id, None)
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._added.pop(trial.trial_id, None)
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """The earliest added pending trial, else the earliest paused one (Tune's FIFO choice).
        Any pending trial may take a free slot: which method it belongs to was the searcher's
        choice. Among the live trials (pending, running, paused: a few per slot), not every
        trial of the run as Tune's FIFO scans at each step (at thousands of trials that scan
        became a growing share of the driver's time)."""
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            waiting = [trial for trial in live if trial.status == status]
            if waiting:
                return min(waiting, key=lambda trial: self._added.get(trial.trial_id, -1))
        return None

    def debug_string(self) -> str:
        return "; ".join(f"{method}: {scheduler.debug_string()}" for method, scheduler in self.by_method.items())
