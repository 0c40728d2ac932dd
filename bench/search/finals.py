"""Which final runs a method still needs: its top-k search configs × the final seeds, minus
those recorded. Read from the Parquet record, with the one selection rule (:mod:`bench.selection`),
so the search, the final phase and the leaderboard always name the same configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import selection
from bench.config import BenchmarkConfig
from bench.plan import MethodPlan, SelectedConfig
from bench.results.parquet import read_rows
from bench.results.schema import Phase


@dataclass(frozen=True)
class FinalRun:
    """One final run: a selected search config trained with one seed."""

    selected: SelectedConfig
    seed: int


def select_for_final(plan: MethodPlan, rows: list[dict[str, Any]], metric: str, k: int) -> list[SelectedConfig]:
    """The top-``k`` search rows of ``plan``'s method (``rows``: Parquet rows of any methods)."""
    mine = [
        row
        for row in rows
        if row["benchmark"] == plan.benchmark
        and row["regularizer"] == plan.regularizer
        and row["phase"] == Phase.SEARCH.value
    ]
    by_id = {row["run_id"]: row for row in mine}
    chosen = selection.top_k([selection.candidate_from_row(row) for row in mine], k, metric)
    return [SelectedConfig.from_row(plan, by_id[candidate.run_id]) for candidate in chosen]


def planned_finals(plan: MethodPlan, rows: list[dict[str, Any]], config: BenchmarkConfig) -> list[FinalRun]:
    """Every final run the method's recorded search asks for, recorded or not."""
    selected = select_for_final(plan, rows, config.search.metric, config.final.top_k)
    return [FinalRun(choice, seed) for choice in selected for seed in config.final.seeds]


def recorded_finals(plan: MethodPlan, rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(selected search run id, seed) of the method's final rows already recorded."""
    return {
        (row["selected_from_run_id"], int(row["seed"]))
        for row in rows
        if row["benchmark"] == plan.benchmark
        and row["regularizer"] == plan.regularizer
        and row["phase"] == Phase.FINAL.value
    }


def missing_finals(plan: MethodPlan, rows: list[dict[str, Any]], config: BenchmarkConfig) -> list[FinalRun]:
    """The planned final runs with no row yet."""
    done = recorded_finals(plan, rows)
    return [run for run in planned_finals(plan, rows, config) if (run.selected.run_id, run.seed) not in done]


def search_rows(plan: MethodPlan, rows: list[dict[str, Any]]) -> int:
    """How many search trials of the method are recorded (their rows' run ids carry its search name)."""
    prefix = f"{plan.search_name(Phase.SEARCH.value)}/"
    return sum(str(row["run_id"]).startswith(prefix) for row in rows)


@dataclass(frozen=True)
class RecordedTrial:
    """How a trial ended, as its Parquet row says: the durable record a resumed run trusts over
    Tune's last saved state (which may lag the rows by up to its save period)."""

    method: str
    phase: str
    status: str  # bench.results.schema.TrialStatus value
    epochs_run: int
    selected_run_id: str | None  # final rows: the search row they re-run
    seed: int
    #: bench.results.schema.FailureClass value of a failed row (None otherwise, and in old rows).
    failure_class: str | None = None


def recorded_trials(benchmark: str, rows: list[dict[str, Any]]) -> dict[str, RecordedTrial]:
    """The rows of ``benchmark`` by Tune trial id (the last part of a row's run id)."""
    return {
        str(row["run_id"]).rsplit("/", 1)[-1]: RecordedTrial(
            row["regularizer"],
            row["phase"],
            row["status"],
            int(row["epochs_run"]),
            row["selected_from_run_id"],
            int(row["seed"]),
            row.get("failure_class"),
        )
        for row in rows
        if row["benchmark"] == benchmark
    }


def results_rows(results_dir: Path, benchmark: str) -> list[dict[str, Any]]:
    """Every recorded row of ``benchmark`` in the results folder, as dicts (its folder alone is read)."""
    return read_rows(results_dir, benchmarks=[benchmark]).to_pylist()
