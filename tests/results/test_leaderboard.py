"""The leaderboard: best-by-validation selection, counts, final-phase ranking, renderers."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest
import scipy.stats

from bench.leaderboard import CSV_COLUMNS, FORMATS, BenchmarkBoard, Standing, build_leaderboard, legend, render, to_rich
from bench.results.parquet import ParquetSink, read_rows, rows_to_table
from bench.results.schema import SCHEMA, TrialRow
from tests.runner import sharpbench_command

from .conftest import make_row

C, S, F = "completed", "stopped", "failed"


def _search(
    regularizer: str, status: str, val: float | None, test: float | None, benchmark: str = "digits-mlp", **kw
) -> TrialRow:
    return make_row(
        benchmark=benchmark, regularizer=regularizer, status=status, val_accuracy=val, test_accuracy=test, **kw
    )


def _final(regularizer: str, test: float, seed: int, benchmark: str = "digits-mlp", status: str = C, **kw) -> TrialRow:
    return make_row(
        benchmark=benchmark, regularizer=regularizer, phase="final", status=status, test_accuracy=test, seed=seed, **kw
    )


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
        assert s.mean_passes_per_trial == pytest.approx(
            statistics.fmean(r.forward_passes + r.backward_passes for r in mine)
        )
        assert s.search_wall_seconds == pytest.approx(sum(r.wall_seconds for r in mine))
    assert (
        got["sam"].trials_total,
        got["sam"].trials_completed,
        got["sam"].trials_stopped,
        got["sam"].trials_failed,
    ) == (4, 2, 1, 1)


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
        _search(
            "sam",
            C,
            0.9,
            0.8,
            hessian_top_eigenvalue=50.0,
            hessian_trace=500.0,
            epsilon_sharpness=0.5,
            regularizer_hparams=cfg,
        ),
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


def test_eos_ratio_is_each_rows_lambda_max_over_its_optimizers_edge_of_stability() -> None:
    heavy = '{"learning_rate": 0.1, "momentum": 0.9, "nesterov": false}'  # edge 2·1.9/0.1 = 38
    nesterov = '{"learning_rate": 0.2, "momentum": 0.5, "nesterov": true}'  # edge 2·1.5/(0.2·2) = 7.5
    rows = [
        _search("sam", C, 0.9, 0.8, hessian_top_eigenvalue=19.0, training_hparams=heavy, adaptive_sharpness=0.3),
        _search("sam", C, 0.9, 0.8, hessian_top_eigenvalue=15.0, training_hparams=nesterov, benchmark="b2"),
        _search("sam", C, 0.9, 0.8, training_hparams=heavy, benchmark="b3"),
    ]
    boards = {board.benchmark: _by_method(board)["sam"] for board in build_leaderboard(_table(rows))}
    assert boards["digits-mlp"].eos_ratio == pytest.approx(0.5, rel=1e-12)
    assert boards["digits-mlp"].adaptive_sharpness == 0.3
    assert boards["b2"].eos_ratio == pytest.approx(2.0, rel=1e-12) and boards["b2"].adaptive_sharpness is None
    assert boards["b3"].eos_ratio is None  # no λ_max


def test_trace_stderr_is_that_of_the_mean_and_is_rendered_next_to_the_trace() -> None:
    cfg = '{"rho": 0.1}'
    rows = [
        _search("sam", C, 0.9, 0.8, hessian_trace=500.0, hessian_trace_stderr=9.0, regularizer_hparams=cfg),
        _final("sam", 0.8, 1, hessian_trace=100.0, hessian_trace_stderr=3.0, regularizer_hparams=cfg),
        _final("sam", 0.8, 2, hessian_trace=120.0, hessian_trace_stderr=4.0, regularizer_hparams=cfg),
        _search("erm", C, 0.9, 0.7, hessian_trace=80.0, hessian_trace_stderr=None),
    ]
    got = _by_method(build_leaderboard(_table(rows))[0])
    # Independent estimates: Var(mean) = Σ se_i² / k² = (9 + 16) / 4, so se = 2.5 (exact in binary).
    assert got["sam"].hessian_trace == pytest.approx(110.0) and got["sam"].hessian_trace_stderr == pytest.approx(2.5)
    assert got["erm"].hessian_trace == 80.0 and got["erm"].hessian_trace_stderr is None  # no error known
    boards = build_leaderboard(_table(rows))
    for fmt in ("table", "markdown"):
        text = render(boards, fmt, width=250, wide=True)
        assert "110 ± 2.5" in text and "80 " in text and "80 ±" not in text, text
    assert json.loads(render(boards, "json"))[0]["standings"][0]["hessian_trace_stderr"] == pytest.approx(2.5)
    assert "hessian_trace_stderr" in render(boards, "csv").splitlines()[0]


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
    rows += [
        _final("erm", t, i, regularizer_hparams=best["erm"].regularizer_hparams) for i, t in enumerate([0.85, 0.86])
    ]
    rows += [
        _search(
            "sam", C, 0.9, 0.9, benchmark="digits-cnn", hessian_top_eigenvalue=3.0, regularizer_hparams='{"a": "x|y"}'
        ),
        _search("erm", C, float("nan"), 0.9, benchmark="digits-cnn"),
    ]
    return build_leaderboard(_table(rows))


def test_render_json(boards: list[BenchmarkBoard]) -> None:
    parsed = json.loads(render(boards, "json"))
    assert [b["benchmark"] for b in parsed] == [b.benchmark for b in boards]
    for got, board in zip(parsed, boards, strict=True):
        assert [s["regularizer"] for s in got["standings"]] == [s.regularizer for s in board.standings]
        for s_got, s in zip(got["standings"], board.standings, strict=True):
            assert s_got == json.loads(json.dumps(dataclasses.asdict(s)))
    erm = [s for s in parsed[1]["standings"] if s["regularizer"] == "erm"][0]
    assert erm["ranked_by"] == "final" and erm["n_seeds"] == 2
    assert erm["test_accuracy"] == pytest.approx(0.855)


def test_render_csv(boards: list[BenchmarkBoard]) -> None:
    records = list(csv.DictReader(io.StringIO(render(boards, "csv"))))
    assert tuple(records[0]) == CSV_COLUMNS
    expected = [(b.benchmark, s) for b in boards for s in b.standings]
    assert len(records) == len(expected)
    for rec, (benchmark, s) in zip(records, expected, strict=True):
        assert rec["benchmark"] == benchmark and rec["regularizer"] == s.regularizer
        assert rec["rank"] == ("" if s.rank is None else str(s.rank))
        assert (float(rec["test_accuracy"]) if rec["test_accuracy"] else None) == s.test_accuracy
        assert json.loads(rec["regularizer_hparams"]) == s.regularizer_hparams
        assert int(rec["trials_total"]) == s.trials_total


def test_render_markdown(boards: list[BenchmarkBoard]) -> None:
    text = render(boards, "markdown")
    sections = text.split("## ")[1:]
    assert len(sections) == len(boards)
    for section, board in zip(sections, boards, strict=True):
        assert section.startswith(board.benchmark)
        table_lines = [line for line in section.splitlines() if line.startswith("|")]
        assert len(table_lines) == 2 + len(board.standings)  # header, separator, one per method
        n_cells = len(table_lines[0].replace("\\|", "").split("|"))
        assert all(len(line.replace("\\|", "").split("|")) == n_cells for line in table_lines)
        for line, s in zip(table_lines[2:], board.standings, strict=True):
            assert f"| {s.regularizer} |" in line
    assert "x\\|y" in text  # a pipe inside a cell is escaped
    assert "λ_max" in text  # flatness columns where measured
    # erm's finals 0.85, 0.86: mean 0.855, s = 0.01/√2, half-width t(0.975, 1)·s/√2 = 12.706·0.005
    half = scipy.stats.t.ppf(0.975, 1) * 0.005
    assert f"0.8550 ± 0.0071 [{0.855 - half:.4f}, {0.855 + half:.4f}] (n=2)" in text
    assert "0.8200 (n=1, no interval)" in text  # asam, ranked by its search trial
    for board in boards:  # the rule is stated under every table
        assert legend(board) in text


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


def test_table_without_a_width_cuts_nothing_and_pads_no_line() -> None:
    # A long chosen configuration: at a fixed width its cell wraps; at the natural width it is one line.
    long = {"perturbation_radius": 0.0456789, "adaptive_eta": 0.0123456, "penalty_weight_for_a_long_name": 0.000512345}
    rows = [_search("sam", C, 0.8, 0.79, regularizer_hparams=json.dumps(long, sort_keys=True))]
    boards = build_leaderboard(_table(rows))
    narrow = render(boards, "table", width=80, wide=True)  # a narrow terminal: cells wrap, nothing is cut
    assert "…" not in narrow and len(narrow.splitlines()) > len(render(boards, "table", wide=True).splitlines())
    text = render(boards, "table", wide=True)
    assert "…" not in text and all(f"{key}=" in text for key in long)
    lines = text.splitlines()
    assert all(line == line.rstrip() for line in lines)
    table_lines = [line for line in lines if line.startswith(("┃", "│", "┏", "└"))]
    assert len({len(line) for line in table_lines}) == 1  # one width for the whole table, the widest row's


def test_render_rejects_unknown_format(boards: list[BenchmarkBoard]) -> None:
    with pytest.raises(ValueError, match="unknown leaderboard format"):
        render(boards, "html")


# ------------------------------------------------------------------------------ selection rule


def _ab_rows(search_metric: str | None) -> tuple[TrialRow, TrialRow]:
    """The issue's case: A has the better val accuracy, B the better val loss."""
    a = _search("m", C, 0.90, 0.81, val_loss=0.60, search_metric=search_metric, regularizer_hparams='{"rho": 0.1}')
    b = _search("m", C, 0.89, 0.83, val_loss=0.30, search_metric=search_metric, regularizer_hparams='{"rho": 0.2}')
    return a, b


