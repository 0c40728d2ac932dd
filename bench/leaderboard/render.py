"""Rendering boards: the terminal table (a narrow default and ``--wide``), JSON, CSV, Markdown, LaTeX.

The narrow table fits 100 columns: rank, method, test accuracy with its interval and n, the
difference to the baseline in points, the test's verdict with its Holm p, and the cost (passes per
trial, search time). Under it: the verdict line (:mod:`bench.leaderboard.verdict`), the rank rule
in one line, and a note for intervals that are cut at the bounds or rest on too few seeds. The
wide table (``--wide``, Markdown) has every column and the full rules (:func:`legend`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from rich import box
from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from bench import metrics as M
from bench import selection, stats
from bench.leaderboard.board import (
    RANKED_BY_FINAL,
    RULE_TESTS,
    BenchmarkBoard,
    Standing,
    board_notes,
    pooled_line,
)
from bench.leaderboard.latex import latex
from bench.leaderboard.verdict import POINTS, p_text, verdict_line

Format = Literal["table", "json", "csv", "markdown", "latex"]
#: The formats :func:`render` accepts.
FORMATS: tuple[str, ...] = get_args(Format)

#: The narrow table's width limit: it fits a 100-column terminal, and narrower ones fold cells.
NARROW_WIDTH = 100


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


def _signed(value: float | None) -> str:
    # ``z`` turns -0.0000 (a tiny negative difference, rounded) into +0.0000: no sign it lacks.
    return "–" if value is None else f"{value:+z.4f}"


def _accuracy(s: Standing) -> str:
    """``mean ± std [CI low, CI high] (n=…)``, or the value and why it has no interval."""
    if s.test_accuracy is None:
        return "–"
    if s.ranked_by != RANKED_BY_FINAL:
        return f"{s.test_accuracy:.4f} ({s.interval_note})"
    if s.test_accuracy_ci_low is None:
        return f"{s.test_accuracy:.4f} (n={s.n_seeds}, no interval)"
    return (
        f"{s.test_accuracy:.4f} ± {s.test_accuracy_std:.4f} [{s.test_accuracy_ci_low:.4f}, "
        f"{s.test_accuracy_ci_high:.4f}] (n={s.n_seeds})"
    )


def _rank(s: Standing) -> str:
    if s.rank is None:
        return "–"
    return f"{s.rank}=" if s.tied else str(s.rank)


def _difference(s: Standing) -> str:
    """``Δ [CI]`` against the baseline; "baseline" on the baseline itself."""
    if s.baseline is None:
        return "–"
    if s.vs_baseline_note == "baseline":
        return "baseline"
    if s.vs_baseline_ci_low is None:
        return _signed(s.vs_baseline_difference)
    return f"{_signed(s.vs_baseline_difference)} [{_signed(s.vs_baseline_ci_low)}, {_signed(s.vs_baseline_ci_high)}]"


def _p(s: Standing) -> str:
    """Holm-adjusted p, ``*`` when significant, and the test; "no test" when none ran."""
    if s.baseline is None or s.vs_baseline_note == "baseline":
        return "–"
    if s.vs_baseline_p_holm is None:
        return "no test"
    mark = "*" if s.vs_baseline_significant else ""
    return f"{s.vs_baseline_p_holm:.3g}{mark} {s.vs_baseline_test}"


def _best_value(s: Standing) -> str:
    value = s.best_val_loss if s.search_metric == M.VAL_LOSS else s.best_val_accuracy
    return _fmt(value)


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


def _slot_hours_text(s: Standing) -> str:
    parts = []
    if s.search_cpu_slot_hours or not s.search_gpu_slot_hours:
        parts.append(f"{s.search_cpu_slot_hours:.3g} CPU")
    if s.search_gpu_slot_hours:
        parts.append(f"{s.search_gpu_slot_hours:.3g} GPU")
    return " + ".join(parts)


def _compact(hparams: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hparams.items()))


def _metric_header(board: BenchmarkBoard) -> str:
    metrics = sorted({s.search_metric for s in board.standings})
    return f"Best {metrics[0]}" if len(metrics) == 1 else "Best search metric"


def _display_rows(board: BenchmarkBoard) -> tuple[list[str], list[list[str]]]:
    level = f"{board.confidence:.0%}"
    header = [
        "Rank",
        "Method",
        f"Test acc: mean ± std [{level} CI] (n)",
        f"Δ vs {board.baseline or 'baseline'} [{level} CI]",
        "p (Holm)",
        _metric_header(board),
        "Trials (c/s/f)",
        "Passes/trial",
        "Search time (summed / elapsed)",
        "Slot-hours",
        "Hyperparameters",
    ]
    flat = board.has_flatness
    if flat:
        header += ["λ_max", "λ_max/EoS", "Tr(H)", "ε-sharpness", "adaptive sharpness"]
    rows = []
    for s in board.standings:
        row = [
            _rank(s),
            s.regularizer,
            _accuracy(s),
            _difference(s),
            _p(s),
            _best_value(s),
            f"{s.trials_total} ({s.trials_completed}/{s.trials_stopped}/{s.trials_failed})" + _budget_note(s),
            _fmt(s.mean_passes_per_trial, ",.0f"),
            f"{_duration(s.search_wall_seconds)} / {_duration(s.search_elapsed_seconds)}",
            _slot_hours_text(s),
            _compact({**s.regularizer_hparams, **s.tuned_training_hparams}),
        ]
        if flat:
            row += [
                _fmt(s.hessian_top_eigenvalue, ".4g"),
                _fmt(s.eos_ratio, ".3g"),
                _with_stderr(s.hessian_trace, s.hessian_trace_stderr),
                _fmt(s.epsilon_sharpness, ".4g"),
                _fmt(s.adaptive_sharpness, ".4g"),
            ]
        rows.append(row)
    return header, rows


def _budget_note(s: Standing) -> str:
    """Under a passes budget the trials (or epochs) differ by method: say what this one got."""
    if s.budget.get("kind") != "passes":
        return ""
    return f" · {s.budget.get('epochs')} ep, {s.budget.get('passes_per_step')} passes/step"


def rank_rule_line(board: BenchmarkBoard) -> str:
    """The rule behind the board's rank groups, in one line (the same in table, JSON, report)."""
    if board.rank_rule == RULE_TESTS:
        return (
            f"Rank: by the tests against {board.baseline}: better first, then not distinguishable "
            f"({board.baseline}'s group), then worse; '=' shares a rank; untested methods are unranked (–)."
        )
    why = "no baseline on this board" if board.baseline is None else "no test could run on this board"
    return (
        f"Rank ({why}): the highest mean leads; methods whose interval overlaps the leader's share its rank "
        "('='); repeated on the rest."
    )


