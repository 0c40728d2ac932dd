"""The leaderboard: best-by-validation selection, counts, final-phase ranking, renderers."""

from __future__ import annotations

import csv
import datetime as dt
import dataclasses
import io
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from bench.leaderboard import CSV_COLUMNS, FORMATS, BenchmarkBoard, Standing, build_leaderboard, render, to_rich
from bench.results.parquet import ParquetSink, read_rows, rows_to_table
from bench.results.schema import SCHEMA, TrialRow

from .conftest import make_row

C, S, F = "completed", "stopped", "failed"


def _search(regularizer: str, status: str, val: float | None, test: float | None, benchmark: str = "digits-mlp", **kw) -> TrialRow:
    return make_row(benchmark=benchmark, regularizer=regularizer, status=status, val_accuracy=val, test_accuracy=test, **kw)


def _final(regularizer: str, test: float, seed: int, benchmark: str = "digits-mlp", status: str = C, **kw) -> TrialRow:
    return make_row(benchmark=benchmark, regularizer=regularizer, phase="final", status=status, test_accuracy=test, seed=seed, **kw)


def _search_rows() -> list[TrialRow]:
    return [
        # sam: the best-val trial (0.90) has a LOWER test accuracy than another completed trial,
        # and a stopped trial with even better numbers must not be picked.
        _search("sam", C, 0.90, 0.80, regularizer_hparams='{"rho": 0.05}'),
        _search("sam", C, 0.85, 0.88, regularizer_hparams='{"rho": 0.2}'),
        _search("sam", S, 0.95, 0.95, regularizer_hparams='{"rho": 0.5}'),
        _search("sam", F, None, None, regularizer_hparams='{"rho": 2.0}', error="diverged"),
        # erm: plain case
        _search("erm", C, 0.88, 0.84, regularizer_hparams="{}"),
        _search("erm", C, 0.87, 0.83, regularizer_hparams="{}"),
        _search("erm", S, 0.60, 0.60, regularizer_hparams="{}"),
        # asam: a tie on val accuracy is broken by the lower val loss
        _search("asam", C, 0.86, 0.70, val_loss=0.40, regularizer_hparams='{"rho": 1.0}'),
        _search("asam", C, 0.86, 0.82, val_loss=0.30, regularizer_hparams='{"rho": 0.5}'),
        # gnp: nothing completed: counted, never ranked
        _search("gnp", F, None, None),
        _search("gnp", S, 0.7, 0.7),
    ]


def _table(rows: Sequence[TrialRow]) -> pa.Table:
    return rows_to_table(rows)


def _expected_best(rows: Sequence[TrialRow]) -> dict[str, TrialRow]:
    """Best completed search trial per method, by val accuracy then lower val loss."""
    best: dict[str, TrialRow] = {}
    for r in rows:
        if r.phase == "search" and r.status == C and r.val_accuracy is not None:
            cur = best.get(r.regularizer)
            if cur is None or (r.val_accuracy, -r.val_loss) > (cur.val_accuracy, -cur.val_loss):
                best[r.regularizer] = r
    return best


def _only(boards: list[BenchmarkBoard], benchmark: str) -> BenchmarkBoard:
    (board,) = [b for b in boards if b.benchmark == benchmark]
    return board


def _by_method(board: BenchmarkBoard) -> dict[str, Standing]:
    return {s.regularizer: s for s in board.standings}


def test_best_by_validation_and_ranking_by_test() -> None:
    rows = _search_rows()
    (board,) = build_leaderboard(_table(rows))
    best = _expected_best(rows)
    expected_order = sorted(best, key=lambda m: -best[m].test_accuracy)
    assert [s.regularizer for s in board.standings] == [*expected_order, "gnp"]
    assert [s.rank for s in board.standings] == [1, 2, 3, None]

    got = _by_method(board)
    for method, row in best.items():
        s = got[method]
        assert s.best_run_id == row.run_id
        assert s.test_accuracy == s.best_test_accuracy == row.test_accuracy
        assert s.best_val_accuracy == row.val_accuracy
        assert s.regularizer_hparams == json.loads(row.regularizer_hparams)
        assert s.training_hparams == json.loads(row.training_hparams)
        assert s.ranked_by == "search" and s.n_seeds == 0 and s.test_accuracy_std is None
    # the explicit cases
    assert got["sam"].test_accuracy == 0.80 and got["sam"].regularizer_hparams == {"rho": 0.05}
    assert got["asam"].test_accuracy == 0.82
    assert got["gnp"].best_run_id is None and got["gnp"].test_accuracy is None and got["gnp"].ranked_by == "none"


