"""The report as one self-contained HTML page: inline CSS, PNGs embedded as base64 ``data:`` URIs,
the leaderboard as an HTML table, and no reference to any other resource (no CDN, web font or
script from elsewhere), so the file opens from disk with no server and no network. Each figure
links its SVG and PDF in ``figures/`` beside the page (plain links: the page loads neither)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.leaderboard import BenchmarkBoard, board_notes, legend, render, verdict_line
from bench.leaderboard.suite import SuiteBoard
from bench.leaderboard.suite_render import render_suite
from bench.report.reference import ReferenceComparison

#: The files of every drawn figure, by suffix: the PNG the page embeds first, then the vector
#: formats for papers (same stem, same folder).
FIGURE_FORMATS = ("png", "svg", "pdf")

_STYLE = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 24px 32px; color: #222;
       max-width: 1400px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #ccc; padding-bottom: 4px; margin-top: 40px; }
.meta, .rule, figcaption, .note { color: #444; font-size: 13px; line-height: 1.45; }
.table-wrap { overflow-x: auto; }
table.leaderboard { border-collapse: collapse; font-size: 13px; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
table.leaderboard td { white-space: nowrap; }
table.leaderboard th { background: #eef1f5; vertical-align: bottom; }
table.leaderboard td.text { white-space: normal; min-width: 12em; }
table.leaderboard td.text { text-align: left; }
figure { margin: 12px 0 24px 0; }
figure img { display: block; max-width: 100%; border: 1px solid #e4e4e4; }
.methods { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px 24px; }
.method-head { grid-column: 1 / -1; margin: 16px 0 0 0; }
.missing { border: 1px dashed #bbb; padding: 16px; color: #555; font-size: 13px; }
.formats { font-size: 12px; margin: 2px 0 0 0; }
table.reference td.inside { color: #1b5e20; } table.reference td.outside { color: #b71c1c; }
"""

# Lets a headless browser's --dump-dom show that each image decoded and where it was laid out
# (the tests read these attributes); it reads nothing from outside the page.
_PROBE = """
window.addEventListener("load", function () {
  document.body.setAttribute("data-scroll-height", String(document.documentElement.scrollHeight));
  for (const el of document.querySelectorAll("img, table")) {
    const r = el.getBoundingClientRect();
    el.setAttribute("data-rect", [r.left, r.top + window.scrollY, r.width, r.height].map(Math.round).join(","));
    if (el.tagName === "IMG") { el.setAttribute("data-natural-width", String(el.naturalWidth)); }
  }
});
"""


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report. ``path`` is its PNG, or None when it could not be drawn: the
    caption then says why. ``regularizer`` is None for the benchmark-wide figures. The same
    figure is written in every format of :data:`FIGURE_FORMATS` (:meth:`file`)."""

    benchmark: str
    regularizer: str | None
    kind: str  # one of bench.report.build.FIGURE_KINDS
    title: str
    caption: str
    path: Path | None

    def file(self, fmt: str) -> Path | None:
        """The figure's file in ``fmt`` (one of :data:`FIGURE_FORMATS`); None when not drawn."""
        if fmt not in FIGURE_FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; formats: {', '.join(FIGURE_FORMATS)}")
        return None if self.path is None else self.path.with_suffix(f".{fmt}")


@dataclass(frozen=True)
class BoardSection:
    """What the page shows for one benchmark: its leaderboard, its comparison with the reference
    (``reference``; ``reference_note`` when the reference lacks the benchmark), its figures."""

    board: BenchmarkBoard
    figures: tuple[ReportFigure, ...]
    notes: tuple[str, ...]
    reference: ReferenceComparison | None = None
    reference_note: str | None = None


@dataclass(frozen=True)
class SuiteSection:
    """What the page shows across the benchmarks: the suite board and its figures."""

    board: SuiteBoard
    figures: tuple[ReportFigure, ...]


_TEXT_CLASS = ' class="text"'
_UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


