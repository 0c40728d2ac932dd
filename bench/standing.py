"""A method's leaderboard standing as the metrics and tags of its MLflow parent runs.

Above both the leaderboard and the record (it reads the rows and ranks them): the MLflow writers
get its :class:`ParentSummary` handed in, as :func:`bench.results.vocabulary.parent_finish` takes it.

The numbers are the leaderboard's own (:func:`bench.leaderboard.build_leaderboard` on the rows
written so far), so MLflow's compare view and ``sharpbench leaderboard`` rank methods alike: a
search-phase parent carries the selected config's validation metrics, a final-phase parent also
the mean, std and t-interval of the final seeds' test accuracy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bench import metrics as M
from bench.leaderboard import RANKED_BY_FINAL, BenchmarkBoard, Standing, build_leaderboard, render
from bench.results.parquet import read_rows
from bench.results.schema import Phase
from bench.results.vocabulary import (
    BEST_TEST_ACCURACY,
    BEST_VAL_ACCURACY,
    BEST_VAL_LOSS,
    FINAL_TEST_ACCURACY_CI_HIGH,
    FINAL_TEST_ACCURACY_CI_LOW,
    FINAL_TEST_ACCURACY_MEAN,
    FINAL_TEST_ACCURACY_STD,
    N_SEEDS,
    PASSES_PER_TRIAL,
    SEARCH_TRIALS,
    SEARCH_WALL_SECONDS,
    TAG_BEST_HPARAMS,
    TAG_BEST_RUN_ID,
)

#: The parent-run metric and tag names are the MLflow vocabulary's (bench.results.vocabulary).


@dataclass(frozen=True)
class ParentSummary:
    """What a parent run records at the end of its phase."""

    metrics: dict[str, float | None]
    tags: dict[str, str]
    standing: Standing
    #: The leaderboard's JSON of a board holding this method alone (``sharpbench leaderboard
    #: --format json``'s shape), logged as the parent's ``standing.json``.
    board_json: dict[str, Any]


def method_board(
    results_dir: str | Path, benchmark: str, regularizer: str, *, table: pa.Table | None = None
) -> BenchmarkBoard | None:
    """The leaderboard of ``regularizer`` alone on ``benchmark``, from the rows under
    ``results_dir`` (or ``table``, those rows read once by a caller that boards several
    methods); ``None`` when it has no rows. A standing's values (not its rank, nor its
    comparison with a baseline) depend on the method's own rows alone."""
    if table is None:
        table = read_rows(results_dir, benchmarks=[benchmark])
    mask = pc.and_(pc.equal(table["benchmark"], benchmark), pc.equal(table["regularizer"], regularizer))
    boards = build_leaderboard(table.filter(mask))
    return boards[0] if boards else None


def summarize(board: BenchmarkBoard, phase: Phase | str) -> ParentSummary:
    """Parent-run metrics (None: not available) and tags of the one method on ``board``
    (:func:`method_board`), for the parent of ``phase``.

    A search parent carries the search's numbers only, so it reads the same whether or not the
    final seeds have run (a resumed run ends its finished searches again); a final parent adds
    the final seeds' statistics. Raises ValueError for a board of several methods.
    """
    if len(board.standings) != 1:
        raise ValueError(f"expected a board of one method, got {[s.regularizer for s in board.standings]}")
    standing = board.standings[0]
    final = Phase(phase) is Phase.FINAL and standing.ranked_by == RANKED_BY_FINAL
    # The standing's flatness is the mean over the final runs once they exist, else the best
    # search trial's: a search parent ended again after the final phase keeps its own.
    flat = final or standing.ranked_by != RANKED_BY_FINAL
    values: dict[str, float | None] = {
        BEST_VAL_ACCURACY: standing.best_val_accuracy,
        BEST_VAL_LOSS: standing.best_val_loss,
        BEST_TEST_ACCURACY: standing.best_test_accuracy,
        FINAL_TEST_ACCURACY_MEAN: standing.test_accuracy if final else None,
        FINAL_TEST_ACCURACY_STD: standing.test_accuracy_std if final else None,
        FINAL_TEST_ACCURACY_CI_LOW: standing.test_accuracy_ci_low if final else None,
        FINAL_TEST_ACCURACY_CI_HIGH: standing.test_accuracy_ci_high if final else None,
        N_SEEDS: float(standing.n_seeds) if final else None,
        SEARCH_TRIALS: float(standing.trials_total),
        SEARCH_WALL_SECONDS: standing.search_wall_seconds,
        PASSES_PER_TRIAL: standing.mean_passes_per_trial,
        M.HESSIAN_TOP_EIGENVALUE: standing.hessian_top_eigenvalue if flat else None,
        M.HESSIAN_TRACE: standing.hessian_trace if flat else None,
        M.EPSILON_SHARPNESS: standing.epsilon_sharpness if flat else None,
        M.ADAPTIVE_SHARPNESS: standing.adaptive_sharpness if flat else None,
    }
    tags = {}
    if standing.best_run_id is not None:
        tags[TAG_BEST_RUN_ID] = standing.best_run_id
        best = {**standing.regularizer_hparams, **standing.tuned_training_hparams}
        tags[TAG_BEST_HPARAMS] = json.dumps(best, sort_keys=True)
    board_json = json.loads(render([board], "json"))[0]
    return ParentSummary(metrics=values, tags=tags, standing=standing, board_json=board_json)