def legend(board: BenchmarkBoard) -> str:
    """The rules behind the board's numbers, in one paragraph (printed under the wide table)."""
    level = f"{board.confidence:.0%}"
    metrics = ", ".join(sorted({s.search_metric for s in board.standings})) or selection.DEFAULT_METRIC
    tested = sum(s.vs_baseline_p is not None for s in board.standings)
    if board.baseline is None:
        versus = (board.baseline_note or "no baseline").rstrip(".") + "."
    else:
        versus = (
            f"Δ = method − {board.baseline}, mean test accuracy, with its {board.confidence:.0%} interval of one "
            "comparison (not adjusted: it may exclude 0 where the Holm-adjusted p is above alpha); paired t-test on "
            "seed-matched final runs when both have the same seeds, Welch's t-test otherwise; "
            + (
                f"p Holm-adjusted over the {tested} test{'' if tested == 1 else 's'} of this board, * = p ≤ "
                f"{board.alpha:g}."
                if tested
                else "no test ran on this board (a t-test needs at least 2 final runs of the method and of the "
                "baseline, not all equal)."
            )
        )
    return (
        f"Best config: the completed search trial with the best {metrics} (ties: the other validation metric, "
        f"then run id); the final seeds re-run it. Test acc: mean ± sample std [{level} t-interval, cut at the "
        f"accuracy's bounds 0 and 1] over the final seeds (n=1 when ranked by the search trial: no interval). "
        f"{rank_rule_line(board)} {versus} "
        "Search time: summed over trials / elapsed while any of its trials ran; slot-hours: summed time, one CPU or "
        "GPU slot per trial." + _budget_legend(board)
    )


def _budget_legend(board: BenchmarkBoard) -> str:
    kinds = {(s.budget.get("kind"), s.budget.get("scale")) for s in board.standings if s.budget}
    if not kinds:
        return ""
    if kinds == {("trials", "trials")} or all(kind == "trials" for kind, _ in kinds):
        return " Budget: the same number of trials per method."
    scales = ", ".join(sorted({str(scale) for _, scale in kinds}))
    return (
        f" Budget: the same forward+backward passes per method (ERM's trials × epochs × 2 passes per step); "
        f"a method with a costlier step gets fewer {scales}."
    )


