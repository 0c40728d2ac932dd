"""The committed reference suite (results/reference/suite_cpu): its rows are a finished run of the
shipped config, and its suite board is what those rows give."""

from __future__ import annotations

import json
import math
import re

import pytest

from bench.api import suite as suite_board
from bench.catalog import load_any
from bench.leaderboard.suite_render import render_suite
from bench.results.parquet import read_rows
from bench.run_record import config_hash, load_records
from bench.suite import planned_trials
from tests.curve_checks import assert_each_row_has_its_curve


@pytest.fixture(scope="module")
def reference(repo_root):
    return repo_root / "results" / "reference" / "suite_cpu"


@pytest.fixture(scope="module")
def shipped(repo_root):
    return load_any(repo_root / "configs" / "suite_cpu.yaml")


def _close(got, expected, where="board"):
    if isinstance(expected, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(expected), where
        for key in expected:
            _close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for index, (g, e) in enumerate(zip(got, expected, strict=True)):
            _close(g, e, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(got, str):
        # the same rows and seeds on another CPU: the same numbers up to float rounding
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {got} != {expected}"
    elif isinstance(expected, str) and isinstance(got, str) and any(c.isdigit() for c in expected):
        assert got == expected or _numbers(got) == pytest.approx(_numbers(expected), rel=1e-6), where
    else:
        assert got == expected, where


def _numbers(text):
    return [float(n) for n in re.findall(r"-?\d+\.?\d*(?:e-?\d+)?", text)]


def test_the_reference_is_a_finished_run_of_the_shipped_suite(reference, shipped):
    records = load_records(reference)
    assert sorted(records) == sorted(c.benchmark for c in shipped.benchmarks)
    rows = read_rows(reference).to_pylist()
    for config in shipped.benchmarks:
        # The shipped config, unchanged: compared as a resume compares, the recorded config under
        # today's schema (a key added since, at its default, changes no result).
        assert config_hash(records[config.benchmark].config) == config_hash(config)
        mine = [r for r in rows if r["benchmark"] == config.benchmark]
        assert len(mine) == planned_trials(config) and len({r["run_id"] for r in mine}) == len(mine)
    assert_each_row_has_its_curve(reference)


def test_the_committed_suite_board_is_what_its_rows_give(reference, shipped):
    names = [c.benchmark for c in shipped.benchmarks]
    board = suite_board([reference], benchmarks=names)
    expected = json.loads((reference / "suite.json").read_text())
    _close(json.loads(render_suite(board, "json")), expected)
