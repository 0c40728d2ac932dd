"""The leaderboard: per benchmark, one standing per regularizer, ranked by test accuracy.

Input is the table of :func:`bench.results.parquet.read_rows` (one row per trial, already
deduplicated by run_id). For each (benchmark, regularizer):

* **Search trials** are the rows with phase ``search``. All of them are counted (total /
  completed / stopped / failed) and make up the search cost: mean forward and backward passes per
  trial and the summed wall time.
* **Best config**: among *completed* search trials with a validation accuracy, the one with the
  highest validation accuracy (ties: lower validation loss, then run_id). Stopped trials were cut
  short by ASHA, so their numbers come from fewer epochs: they never compete for "best". The test
  accuracy reported is that trial's, never the best test accuracy of the search (that would be
  selection on the test set).
* **Final runs** are the completed rows with phase ``final`` (the best config re-run with other
  training seeds). When a method has them, it is reported and ranked by their mean ± sample
  standard deviation (ddof=1; no std for one seed) of test accuracy. If final rows of more than
  one config exist, the group whose ``regularizer_hparams`` equal the search's best config is
  used, otherwise the most recently written group.
* **Rank**: by that test accuracy (final mean where present, best-val trial's otherwise; the
  ``ranked_by`` field says which), descending; equal values share a rank (1, 2, 2, 4); a method
  without any test accuracy has no rank and is listed last.
* **Flatness** columns (Hessian top eigenvalue, trace, epsilon-sharpness) are the means over the
  chosen rows (the final runs, or the best trial), None when not measured. The trace comes with
  the standard error of that mean from the rows' own Hutchinson errors, √(Σ se_i²)/k (the
  estimates are independent), None when a row lacks one.

>>> from bench.results.schema import SCHEMA
>>> build_leaderboard(SCHEMA.empty_table())
[]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pyarrow as pa
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from bench import metrics as M
from bench.results.schema import Phase, TrialStatus

Format = Literal["table", "json", "csv", "markdown"]
#: The formats :func:`render` accepts.
FORMATS: tuple[str, ...] = get_args(Format)

#: Flatness columns averaged over the chosen rows.
FLATNESS_COLUMNS = (M.HESSIAN_TOP_EIGENVALUE, M.HESSIAN_TRACE, M.EPSILON_SHARPNESS)

RANKED_BY_FINAL = "final"
RANKED_BY_SEARCH = "search"
RANKED_BY_NONE = "none"

_NEEDED_COLUMNS = (
    "run_id",
    "benchmark",
    "regularizer",
    "phase",
    "status",
    "dataset",
    "model",
    "regularizer_hparams",
    "training_hparams",
    M.VAL_ACCURACY,
    M.VAL_LOSS,
    M.TEST_ACCURACY,
    M.FORWARD_PASSES,
    M.BACKWARD_PASSES,
    M.WALL_SECONDS,
    *FLATNESS_COLUMNS,
    M.HESSIAN_TRACE_STDERR,
    "timestamp",
)


@dataclass(frozen=True)
class Standing:
    """One regularizer on one benchmark."""

    rank: int | None
    regularizer: str
    ranked_by: str  # "final" (mean over final seeds), "search" (best-val trial) or "none"
    test_accuracy: float | None  # the ranking value: final mean, else the best-val trial's
    test_accuracy_std: float | None  # sample std over final seeds (None for fewer than 2)
    n_seeds: int  # number of final runs (0 when ranked by the search)
    best_run_id: str | None  # the search trial with the best validation accuracy
    best_val_accuracy: float | None
    best_test_accuracy: float | None  # that trial's own test accuracy
    regularizer_hparams: dict[str, Any]
    training_hparams: dict[str, Any]
    #: The training hyperparameters the search tuned (those that vary across the method's trials).
    tuned_training_hparams: dict[str, Any]
    trials_total: int
    trials_completed: int
    trials_stopped: int
    trials_failed: int
    mean_forward_passes: float | None  # per search trial, all statuses
    mean_backward_passes: float | None
    mean_passes_per_trial: float | None  # forward + backward
    search_wall_seconds: float  # sum over all search trials
    hessian_top_eigenvalue: float | None
    hessian_trace: float | None
    hessian_trace_stderr: float | None  # of that mean: the Hutchinson estimates' own error
    epsilon_sharpness: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BenchmarkBoard:
    """The ranked standings of one benchmark."""

    benchmark: str
    dataset: str  # comma-joined when rows disagree
    model: str
    standings: tuple[Standing, ...]

    @property
    def has_flatness(self) -> bool:
        return any(getattr(s, c) is not None for s in self.standings for c in FLATNESS_COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "dataset": self.dataset,
            "model": self.model,
            "standings": [s.to_dict() for s in self.standings],
        }


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float, or None (missing and NaN values are treated alike)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _mean(values: Sequence[Any]) -> float | None:
    present = [v for v in (_num(x) for x in values) if v is not None]
    return statistics.fmean(present) if present else None


def _stderr_of_mean(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Standard error of the mean trace over the rows that have one: √(Σ se_i²)/k."""
    pairs = [(_num(r[M.HESSIAN_TRACE]), _num(r[M.HESSIAN_TRACE_STDERR])) for r in rows]
    errors = [se for trace, se in pairs if trace is not None]
    if not errors or any(se is None for se in errors):
        return None
    return math.sqrt(sum(se * se for se in errors)) / len(errors)  # type: ignore[operator]


