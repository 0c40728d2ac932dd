"""``sharpbench report``: read results folders, build the leaderboard, draw, write the page.

:func:`build_report` writes ``report.html`` (self-contained) and ``figures/`` next to it (each
figure as PNG, SVG and PDF) and returns a :class:`ReportArtifacts` with the figures' paths and the
leaderboard as markdown, so a run can log them to its MLflow parent runs as artifacts. With a
``reference`` folder, each benchmark it shares with the results is compared with it.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.config import BenchmarkConfig, ConfigError
from bench.errors import first_line
from bench.leaderboard import DEFAULT_BASELINE, BenchmarkBoard, build_leaderboard, methods_present, render
from bench.leaderboard.suite import SuiteBoard, build_suite
from bench.leaderboard.target import TARGET_RULE, board_times
from bench.merge import config_clashes, config_label, read_rows_by_config
from bench.naming import file_safe
from bench.report import data, figures, palette
from bench.report.page import FIGURE_FORMATS, BoardSection, ReportFigure, SuiteSection, page
from bench.report.reference import ReferenceComparison, absent_line, compare
from bench.report.studies import RebuiltStudy, rebuild_study
from bench.results.curves import read_curves
from bench.results.parquet import UnreadableFile, no_results_folder, no_rows, read_rows
from bench.run_record import load_records

FIGURE_COMPUTE = "compute"
FIGURE_SEEDS = "seeds"
FIGURE_CURVES = "curves"
FIGURE_FLATNESS = "flatness"
FIGURE_HISTORY = "history"
FIGURE_IMPORTANCE = "importance"
FIGURE_KINDS = (FIGURE_COMPUTE, FIGURE_SEEDS, FIGURE_CURVES, FIGURE_FLATNESS, FIGURE_HISTORY, FIGURE_IMPORTANCE)
#: The figures across the benchmarks (the suite section, two benchmarks or more).
FIGURE_CRITICAL_DIFFERENCE = "critical-difference"
FIGURE_PROFILES = "profiles"
#: The ``benchmark`` of the suite section's figures.
SUITE = "suite"

REPORT_FILENAME = "report.html"
FIGURES_DIRNAME = "figures"
#: Resolution of the PNGs: sharp on screen at the page's width, small enough to embed.
DPI = 110
#: Metadata left out of every file: Matplotlib's name with its web address, and the date (a
#: figure drawn twice from the same rows is the same file).
_NO_METADATA = {
    "png": {"Software": None},
    "svg": {"Creator": None, "Date": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}
#: How the figures are drawn to file: SVG text stays text (selectable, searchable, editable: it is
#: XML-escaped by Matplotlib's writer, so a name with markup is text, never an element); PDF fonts
#: are embedded TrueType (Type 42), which journals ask for, rather than Type 3. Names and values are
#: drawn as written: a method named "a$b$" is no TeX formula (and an odd number of "$" would make
#: matplotlib fail to draw the figure). A fixed salt for the SVG's element ids, so that the same
#: figure is the same file.
FIGURE_RC = {"text.parse_math": False, "svg.fonttype": "none", "pdf.fonttype": 42, "svg.hashsalt": "sharpbench"}


class ReportError(ValueError):
    """Bad input to the report (a missing folder, no rows, an unknown baseline): one line."""


@dataclass(frozen=True)
class ReportArtifacts:
    """What :func:`build_report` wrote.

    ``figures`` lists every figure in page order (``path`` None where the caption says why it
    could not be drawn); ``leaderboard_markdown`` maps each benchmark to its board as markdown
    (:func:`bench.leaderboard.render`)."""

    html_path: Path
    figures: tuple[ReportFigure, ...]
    leaderboard_markdown: dict[str, str]
    #: Parquet files skipped as unreadable, one line each (the page is built from the others).
    skipped: tuple[str, ...] = ()
    #: Each benchmark shared with the ``reference`` folder, compared with it.
    references: tuple[ReferenceComparison, ...] = ()

    @property
    def png_paths(self) -> tuple[Path, ...]:
        return self.paths("png")

    def paths(self, fmt: str) -> tuple[Path, ...]:
        """Every drawn figure's file in ``fmt`` (``png``, ``svg`` or ``pdf``), in page order."""
        return tuple(p for f in self.figures if (p := f.file(fmt)) is not None)

    def png_paths_of(self, benchmark: str, regularizer: str | None = None) -> tuple[Path, ...]:
        """The PNGs of one benchmark: all of them, or the benchmark-wide ones plus one method's
        (what that method's MLflow parent run should carry)."""
        return tuple(
            f.path
            for f in self.figures
            if f.path is not None
            and f.benchmark == benchmark
            and (regularizer is None or f.regularizer in (None, regularizer))
        )


