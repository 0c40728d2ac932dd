"""Each method's search trials have their own ASHA: a method whose trials all score below another
method's is still judged only against its own (its first trial at a rung continues), while
within a method ASHA still stops the worse trials."""

from __future__ import annotations

from dataclasses import dataclass, field

from ray.tune.schedulers import TrialScheduler

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
    config = parse_config({
        "benchmark": "unit", "model": {"name": "mlp"}, "training": {"epochs": 8},
        "search": {"asha": {"grace_period": 1, "reduction_factor": 2}},
        "regularizers": ["erm", "sam"],
    })
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
