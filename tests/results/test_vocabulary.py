"""The MLflow vocabulary's rules: run names (benchmark, method, phase, trial; hostile text kept
harmless) and a parent run's counters over the trials of its phase."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from bench.results.schema import Phase
from bench.results.vocabulary import (
    PHASE_BACKWARD_PASSES,
    PHASE_FORWARD_PASSES,
    PHASE_WALL_SECONDS,
    ParentFinish,
    ParentRun,
    PhaseTally,
    TrialRun,
    parent_finish,
    parent_run_name,
    phase_counters,
    run_name,
    trial_run_name,
)

HOSTILE = "a/b\nc\r\td\u202eevil\u200b <script>alert(1)</script> \"'&" + "x" * 200


def _trial(regularizer: str = "sam", ordinal: int | None = 7, phase: Phase = Phase.SEARCH) -> TrialRun:
    return TrialRun(
        key="digits-sam-search/8a02b13c",
        benchmark="digits",
        regularizer=regularizer,
        phase=phase,
        seed=0,
        regularizer_hparams="{}",
        training_hparams="{}",
        ordinal=ordinal,
    )


def test_run_names_carry_benchmark_method_phase_and_trial():
    assert trial_run_name(_trial()) == "digits/sam/search/t007"
    assert trial_run_name(_trial(ordinal=0, phase=Phase.FINAL)) == "digits/sam/final/t000"
    # Back-filled from a row, whose ordinal is unknown: the Tune trial id names the trial.
    assert trial_run_name(_trial(ordinal=None)) == "digits/sam/search/8a02b13c"
    parent = ParentRun("digits-sam-search@f00", "digits", "sam", Phase.SEARCH, {}, None)
    assert parent_run_name(parent) == "digits/sam/search"
    # Sorted by name, a parent comes right before its trials.
    names = [trial_run_name(_trial(ordinal=n)) for n in (10, 2)] + [parent_run_name(parent)]
    assert sorted(names) == ["digits/sam/search", "digits/sam/search/t002", "digits/sam/search/t010"]


def test_a_hostile_method_name_stays_one_harmless_part():
    name = trial_run_name(_trial(regularizer=HOSTILE))
    parts = name.split("/")
    assert len(parts) == 4 and parts[0] == "digits" and parts[2:] == ["search", "t007"]
    method = parts[1]
    # No line breaks, tabs, bidi overrides or zero-width characters: one line that reads as it is.
    assert not [c for c in method if unicodedata.category(c)[0] in "CZ" and c != " "]
    assert method.startswith("a_b_c__d_evil_ <script>alert(1)<_script>")  # markup kept: the UI shows text
    assert len(method) == 60 and method.endswith("…")
    assert run_name("", "  ", "ok") == "_/_/ok"  # never an empty part


def test_phase_counters_sum_the_ended_trials(row_factory):
    rows = [
        row_factory(status="completed", forward_passes=100, backward_passes=100, wall_seconds=1.5),
        row_factory(status="completed", forward_passes=200, backward_passes=150, wall_seconds=2.0),
        row_factory(status="stopped", forward_passes=40, backward_passes=40, wall_seconds=0.25),
        row_factory(status="failed", forward_passes=0, backward_passes=0, wall_seconds=0.5),
    ]
    counters = phase_counters(rows)
    assert counters == {
        "trials_completed": 2.0,
        "trials_stopped": 1.0,
        "trials_failed": 1.0,
        PHASE_FORWARD_PASSES: 340.0,
        PHASE_BACKWARD_PASSES: 290.0,
        PHASE_WALL_SECONDS: pytest.approx(4.25),
    }
    assert phase_counters([]) == {key: 0.0 for key in counters}
    # The phase's end logs the same counters, at step = the trials ended.
    assert parent_finish(rows, None) == ParentFinish(counters, {}, None, step=4)


def test_a_tally_kept_as_trials_end_equals_a_recount(row_factory):
    """Trials ending one by one, some recorded again with another outcome (a retried or resumed
    trial): the tally kept as they come equals the counters over each trial's latest row."""
    random = np.random.default_rng(7)
    for _ in range(20):
        tally, latest = PhaseTally(), {}
        for _ in range(60):
            key = f"t{random.integers(25)}"  # often a key seen before: its row is replaced
            row = row_factory(
                run_id=key,
                status=str(random.choice(["completed", "stopped", "failed"])),
                forward_passes=int(random.integers(0, 500)),
                backward_passes=int(random.integers(0, 500)),
                wall_seconds=float(random.uniform(0, 10)),
            )
            tally.put(key, row)
            latest[key] = row
            assert len(tally) == len(latest)
            assert tally.counters() == pytest.approx(phase_counters(latest.values()), rel=1e-12, abs=1e-9)