def read_results(
    results_dirs: Sequence[Path], problems: list[UnreadableFile] | None = None, *, split_configs: bool = False
) -> pa.Table:
    """The rows of every folder, one table; a run_id present in several folders (a copy of the
    same results) is kept once, its latest row. Raises ReportError for a missing folder, for
    folders that ran one benchmark with different configs (unless ``split_configs``: each config
    is then a benchmark ``NAME@HASH``, :mod:`bench.merge`), or when no folder holds a row."""
    if not results_dirs:
        raise ReportError("no results folder given")
    for folder in results_dirs:
        if not folder.is_dir():
            raise ReportError(no_results_folder(folder))
    clashes = config_clashes(results_dirs)
    if clashes and not split_configs:
        raise ReportError(clashes[0].message())
    table = read_rows_by_config(results_dirs, clashes, problems)  # one row per run_id across the folders, the latest
    if table.num_rows == 0:
        raise ReportError(no_rows(*results_dirs))
    return table


def recorded_configs(results_dirs: Sequence[Path]) -> dict[str, BenchmarkConfig]:
    """Recorded configs by benchmark, and by ``NAME@HASH`` too (a benchmark split by config); the
    first folder that recorded a benchmark wins. Raises ReportError for an unreadable recorded config."""
    configs: dict[str, BenchmarkConfig] = {}
    for folder in results_dirs:
        try:
            for name, record in load_records(folder).items():
                configs.setdefault(name, record.config)
                configs.setdefault(config_label(name, record.config_hash), record.config)
        except ConfigError as error:
            raise ReportError(first_line(error)) from None
    return configs


def read_reference(folder: Path, problems: list[UnreadableFile] | None = None) -> dict[str, BenchmarkBoard]:
    """The boards of the reference folder by benchmark. Raises ReportError, worded as for a
    results folder and naming ``--reference``, for a missing folder or one without rows."""
    try:
        table = read_results([folder], problems)
    except ReportError as error:
        raise ReportError(f"--reference: {error}") from None
    return {board.benchmark: board for board in build_leaderboard(table)}