def _title(board: BenchmarkBoard) -> str:
    return f"{board.benchmark} ({board.dataset}, {board.model})"


def interval_notes(board: BenchmarkBoard) -> list[str]:
    """One line each for intervals that say little: from fewer than :data:`bench.stats.FEW` seeds,
    or cut at the accuracy's bounds."""
    notes = []
    rough = [s for s in board.standings if s.interval_rough]
    if rough:
        names = ", ".join(f"{s.regularizer} (n={s.n_seeds})" for s in rough)
        notes.append(
            f"Too few seeds for a useful interval: {names}; with n=2 the t-interval rests on one degree of "
            f"freedom (t = 12.7 at 95%)."
        )
    cut = [s.regularizer for s in board.standings if s.test_accuracy_ci_cut]
    if cut:
        notes.append(f"Interval cut at the accuracy's bounds [0, 1]: {', '.join(cut)}.")
    return notes


def _lines_under(board: BenchmarkBoard, wide: bool) -> str:
    """What follows a board: the verdict, then (narrow) the rank rule and notes, or (wide) the full legend."""
    lines = [verdict_line(board)]
    if wide:
        lines.append(legend(board))
    else:
        level = f"{board.confidence:.0%}"
        lines += [
            rank_rule_line(board),
            *interval_notes(board),
            f"Test acc: mean over the final seeds [{level} t-interval]; Δ: percentage points; Passes: forward + "
            "backward per search trial; time: the search's elapsed time. --wide: std, intervals of Δ, trials, "
            "slot-hours, hyperparameters, flatness and every rule.",
        ]
    return "\n".join([*board_notes(board), *lines])


def _short_interval(s: Standing) -> str:
    if s.test_accuracy is None:
        return "–"
    if s.test_accuracy_ci_low is None:
        return f"{s.test_accuracy:.4f}"
    return f"{s.test_accuracy:.4f} [{s.test_accuracy_ci_low:.4f}, {s.test_accuracy_ci_high:.4f}]"


def _n(s: Standing) -> str:
    if s.ranked_by != RANKED_BY_FINAL:
        return "1 (search)" if s.test_accuracy is not None else "0"
    return str(s.n_seeds)


def _points(s: Standing) -> str:
    if s.vs_baseline_note == "baseline" or s.vs_baseline_difference is None:
        return "–"
    return f"{s.vs_baseline_difference * POINTS:+z.2f}"


def _verdict_cell(s: Standing) -> str:
    if s.vs_baseline_verdict is None:
        return "–"
    if s.vs_baseline_p_holm is None:
        # "baseline", "no test", or equal to the baseline on every seed (no test needed)
        return "≈ (identical)" if s.vs_baseline_verdict == stats.SAME else s.vs_baseline_verdict
    word = {stats.SAME: "≈"}.get(s.vs_baseline_verdict, s.vs_baseline_verdict)  # type: ignore[call-overload]
    return f"{word} (p={p_text(s.vs_baseline_p_holm)})"


def _cost(s: Standing) -> str:
    return f"{_fmt(s.mean_passes_per_trial, ',.0f')} · {_duration(s.search_elapsed_seconds)}"


def _narrow_rows(board: BenchmarkBoard) -> tuple[list[str], list[list[str]]]:
    level = f"{board.confidence:.0%}"
    header = [
        "Rank",
        "Method",
        f"Test acc [{level} CI]",
        "n",
        f"Δ vs {board.baseline or 'baseline'}",
        "Verdict (Holm p)",
        "Passes · time",
    ]
    rows = [
        [_rank(s), s.regularizer, _short_interval(s), _n(s), _points(s), _verdict_cell(s), _cost(s)]
        for s in board.standings
    ]
    return header, rows


#: Columns printed left-aligned (names and words); every other column is right-aligned numbers.
_LEFT = ("Method", "Hyperparameters", "Verdict (Holm p)")