def test_val_loss_search_picks_b_everywhere() -> None:
    from bench import selection

    a, b = _ab_rows("val_loss")
    finals = [
        _final(
            "m",
            t,
            seed,
            selected_from_run_id=b.run_id,
            regularizer_hparams=b.regularizer_hparams,
            search_metric="val_loss",
        )
        for seed, t in [(1, 0.84), (2, 0.86), (3, 0.85)]
    ]
    rows = [a, b, *finals]
    # the search side: candidates built from the same rows choose B
    candidates = [selection.candidate_from_row(r.to_record()) for r in (a, b)]
    assert selection.best(candidates, "val_loss").run_id == b.run_id
    # the leaderboard: B's run id, B's numbers, B's config, B's finals
    (s,) = build_leaderboard(_table(rows))[0].standings
    assert s.search_metric == "val_loss"
    assert (s.best_run_id, s.best_val_accuracy, s.best_val_loss, s.best_test_accuracy) == (b.run_id, 0.89, 0.30, 0.83)
    assert s.final_selected_from_run_id == b.run_id
    assert s.regularizer_hparams == {"rho": 0.2}
    assert s.test_accuracy == pytest.approx(0.85, abs=1e-12) and s.n_seeds == 3 and s.seeds == (1, 2, 3)


def test_rows_without_search_metric_are_chosen_by_val_accuracy() -> None:
    a, b = _ab_rows(None)  # schema v1 rows
    (s,) = build_leaderboard(_table([a, b]))[0].standings
    assert s.search_metric == "val_accuracy" and s.best_run_id == a.run_id and s.regularizer_hparams == {"rho": 0.1}
    assert s.ranked_by == "search" and s.interval_note == "n=1, no interval" and s.test_accuracy_ci_low is None


