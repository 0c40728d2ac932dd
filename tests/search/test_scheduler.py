"""Each method's search trials have their own ASHA: a method whose trials all score below another
method's is still judged only against its own (its first trial at a rung continues), while
within a method ASHA still stops the worse trials."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from bench import metrics
from bench.config import parse_config
from bench.plan import METHOD_KEY, PHASE_KEY, plan_methods
from bench.search.scheduler import PerMethodScheduler


@dataclass
class _Trial:
    """What ASHA reads of a trial: its id and config."""

    trial_id: str
    config: dict = field(default_factory=dict)


def _scheduler() -> PerMethodScheduler:
    config = parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "training": {"epochs": 8},
            "search": {"asha": {"grace_period": 1, "reduction_factor": 2}},
            "regularizers": ["erm", "sam"],
        }
    )
    scheduler = PerMethodScheduler(config.search.asha, plan_methods(config))
    assert scheduler.set_search_properties(metrics.VAL_ACCURACY, "max")
    return scheduler


def _trial(trial_id: str, method: str, phase: str = "search") -> _Trial:
    return _Trial(trial_id, {METHOD_KEY: method, PHASE_KEY: phase})


def _result(epoch: int, value: float) -> dict:
    return {metrics.EPOCH: epoch, metrics.VAL_ACCURACY: value}


def test_a_worse_method_is_judged_only_against_itself():
    scheduler = _scheduler()
    good = [_trial(f"g{i}", "erm") for i in range(4)]
    bad = [_trial("b0", "sam"), _trial("b1", "sam")]
    for trial in good + bad:
        scheduler.on_trial_add(None, trial)
    for trial in good:  # ERM fills rung 1 with 0.9s
        scheduler.on_trial_result(None, trial, _result(1, 0.9))
    # SAM's first trial at rung 1 scores far below every ERM trial, yet continues: its rung is its own.
    assert scheduler.on_trial_result(None, bad[0], _result(1, 0.1)) == TrialScheduler.CONTINUE
    # Within SAM, ASHA still cuts a trial below its own rung's top half.
    assert scheduler.on_trial_result(None, bad[1], _result(1, 0.05)) == TrialScheduler.STOP


def test_one_shared_asha_would_have_stopped_it():
    """The counterfactual, so the test above can fail: routed to ERM's ASHA, the same SAM trial stops."""
    scheduler = _scheduler()
    good = [_trial(f"g{i}", "erm") for i in range(4)]
    impostor = _trial("b0", "erm")
    for trial in [*good, impostor]:
        scheduler.on_trial_add(None, trial)
    for trial in good:
        scheduler.on_trial_result(None, trial, _result(1, 0.9))
    assert scheduler.on_trial_result(None, impostor, _result(1, 0.1)) == TrialScheduler.STOP


def test_final_trials_are_never_stopped_early():
    scheduler = _scheduler()
    finals = [_trial(f"f{i}", "erm", phase="final") for i in range(3)]
    for trial in finals:
        scheduler.on_trial_add(None, trial)
    for value in (0.9, 0.1, 0.01):
        for trial in finals:
            assert scheduler.on_trial_result(None, trial, _result(1, value)) == TrialScheduler.CONTINUE


def _bind(scheduler_config, **fields):
    from bench.search.live import LIVE, LiveRun

    plans = plan_methods(scheduler_config)
    LIVE.bind(
        LiveRun(
            config=scheduler_config,
            plans={p.regularizer: p for p in plans},
            results_dir=".",
            tracking_uri="",
            optuna_storage="",
            **fields,
        )
    )
    return LIVE


def _run_like_tune(scheduler, trial, values):
    """One trial reporting every epoch until the scheduler stops it (Tune then calls on_trial_complete)."""
    ran = {}
    for epoch, value in enumerate(values, start=1):
        ran[epoch] = value
        if scheduler.on_trial_result(None, trial, _result(epoch, value)) == TrialScheduler.STOP:
            scheduler.on_trial_complete(None, trial, _result(epoch, value))
            break
    return ran


