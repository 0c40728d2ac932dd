"""Rows for boards built by hand: a search trial and final seeds per method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.leaderboard import BenchmarkBoard, Standing, build_leaderboard
from bench.results.parquet import rows_to_table
from bench.results.schema import TrialRow
from tests.results.conftest import make_row


def method_rows(name: str, finals: Mapping[int, float], benchmark: str = "bench") -> list[TrialRow]:
    """One completed search trial of ``name`` and its final runs, test accuracy by seed."""
    search = make_row(benchmark=benchmark, regularizer=name, regularizer_hparams="{}", val_accuracy=0.9)
    return [
        search,
        *(
            make_row(
                benchmark=benchmark,
                regularizer=name,
                phase="final",
                seed=seed,
                test_accuracy=value,
                regularizer_hparams="{}",
                selected_from_run_id=search.run_id,
            )
            for seed, value in finals.items()
        ),
    ]


def board_of(methods: Mapping[str, Mapping[int, float]], **kw) -> BenchmarkBoard:
    rows: Sequence[TrialRow] = [r for name, finals in methods.items() for r in method_rows(name, finals)]
    (board,) = build_leaderboard(rows_to_table(rows), **kw)
    return board


def by_method(board: BenchmarkBoard) -> dict[str, Standing]:
    return {s.regularizer: s for s in board.standings}