def test_final_groups_follow_selected_from_run_id() -> None:
    a, b = _ab_rows("val_loss")  # order by val_loss: B (top-1), A (top-2)
    of_b = [
        _final("m", t, seed, selected_from_run_id=b.run_id, regularizer_hparams=b.regularizer_hparams)
        for seed, t in [(1, 0.84), (2, 0.86)]
    ]
    # top_k = 2: A's config re-run too, written later; it must not be the ranked group
    of_a = [
        _final("m", t, seed, selected_from_run_id=a.run_id, regularizer_hparams=a.regularizer_hparams)
        for seed, t in [(1, 0.95), (2, 0.97)]
    ]
    (s,) = build_leaderboard(_table([a, b, *of_b, *of_a]))[0].standings
    assert s.final_selected_from_run_id == b.run_id and s.test_accuracy == pytest.approx(0.85, abs=1e-12)
    (other,) = s.other_final_groups
    assert (other.selected_from_run_id, other.selection_rank, other.seeds, other.n) == (a.run_id, 2, (1, 2), 2)
    assert other.regularizer_hparams == {"rho": 0.1}
    assert other.test_accuracy == pytest.approx(0.96, abs=1e-12)
    # n=2: the t-interval 0.96 ± 12.7·0.01/√2·… reaches past 1, so it is cut at the accuracy's bound
    raw = scipy.stats.ttest_1samp([0.95, 0.97], 0.0).confidence_interval()
    assert raw.high > 1.0
    assert (other.test_accuracy_ci_low, other.test_accuracy_ci_high, other.test_accuracy_ci_cut) == (
        pytest.approx(raw.low),
        1.0,
        True,
    )
    # without finals of the top-1 config, the best-ranked config that has them is used
    (s,) = build_leaderboard(_table([a, b, *of_a]))[0].standings
    assert s.final_selected_from_run_id == a.run_id and s.best_run_id == b.run_id and s.other_final_groups == ()
    # rows before schema v2 (no selected_from_run_id) join the ranked trial with their config
    legacy = [_final("m", t, seed, regularizer_hparams=b.regularizer_hparams) for seed, t in [(1, 0.80), (2, 0.82)]]
    (s,) = build_leaderboard(_table([a, b, *legacy, *of_a]))[0].standings
    assert s.final_selected_from_run_id == b.run_id and s.test_accuracy == pytest.approx(0.81, abs=1e-12)


