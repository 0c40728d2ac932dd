"""The store benchmark's synthetic store is a store sharpbench ranks, and its DuckDB query computes
the per-method figures the board shows (so the timing compares like with like)."""

from __future__ import annotations

import pytest

from bench import api
from bench.benchmarks.store import BENCHMARKS, DUCKDB_QUERY, TEMPLATE, grow_store
from bench.results.parquet import dataset_dir, read_rows


def test_the_synthetic_store_and_the_duckdb_query_agree_with_the_board(tmp_path) -> None:
    duckdb = pytest.importorskip("duckdb")
    written = grow_store(tmp_path, 400)
    files = list(dataset_dir(tmp_path).rglob("*.parquet"))
    assert len(files) == written == read_rows(tmp_path).num_rows  # one file per row
    methods = {r["regularizer"] for r in read_rows(TEMPLATE).to_pylist()}
    assert written == BENCHMARKS * len(methods) * (400 // (BENCHMARKS * len(methods)))
    query = dict(
        ((b, m), (n, mean))
        for b, m, n, mean, _sd, _best in duckdb.sql(DUCKDB_QUERY.format(root=dataset_dir(tmp_path))).fetchall()
    )
    boards = api.boards([tmp_path])
    assert len(boards) == BENCHMARKS
    for board in boards:
        for standing in board.standings:
            n, mean = query[(board.benchmark, standing.regularizer)]
            assert standing.ranked_by == "final" and standing.n_seeds == n
            assert standing.test_accuracy == pytest.approx(mean, rel=1e-12)