def leaderboard_cells(board: BenchmarkBoard) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the board, as the leaderboard's markdown renders them (one source of
    the formatting: :func:`bench.leaderboard.render`)."""
    lines = [line for line in render([board], "markdown").splitlines() if line.startswith("|")]
    return _cells(lines[0]), [_cells(line) for line in lines[2:]]


def _cells(line: str) -> list[str]:
    """The cells of one markdown table line, ``\\|`` unescaped."""
    return [c.strip().replace("\\|", "|") for c in _UNESCAPED_BAR.split(line.strip())[1:-1]]


def _table(board: BenchmarkBoard) -> str:
    header, rows = leaderboard_cells(board)
    text_columns = {i for i, name in enumerate(header) if name in ("Method", "Hyperparameters")}
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{_TEXT_CLASS if i in text_columns else ''}>{html.escape(cell)}</td>" for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    name = html.escape(board.benchmark)
    return (
        f'<div class="table-wrap"><table class="leaderboard" data-benchmark="{name}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _figure(figure: ReportFigure) -> str:
    data = f'data-figure="{html.escape(figure.kind)}" data-benchmark="{html.escape(figure.benchmark)}"'
    if figure.regularizer is not None:
        data += f' data-method="{html.escape(figure.regularizer)}"'
    caption = f"<figcaption>{html.escape(figure.caption)}</figcaption>"
    if figure.path is None:
        return (
            f'<figure {data}><div class="missing"><b>{html.escape(figure.title)}</b>: not '
            f"drawn.</div>{caption}</figure>"
        )
    encoded = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    # Relative to the page: the figures folder sits beside it (bench.report.build.FIGURES_DIRNAME).
    folder = html.escape(figure.path.parent.name)
    links = " · ".join(
        f'<a href="{folder}/{html.escape(path.name)}" data-format="{fmt}">{fmt.upper()}</a>'
        for fmt in FIGURE_FORMATS[1:]
        if (path := figure.file(fmt)) is not None
    )
    return (
        f'<figure {data}><img alt="{html.escape(figure.title)}" '
        f'src="data:image/png;base64,{encoded}"><p class="formats">For print: {links}</p>{caption}</figure>'
    )


def _reference(comparison: ReferenceComparison) -> str:
    """The reference comparison: its summary line, then one row per method."""
    level = f"{comparison.confidence:.0%}"
    head = "".join(
        f"<th>{html.escape(name)}</th>"
        for name in (
            "Method",
            f"Reference mean [{level} CI]",
            f"Your mean [{level} CI]",
            "Your mean against the reference",
        )
    )
    rows = []
    for m in comparison.methods:
        verdict_class = {True: "text inside", False: "text outside", None: "text"}[m.inside]
        rows.append(
            "<tr>"
            f'<td class="text">{html.escape(m.regularizer)}</td>'
            f"<td>{html.escape(m.reference.text() if m.reference else '—')}</td>"
            f"<td>{html.escape(m.yours.text() if m.yours else '—')}</td>"
            f'<td class="{verdict_class}">{html.escape(m.verdict())}</td>'
            "</tr>"
        )
    name = html.escape(comparison.benchmark)
    return (
        f'<p class="rule" data-reference="summary">{html.escape(comparison.summary())}</p>'
        f'<div class="table-wrap"><table class="leaderboard reference" data-benchmark="{name}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _suite(section: SuiteSection) -> str:
    lines = render_suite(section.board, "markdown").splitlines()
    table = [line for line in lines if line.startswith("|")]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in _cells(table[0]))
    body = "".join(
        "<tr>"
        + "".join(f"<td{_TEXT_CLASS if i == 0 else ''}>{html.escape(c)}</td>" for i, c in enumerate(_cells(line)))
        + "</tr>"
        for line in table[2:]
    )
    rules = [line for line in lines if line and not line.startswith(("|", "#"))]
    parts = [
        '<section id="suite"><h2>Across the benchmarks</h2>',
        f'<div class="table-wrap"><table class="leaderboard" data-suite="board"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>",
        *(f'<p class="rule">{html.escape(line)}</p>' for line in rules),
    ]
    for figure in section.figures:
        parts += [f"<h3>{html.escape(figure.title)}</h3>", _figure(figure)]
    parts.append("</section>")
    return "\n".join(parts)


def _section(section: BoardSection) -> str:
    board = section.board
    anchor = "b-" + re.sub(r"[^A-Za-z0-9_-]", "-", board.benchmark)
    parts = [
        f'<section id="{anchor}"><h2>{html.escape(board.benchmark)} ({html.escape(board.dataset)}, '
        f"{html.escape(board.model)})</h2>",
        "<h3>Leaderboard</h3>",
        _table(board),
        f'<p class="verdict">{html.escape(verdict_line(board))}</p>',
        f'<p class="rule">{html.escape(legend(board))}</p>',
        *(f'<p class="note">{html.escape(line)}</p>' for line in board_notes(board)),
    ]
    if section.reference is not None:
        parts += ["<h3>Against the reference</h3>", _reference(section.reference)]
    elif section.reference_note is not None:
        parts.append(f'<p class="note" data-reference="absent">{html.escape(section.reference_note)}</p>')
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    overall = [f for f in section.figures if f.regularizer is None]
    per_method = [f for f in section.figures if f.regularizer is not None]
    for figure in overall:
        parts += [f"<h3>{html.escape(figure.title)}</h3>", _figure(figure)]
    if per_method:
        parts.append('<h3>Search history and hyperparameter importance</h3><div class="methods">')
        current = None
        for figure in per_method:
            if figure.regularizer != current:
                current = figure.regularizer
                parts.append(f'<h4 class="method-head">{html.escape(current or "")}</h4>')
            parts.append(_figure(figure))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def page(
    sections: Sequence[BoardSection],
    sources: Sequence[str],
    built: str,
    reference: str | None = None,
    suite: SuiteSection | None = None,
) -> str:
    """The whole HTML document. ``sources``: one line per results folder read; ``built``: the time
    of the newest row read; ``reference``: the reference folder read (``--reference``), if any;
    ``suite``: the section across the benchmarks, first (two benchmarks or more)."""
    contents = ('<li><a href="#suite">Across the benchmarks</a></li>' if suite is not None else "") + "".join(
        f'<li><a href="#b-{re.sub(r"[^A-Za-z0-9_-]", "-", s.board.benchmark)}">'
        f"{html.escape(s.board.benchmark)}</a></li>"
        for s in sections
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>sharpbench report</title>",
            f"<style>{_STYLE}</style></head><body>",
            "<h1>sharpbench report</h1>",
            f'<p class="meta">Rows up to {html.escape(built)}, from: {html.escape("; ".join(sources))}.</p>',
            *([f'<p class="meta">Compared with the reference: {html.escape(reference)}.</p>'] if reference else []),
            f"<ul>{contents}</ul>",
            *([_suite(suite)] if suite is not None else []),
            *(_section(s) for s in sections),
            f"<script>{_PROBE}</script>",
            "</body></html>",
        ]
    )


__all__ = ["FIGURE_FORMATS", "BoardSection", "ReportFigure", "SuiteSection", "leaderboard_cells", "page"]