@pytest.mark.parametrize("seed", range(8))
def test_a_rebuilt_asha_holds_what_tunes_recorded_and_decides_as_it_would(seed):
    """Tune restores no scheduler state. Replaying the ended trials' per-epoch values (from their
    studies) must give each rung the values Tune's own ASHA recorded, so a new trial is judged
    as it would have been without the interruption."""
    import numpy as np

    from bench.search.live import LIVE

    rng = np.random.default_rng(seed)
    config = parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "training": {"epochs": 9},
            "search": {"asha": {"grace_period": 1 + seed % 2, "reduction_factor": 2 + seed % 3}},
            "regularizers": ["erm", "sam"],
        }
    )

    def fresh():
        scheduler = PerMethodScheduler(config.search.asha, plan_methods(config))
        assert scheduler.set_search_properties(metrics.VAL_ACCURACY, "max")
        return scheduler

    LIVE.bind(None)
    original = fresh()
    history = {"erm": [], "sam": []}
    for i in range(10):
        method = "erm" if i % 2 else "sam"
        trial = _trial(f"t{i}", method)
        original.on_trial_add(None, trial)
        history[method].append((trial.trial_id, _run_like_tune(original, trial, list(rng.uniform(0, 1, 9)))))
    try:
        _bind(config, history=history)
        rebuilt = fresh()
        newcomer = _trial("new", "sam")
        rebuilt.on_trial_add(None, newcomer)  # the first event replays the history
        for method in ("erm", "sam"):
            assert [r for _, r in rebuilt.by_method[method]._brackets[0]._rungs] == [
                r for _, r in original.by_method[method]._brackets[0]._rungs
            ]
        original.on_trial_add(None, newcomer)
        for epoch, value in enumerate(rng.uniform(0, 1, 9), start=1):
            decision = original.on_trial_result(None, newcomer, _result(epoch, value))
            assert rebuilt.on_trial_result(None, newcomer, _result(epoch, value)) == decision
            if decision == TrialScheduler.STOP:
                break
    finally:
        LIVE.bind(None)


def test_a_trial_run_again_ends_as_its_row_says():
    """A trial that ended after Tune last saved its state runs again from its checkpoint: it is
    stopped at the epoch its row records, or, recorded completed, never stopped early."""
    from bench.search.finals import RecordedTrial

    config = parse_config(
        {
            "benchmark": "unit",
            "model": {"name": "mlp"},
            "training": {"epochs": 8},
            "search": {"asha": {"grace_period": 1, "reduction_factor": 2}},
            "regularizers": ["erm"],
        }
    )
    recorded = {
        "was_stopped": RecordedTrial("erm", "search", "stopped", 2, None, 0),
        "was_completed": RecordedTrial("erm", "search", "completed", 8, None, 0),
    }
    try:
        _bind(config, recorded=recorded)
        scheduler = PerMethodScheduler(config.search.asha, plan_methods(config))
        scheduler.set_search_properties(metrics.VAL_ACCURACY, "max")
        trials = [_trial(name, "erm") for name in ("leader", "leader2", "was_stopped", "was_completed")]
        for trial in trials:
            scheduler.on_trial_add(None, trial)
        for trial in trials[:2]:
            scheduler.on_trial_result(None, trial, _result(1, 0.9))
        # ASHA alone would stop both at rung 1 (0.1 < 0.9); the rows say otherwise
        assert scheduler.on_trial_result(None, trials[2], _result(1, 0.1)) == TrialScheduler.CONTINUE
        assert scheduler.on_trial_result(None, trials[2], _result(2, 0.1)) == TrialScheduler.STOP
        assert scheduler.on_trial_result(None, trials[3], _result(1, 0.1)) == TrialScheduler.CONTINUE
        no_row = _trial("no_row", "erm")  # the counterfactual: without a row, ASHA decides
        scheduler.on_trial_add(None, no_row)
        assert scheduler.on_trial_result(None, no_row, _result(1, 0.1)) == TrialScheduler.STOP
    finally:
        from bench.search.live import LIVE

        LIVE.bind(None)


@dataclass
class _Waiting:
    """A trial with a status, as Tune's schedulers see it."""

    trial_id: str
    status: str
    config: dict = field(default_factory=dict)


@dataclass
class _Controller:
    """The two calls a scheduler makes on Tune's controller wrapper to choose a trial."""

    trials: list[_Waiting]

    def get_trials(self) -> list[_Waiting]:
        return self.trials

    def get_live_trials(self) -> list[_Waiting]:
        live = [t for t in self.trials if t.status != Trial.TERMINATED]
        return [live[i] for i in np.random.default_rng(len(live)).permutation(len(live))]  # a set: no order


def test_the_trial_chosen_to_run_is_fifos_choice_from_the_live_trials_alone():
    """Random runs of trials added, started, paused, ended: the choice always equals Tune's FIFO
    scheduler's (which scans every trial), so looking at the live trials only changes nothing."""
    random = np.random.default_rng(3)
    for _ in range(30):
        scheduler, trials = _scheduler(), []
        for step in range(80):
            if not trials or random.random() < 0.4:
                trial = _Waiting(f"t{step}", Trial.PENDING, {METHOD_KEY: "erm", PHASE_KEY: "search"})
                trials.append(trial)
                scheduler.on_trial_add(None, trial)
            else:
                trial = trials[random.integers(len(trials))]
                if trial.status != Trial.TERMINATED:
                    trial.status = str(random.choice([Trial.RUNNING, Trial.PAUSED, Trial.PENDING, Trial.TERMINATED]))
                    if trial.status == Trial.TERMINATED:
                        scheduler.on_trial_complete(None, trial, {})
            controller = _Controller(trials)
            assert scheduler.choose_trial_to_run(controller) is FIFOScheduler().choose_trial_to_run(controller)