def test_counts_passes_and_wall_time() -> None:
    rows = _search_rows()
    got = _by_method(build_leaderboard(_table(rows))[0])
    for method, s in got.items():
        mine = [r for r in rows if r.regularizer == method]
        assert s.trials_total == len(mine)
        assert (s.trials_completed, s.trials_stopped, s.trials_failed) == tuple(
            sum(r.status == status for r in mine) for status in (C, S, F)
        )
        assert s.mean_forward_passes == pytest.approx(statistics.fmean(r.forward_passes for r in mine))
        assert s.mean_backward_passes == pytest.approx(statistics.fmean(r.backward_passes for r in mine))
        assert s.mean_passes_per_trial == pytest.approx(statistics.fmean(r.forward_passes + r.backward_passes for r in mine))
        assert s.search_wall_seconds == pytest.approx(sum(r.wall_seconds for r in mine))
    assert (got["sam"].trials_total, got["sam"].trials_completed, got["sam"].trials_stopped, got["sam"].trials_failed) == (4, 2, 1, 1)


def test_final_phase_rows_rank_by_mean_over_seeds() -> None:
    rows = _search_rows()
    best = _expected_best(rows)
    sam_config = best["sam"].regularizer_hparams
    finals = [_final("sam", t, seed, regularizer_hparams=sam_config) for seed, t in enumerate([0.90, 0.86, 0.88])]
    extra = [
        _final("sam", 0.10, 9, regularizer_hparams=sam_config, status=F),  # failed seed: ignored
        # a stale final run of another config, written later: ignored, the best config's group wins
        _final("sam", 0.20, 5, regularizer_hparams='{"rho": 9.9}'),
    ]
    board = build_leaderboard(_table(rows + finals + extra))[0]
    s = _by_method(board)["sam"]
    tests = [r.test_accuracy for r in finals]
    assert s.ranked_by == "final" and s.n_seeds == len(finals)
    assert s.test_accuracy == pytest.approx(statistics.fmean(tests))
    assert s.test_accuracy_std == pytest.approx(statistics.stdev(tests))
    assert s.best_test_accuracy == best["sam"].test_accuracy  # the search's best-val trial still reported
    assert s.trials_total == 4  # final runs are not search trials

    # ranking value per method: final mean where present, best-val trial's test acc otherwise
    value = {m: r.test_accuracy for m, r in best.items()} | {"sam": statistics.fmean(tests)}
    assert [x.regularizer for x in board.standings if x.rank is not None] == sorted(value, key=lambda m: -value[m])
    assert board.standings[0].regularizer == "sam" and board.standings[0].rank == 1


def test_single_final_seed_has_no_std() -> None:
    rows = [_search("erm", C, 0.8, 0.7), _final("erm", 0.75, 1)]
    s = build_leaderboard(_table(rows))[0].standings[0]
    assert (s.ranked_by, s.test_accuracy, s.test_accuracy_std, s.n_seeds) == ("final", 0.75, None, 1)


def test_ties_share_a_rank_and_benchmarks_are_separate() -> None:
    rows = [
        _search("a", C, 0.8, 0.7, benchmark="b1"),
        _search("b", C, 0.8, 0.7, benchmark="b1"),
        _search("c", C, 0.8, 0.6, benchmark="b1"),
        _search("a", C, 0.8, 0.5, benchmark="b2"),
    ]
    boards = build_leaderboard(_table(rows))
    assert [b.benchmark for b in boards] == ["b1", "b2"]
    assert [(s.regularizer, s.rank) for s in boards[0].standings] == [("a", 1), ("b", 1), ("c", 3)]
    assert [(s.regularizer, s.test_accuracy) for s in boards[1].standings] == [("a", 0.5)]