# ------------------------------------------------------------------------------ statistics


def _stats_board_rows() -> list[TrialRow]:
    """erm, sam (same seeds as erm: paired), asam (other seeds: Welch), wd (one seed), gnp (no finals)."""
    rows = [_search(m, C, 0.9, 0.9, regularizer_hparams="{}") for m in ("erm", "sam", "asam", "wd", "gnp")]
    finals = {
        "erm": {1: 0.900, 2: 0.910, 3: 0.905},
        "sam": {1: 0.930, 2: 0.935, 3: 0.925},
        "asam": {4: 0.920, 5: 0.940, 6: 0.890},
        "wd": {1: 0.800},
    }
    for method, by_seed in finals.items():
        rows += [_final(method, t, seed, regularizer_hparams="{}") for seed, t in by_seed.items()]
    rows[4] = _search("gnp", C, 0.9, 0.70, regularizer_hparams="{}")
    return rows


def test_statistics_against_scipy_on_a_hand_made_board() -> None:
    (board,) = build_leaderboard(_table(_stats_board_rows()))
    got = _by_method(board)
    assert board.baseline == "erm" and board.confidence == 0.95 and board.alpha == 0.05
    erm, sam, asam = [0.900, 0.910, 0.905], [0.930, 0.935, 0.925], [0.920, 0.940, 0.890]
    for name, values in (("erm", erm), ("sam", sam), ("asam", asam)):
        interval = scipy.stats.ttest_1samp(values, 0.0).confidence_interval()
        s = got[name]
        assert s.test_accuracy == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert s.test_accuracy_std == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert (s.test_accuracy_ci_low, s.test_accuracy_ci_high) == (
            pytest.approx(interval.low, abs=1e-12),
            pytest.approx(interval.high, abs=1e-12),
        )
    paired = scipy.stats.ttest_rel(sam, erm)
    welch = scipy.stats.ttest_ind(asam, erm, equal_var=False)
    assert got["sam"].vs_baseline_test == "paired" and got["sam"].vs_baseline_p == pytest.approx(
        paired.pvalue, abs=1e-12
    )
    assert got["asam"].vs_baseline_test == "welch" and got["asam"].vs_baseline_p == pytest.approx(
        welch.pvalue, abs=1e-12
    )
    assert got["sam"].vs_baseline_difference == pytest.approx(0.025, abs=1e-12)
    assert got["asam"].vs_baseline_difference == pytest.approx(
        statistics.fmean(asam) - statistics.fmean(erm), abs=1e-12
    )
    ci = paired.confidence_interval()
    assert (got["sam"].vs_baseline_ci_low, got["sam"].vs_baseline_ci_high) == (
        pytest.approx(ci.low, abs=1e-12),
        pytest.approx(ci.high, abs=1e-12),
    )
    # Holm over the two tests that ran (wd has one seed, gnp no finals): by hand
    p_sam, p_asam = paired.pvalue, welch.pvalue
    low, high = sorted([p_sam, p_asam])
    adjusted_low, adjusted_high = min(1, 2 * low), max(min(1, 2 * low), high)
    expected = {
        "sam": adjusted_low if p_sam <= p_asam else adjusted_high,
        "asam": adjusted_high if p_sam <= p_asam else adjusted_low,
    }
    for name in ("sam", "asam"):
        assert got[name].vs_baseline_p_holm == pytest.approx(expected[name], abs=1e-12)
        assert got[name].vs_baseline_significant == (expected[name] <= 0.05)
    assert got["sam"].vs_baseline_significant is True  # p ≈ 0.013 raw, ≈ 0.026 adjusted (asam p ≈ 0.51)
    assert got["asam"].vs_baseline_significant is False
    assert got["wd"].vs_baseline_p is None and "fewer than 2" in got["wd"].vs_baseline_note
    assert got["gnp"].vs_baseline_p is None and "no final seeds" in got["gnp"].vs_baseline_note
    assert got["gnp"].vs_baseline_difference == pytest.approx(0.70 - 0.905, abs=1e-12)
    assert got["erm"].vs_baseline_note == "baseline" and got["erm"].vs_baseline_difference is None
    # rank groups follow the tests: sam is better than erm (its own group, although asam's wide
    # interval overlaps sam's); asam is not distinguishable from erm and shares erm's group; wd and
    # gnp had no test and stay unranked, last, by mean
    assert got["asam"].test_accuracy_ci_high > got["sam"].test_accuracy_ci_low > got["erm"].test_accuracy_ci_high
    assert board.rank_rule == "tests"
    order = [(s.regularizer, s.rank, s.rank_group, s.tied, s.vs_baseline_verdict) for s in board.standings]
    assert order == [
        ("sam", 1, 1, False, "better"),
        ("asam", 2, 2, True, "not distinguishable"),
        ("erm", 2, 2, True, "baseline"),
        ("wd", None, None, False, "no test"),
        ("gnp", None, None, False, "no test"),
    ]