def _save(figure: Any, path: Path) -> Path:
    """The figure in every format of FIGURE_FORMATS beside ``path`` (the PNG's), without metadata
    naming a web address or a date, and freed. Returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for fmt in FIGURE_FORMATS:
        figure.savefig(path.with_suffix(f".{fmt}"), dpi=DPI, metadata=_NO_METADATA[fmt])
        # The first save laid the figure out: the same layout serves the other formats, not
        # computed again for each.
        figure.set_layout_engine("none")
    import matplotlib.pyplot as plt

    plt.close(figure)  # a no-op for Figure objects pyplot does not manage; frees Optuna's
    return path


_COMPUTE_CAPTION = (
    "Each point is a method's mean test accuracy over the final seeds of its chosen config, with the 95% "
    "t-interval; a hollow point is a method without final seeds, shown by its best search trial's own test "
    "accuracy (n=1). x: the mean forward + backward passes (left) and the mean wall time (right) of one "
    "training run of that config. Ringed and joined by the dashed line: the Pareto front, the methods that no "
    "other method matches or beats on both accuracy and cost (computed on the means, ignoring the intervals). "
    "The cost of the whole search is in the table."
)
_SEEDS_CAPTION = (
    "Test accuracy of each final run of the chosen config: every seed is a point (sN = training seed N; one "
    "seed fixes the initialization and the data order, so equal seeds pair across methods). Black bar: the "
    "mean; black line: its 95% t-interval (Student t with n−1 degrees of freedom)."
)
_SEEDS_REFERENCE = (
    " Faint band in the method's colour: the reference's 95% interval of the mean ({folder}); dashed line: the "
    "reference mean."
)
_CURVES_CAPTION = (
    "Learning curves of the runs behind each method's leaderboard number (its final seeds, or its best search "
    "trial), from the curves table (<results>/curves/): validation accuracy (left) and training loss (right) "
    "after each epoch, against the forward + backward passes spent so far. Line: the median over the runs, at "
    "each epoch they all ran; band: the lowest to the highest run. {counts}"
)
_FLATNESS_CAPTION = (
    "Flatness against generalization: each completed run that measured flatness (bench/measure/flatness.py, on the "
    "training loss at the end of training) is a point. Left: the Hessian trace (Hutchinson's estimator or Hutch++, "
    "flatness.trace_estimator), with its standard error; right: the top Hessian eigenvalue by the Lanczos iteration. "
    "Each method has its own colour and marker, the same in every figure; filled: final runs, hollow: search "
    "trials. {counts}"
)


def _board_figures(
    board: BenchmarkBoard,
    rows_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    config: BenchmarkConfig | None,
    folder: Path,
    reference: ReferenceComparison | None = None,
    curve_points: Sequence[Mapping[str, Any]] = (),
) -> tuple[list[ReportFigure], list[str]]:
    name = board.benchmark
    title = f"{board.benchmark} ({board.dataset}, {board.model})"
    styles = palette.styles(rows_by_method)
    results = [r for s in board.standings if (r := data.method_result(s, rows_by_method[s.regularizer])) is not None]
    out: list[ReportFigure] = []
    notes: list[str] = []
    unranked = [s.regularizer for s in board.standings if s.test_accuracy is None]
    if unranked:
        notes.append(f"Without a test accuracy (no completed trial), not plotted: {', '.join(unranked)}.")
    stem = folder / file_safe(name)
    if results:
        out.append(
            ReportFigure(
                name,
                None,
                FIGURE_COMPUTE,
                "Test accuracy against compute",
                _COMPUTE_CAPTION,
                _save(figures.compute_figure(results, styles, title), Path(f"{stem}-compute.png")),
            )
        )
        out.append(
            ReportFigure(
                name,
                None,
                FIGURE_SEEDS,
                "Test accuracy over final seeds",
                _SEEDS_CAPTION + (_SEEDS_REFERENCE.format(folder=reference.folder) if reference else ""),
                _save(figures.seeds_figure(results, styles, title, reference), Path(f"{stem}-seeds.png")),
            )
        )
    else:
        for kind, what in (
            (FIGURE_COMPUTE, "Test accuracy against compute"),
            (FIGURE_SEEDS, "Test accuracy over final seeds"),
        ):
            out.append(
                ReportFigure(name, None, kind, what, "No method has a test accuracy yet: nothing to plot.", None)
            )
    out.append(_curves_figure(board, curve_points, styles, title, Path(f"{stem}-curves.png")))
    points = data.flatness_points([r for rows in rows_by_method.values() for r in rows])
    if points:
        traces = sum(p.hessian_trace is not None for p in points)
        eigen = sum(p.hessian_top_eigenvalue is not None for p in points)
        counts = f"{traces} run{'s' if traces != 1 else ''} with a trace, {eigen} with a top eigenvalue."
        out.append(
            ReportFigure(
                name,
                None,
                FIGURE_FLATNESS,
                "Flatness against generalization",
                _FLATNESS_CAPTION.format(counts=counts),
                _save(figures.flatness_figure(points, styles, title), Path(f"{stem}-flatness.png")),
            )
        )
    else:
        out.append(
            ReportFigure(
                name,
                None,
                FIGURE_FLATNESS,
                "Flatness against generalization",
                "No completed run measured flatness (the config's flatness.when was off): no figure.",
                None,
            )
        )
    for standing in board.standings:
        method = standing.regularizer
        rebuilt = rebuild_study(name, method, rows_by_method[method], config)
        out += _search_figures(rebuilt, Path(f"{stem}-{file_safe(method)}"), styles[method])
    return out, notes


def _curves_figure(
    board: BenchmarkBoard, points: Sequence[Mapping[str, Any]], styles: figures.Styles, title: str, path: Path
) -> ReportFigure:
    curves = [c for s in board.standings if (c := data.method_curve(s, points)) is not None]
    what = "Learning curves against compute"
    if not curves:
        caption = "No run behind the leaderboard has a learning curve (rows written before sharpbench kept curves)."
        return ReportFigure(board.benchmark, None, FIGURE_CURVES, what, caption, None)
    without = [
        s.regularizer
        for s in board.standings
        if s.behind_run_ids and s.regularizer not in {c.regularizer for c in curves}
    ]
    counts = f"Without a curve: {', '.join(without)}." if without else ""
    return ReportFigure(
        board.benchmark,
        None,
        FIGURE_CURVES,
        what,
        " ".join(filter(None, (_CURVES_CAPTION.format(counts=counts).rstrip(), _time_to_target(board, points)))),
        _save(figures.curves_figure(curves, styles, title), path),
    )


def _time_to_target(board: BenchmarkBoard, points: Sequence[Mapping[str, Any]]) -> str | None:
    """One sentence: how soon each method's runs reach the baseline's final validation accuracy
    (:mod:`bench.leaderboard.target`); None without the baseline's curves."""
    found = board_times(board, points)
    if found is None:
        return None
    target, times = found
    parts = []
    for reached in times:
        if reached.passes is None or reached.seconds is None:
            parts.append(f"{reached.regularizer} not reached (0/{reached.runs} runs)")
        else:
            parts.append(
                f"{reached.regularizer} {reached.passes:,.0f} passes, {reached.seconds:.3g} s "
                f"({reached.reached}/{reached.runs} runs)"
            )
    rule = TARGET_RULE.format(baseline=board.baseline)
    return f"Time to {rule}, {target:.4f}, the median over the runs that reached it: {'; '.join(parts)}."