def _hparams(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _best_search_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    candidates = [
        r
        for r in rows
        if r["phase"] == Phase.SEARCH.value
        and r["status"] == TrialStatus.COMPLETED.value
        and _num(r[M.VAL_ACCURACY]) is not None
    ]
    if not candidates:
        return None

    def key(r: Mapping[str, Any]) -> tuple[float, float, str]:
        val_loss = _num(r[M.VAL_LOSS])
        return (-_num(r[M.VAL_ACCURACY]), math.inf if val_loss is None else val_loss, r["run_id"])  # type: ignore[operator]

    return min(candidates, key=key)


def _final_rows(rows: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    finals = [
        r
        for r in rows
        if r["phase"] == Phase.FINAL.value
        and r["status"] == TrialStatus.COMPLETED.value
        and _num(r[M.TEST_ACCURACY]) is not None
    ]
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in finals:
        groups[r["regularizer_hparams"]].append(r)
    if len(groups) <= 1:
        return finals
    if best is not None and best["regularizer_hparams"] in groups:
        return groups[best["regularizer_hparams"]]
    return max(groups.values(), key=lambda g: max(r["timestamp"] for r in g))


def _tuned(search: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen values of the training hyperparameters that differ between search trials."""
    recipes = [_hparams(r["training_hparams"]) for r in search]
    return {k: v for k, v in chosen.items() if len({json.dumps(recipe.get(k)) for recipe in recipes}) > 1}


def _standing(regularizer: str, rows: Sequence[Mapping[str, Any]]) -> Standing:
    search = [r for r in rows if r["phase"] == Phase.SEARCH.value]
    best = _best_search_row(search)
    finals = _final_rows(rows, best)

    def count(status: TrialStatus) -> int:
        return sum(r["status"] == status.value for r in search)

    if finals:
        ranked_by = RANKED_BY_FINAL
        tests = [_num(r[M.TEST_ACCURACY]) for r in finals]
        test_accuracy: float | None = statistics.fmean(tests)  # type: ignore[arg-type]
        test_std = statistics.stdev(tests) if len(tests) > 1 else None  # type: ignore[arg-type]
        chosen: Sequence[Mapping[str, Any]] = finals
    else:
        ranked_by = RANKED_BY_SEARCH if best is not None and _num(best[M.TEST_ACCURACY]) is not None else RANKED_BY_NONE
        test_accuracy = _num(best[M.TEST_ACCURACY]) if best is not None else None
        test_std = None
        chosen = [best] if best is not None else []

    # Show the config whose numbers are reported: the one re-run with the final seeds, if any.
    config = finals[0] if finals else best
    forward = _mean([r[M.FORWARD_PASSES] for r in search])
    backward = _mean([r[M.BACKWARD_PASSES] for r in search])
    return Standing(
        rank=None,
        regularizer=regularizer,
        ranked_by=ranked_by,
        test_accuracy=test_accuracy,
        test_accuracy_std=test_std,
        n_seeds=len(finals),
        best_run_id=best["run_id"] if best is not None else None,
        best_val_accuracy=_num(best[M.VAL_ACCURACY]) if best is not None else None,
        best_test_accuracy=_num(best[M.TEST_ACCURACY]) if best is not None else None,
        regularizer_hparams=_hparams(config["regularizer_hparams"]) if config is not None else {},
        training_hparams=_hparams(config["training_hparams"]) if config is not None else {},
        tuned_training_hparams=_tuned(search, _hparams(config["training_hparams"]) if config is not None else {}),
        trials_total=len(search),
        trials_completed=count(TrialStatus.COMPLETED),
        trials_stopped=count(TrialStatus.STOPPED),
        trials_failed=count(TrialStatus.FAILED),
        mean_forward_passes=forward,
        mean_backward_passes=backward,
        mean_passes_per_trial=None if forward is None or backward is None else forward + backward,
        search_wall_seconds=float(sum(_num(r[M.WALL_SECONDS]) or 0.0 for r in search)),
        **{column: _mean([r[column] for r in chosen]) for column in FLATNESS_COLUMNS},
        hessian_trace_stderr=_stderr_of_mean(chosen),
    )


def _ranked(standings: Sequence[Standing]) -> tuple[Standing, ...]:
    scored = sorted((s for s in standings if s.test_accuracy is not None), key=lambda s: (-s.test_accuracy, s.regularizer))  # type: ignore[operator]
    unscored = sorted((s for s in standings if s.test_accuracy is None), key=lambda s: s.regularizer)
    out: list[Standing] = []
    for position, s in enumerate(scored, start=1):
        tied = out and out[-1].test_accuracy == s.test_accuracy
        out.append(dataclasses.replace(s, rank=out[-1].rank if tied else position))
    return (*out, *unscored)


def build_leaderboard(table: pa.Table) -> list[BenchmarkBoard]:
    """One :class:`BenchmarkBoard` per benchmark (sorted by name) from a :func:`read_rows` table."""
    missing = [c for c in _NEEDED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"leaderboard table lacks columns {missing}")
    by_benchmark: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in table.select(list(_NEEDED_COLUMNS)).to_pylist():
        by_benchmark[row["benchmark"]][row["regularizer"]].append(row)
    boards = []
    for benchmark in sorted(by_benchmark):
        methods = by_benchmark[benchmark]
        rows = [r for rs in methods.values() for r in rs]
        boards.append(
            BenchmarkBoard(
                benchmark=benchmark,
                dataset=", ".join(sorted({r["dataset"] for r in rows})),
                model=", ".join(sorted({r["model"] for r in rows})),
                standings=_ranked([_standing(name, rs) for name, rs in methods.items()]),
            )
        )
    return boards


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """NaN → None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _accuracy(s: Standing) -> str:
    if s.test_accuracy is None:
        return "–"
    if s.ranked_by != RANKED_BY_FINAL:
        return f"{s.test_accuracy:.4f}"
    std = f" ± {s.test_accuracy_std:.4f}" if s.test_accuracy_std is not None else ""
    return f"{s.test_accuracy:.4f}{std} (n={s.n_seeds})"


def _with_stderr(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if stderr is None else f"{value:.4g} ± {stderr:.2g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _compact(hparams: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hparams.items()))


def _display_rows(board: BenchmarkBoard) -> tuple[list[str], list[list[str]]]:
    header = ["Rank", "Method", "Test acc", "Best val acc", "Trials (c/s/f)", "Passes/trial", "Search time", "Hyperparameters"]
    flat = board.has_flatness
    if flat:
        header += ["λ_max", "Tr(H)", "ε-sharpness"]
    rows = []
    for s in board.standings:
        row = [
            "–" if s.rank is None else str(s.rank),
            s.regularizer,
            _accuracy(s),
            _fmt(s.best_val_accuracy),
            f"{s.trials_total} ({s.trials_completed}/{s.trials_stopped}/{s.trials_failed})",
            _fmt(s.mean_passes_per_trial, ",.0f"),
            _duration(s.search_wall_seconds),
            _compact({**s.regularizer_hparams, **s.tuned_training_hparams}),
        ]
        if flat:
            row += [_fmt(s.hessian_top_eigenvalue, ".4g"), _with_stderr(s.hessian_trace, s.hessian_trace_stderr), _fmt(s.epsilon_sharpness, ".4g")]
        rows.append(row)
    return header, rows


def _title(board: BenchmarkBoard) -> str:
    return f"{board.benchmark} ({board.dataset}, {board.model})"


def to_rich(boards: Sequence[BenchmarkBoard]) -> Group:
    """A rich renderable (one table per benchmark): ``Console().print(to_rich(boards))`` prints it
    with colours; :func:`render` with ``"table"`` gives the same as plain text."""
    tables = []
    for board in boards:
        header, rows = _display_rows(board)
        table = Table(title=_title(board), title_justify="left", header_style="bold")
        for name in header:
            table.add_column(name, justify="right" if name not in ("Method", "Hyperparameters") else "left")
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return Group(*tables) if tables else Group(Text("no results"))


def _json(boards: Sequence[BenchmarkBoard]) -> str:
    return json.dumps([_clean(b.to_dict()) for b in boards], indent=2, allow_nan=False)


#: CSV columns: the board's identity, then every :class:`Standing` field.
CSV_COLUMNS = ("benchmark", "dataset", "model", *(f.name for f in dataclasses.fields(Standing)))


def _csv(boards: Sequence[BenchmarkBoard]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for board in boards:
        for s in board.standings:
            record = _clean(s.to_dict())
            record = {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else ("" if v is None else v) for k, v in record.items()}
            writer.writerow({"benchmark": board.benchmark, "dataset": board.dataset, "model": board.model, **record})
    return out.getvalue()


def _markdown(boards: Sequence[BenchmarkBoard]) -> str:
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    parts = []
    for board in boards:
        header, rows = _display_rows(board)
        lines = [f"## {_title(board)}", "", cells(header), "|" + "|".join("---" for _ in header) + "|"]
        lines += [cells(row) for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _text(boards: Sequence[BenchmarkBoard], width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False, highlight=False)
    console.print(to_rich(boards))
    return console.file.getvalue()  # type: ignore[attr-defined]


def render(boards: Sequence[BenchmarkBoard], fmt: Format | str, *, width: int = 160) -> str:
    """The leaderboard as text in ``fmt``.

    * ``"table"``: rich tables rendered to plain text ``width`` columns wide (for a coloured
      terminal, print :func:`to_rich` to a :class:`rich.console.Console` instead);
    * ``"json"``: a list of boards, each with its standings (NaN written as null);
    * ``"csv"``: one line per standing with :data:`CSV_COLUMNS` (hyperparameters as JSON, None empty);
    * ``"markdown"``: a heading and a table per benchmark.
    """
    if fmt == "table":
        return _text(boards, width)
    if fmt == "json":
        return _json(boards)
    if fmt == "csv":
        return _csv(boards)
    if fmt == "markdown":
        return _markdown(boards)
    raise ValueError(f"unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "BenchmarkBoard",
    "Format",
    "Standing",
    "build_leaderboard",
    "render",
    "to_rich",
]