def test_flatness_is_the_mean_over_the_chosen_rows() -> None:
    cfg = '{"rho": 0.1}'
    rows = [
        _search("sam", C, 0.9, 0.8, hessian_top_eigenvalue=50.0, hessian_trace=500.0, epsilon_sharpness=0.5, regularizer_hparams=cfg),
        _search("sam", C, 0.7, 0.9, hessian_top_eigenvalue=1.0, hessian_trace=1.0, epsilon_sharpness=0.01),
        _search("erm", C, 0.9, 0.8, hessian_top_eigenvalue=70.0),
        _final("sam", 0.8, 1, hessian_top_eigenvalue=10.0, hessian_trace=100.0, regularizer_hparams=cfg),
        _final("sam", 0.8, 2, hessian_top_eigenvalue=20.0, hessian_trace=None, regularizer_hparams=cfg),
    ]
    board = build_leaderboard(_table(rows))[0]
    got = _by_method(board)
    assert board.has_flatness
    assert got["sam"].hessian_top_eigenvalue == pytest.approx(15.0)  # the final runs, not the search
    assert got["sam"].hessian_trace == pytest.approx(100.0)  # nulls ignored
    assert got["sam"].epsilon_sharpness is None
    assert got["erm"].hessian_top_eigenvalue == 70.0 and got["erm"].hessian_trace is None
    plain = build_leaderboard(_table([_search("erm", C, 0.9, 0.8)]))[0]
    assert not plain.has_flatness


def test_empty_table_and_missing_columns() -> None:
    assert build_leaderboard(SCHEMA.empty_table()) == []
    with pytest.raises(ValueError, match="lacks columns"):
        build_leaderboard(SCHEMA.empty_table().drop_columns(["val_accuracy"]))
    for fmt in FORMATS:
        assert isinstance(render([], fmt), str)


def test_from_parquet_dataset(tmp_path: Path) -> None:
    rows = _search_rows() + [_search("sam", C, 0.5, 0.5, benchmark="other")]
    sink = ParquetSink(tmp_path)
    for row in rows:
        sink.write([row])
    boards = build_leaderboard(read_rows(tmp_path))
    assert boards == build_leaderboard(_table(rows))
    assert [b.benchmark for b in boards] == ["digits-mlp", "other"]


# ------------------------------------------------------------------------------ renderers


@pytest.fixture
def boards() -> list[BenchmarkBoard]:
    rows = _search_rows()
    best = _expected_best(rows)
    rows += [_final("erm", t, i, regularizer_hparams=best["erm"].regularizer_hparams) for i, t in enumerate([0.85, 0.86])]
    rows += [
        _search("sam", C, 0.9, 0.9, benchmark="digits-cnn", hessian_top_eigenvalue=3.0, regularizer_hparams='{"a": "x|y"}'),
        _search("erm", C, float("nan"), 0.9, benchmark="digits-cnn"),
    ]
    return build_leaderboard(_table(rows))


def test_render_json(boards: list[BenchmarkBoard]) -> None:
    parsed = json.loads(render(boards, "json"))
    assert [b["benchmark"] for b in parsed] == [b.benchmark for b in boards]
    for got, board in zip(parsed, boards):
        assert [s["regularizer"] for s in got["standings"]] == [s.regularizer for s in board.standings]
        for s_got, s in zip(got["standings"], board.standings):
            assert s_got == json.loads(json.dumps(dataclasses.asdict(s)))
    erm = [s for s in parsed[1]["standings"] if s["regularizer"] == "erm"][0]
    assert erm["ranked_by"] == "final" and erm["n_seeds"] == 2
    assert erm["test_accuracy"] == pytest.approx(0.855)