def _table(board: BenchmarkBoard, wide: bool) -> Table:
    header, rows = (_display_rows if wide else _narrow_rows)(board)
    table = Table(
        title=_title(board),
        title_justify="left",
        header_style="bold",
        caption=_lines_under(board, wide),
        caption_justify="left",
        box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,
        # narrow: no outer edge, so the 100 columns go to the numbers
        show_edge=wide,
        pad_edge=wide,
    )
    for name in header:
        # fold: a narrow terminal wraps a cell onto more lines; it never cuts a number to "…"
        table.add_column(name, justify="left" if name in _LEFT else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def to_rich(boards: Sequence[BenchmarkBoard], *, wide: bool = False) -> Group:
    """A rich renderable (one table per benchmark): ``Console().print(to_rich(boards))`` prints it
    with colours; :func:`render` with ``"table"`` gives the same as plain text. ``wide``: every
    column (see the module docstring)."""
    tables = [_table(board, wide) for board in boards]
    return Group(*tables) if tables else Group(Text("no results"))


def _json(boards: Sequence[BenchmarkBoard]) -> str:
    described = [
        {
            **b.to_dict(),
            "rank_rule_text": rank_rule_line(b),
            "rule": legend(b),
            "verdict": verdict_line(b),
            "pooled": pooled_line(b),
        }
        for b in boards
    ]
    return json.dumps([_clean(b) for b in described], indent=2, allow_nan=False)


#: CSV columns: the board's identity and statistics settings, then every :class:`Standing` field.
_BOARD_COLUMNS = ("benchmark", "dataset", "model", "confidence", "alpha", "rank_rule")
CSV_COLUMNS = (*_BOARD_COLUMNS, *(f.name for f in dataclasses.fields(Standing)))


def _csv(boards: Sequence[BenchmarkBoard]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for board in boards:
        for s in board.standings:
            record = _clean(s.to_dict())
            record = {
                k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else ("" if v is None else v)
                for k, v in record.items()
            }
            writer.writerow({**{name: getattr(board, name) for name in _BOARD_COLUMNS}, **record})
    return out.getvalue()


def _markdown(boards: Sequence[BenchmarkBoard]) -> str:
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    parts = []
    for board in boards:
        header, rows = _display_rows(board)
        lines = [f"## {_title(board)}", "", cells(header), "|" + "|".join("---" for _ in header) + "|"]
        lines += [cells(row) for row in rows]
        lines += ["", *_lines_under(board, wide=True).split("\n")]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _text(boards: Sequence[BenchmarkBoard], width: int | None, wide: bool) -> str:
    console = Console(
        file=io.StringIO(), width=width or 100_000, color_system=None, force_terminal=False, highlight=False
    )
    group = to_rich(boards, wide=wide)
    for table in group.renderables:
        natural = Measurement.get(console, console.options, table).maximum
        # width None: as wide as the cells need (wide), at most NARROW_WIDTH (narrow); else at most width
        limit = width or (None if wide else NARROW_WIDTH)
        console.width = natural if limit is None else min(natural, limit)
        console.print(table)
    # rich pads every line to the width; trailing blanks are noise in a file or a diff
    return "".join(line.rstrip() + "\n" for line in console.file.getvalue().splitlines())  # type: ignore[attr-defined]


def render(boards: Sequence[BenchmarkBoard], fmt: Format | str, *, width: int | None = None, wide: bool = False) -> str:
    """The leaderboard as text in ``fmt``.

    * ``"table"``: rich tables rendered to plain text: the narrow board (at most
      :data:`NARROW_WIDTH` columns, or ``width``), or with ``wide`` every column, as wide as its
      cells need (or ``width``); for a coloured terminal, print :func:`to_rich` to a
      :class:`rich.console.Console` instead;
    * ``"json"``: a list of boards, each with its standings, its rules and its verdict line (NaN
      written as null);
    * ``"csv"``: one line per standing with :data:`CSV_COLUMNS` (hyperparameters as JSON, None empty);
    * ``"markdown"``: a heading, the wide table, the verdict and the rules per benchmark;
    * ``"latex"``: a booktabs table per benchmark (:mod:`bench.leaderboard.latex`).
    """
    if fmt == "table":
        return _text(boards, width, wide)
    if fmt == "json":
        return _json(boards)
    if fmt == "csv":
        return _csv(boards)
    if fmt == "markdown":
        return _markdown(boards)
    if fmt == "latex":
        return latex(boards)
    raise ValueError(f"unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "NARROW_WIDTH",
    "Format",
    "interval_notes",
    "legend",
    "rank_rule_line",
    "render",
    "to_rich",
]
