"""A trial reports to Tune only when something needs it (bench.search.reporting): at every epoch
its method's ASHA decides on, at its end and checkpoints, else at most once per second, with
the epochs in between carried along. ASHA must then decide exactly as with one report per epoch."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from bench import metrics
from bench.config import parse_config
from bench.plan import METHOD_KEY, PHASE_KEY, plan_methods
from bench.search.reporting import EpochBatch
from bench.search.scheduler import PerMethodScheduler, asha_for, rung_epochs


def _plan_and_asha(epochs: int, grace: int, rf: float, enabled: bool = True):
    config = parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "training": {"epochs": epochs},
            "search": {"asha": {"enabled": enabled, "grace_period": grace, "reduction_factor": rf}},
            "regularizers": ["erm"],
        }
    )
    return config, plan_methods(config)[0]


GRID = [(epochs, grace, rf) for epochs in (1, 2, 4, 10, 12, 50, 200) for grace in (1, 2, 3, 7) for rf in (2, 2.5, 3, 4)]


@pytest.mark.parametrize(("epochs", "grace", "rf"), GRID)
def test_rung_epochs_are_where_tunes_asha_decides(epochs, grace, rf):
    """The epochs are the first ones at or past each of Tune's own rung milestones (read from
    its bracket), plus max_t, where ASHA stops every trial."""
    config, plan = _plan_and_asha(epochs, grace, rf)
    asha = asha_for(config.search.asha, plan)
    assert isinstance(asha, ASHAScheduler)
    (bracket,) = asha._brackets  # Tune's own rungs: private, so this test guards the formula
    milestones = [milestone for milestone, _ in bracket._rungs]
    assert rung_epochs(config.search.asha, plan) == {math.ceil(m) for m in milestones} | {plan.max_epochs}


def test_no_asha_no_rung_epochs():
    config, plan = _plan_and_asha(12, 3, 2, enabled=False)
    assert rung_epochs(config.search.asha, plan) == frozenset()


@dataclass
class _Trial:
    trial_id: str
    config: dict = field(default_factory=dict)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("epochs", "grace", "rf"), [(12, 3, 2), (12, 1, 2), (10, 1, 3), (20, 2, 2.5), (9, 1, 4)])
def test_asha_decides_the_same_with_batched_reports(seed, epochs, grace, rf):
    """12 trials of one method train in a random interleaving, each with random per-epoch
    values. One scheduler gets every epoch; the other only what a batching trial sends (rung
    epochs, the last epoch, and random extra flushes, as the one-second clock would cause).
    Each trial must be stopped at the same epoch (or run to the end) under both."""
    config, plan = _plan_and_asha(epochs, grace, rf)
    rungs = rung_epochs(config.search.asha, plan)
    rng = random.Random(seed)
    trials = [_Trial(f"t{i}", {METHOD_KEY: "erm", PHASE_KEY: "search"}) for i in range(12)]
    curves = {t.trial_id: [rng.random() for _ in range(epochs)] for t in trials}
    schedulers = {
        "every": PerMethodScheduler(config.search.asha, [plan]),
        "batched": PerMethodScheduler(config.search.asha, [plan]),
    }
    stopped_at: dict[str, dict[str, int]] = {name: {} for name in schedulers}
    for scheduler in schedulers.values():
        scheduler.set_search_properties(metrics.VAL_ACCURACY, "max")
    for scheduler in schedulers.values():
        for trial in trials:
            scheduler.on_trial_add(None, trial)
    # One global order of (trial, epoch) events, each trial's epochs in order: trials start at random times.
    progress = {t.trial_id: 0 for t in trials}
    order = []
    while any(p < epochs for p in progress.values()):
        trial = rng.choice([t for t in trials if progress[t.trial_id] < epochs])
        progress[trial.trial_id] += 1
        order.append((trial, progress[trial.trial_id]))
    flush = {(t.trial_id, e) for t in trials for e in range(1, epochs + 1) if rng.random() < 0.2}
    for trial, epoch in order:
        result = {metrics.EPOCH: epoch, metrics.VAL_ACCURACY: curves[trial.trial_id][epoch - 1]}
        sent = {"every": True, "batched": epoch in rungs or epoch == epochs or (trial.trial_id, epoch) in flush}
        for name, scheduler in schedulers.items():
            if trial.trial_id in stopped_at[name] or not sent[name]:
                continue
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                stopped_at[name][trial.trial_id] = epoch
    assert stopped_at["every"] == stopped_at["batched"]
    assert any(e < epochs for e in stopped_at["every"].values())  # ASHA did stop some early


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _epoch(e: int) -> dict:
    return {metrics.EPOCH: e, metrics.VAL_ACCURACY: 0.1 * e, metrics.WALL_SECONDS: 0.01 * e, metrics.DEVICE: "cpu"}


def test_a_batch_is_due_at_decision_epochs_the_last_epoch_and_after_its_seconds():
    clock = _Clock()
    batch = EpochBatch({3, 6}, seconds=1.0, clock=clock)
    due = []
    for e in range(1, 9):
        clock.now += 0.3  # 0.3 s per epoch
        if batch.add(_epoch(e), last=e == 8):
            due.append(e)
            batch.take()
    # 3 and 6: rungs; 8: the last; none in between came a full second after a report.
    assert due == [3, 6, 8]
    batch = EpochBatch((), seconds=1.0, clock=clock)
    due = []
    for e in range(1, 8):
        clock.now += 0.4
        if batch.add(_epoch(e)):
            due.append(e)
            batch.take()
    assert due == [3, 6]  # 1.2 s after the last report each time


def test_a_batch_carries_the_earlier_epochs_reported_metrics():
    batch = EpochBatch({3}, clock=_Clock())
    assert not batch.add(_epoch(1)) and not batch.add(_epoch(2))
    assert batch.add(_epoch(3))
    report = batch.take()
    assert report[metrics.EPOCH] == 3 and report[metrics.DEVICE] == "cpu"
    # Earlier epochs keep only reported metrics (no text facts), oldest first.
    assert report[metrics.EARLIER_EPOCHS] == [
        {k: v for k, v in _epoch(e).items() if k != metrics.DEVICE} for e in (1, 2)
    ]
    assert [e[metrics.EPOCH] for e in metrics.epochs_of(report)] == [1, 2, 3]
    assert batch.pending == []
    batch.add(_epoch(4))
    single = batch.take()
    assert metrics.EARLIER_EPOCHS not in single and metrics.epochs_of(single) == [single]
    with pytest.raises(ValueError, match="no epoch"):
        batch.take()