def test_render_csv(boards: list[BenchmarkBoard]) -> None:
    records = list(csv.DictReader(io.StringIO(render(boards, "csv"))))
    assert tuple(records[0]) == CSV_COLUMNS
    expected = [(b.benchmark, s) for b in boards for s in b.standings]
    assert len(records) == len(expected)
    for rec, (benchmark, s) in zip(records, expected):
        assert rec["benchmark"] == benchmark and rec["regularizer"] == s.regularizer
        assert rec["rank"] == ("" if s.rank is None else str(s.rank))
        assert (float(rec["test_accuracy"]) if rec["test_accuracy"] else None) == s.test_accuracy
        assert json.loads(rec["regularizer_hparams"]) == s.regularizer_hparams
        assert int(rec["trials_total"]) == s.trials_total


def test_render_markdown(boards: list[BenchmarkBoard]) -> None:
    text = render(boards, "markdown")
    sections = text.split("## ")[1:]
    assert len(sections) == len(boards)
    for section, board in zip(sections, boards):
        assert section.startswith(board.benchmark)
        table_lines = [line for line in section.splitlines() if line.startswith("|")]
        assert len(table_lines) == 2 + len(board.standings)  # header, separator, one per method
        n_cells = len(table_lines[0].replace("\\|", "").split("|"))
        assert all(len(line.replace("\\|", "").split("|")) == n_cells for line in table_lines)
        for line, s in zip(table_lines[2:], board.standings):
            assert f"| {s.regularizer} |" in line
    assert "x\\|y" in text  # a pipe inside a cell is escaped
    assert "λ_max" in text  # flatness columns where measured
    assert "0.8550 ± 0.0071 (n=2)" in text


def test_render_table(boards: list[BenchmarkBoard]) -> None:
    text = render(boards, "table", width=200)
    for board in boards:
        assert board.benchmark in text
        for s in board.standings:
            assert s.regularizer in text
    assert "\x1b[" not in text  # plain text
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    console.print(to_rich(boards))
    assert "digits-mlp" in console.file.getvalue()


def test_render_rejects_unknown_format(boards: list[BenchmarkBoard]) -> None:
    with pytest.raises(ValueError, match="unknown leaderboard format"):
        render(boards, "html")


# ------------------------------------------------------------------ the CLI over several folders


def _cli(*args: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_cli_ranks_the_union_of_several_folders(tmp_path: Path) -> None:
    here, there = tmp_path / "cluster-a", tmp_path / "cluster-b"
    rows_here = [_search("erm", C, 0.88, 0.84), _search("sam", C, 0.80, 0.70)]
    rows_there = [_search("asam", C, 0.86, 0.82), _search("sam", C, 0.85, 0.86)]
    # Run sam's first trial again on the other cluster, later and better: without deduplication
    # by run id, sam would count 3 trials and still pick the other trial as its best.
    rerun = dataclasses.replace(rows_here[1], val_accuracy=0.95, test_accuracy=0.91, timestamp=rows_here[1].timestamp + dt.timedelta(hours=1))
    ParquetSink(here).write(rows_here)
    ParquetSink(there).write([*rows_there, rerun])
    expected = build_leaderboard(_table([rows_here[0], *rows_there, rerun]))

    done = _cli("leaderboard", str(here), str(there), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(render(expected, "json"))
    sam = _by_method(expected[0])["sam"]
    assert sam.trials_total == 2 and sam.test_accuracy == 0.91  # the expectation itself uses the rerun (a copied value, not computed)
    for fmt in ("csv", "markdown", "table"):
        done = _cli("leaderboard", str(here), str(there), "--format", fmt)
        assert done.returncode == 0 and "asam" in done.stdout and "erm" in done.stdout, done.stderr


def test_cli_several_folders_bad_input(tmp_path: Path) -> None:
    full, empty = tmp_path / "full", tmp_path / "empty"
    ParquetSink(full).write([_search("erm", C, 0.88, 0.84)])
    empty.mkdir()

    done = _cli("leaderboard", str(full), str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "results folder not found" in done.stderr and "missing" in done.stderr

    done = _cli("leaderboard", str(empty), str(empty))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no results" in done.stderr, done.stderr

    done = _cli("leaderboard", str(full), str(empty), "--format", "json")  # one empty folder: said, not fatal
    assert done.returncode == 0 and f"no results in {empty}" in done.stderr
    assert [s["regularizer"] for s in json.loads(done.stdout)[0]["standings"]] == ["erm"]
