"""The Python door into sharpbench (re-exported as :mod:`sharpbench`): run a benchmark, read its
rows and its leaderboard as pandas DataFrames, without shelling out.

>>> import sharpbench                                                  # doctest: +SKIP
>>> outcome = sharpbench.run("configs/smoke.yaml", results="runs/smoke")  # doctest: +SKIP
>>> sharpbench.leaderboard("runs/smoke")[["rank", "regularizer", "test_accuracy"]]  # doctest: +SKIP

:func:`run` is the same :class:`~bench.session.Session` as ``sharpbench run``: same checks,
same lock, same resume (call it again after an interruption), same rows. Errors are exceptions,
never an exit: :class:`~bench.errors.BadInput` for input refused before anything started,
:class:`~bench.errors.RunStopped` for a run that stopped early and is saved. Call :func:`run`
from the main thread (SIGTERM is turned into an interrupt for the length of the run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bench.config import BenchmarkConfig, ConfigError
from bench.console import Output, Verbosity
from bench.errors import BadInput, unknown_name
from bench.leaderboard import DEFAULT_BASELINE, BenchmarkBoard, build_leaderboard, methods_present
from bench.leaderboard.suite import SuiteBoard
from bench.results.parquet import no_results_folder

if TYPE_CHECKING:
    from bench.session import RunOutcome

PathLike = str | Path


@dataclass(frozen=True)
class RunResult:
    """A finished run: where things are (:class:`~bench.session.RunOutcome`) and its rows."""

    outcome: RunOutcome
    rows: pd.DataFrame  # this benchmark's trial rows, as the Parquet dataset holds them

    @property
    def all_failed(self) -> str | None:
        return self.outcome.all_failed


def run(
    config: PathLike | BenchmarkConfig,
    *,
    results: PathLike = "results",
    address: str | None = None,
    tracking_uri: str | None = None,
    optuna_storage: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = True,
    restart: bool = False,
    retry_failed: bool = False,
) -> RunResult:
    """Tune every regularizer of ``config`` (a YAML path or a :class:`BenchmarkConfig`) under the
    same budget into ``results``, then return the outcome and this benchmark's rows.

    ``quiet`` (default) prints only the board and the commands to look further; ``quiet=False``
    prints the live progress of ``sharpbench run``. The other keywords are ``sharpbench run``'s
    options (see ``sharpbench run --help``)."""
    # Imported here: they bring torch and Ray, which reading rows and boards does not need
    # (about 3 s of a leaderboard's start-up).
    from bench.catalog import load_benchmark
    from bench.session import RunOptions, Session

    if isinstance(config, BenchmarkConfig):
        loaded, source = config, "the config object"
    else:
        try:
            loaded = load_benchmark(config)
        except ConfigError as error:
            raise BadInput(str(error)) from None
        source = repr(str(config))
    if not str(results).strip():
        raise BadInput("results is empty: name a folder")
    options = RunOptions(
        results=Path(results),
        address=address,
        tracking_uri=tracking_uri,
        optuna_storage=optuna_storage,
        num_cpus=num_cpus,
        verbosity=Verbosity.quiet if quiet else Verbosity.normal,
        restart=restart,
        retry_failed=retry_failed,
    )
    hint = f"sharpbench.run({source}, results={str(results)!r})"
    outcome = Session(loaded, options, resume_hint=hint).run()
    table = rows(outcome.results)
    return RunResult(outcome, table[table["benchmark"] == outcome.benchmark].reset_index(drop=True))


def rows(results: PathLike = "results") -> pd.DataFrame:
    """Every trial row of a results folder (one per trial, all benchmarks, the Parquet schema)."""
    from bench.results.parquet import read_rows

    folder = Path(results)
    if not folder.is_dir():
        raise BadInput(no_results_folder(folder))
    return read_rows(folder).to_pandas()


def curves(results: PathLike = "results") -> pd.DataFrame:
    """The learning curves of a results folder's recorded trials: one row per trial × epoch
    (:data:`bench.results.curves.CURVE_SCHEMA`); join them to :func:`rows` on ``run_id``."""
    from bench.results.curves import read_curves

    folder = Path(results)
    if not folder.is_dir():
        raise BadInput(no_results_folder(folder))
    return read_curves(folder).to_pandas()


def boards(
    folders: Sequence[PathLike],
    *,
    baseline: str | None = None,
    alpha: float = 0.05,
    split_configs: bool = False,
    tell: Callable[[str], None] | None = None,
    benchmarks: Sequence[str] | None = None,
) -> list[BenchmarkBoard]:
    """The ranked boards of one or more results folders (their rows merged, each run id once),
    of every benchmark or only of ``benchmarks``.

    ``tell`` receives the notes and warnings of a read-only command (a folder without rows, an
    unreadable file skipped); raises :class:`BadInput` for what makes a board impossible."""
    return _ranked(
        folders, baseline=baseline, alpha=alpha, split_configs=split_configs, tell=tell, benchmarks=benchmarks
    )[1]


def suite(
    folders: Sequence[PathLike],
    *,
    baseline: str | None = None,
    alpha: float = 0.05,
    split_configs: bool = False,
    tell: Callable[[str], None] | None = None,
    benchmarks: Sequence[str] | None = None,
) -> SuiteBoard:
    """The suite board over every benchmark of the folders, or over ``benchmarks``
    (:mod:`bench.leaderboard.suite`); raises :class:`BadInput` as :func:`boards` does, and for
    fewer than 2 benchmarks."""
    from bench.leaderboard.suite import build_suite
    from bench.results.curves import read_curves

    table, ranked = _ranked(
        folders, baseline=baseline, alpha=alpha, split_configs=split_configs, tell=tell, benchmarks=benchmarks
    )
    curves = read_curves(*folders, run_ids=table.column("run_id").to_pylist()).to_pylist()
    board = build_suite(ranked, table.to_pylist(), baseline=baseline or DEFAULT_BASELINE, alpha=alpha, curves=curves)
    if board is None:
        names = ", ".join(b.benchmark for b in ranked)
        raise BadInput(f"--suite needs at least 2 benchmarks; the folders hold {len(ranked)}: {names}")
    return board


def _ranked(
    folders: Sequence[PathLike],
    *,
    baseline: str | None,
    alpha: float,
    split_configs: bool,
    tell: Callable[[str], None] | None,
    benchmarks: Sequence[str] | None = None,
) -> tuple[pa.Table, list[BenchmarkBoard]]:
    from bench.merge import config_clashes, read_rows_by_config
    from bench.results.parquet import UnreadableFile, has_rows, no_rows

    say = tell or (lambda line: None)
    paths = list(dict.fromkeys(Path(folder) for folder in folders))  # a folder named twice counts once
    for folder in paths:
        if not folder.is_dir():
            raise BadInput(no_results_folder(folder))
    empty = [folder for folder in paths if not has_rows(folder)]
    if len(empty) == len(paths):
        raise BadInput(no_rows(*paths))
    if not 0.0 < alpha < 1.0:
        raise BadInput(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    for folder in empty:
        # Not an error (the others have rows), but a folder that adds nothing is worth a line.
        say(f"note: no results in {folder}; ranking the other folders")
    clashes = config_clashes(paths)
    if clashes and not split_configs:
        raise BadInput(clashes[0].message())
    problems: list[UnreadableFile] = []
    table = read_rows_by_config(paths, clashes, problems=problems)
    for problem in problems:  # a read-only command: skip and say so, never move data
        say(f"warning: {problem}")
    if table.num_rows == 0:
        raise BadInput(
            f"no readable results in {', '.join(map(str, paths))} ({len(problems)} unreadable file(s) skipped)"
        )
    if benchmarks:
        held = set(table.column("benchmark").to_pylist())
        absent = [name for name in benchmarks if name not in held]
        if absent:
            where = ", ".join(map(str, paths))
            raise BadInput(f"{unknown_name('benchmark', absent[0], sorted(held))} (no rows in {where})")
        table = table.filter(pc.is_in(table["benchmark"], value_set=pa.array(list(benchmarks), pa.string())))
    present = methods_present(table)
    if baseline is not None and baseline not in present:
        raise BadInput(
            f"--baseline {baseline!r} has no rows in {', '.join(map(str, paths))}; "
            f"methods present: {', '.join(present)}"
        )
    return table, build_leaderboard(table, baseline=baseline or DEFAULT_BASELINE, alpha=alpha)


def leaderboard(
    *results: PathLike, baseline: str | None = None, alpha: float = 0.05, split_configs: bool = False
) -> pd.DataFrame:
    """The leaderboard of one or more results folders (default ``results``) as a DataFrame: one
    row per (benchmark, method) in rank order, the columns of ``sharpbench leaderboard --format
    json``'s standings plus the benchmark, dataset and model."""
    output = Output.standard()
    ranked = boards(
        results or ("results",), baseline=baseline, alpha=alpha, split_configs=split_configs, tell=output.tell
    )
    records = [
        {"benchmark": board.benchmark, "dataset": board.dataset, "model": board.model, **standing.to_dict()}
        for board in ranked
        for standing in board.standings
    ]
    return pd.DataFrame.from_records(records)
