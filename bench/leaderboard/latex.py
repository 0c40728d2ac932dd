"""``sharpbench leaderboard --format latex``: one booktabs table per benchmark, ready for a paper.

Columns: rank ('=' marks a shared rank group), method, test accuracy in percent (mean ± sample
std over the final seeds, n), the difference to the baseline in percentage points, and the
Holm-adjusted p of its test, passes per trial. The best mean is in bold; the methods sharing its
rank group are marked tied by their rank ('1='). The caption holds the verdict line. Needs
``\\usepackage{booktabs}``. Every string from a config or a plug-in (benchmark, dataset, model and
method names) is escaped, so none can run a LaTeX command.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.leaderboard.board import RANKED_BY_FINAL, BenchmarkBoard, Standing
from bench.leaderboard.verdict import POINTS, p_text, verdict_line

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # the words of the verdict line, for a LaTeX without Unicode input
    "α": r"$\alpha$",
    "Δ": r"$\Delta$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≈": r"$\approx$",
    "–": "--",
    "−": "$-$",
    "χ": r"$\chi$",
    "²": r"\textsuperscript{2}",
}


def escape(text: str) -> str:
    """``text`` as literal LaTeX text: the ten special characters made harmless, the verdict's
    symbols as math, newlines as spaces."""
    return "".join(_SPECIAL.get(c, c) for c in text.replace("\r", " ").replace("\n", " "))


def _accuracy(s: Standing, best: bool) -> str:
    if s.test_accuracy is None:
        return "--"
    mean = f"{s.test_accuracy * POINTS:.2f}"
    if best:
        mean = rf"\textbf{{{mean}}}"
    if s.ranked_by != RANKED_BY_FINAL:
        return f"{mean} (search)"
    spread = "" if s.test_accuracy_std is None else rf" $\pm$ {s.test_accuracy_std * POINTS:.2f}"
    return f"{mean}{spread} ({s.n_seeds})"


def _difference(s: Standing) -> str:
    if s.vs_baseline_note == "baseline":
        return "baseline"
    if s.vs_baseline_difference is None:
        return "--"
    return f"${s.vs_baseline_difference * POINTS:+z.2f}$"


def _p(s: Standing) -> str:
    if s.vs_baseline_p_holm is None:
        return "--"
    text = p_text(s.vs_baseline_p_holm)
    return rf"\textbf{{{text}}}" if s.vs_baseline_significant else text


def _rank(s: Standing) -> str:
    if s.rank is None:
        return "--"
    return f"{s.rank}=" if s.tied else str(s.rank)


def table(board: BenchmarkBoard) -> str:
    """One benchmark as a ``table`` environment with a booktabs ``tabular``."""
    means = [s.test_accuracy for s in board.standings if s.test_accuracy is not None]
    best = max(means) if means else None  # every method at the best mean is bold (an exact tie: all)
    baseline = escape(board.baseline or "baseline")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{escape(f'{board.benchmark} ({board.dataset}, {board.model})')}. {escape(verdict_line(board))}}}",
        r"\begin{tabular}{rlrrrr}",
        r"\toprule",
        rf"Rank & Method & Test acc. (\%, $\pm$ std, $n$) & $\Delta$ vs {baseline} (pts) & $p$ (Holm) "
        r"& Passes/trial \\",
        r"\midrule",
    ]
    for s in board.standings:
        passes = "--" if s.mean_passes_per_trial is None else f"{s.mean_passes_per_trial:,.0f}".replace(",", "{,}")
        cells = [
            _rank(s),
            escape(s.regularizer),
            _accuracy(s, s.test_accuracy is not None and s.test_accuracy == best),
            _difference(s),
            _p(s),
            passes,
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def latex(boards: Sequence[BenchmarkBoard]) -> str:
    """Every board as LaTeX, with a comment naming the package it needs."""
    header = "% sharpbench leaderboard; needs \\usepackage{booktabs}\n"
    return header + "\n\n".join(table(b) for b in boards) + "\n"


__all__ = ["escape", "latex", "table"]
