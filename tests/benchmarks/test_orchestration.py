"""`bench.benchmarks.orchestration`: the slot-utilization arithmetic on hand-computed schedules, the
simulated trial's landscape, and one real (small) run on a loopback Ray cluster.

No test asserts a utilization target or a speed: those depend on the machine and its load. The
real run checks that the figures it prints are well-formed and agree with each other.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random

import pytest
from typer.testing import CliRunner

import regularizers
from bench.benchmarks.orchestration import (
    DEFAULT,
    NO_SEARCH_METHODS,
    Setup,
    TrialInterval,
    _format_table,
    app,
    intervals_from_rows,
    measure,
    no_search_setup,
    sequential_bound,
    simulated_accuracy,
    utilization,
)
from bench.plan import plan_methods

# The hand-made schedules use integers and halves: every sum and difference below is exact in
# float64, but the implementation may add in another order, so allow a few ulps of the largest
# magnitude involved (≤ 100): 1e-12 absolute is thousands of ulps of margin and still far below
# any figure's resolution.
EXACT = 1e-12


def _interval(start: float, end: float, method: str = "erm") -> TrialInterval:
    return TrialInterval(method=method, phase="search", status="completed", start=start, end=end)


# ------------------------------------------------------------------------------ utilization


def test_utilization_of_a_hand_computed_schedule() -> None:
    # Two slots: A [0, 4], B [1, 3], C [3, 6], D [5, 6]. Wall 6 s, busy 4 + 2 + 3 + 1 = 10 slot-s,
    # so utilization 10 / (2 × 6) = 5/6.
    # Ramp [0, 1] (the 2nd start): 2 slot-s available, A busy 1 → idle 1.
    # Middle [1, 5] (to the last start): 8 available, A 3 + B 2 + C 2 → idle 1.
    # Tail [5, 6]: 2 available, C 1 + D 1 → idle 0.
    # Handovers: C (3rd start, at 3) takes the slot of the 1st end (B at 3): 0 s;
    #            D (4th start, at 5) the slot of the 2nd end (A at 4): 1 s.
    figures = utilization([_interval(3, 6), _interval(0, 4), _interval(5, 6), _interval(1, 3)], slots=2)
    assert figures.trials == 4 and figures.slots == 2 and figures.max_running == 2
    assert figures.wall_seconds == pytest.approx(6, abs=EXACT)
    assert figures.busy_slot_seconds == pytest.approx(10, abs=EXACT)
    assert figures.utilization == pytest.approx(5 / 6, abs=EXACT)
    assert (figures.idle_ramp, figures.idle_middle, figures.idle_tail) == pytest.approx((1, 1, 0), abs=EXACT)
    assert (figures.ramp_seconds, figures.tail_seconds) == pytest.approx((1, 1), abs=EXACT)
    assert figures.handovers == pytest.approx((0, 1), abs=EXACT)
    assert figures.handover_median == pytest.approx(0.5, abs=EXACT)


def test_back_to_back_trials_fill_every_slot() -> None:
    # Three slots, each running two trials back to back from 0 to 10 with no gap.
    intervals = [
        _interval(0, 4),
        _interval(4, 10),
        _interval(0, 6.5),
        _interval(6.5, 10),
        _interval(0, 0.5),
        _interval(0.5, 10),
    ]
    figures = utilization(intervals, slots=3)
    assert figures.utilization == pytest.approx(1.0, abs=EXACT)
    assert figures.idle_ramp + figures.idle_middle + figures.idle_tail == pytest.approx(0.0, abs=EXACT)
    assert figures.handovers == pytest.approx((0, 0, 0), abs=EXACT)


def test_fewer_trials_than_slots_leave_slots_idle_and_no_handover() -> None:
    # Four slots, two trials [0, 2] and [1, 3]: busy 4 of 4 × 3 = 12 slot-s.
    figures = utilization([_interval(0, 2), _interval(1, 3)], slots=4)
    assert figures.utilization == pytest.approx(1 / 3, abs=EXACT)
    assert figures.handovers == () and figures.handover_median is None
    # The ramp ends at the last start, which is also where the tail begins: no middle.
    assert figures.ramp_seconds == pytest.approx(1, abs=EXACT) and figures.tail_seconds == pytest.approx(2, abs=EXACT)
    assert figures.idle_ramp == pytest.approx(3, abs=EXACT)  # [0, 1]: 4 available, 1 busy
    assert figures.idle_middle == pytest.approx(0, abs=EXACT)
    assert figures.idle_tail == pytest.approx(5, abs=EXACT)  # [1, 3]: 8 available, 1 + 2 busy


def _list_schedule(rng: random.Random, slots: int, durations: list[float], gap: float) -> list[TrialInterval]:
    """What a scheduler does: each trial starts on the earliest free slot, ``gap`` after it freed."""
    free = [0.0] * slots
    intervals = []
    for duration in durations:
        slot = min(range(slots), key=lambda s: free[s])
        start = free[slot] + rng.uniform(0, gap)
        intervals.append(_interval(start, start + duration))
        free[slot] = start + duration
    return intervals


@pytest.mark.parametrize("seed", range(5))
def test_idle_split_and_handovers_agree_with_any_valid_schedule(seed: int) -> None:
    rng = random.Random(seed)
    slots = rng.randint(1, 6)
    intervals = _list_schedule(rng, slots, [rng.uniform(0.1, 5) for _ in range(rng.randint(1, 30))], gap=0.5)
    figures = utilization(intervals, slots)
    total = sum(i.seconds for i in intervals)
    first, last = min(i.start for i in intervals), max(i.end for i in intervals)
    # Sums of up to 30 float64 terms of magnitude ≤ 150: 1e-9 absolute is a wide margin.
    assert figures.busy_slot_seconds == pytest.approx(total, abs=1e-9)
    assert figures.wall_seconds == pytest.approx(last - first, abs=1e-9)
    idle = figures.idle_ramp + figures.idle_middle + figures.idle_tail
    assert idle == pytest.approx(slots * figures.wall_seconds - total, abs=1e-9)
    assert min(figures.idle_ramp, figures.idle_middle, figures.idle_tail) >= -1e-9
    assert 0 < figures.utilization <= 1 + 1e-12
    assert figures.max_running <= slots
    assert len(figures.handovers) == max(0, len(intervals) - slots)
    assert all(h >= -1e-9 for h in figures.handovers)


@pytest.mark.parametrize(
    ("intervals", "slots", "message"),
    [
        ([], 2, "no trial intervals"),
        ([_interval(0, 1)], 0, "slots must be at least 1"),
        ([_interval(2, 1)], 1, "ends before it starts"),
        ([_interval(0, math.nan)], 1, "ends before it starts"),
        ([_interval(1, 1)], 1, "no wall time"),
        ([_interval(0, 2), _interval(1, 3), _interval(1.5, 2.5)], 2, "3 trials ran at once on 2 slots"),
    ],
)
def test_inconsistent_intervals_are_refused(intervals, slots, message) -> None:
    with pytest.raises(ValueError, match=message):
        utilization(intervals, slots)


def test_sequential_bound() -> None:
    # 8 search trials and 1 × 3 final seeds on 16 slots; capped at 1 when a phase has more trials than slots.
    bound = sequential_bound(8, 3, 16)
    assert (bound.search, bound.final) == pytest.approx((0.5, 3 / 16), abs=EXACT)
    bound = sequential_bound(20, 3, 8)
    assert (bound.search, bound.final) == pytest.approx((1.0, 3 / 8), abs=EXACT)
    with pytest.raises(ValueError):
        sequential_bound(8, 3, 0)


def test_intervals_from_rows_use_start_and_wall_seconds() -> None:
    start = dt.datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=dt.timezone.utc)
    rows = [
        {
            "regularizer": "sam",
            "phase": "final",
            "status": "completed",
            "started_at": start,
            "wall_seconds": 2.5,
            "node": "n1",
        },
        {
            "regularizer": "erm",
            "phase": "search",
            "status": "completed",
            "started_at": None,
            "wall_seconds": 1.0,
            "node": None,
        },
    ]
    (interval,) = intervals_from_rows(rows)
    assert (interval.method, interval.phase, interval.node) == ("sam", "final", "n1")
    # Unix seconds ~1.8e9 in float64: ulp 2.4e-7, so compare to 1e-6.
    assert interval.start == pytest.approx(start.timestamp(), abs=1e-6)
    assert interval.seconds == pytest.approx(2.5, abs=1e-6)


# ------------------------------------------------------------------------------ simulated trial


def test_simulated_accuracy_peaks_at_the_defaults_and_rises_with_epochs() -> None:
    config = DEFAULT.config("unit")
    sam = next(plan for plan in plan_methods(config) if plan.regularizer == "sam")
    defaults = {p.name: p.default for p in sam.params}
    default = {
        "regularizer": {"perturbation_radius": defaults["perturbation_radius"]},
        "training": {"learning_rate": defaults["learning_rate"]},
    }
    # At the defaults the distance is 0: 0.95 × (1 − 2^-epoch), e.g. 0.475 after one epoch.
    assert simulated_accuracy(sam, default, config, 1) == pytest.approx(0.475, abs=EXACT)
    curve = [simulated_accuracy(sam, default, config, e) for e in range(1, 5)]
    assert curve == sorted(curve) and len(set(curve)) == 4
    far = {**default, "training": {"learning_rate": defaults["learning_rate"] * math.e}}  # ln ratio 1: distance 1
    assert simulated_accuracy(sam, far, config, 1) == pytest.approx((0.95 - 0.05) * 0.5, abs=EXACT)


def test_passes_per_step_follow_the_declared_cost() -> None:
    for plan in plan_methods(DEFAULT.config("unit")):
        cost = regularizers.create(plan.regularizer).cost(False)
        assert plan.passes_per_step == cost.forward + cost.backward
    assert {p.regularizer: p.passes_per_step for p in plan_methods(DEFAULT.config("unit"))} == {
        "erm": 2,
        "weight_decay": 2,
        "sam": 4,
        "asam": 4,
    }


def test_the_no_search_setup_leaves_erm_nothing_to_search() -> None:
    setup = no_search_setup(DEFAULT)
    budgets = {plan.regularizer: plan.budget.trials for plan in plan_methods(setup.config("unit"))}
    assert setup.methods == NO_SEARCH_METHODS
    assert budgets == {"erm": 1, "sam": DEFAULT.trials_per_method}


def test_bad_format_is_one_line_and_exit_status_2() -> None:
    result = CliRunner().invoke(app, ["utilization", "--format", "yaml"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --format must be table or json, got 'yaml'"]


def test_two_shapes_at_once_are_refused_in_one_line() -> None:
    result = CliRunner().invoke(app, ["utilization", "--quick", "--short"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --quick and --short are two shapes: give one"]


def test_the_default_shape_is_the_default_benchmarks(repo_root) -> None:
    """The measured benchmark is configs/digits.yaml's (methods, epochs, ASHA, final seeds) with
    8 trials per method: if that config changes, the measurement follows it or this test fails."""
    from bench.config import load_config

    digits = load_config(repo_root / "configs" / "digits.yaml")
    assert DEFAULT.methods == tuple(entry.name for entry in digits.regularizers)
    assert DEFAULT.epochs == digits.training.epochs
    asha = digits.search.asha
    assert asha.enabled and (DEFAULT.grace_period, DEFAULT.reduction_factor) == (
        asha.grace_period,
        asha.reduction_factor,
    )
    assert (DEFAULT.seeds, DEFAULT.top_k) == (tuple(digits.final.seeds), digits.final.top_k)
    assert DEFAULT.trials_per_method == 8 and DEFAULT.slots == 8


# ------------------------------------------------------------------------------ a real run


@pytest.mark.slow
@pytest.mark.xdist_group("loopback-cluster")  # one loopback cluster at a time (tests/search/test_cluster.py)
def test_a_real_run_on_a_loopback_cluster_gives_consistent_figures() -> None:
    # Head (no GPU) + 2 workers × 2 GPUs: 4 slots. ERM has nothing to search (1 search trial),
    # SAM 3; 2 final seeds each: 4 + 4 trials per run, under both schedulers.
    setup = Setup(
        methods=NO_SEARCH_METHODS,
        trials_per_method=3,
        epochs=2,
        epoch_seconds=0.3,
        seeds=(1, 2),
        workers=2,
        gpus_per_worker=2,
        search_learning_rate=False,
    )
    report = measure(setup, repeats=1, no_search=False)
    assert report.slots == 4 and [run.scheduler for run in report.runs] == ["concurrent", "sequential"]
    for run in report.runs:
        u = run.utilization
        assert run.counts == {"erm": {"search": 1, "final": 2}, "sam": {"search": 3, "final": 2}}
        assert u.trials == 8 and sum(run.trials_by_status.values()) == 8 and "failed" not in run.trials_by_status
        assert 0 < u.utilization <= 1
        # busy ≤ slots × wall up to rounding of sums of ~10 float64 terms of magnitude ~1e9 (Unix seconds).
        assert u.busy_slot_seconds <= u.slots * u.wall_seconds + 1e-5
        assert u.idle_ramp + u.idle_middle + u.idle_tail == pytest.approx(
            u.slots * u.wall_seconds - u.busy_slot_seconds, abs=1e-5
        )
        assert u.max_running <= 4 and len(u.handovers) == 4
        # The head declares no GPU: every trial ran on a worker node.
        assert run.on_head == 0 and 1 <= run.nodes <= 2
        # Every trial runs at least one epoch, and the shortest (ERM's) sleeps 0.3 s.
        assert u.busy_slot_seconds >= 8 * 0.3
        assert run.driver_seconds >= u.wall_seconds
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["slots"] == 4 and payload["wall_time"] == "first trial start to last trial end"
    assert payload["sequential_bound"] == pytest.approx({"search": 3 / 4, "final": 2 / 4}, abs=EXACT)
    for scheduler, run in zip(("concurrent", "sequential"), report.runs, strict=True):
        assert payload["utilization"][scheduler]["median"] == pytest.approx(run.utilization.utilization, abs=EXACT)
        assert payload["utilization"][scheduler]["n"] == 1
    table = _format_table(report)
    assert "→ 4 slots" in table and "wall = first trial start → last trial end" in table
    assert f"concurrent: utilization median {report.runs[0].utilization.utilization:.3f}" in table
    assert "sequential bound: ≤ 3/4 = 0.75 while a search runs, ≤ 2/4 = 0.50" in table