def _suite_section(suite: SuiteBoard, folder: Path) -> SuiteSection:
    styles = palette.styles([m.regularizer for m in suite.methods])
    stem = folder / SUITE
    made: list[ReportFigure] = []
    title = "Critical-difference diagram"
    if suite.critical_difference is not None:
        caption = (
            "Each method at its average rank over the benchmarks (by mean test accuracy, 1 = best). A bar joins "
            f"methods whose ranks Nemenyi's post-hoc test does not tell apart at α = {suite.alpha:g}; the critical "
            f"difference is {suite.critical_difference:.2f} ranks (Demšar 2006). Friedman's test: "
            f"p = {suite.friedman_p:.3g}. Drawn by scikit-posthocs."
        )
        drawn = _save(figures.critical_difference_figure(suite, styles), Path(f"{stem}-critical-difference.png"))
        made.append(ReportFigure(SUITE, None, FIGURE_CRITICAL_DIFFERENCE, title, caption, drawn))
    else:
        made.append(
            ReportFigure(SUITE, None, FIGURE_CRITICAL_DIFFERENCE, title, f"No diagram: {suite.tests_note}.", None)
        )
    if suite.methods:
        caption = (
            "For every score τ, the fraction of a method's runs scoring above it, each benchmark weighted equally "
            f"(rliable's performance profile). Score: {suite.score_rule}. A curve above another is better at every "
            "threshold; the dotted line is the baseline's mean."
        )
        drawn = _save(figures.profile_figure(suite, styles), Path(f"{stem}-profiles.png"))
        made.append(ReportFigure(SUITE, None, FIGURE_PROFILES, "Performance profiles", caption, drawn))
    return SuiteSection(suite, tuple(made))


def _search_figures(rebuilt: RebuiltStudy, stem: Path, style: palette.Style) -> list[ReportFigure]:
    method = rebuilt.regularizer
    direction = "highest" if rebuilt.study.direction.name == "MAXIMIZE" else "lowest"
    counts = (
        f"{rebuilt.completed} completed, {rebuilt.pruned} stopped early by ASHA (Optuna state PRUNED), "
        f"{rebuilt.failed} failed or unscored"
    )
    if rebuilt.completed:
        caption = (
            f"Search of {method}: {counts} trials, numbered in order of start. Dots: each completed trial's "
            f"{rebuilt.metric}; line: the best so far ({direction}). Stopped and failed trials have no value and "
            f"leave gaps in the numbers. Drawn by Optuna's plot_optimization_history on a study rebuilt from the "
            f"Parquet rows. {rebuilt.space_note}"
        )
        history = ReportFigure(
            rebuilt.benchmark,
            method,
            FIGURE_HISTORY,
            f"{method}: search history",
            caption,
            _save(figures.history_figure(rebuilt, style), Path(f"{stem}-history.png")),
        )
    else:
        history = ReportFigure(
            rebuilt.benchmark,
            method,
            FIGURE_HISTORY,
            f"{method}: search history",
            f"Search of {method}: {counts} trials; no completed trial has a finite {rebuilt.metric}: no history.",
            None,
        )
    if rebuilt.importances is not None:
        caption = f"{rebuilt.importance_note} Drawn by Optuna's plot_param_importances. {rebuilt.space_note}"
        importance = ReportFigure(
            rebuilt.benchmark,
            method,
            FIGURE_IMPORTANCE,
            f"{method}: hyperparameter importance",
            caption,
            _save(figures.importance_figure(rebuilt, style), Path(f"{stem}-importance.png")),
        )
    else:
        importance = ReportFigure(
            rebuilt.benchmark,
            method,
            FIGURE_IMPORTANCE,
            f"{method}: hyperparameter importance",
            f"No importance for {method}: {rebuilt.importance_note}. {rebuilt.space_note}",
            None,
        )
    return [history, importance]