def test_baseline_choice_and_absence() -> None:
    rows = _stats_board_rows()
    (board,) = build_leaderboard(_table(rows), baseline="sam", alpha=0.01)
    got = _by_method(board)
    assert board.baseline == "sam" and got["sam"].vs_baseline_note == "baseline"
    assert got["erm"].vs_baseline_difference == pytest.approx(-0.025, abs=1e-12)
    assert got["erm"].vs_baseline_p == pytest.approx(
        scipy.stats.ttest_rel([0.900, 0.910, 0.905], [0.930, 0.935, 0.925]).pvalue, abs=1e-12
    )
    (board,) = build_leaderboard(_table([r for r in rows if r.regularizer != "erm"]))
    assert board.baseline is None and "no rows of baseline 'erm'" in board.baseline_note
    assert all(s.baseline is None and s.vs_baseline_p is None and s.vs_baseline_note is None for s in board.standings)
    assert board.standings[0].rank == 1  # ranks and intervals do not need a baseline
    assert board.baseline_note in render([board], "markdown")  # the table wraps its caption
    with pytest.raises(ValueError, match="alpha"):
        build_leaderboard(_table(rows), alpha=1.5)


def test_search_time_summed_elapsed_and_slot_hours() -> None:
    import datetime as dt

    t0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    rows = [
        # two trials in parallel from t0: ends at t0+100 (100 s) and t0+60 (60 s), then one from t0+100 to t0+130
        _search("erm", C, 0.9, 0.9, wall_seconds=100.0, timestamp=t0 + dt.timedelta(seconds=100), device="cpu"),
        _search("erm", S, 0.8, 0.8, wall_seconds=60.0, timestamp=t0 + dt.timedelta(seconds=60), device="cuda"),
        _search("erm", C, 0.7, 0.7, wall_seconds=30.0, timestamp=t0 + dt.timedelta(seconds=130), device="cuda:1"),
    ]
    (s,) = build_leaderboard(_table(rows))[0].standings
    assert s.search_wall_seconds == pytest.approx(190.0, abs=1e-9)
    assert s.search_elapsed_seconds == pytest.approx(130.0, abs=1e-6)  # timestamps are stored in µs
    assert s.search_cpu_slot_hours == pytest.approx(100.0 / 3600, abs=1e-12)
    assert s.search_gpu_slot_hours == pytest.approx(90.0 / 3600, abs=1e-12)
    text = render(build_leaderboard(_table(rows)), "markdown")
    assert "3m 10s / 2m 10s" in text and "0.0278 CPU + 0.025 GPU" in text
    # Interrupted for an hour after t0+130, resumed: a trial from t0+3730 to t0+3750 adds 20 s, not the hour.
    resumed = [
        *rows,
        _search("erm", C, 0.6, 0.6, wall_seconds=20.0, timestamp=t0 + dt.timedelta(seconds=3750), device="cpu"),
    ]
    assert build_leaderboard(_table(resumed))[0].standings[0].search_elapsed_seconds == pytest.approx(150.0, abs=1e-6)
    # a span inside another adds nothing; one overlapping the end adds only its part beyond it
    nested = [
        *rows,
        _search("erm", C, 0.6, 0.6, wall_seconds=10.0, timestamp=t0 + dt.timedelta(seconds=50), device="cpu"),
        _search("erm", C, 0.6, 0.6, wall_seconds=20.0, timestamp=t0 + dt.timedelta(seconds=140), device="cpu"),
    ]
    assert build_leaderboard(_table(nested))[0].standings[0].search_elapsed_seconds == pytest.approx(140.0, abs=1e-6)


