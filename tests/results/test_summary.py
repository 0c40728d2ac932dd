"""Parent-run summaries: a method's leaderboard standing as MLflow metrics, from Parquet rows read back."""

from __future__ import annotations

import statistics

import pytest
from scipy import stats

from bench.results.parquet import ParquetSink
from bench.results.schema import Phase
from bench.standing import method_board, summarize

from .conftest import make_row


@pytest.fixture
def results(tmp_path):
    """sam: two search trials (the second is best) and three final seeds of the best; erm: one search trial."""
    rows = [
        make_row(
            regularizer="sam",
            run_id="s/1",
            val_accuracy=0.80,
            val_loss=0.6,
            test_accuracy=0.70,
            hessian_top_eigenvalue=50.0,
        ),
        make_row(
            regularizer="sam",
            run_id="s/2",
            val_accuracy=0.90,
            val_loss=0.5,
            test_accuracy=0.75,
            hessian_top_eigenvalue=40.0,
        ),
        make_row(regularizer="erm", run_id="e/1", val_accuracy=0.95, val_loss=0.4, test_accuracy=0.90),
    ]
    finals = [0.81, 0.84, 0.86]
    rows += [
        make_row(
            regularizer="sam",
            run_id=f"f/{seed}",
            phase=Phase.FINAL.value,
            seed=seed,
            selected_from_run_id="s/2",
            test_accuracy=accuracy,
            hessian_top_eigenvalue=30.0 + seed,
        )
        for seed, accuracy in zip((1, 2, 3), finals, strict=True)
    ]
    ParquetSink(tmp_path).write(rows)
    return tmp_path, finals


def test_final_parent_carries_the_final_seeds_statistics(results):
    folder, finals = results
    board = method_board(folder, "digits-mlp", "sam")
    assert [s.regularizer for s in board.standings] == ["sam"]  # the method alone
    summary = summarize(board, Phase.FINAL)
    m = summary.metrics
    mean, sem = statistics.mean(finals), statistics.stdev(finals) / len(finals) ** 0.5
    low, high = stats.t.interval(0.95, len(finals) - 1, loc=mean, scale=sem)
    # float64 sums of three numbers and scipy's t quantile: agreement to ~1e-12 relative
    assert m["final_test_accuracy_mean"] == pytest.approx(mean, rel=1e-12)
    assert m["final_test_accuracy_std"] == pytest.approx(statistics.stdev(finals), rel=1e-12)
    assert (m["final_test_accuracy_ci_low"], m["final_test_accuracy_ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert m["n_seeds"] == 3 and m["search_trials"] == 2
    assert (m["best_val_accuracy"], m["best_val_loss"], m["best_test_accuracy"]) == (0.90, 0.5, 0.75)  # s/2, copied
    assert m["hessian_top_eigenvalue"] == pytest.approx(statistics.mean([31.0, 32.0, 33.0]), rel=1e-12)
    assert summary.tags["sharpbench.best_run_id"] == "s/2"
    assert summary.board_json["standings"][0]["regularizer"] == "sam"


def test_search_parent_carries_search_numbers_only(results):
    """Even when the final rows exist (a resumed run ends its finished search again)."""
    folder, _ = results
    m = summarize(method_board(folder, "digits-mlp", "sam"), Phase.SEARCH).metrics
    assert m["best_val_accuracy"] == 0.90 and m["search_trials"] == 2
    for key in ("final_test_accuracy_mean", "final_test_accuracy_ci_low", "n_seeds", "hessian_top_eigenvalue"):
        assert m[key] is None, key
    erm = summarize(method_board(folder, "digits-mlp", "erm"), Phase.SEARCH).metrics
    assert erm["best_test_accuracy"] == 0.90 and erm["final_test_accuracy_mean"] is None


def test_no_rows_no_board(tmp_path):
    assert method_board(tmp_path, "digits-mlp", "sam") is None


def test_a_board_from_rows_read_once_is_the_board_from_the_folder(results, tmp_path_factory):
    """The sink reads the rows once for every parent it ends: each method's board from that one
    table is the board read from the folder (another folder's path proves the table is used)."""
    from bench.results.parquet import read_rows

    folder, _ = results
    table = read_rows(folder)
    elsewhere = tmp_path_factory.mktemp("empty")
    for method in ("sam", "erm"):
        once = method_board(elsewhere, "digits-mlp", method, table=table)
        assert once == method_board(folder, "digits-mlp", method)
        assert summarize(once, Phase.SEARCH) == summarize(method_board(folder, "digits-mlp", method), Phase.SEARCH)