def _check_writable(folder: Path, html_path: Path) -> None:
    """Before any figure is drawn: ``folder`` (made if missing) takes a file. Raises ReportError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ReportError(
            f"cannot write the report to {html_path}: {error.strerror or error} ({error.filename or folder})"
        ) from None


def build_report(
    results_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    *,
    baseline: str | None = None,
    split_configs: bool = False,
    reference: str | os.PathLike[str] | None = None,
) -> ReportArtifacts:
    """Write the report of ``results_dirs`` to ``out`` (default: ``<first dir>/report.html``) and
    its figures (PNG, SVG, PDF) to ``figures/`` beside it.

    ``baseline``: the method the leaderboard tests the others against (default ``erm``).
    ``reference``: a results folder (e.g. ``results/reference/digits_noisy``) each benchmark is
    compared with: per method, its mean and interval beside yours. Raises :class:`ReportError`
    for a missing folder, folders without rows, a reference folder missing or without rows, a
    baseline with no rows, an unreadable recorded config, or an ``out`` that is not an ``.html``
    file path."""
    folders = [Path(d) for d in results_dirs]
    problems: list[UnreadableFile] = []
    table = read_results(folders, problems, split_configs=split_configs)
    reference_folder = Path(reference) if reference is not None else None
    reference_boards = read_reference(reference_folder, problems) if reference_folder is not None else {}
    present = methods_present(table)
    if baseline is not None and baseline not in present:
        raise ReportError(f"--baseline {baseline!r} has no rows; methods present: {', '.join(present)}")
    html_path = Path(out) if out is not None else folders[0] / REPORT_FILENAME
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out must name an .html file, got {html_path}")
    if html_path.is_dir():
        raise ReportError(f"--out names a folder, not a file: {html_path}")
    _check_writable(html_path.parent / FIGURES_DIRNAME, html_path)
    configs = recorded_configs(folders)
    boards = build_leaderboard(table, baseline=baseline or DEFAULT_BASELINE)
    rows_by: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    rows = table.to_pylist()
    for row in rows:
        rows_by[row["benchmark"]][row["regularizer"]].append(row)
    figure_dir = html_path.parent / FIGURES_DIRNAME
    curve_points = read_curves(*folders, run_ids=table.column("run_id").to_pylist()).to_pylist()
    sections = []
    comparisons: list[ReferenceComparison] = []
    import matplotlib

    with matplotlib.rc_context(FIGURE_RC):
        for board in boards:
            compared = absent = None
            if reference_folder is not None:
                if board.benchmark in reference_boards:
                    compared = compare(board, reference_boards[board.benchmark], reference_folder)
                    comparisons.append(compared)
                else:
                    absent = absent_line(board.benchmark, reference_folder, tuple(reference_boards))
            made, notes = _board_figures(
                board, rows_by[board.benchmark], configs.get(board.benchmark), figure_dir, compared, curve_points
            )
            sections.append(BoardSection(board, tuple(made), tuple(notes), compared, absent))
        suite = build_suite(boards, rows, baseline=baseline or DEFAULT_BASELINE, curves=curve_points)
        suite_section = _suite_section(suite, figure_dir) if suite is not None else None
    sources = [
        f"{folder} ({read_rows(folder, problems=[]).num_rows} rows)" for folder in folders
    ]  # skipped files: said once, above
    # The newest row's time, not the clock's: the same rows give the same page, byte for byte.
    newest = max((row["timestamp"] for row in rows if row["timestamp"] is not None), default=None)
    built = "no rows" if newest is None else newest.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    staging = html_path.with_name(html_path.name + ".tmp")
    reference_line = (
        f"{reference_folder} (benchmarks: {', '.join(reference_boards)})" if reference_folder is not None else None
    )
    staging.write_text(page(sections, sources, built, reference_line, suite_section), encoding="utf-8")
    staging.replace(html_path)
    return ReportArtifacts(
        html_path=html_path,
        figures=tuple(f for s in (*([suite_section] if suite_section else []), *sections) for f in s.figures),
        leaderboard_markdown={board.benchmark: render([board], "markdown") for board in boards},
        skipped=tuple(str(problem) for problem in problems),
        references=tuple(comparisons),
    )


__all__ = [
    "FIGURE_KINDS",
    "ReportArtifacts",
    "ReportError",
    "build_report",
    "read_reference",
    "read_results",
    "recorded_configs",
]