def test_every_format_carries_the_statistics() -> None:
    boards = build_leaderboard(_table(_stats_board_rows()))
    new_fields = (
        "rank_group", "tied", "search_metric", "test_accuracy_ci_low", "test_accuracy_ci_high", "seeds", "baseline",
        "vs_baseline_difference", "vs_baseline_ci_low", "vs_baseline_ci_high", "vs_baseline_test", "vs_baseline_p",
        "vs_baseline_p_holm", "vs_baseline_significant", "search_elapsed_seconds", "search_cpu_slot_hours",
        "search_gpu_slot_hours", "other_final_groups",
    )  # fmt: skip
    # json: every field, the board's settings and its rule
    (parsed,) = json.loads(render(boards, "json"))
    assert (parsed["baseline"], parsed["confidence"], parsed["alpha"], parsed["rule"]) == (
        "erm",
        0.95,
        0.05,
        legend(boards[0]),
    )
    by_name = {s["regularizer"]: s for s in parsed["standings"]}
    for s in boards[0].standings:
        assert by_name[s.regularizer] == json.loads(json.dumps(dataclasses.asdict(s)))
        assert all(field in by_name[s.regularizer] for field in new_fields)
    assert by_name["asam"]["tied"] is True and by_name["sam"]["vs_baseline_test"] == "paired"
    assert parsed["rank_rule"] == "tests" and parsed["verdict"].startswith("Verdict vs erm")
    # csv: a column per field, values read back
    records = {r["regularizer"]: r for r in csv.DictReader(io.StringIO(render(boards, "csv")))}
    assert set(new_fields) <= set(records["sam"])
    sam = _by_method(boards[0])["sam"]
    assert float(records["sam"]["vs_baseline_p_holm"]) == sam.vs_baseline_p_holm
    assert float(records["sam"]["test_accuracy_ci_low"]) == sam.test_accuracy_ci_low
    assert (records["sam"]["rank_group"], records["sam"]["tied"], records["sam"]["vs_baseline_significant"]) == (
        "1",
        "False",
        "True",
    )
    assert records["sam"]["rank_rule"] == "tests" and records["sam"]["vs_baseline_verdict"] == "better"
    assert json.loads(records["sam"]["seeds"]) == [1, 2, 3] and records["erm"]["vs_baseline_note"] == "baseline"
    assert (records["sam"]["confidence"], records["sam"]["alpha"]) == ("0.95", "0.05")
    # markdown and the wide table: rank "2=", Δ with its interval, Holm p with its mark and test
    for fmt in ("markdown", "table"):
        text = render(boards, fmt, width=300, wide=True)
        assert "2=" in text and "Δ vs erm [95% CI]" in text and "p (Holm)" in text
        assert f"{sam.vs_baseline_p_holm:.3g}* paired" in text
        assert f"+0.0250 [{sam.vs_baseline_ci_low:+.4f}, {sam.vs_baseline_ci_high:+.4f}]" in text
        assert "0.8000 (n=1, no interval)" in text  # wd: one final seed


