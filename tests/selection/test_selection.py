"""bench.selection: the one rule for "best", on candidates and on Parquet row mappings."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bench import metrics as M
from bench import selection
from bench.results.schema import TrialStatus
from bench.selection import Candidate, best, candidate_from_row, metric_of_rows, ranked, top_k
from tests.results.conftest import make_row

C, S, F = TrialStatus.COMPLETED, TrialStatus.STOPPED, TrialStatus.FAILED

# The case: A has the better accuracy, B the better loss.
A = Candidate("search/a", C, val_accuracy=0.90, val_loss=0.60)
B = Candidate("search/b", C, val_accuracy=0.89, val_loss=0.30)


def test_the_metric_and_its_direction_decide() -> None:
    assert best([A, B], M.VAL_LOSS) == B
    assert best([B, A], M.VAL_LOSS) == B  # input order is irrelevant
    assert best([A, B], M.VAL_ACCURACY) == A


def test_every_objective_is_a_candidate_field() -> None:
    # A new objective in bench.metrics must get a Candidate field, or value() would fail on it.
    fields = {f.name for f in dataclasses.fields(Candidate)}
    assert set(M.OBJECTIVES) <= fields
    assert {selection.tie_break_metric(m) for m in M.OBJECTIVES} == set(M.OBJECTIVES)


def test_stopped_failed_and_unscored_trials_never_compete() -> None:
    stopped = Candidate("search/0-stopped", S, val_accuracy=0.99, val_loss=0.01)  # better numbers, fewer epochs
    failed = Candidate("search/0-failed", F, val_accuracy=None, val_loss=None)
    nan = Candidate("search/0-nan", C, val_accuracy=math.nan, val_loss=0.01)
    missing = Candidate("search/0-none", C, val_accuracy=None, val_loss=0.01)
    pool = [stopped, failed, nan, missing, B]
    assert ranked(pool, M.VAL_ACCURACY) == [B]
    # For val_loss the NaN-accuracy and None-accuracy trials do compete (their loss is finite) and win
    # on loss; both lack the tie-break accuracy, so run_id orders them.
    assert ranked(pool, M.VAL_LOSS) == [nan, missing, B]
    assert best([stopped, failed], M.VAL_ACCURACY) is None
    assert ranked([], M.VAL_LOSS) == []


def test_ties_broken_by_the_other_objective_then_run_id() -> None:
    # val_accuracy tie → lower val_loss wins
    hi_loss = Candidate("search/1", C, val_accuracy=0.8, val_loss=0.5)
    lo_loss = Candidate("search/2", C, val_accuracy=0.8, val_loss=0.4)
    assert ranked([hi_loss, lo_loss], M.VAL_ACCURACY) == [lo_loss, hi_loss]
    # val_loss tie → higher val_accuracy wins
    lo_acc = Candidate("search/1", C, val_accuracy=0.7, val_loss=0.4)
    hi_acc = Candidate("search/2", C, val_accuracy=0.9, val_loss=0.4)
    assert ranked([lo_acc, hi_acc], M.VAL_LOSS) == [hi_acc, lo_acc]
    # a missing tie-break value loses the tie
    no_loss = Candidate("search/0", C, val_accuracy=0.8, val_loss=None)
    assert ranked([no_loss, hi_loss], M.VAL_ACCURACY) == [hi_loss, no_loss]
    # full tie → smaller run_id (string order: "search/10" < "search/9")
    x = Candidate("search/9", C, val_accuracy=0.8, val_loss=0.4)
    y = Candidate("search/10", C, val_accuracy=0.8, val_loss=0.4)
    assert ranked([x, y], M.VAL_ACCURACY) == [y, x]
    assert ranked([x, y], M.VAL_LOSS) == [y, x]


def test_top_k_is_the_prefix_of_the_order() -> None:
    pool = [
        Candidate(f"search/{i}", status, val_accuracy=acc, val_loss=loss)
        for i, (status, acc, loss) in enumerate(
            [(C, 0.70, 0.9), (S, 0.99, 0.1), (C, 0.85, 0.5), (C, 0.85, 0.4), (F, None, None), (C, 0.60, 0.2)]
        )
    ]
    assert [c.run_id for c in top_k(pool, 2, M.VAL_ACCURACY)] == ["search/3", "search/2"]
    assert [c.run_id for c in top_k(pool, 10, M.VAL_ACCURACY)] == ["search/3", "search/2", "search/0", "search/5"]
    assert [c.run_id for c in top_k(pool, 3, M.VAL_LOSS)] == ["search/5", "search/3", "search/2"]
    assert top_k(pool, 1, M.VAL_LOSS) == [best(pool, M.VAL_LOSS)]
    with pytest.raises(ValueError, match="k >= 1"):
        top_k(pool, 0, M.VAL_ACCURACY)


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown search metric 'test_accuracy'.*val_accuracy"):
        best([A], M.TEST_ACCURACY)


def test_candidates_from_parquet_rows() -> None:
    row = make_row(run_id="s/7", status="stopped", val_accuracy=0.5, val_loss=1.25).to_record()
    assert candidate_from_row(row) == Candidate("s/7", S, val_accuracy=0.5, val_loss=1.25)
    with pytest.raises(ValueError):
        candidate_from_row({**row, "status": "exploded"})


def test_search_metric_of_rows_defaults_for_old_rows() -> None:
    old = make_row(search_metric=None).to_record()
    assert metric_of_rows([old]) == selection.DEFAULT_METRIC == M.VAL_ACCURACY
    assert metric_of_rows([]) == M.VAL_ACCURACY
    newer = make_row(search_metric=M.VAL_LOSS).to_record()  # make_row's timestamps increase
    assert metric_of_rows([newer, old]) == M.VAL_LOSS
    with pytest.raises(ValueError, match="unknown search metric"):
        metric_of_rows([make_row(search_metric="val_acc").to_record()])
