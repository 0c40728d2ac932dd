"""The suite board as text, JSON, CSV, Markdown and LaTeX: the same numbers in each, names as
text, and the CLI's --suite with its one-line refusal."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bench.leaderboard import build_leaderboard
from bench.leaderboard.suite import build_suite
from bench.leaderboard.suite_render import CSV_COLUMNS, render_suite
from bench.results.parquet import ParquetSink, rows_to_table
from tests.leaderboard.conftest import method_rows
from tests.leaderboard.test_suite_board import SUITE
from tests.runner import sharpbench

HOSTILE = r"a&b_\input{/etc/passwd}$x$%"


def _rows(per_benchmark):
    return [
        r
        for benchmark, methods in per_benchmark.items()
        for name, finals in methods.items()
        for r in method_rows(name, finals, benchmark)
    ]


def _suite(per_benchmark):
    table = rows_to_table(_rows(per_benchmark))
    return build_suite(build_leaderboard(table), table.to_pylist(), baseline="erm")


def test_every_format_carries_the_same_numbers():
    suite = _suite(SUITE)
    text = render_suite(suite, "table")
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["sam", "erm", "l1"]
    assert "Friedman test over the ranks" in text and "critical difference" in text
    record = json.loads(render_suite(suite, "json"))
    assert [m["regularizer"] for m in record["methods"]] == ["sam", "erm", "l1"]
    assert record["methods"][0]["iqm"]["value"] == pytest.approx(suite.methods[0].iqm.value, rel=1e-15)
    assert {(p["a"], p["b"]) for p in record["nemenyi_p"]} == set(suite.nemenyi_p)
    table = list(csv.DictReader(io.StringIO(render_suite(suite, "csv"))))
    assert tuple(table[0]) == CSV_COLUMNS and [r["regularizer"] for r in table] == ["sam", "erm", "l1"]
    assert table[1]["probability_of_improvement"] == ""  # the baseline has none
    assert float(table[2]["probability_of_improvement"]) == suite.methods[2].probability_of_improvement.value
    markdown = render_suite(suite, "markdown")
    assert markdown.startswith("## Suite") and markdown.count("\n| ") == 4
    with pytest.raises(ValueError, match="unknown suite format"):
        render_suite(suite, "html")


def test_a_hostile_method_name_is_text_in_latex_and_markdown():
    per = {b: {**methods, HOSTILE: {1: 0.5, 2: 0.55}} for b, methods in SUITE.items()}
    suite = _suite(per)
    latex = render_suite(suite, "latex")
    assert r"a\&b\_\textbackslash{}input\{/etc/passwd\}\$x\$\%" in latex
    assert r"\input{" not in latex
    assert "−" not in latex and "χ" not in latex  # symbols made LaTeX, not Unicode
    assert "a&b_\\input{/etc/passwd}$x$%" in render_suite(suite, "markdown")  # markdown cells take it as text


def test_the_cli_ranks_a_suite_and_refuses_a_single_benchmark_in_one_line(tmp_path, repo_root):
    folder = tmp_path / "results"
    ParquetSink(folder).write(_rows(SUITE))
    done = sharpbench("leaderboard", str(folder), "--suite", cwd=repo_root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].startswith("sam ")
    single = tmp_path / "single"
    ParquetSink(single).write(_rows({"a": SUITE["a"]}))
    refused = sharpbench("leaderboard", str(single), "--suite", "--format", "json", cwd=repo_root)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == "error: --suite needs at least 2 benchmarks; the folders hold 1: a"
    wide = sharpbench("leaderboard", str(folder), "--suite", "--wide", cwd=repo_root)
    assert wide.returncode == 2 and wide.stdout == "" and len(wide.stderr.strip().splitlines()) == 1
    assert "--wide widens the per-benchmark boards" in wide.stderr


def test_the_python_api_gives_the_suite_and_the_curves(tmp_path):
    import sharpbench
    from tests.report.results_folder import write_results

    folder = tmp_path / "results"
    ParquetSink(folder).write(_rows(SUITE))
    suite = sharpbench.suite([folder])
    assert [m.regularizer for m in suite.methods] == ["sam", "erm", "l1"] and suite.benchmarks == ("a", "b", "c")
    assert sharpbench.curves(folder).empty  # rows written without curves: none, and no error
    with_curves = write_results(tmp_path / "with-curves")
    frame = sharpbench.curves(with_curves)
    rows = sharpbench.rows(with_curves).set_index("run_id")
    assert frame.groupby("run_id")["epoch"].max().to_dict() == {
        run_id: n for run_id, n in rows["epochs_run"].items() if n > 0
    }
    with pytest.raises(sharpbench.BadInput, match="results folder not found"):
        sharpbench.curves(tmp_path / "nowhere")
    single = tmp_path / "single"
    ParquetSink(single).write(_rows({"a": SUITE["a"]}))
    with pytest.raises(sharpbench.BadInput, match="at least 2 benchmarks"):
        sharpbench.suite([single])