# ------------------------------------------------------------------ the CLI over several folders


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sharpbench_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_cli_ranks_the_union_of_several_folders(tmp_path: Path) -> None:
    here, there = tmp_path / "cluster-a", tmp_path / "cluster-b"
    rows_here = [_search("erm", C, 0.88, 0.84), _search("sam", C, 0.80, 0.70)]
    rows_there = [_search("asam", C, 0.86, 0.82), _search("sam", C, 0.85, 0.86)]
    # Run sam's first trial again on the other cluster, later and better: without deduplication
    # by run id, sam would count 3 trials and still pick the other trial as its best.
    rerun = dataclasses.replace(
        rows_here[1], val_accuracy=0.95, test_accuracy=0.91, timestamp=rows_here[1].timestamp + dt.timedelta(hours=1)
    )
    ParquetSink(here).write(rows_here)
    ParquetSink(there).write([*rows_there, rerun])
    expected = build_leaderboard(_table([rows_here[0], *rows_there, rerun]))

    done = _cli("leaderboard", str(here), str(there), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(render(expected, "json"))
    sam = _by_method(expected[0])["sam"]
    assert (
        sam.trials_total == 2 and sam.test_accuracy == 0.91
    )  # the expectation itself uses the rerun (a copied value, not computed)
    for fmt in ("csv", "markdown", "table"):
        done = _cli("leaderboard", str(here), str(there), "--format", fmt)
        assert done.returncode == 0 and "asam" in done.stdout and "erm" in done.stdout, done.stderr
    # piped, the table is the width-free rendering: as wide as its cells, nothing cut
    assert done.stdout == render(expected, "table", width=None)


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


def test_a_passes_budget_is_stated_per_method_and_in_the_legend() -> None:
    def budget(trials: int, epochs: int, passes: int) -> str:
        return json.dumps(
            {
                "kind": "passes",
                "scale": "trials",
                "trials": trials,
                "epochs": epochs,
                "passes_per_step": passes,
                "reference_passes_per_step": 2,
            }
        )

    rows = [
        _search("erm", C, 0.80, 0.79, budget=budget(6, 12, 2)),
        _search("sam", C, 0.82, 0.81, budget=budget(3, 12, 4)),
    ]
    (board,) = build_leaderboard(_table(rows))
    by = _by_method(board)
    assert by["sam"].budget["trials"] == 3 and by["erm"].budget["passes_per_step"] == 2
    text = render([board], "markdown")
    assert "· 12 ep, 4 passes/step" in text and "· 12 ep, 2 passes/step" in text
    assert "Budget: the same forward+backward passes per method" in text and "fewer trials" in text
    assert json.loads(render([board], "json"))[0]["standings"][0]["budget"]["kind"] == "passes"
    # the trials budget: one sentence, no per-row note
    plain = render(
        build_leaderboard(
            _table([_search("erm", C, 0.8, 0.79, budget=json.dumps({"kind": "trials", "scale": "trials"}))])
        ),
        "markdown",
    )
    assert "Budget: the same number of trials per method." in plain and "passes/step" not in plain


def test_a_board_without_tests_says_so_and_a_rounded_zero_difference_has_no_minus() -> None:
    # Search rows only: every comparison lacks final seeds, so no p-value exists to adjust.
    rows = [_search("erm", C, 0.80, 0.80000001), _search("sam", C, 0.81, 0.80)]
    (board,) = build_leaderboard(_table(rows))
    assert _by_method(board)["sam"].vs_baseline_difference == pytest.approx(-1e-8, abs=1e-12)
    text = render([board], "markdown")
    assert "no test ran on this board" in text and "Holm-adjusted over the 0 tests" not in text
    assert "| +0.0000 |" in text and "-0.0000" not in text
    # with tests, the legend counts them
    tested = render(build_leaderboard(_table(_stats_board_rows())), "markdown")
    assert "p Holm-adjusted over the 2 tests of this board, * = p ≤ 0.05." in tested


def test_more_search_trials_than_one_budget_say_the_searches_are_pooled() -> None:
    """Two runs of one config (or folders ranked as one) give a method more search trials than its
    budget: the board says so, in every format, and stays silent within the budget."""
    two = json.dumps({"kind": "trials", "scale": "trials", "trials": 2})
    within = [_search("erm", C, 0.80, 0.79, budget=two), _search("sam", C, 0.82, 0.81, budget=two)]
    (board,) = build_leaderboard(_table(within))
    assert "pooled" not in render([board], "table") and json.loads(render([board], "json"))[0]["pooled"] is None

    rows = [*within, _search("sam", C, 0.83, 0.80, budget=two), _search("sam", S, 0.5, 0.5, budget=two)]
    (board,) = build_leaderboard(_table(rows))
    line = "More search trials on record than one search's budget: sam 3 (budget 2)."
    assert line in render([board], "table") and line in render([board], "markdown")
    assert json.loads(render([board], "json"))[0]["pooled"].startswith(line)
