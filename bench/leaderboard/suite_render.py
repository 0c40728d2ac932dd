"""``sharpbench leaderboard --suite``: the suite board as a table, JSON, CSV, Markdown or LaTeX.

Columns: method, the IQM and the mean of its normalized scores with their stratified bootstrap
intervals, the probability of improvement over the baseline with its interval, the average rank,
and the runs pooled. Under the table: the score rule, the Friedman test, the critical difference
with the pairs Nemenyi cannot tell apart, and what was left out and why
(:mod:`bench.leaderboard.suite` states every rule).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import textwrap
from typing import Any

from bench.leaderboard.latex import escape
from bench.leaderboard.suite import FLATNESS_MEASURES, Interval, SuiteBoard, SuiteMethod
from bench.leaderboard.target import TARGET_RULE

#: Columns of the rules under the text table (those of a benchmark's board; the table itself is wider).
RULES_WIDTH = 100

HEADER = (
    "Method",
    "IQM [95% CI]",
    "Mean [95% CI]",
    "P(better than {baseline}) [95% CI]",
    "Avg rank",
    "Runs",
    "Passes to target (× {baseline})",
)


def _number(value: float, digits: int, sign: bool) -> str:
    rounded = round(value, digits) + 0.0  # no "-0.000" for a rounding error below the last digit
    return format(rounded, f"{'+' if sign else ''}.{digits}f")


def _interval(value: Interval | None, digits: int = 3, sign: bool = True) -> str:
    if value is None:
        return "–"
    text = _number(value.value, digits, sign)
    if value.low is None or value.high is None:
        return text
    return f"{text} [{_number(value.low, digits, sign)}, {_number(value.high, digits, sign)}]"


def _cells(suite: SuiteBoard, m: SuiteMethod) -> list[str]:
    baseline = m.regularizer == suite.baseline
    improvement = "baseline" if baseline else _interval(m.probability_of_improvement, 2, sign=False)
    cells = [m.regularizer, _interval(m.iqm), _interval(m.mean), improvement, f"{m.average_rank:.2f}", str(m.runs)]
    return [*cells, _speed(m)]


def _speed(m: SuiteMethod) -> str:
    speed = m.time_to_target
    if speed is None:
        return "–"
    ratio = "–" if speed.relative_passes is None else f"{speed.relative_passes:.2f}"
    return f"{ratio} ({speed.reached}/{speed.runs} runs)"


def _header(suite: SuiteBoard) -> list[str]:
    return [h.format(baseline=suite.baseline) for h in HEADER]


def lines_under(suite: SuiteBoard) -> list[str]:
    """The rules and the tests, one sentence each."""
    lines = [
        *([suite.caution] if suite.caution else []),
        f"Suite of {len(suite.benchmarks)} benchmarks ({', '.join(suite.benchmarks)}). "
        f"Score: {suite.score_rule}; 0 = {suite.baseline}, higher is better.",
        f"IQM: mean of the middle 50% of the runs' scores pooled over benchmarks; intervals: stratified bootstrap "
        f"({suite.resamples} resamples, runs resampled within each benchmark, percentile, "
        f"{suite.confidence:.0%}). P(better): a run's chance to beat one of {suite.baseline}'s on the same "
        "benchmark (ties half), averaged over benchmarks. Avg rank: by mean test accuracy per benchmark, 1 = best.",
    ]
    if any(m.time_to_target is not None for m in suite.methods):
        lines.append(
            f"Passes to target: per benchmark, the target is {TARGET_RULE.format(baseline=suite.baseline)}; "
            f"a method's time is the median forward+backward passes of its runs that reached it; shown: the "
            f"geometric mean over benchmarks of its time over {suite.baseline}'s (< 1: sooner), and how many "
            "of its runs reached the target."
        )
    if suite.friedman_p is not None:
        apart = [
            f"{a}–{b}"
            for (a, b), p in sorted(suite.nemenyi_p.items())
            if p > suite.alpha  # not told apart
        ]
        lines.append(
            f"Friedman test over the ranks: χ² = {suite.friedman_statistic:.2f}, p = {suite.friedman_p:.3g}. "
            f"Nemenyi (α = {suite.alpha:g}): critical difference {suite.critical_difference:.2f} ranks; "
            + (f"not distinguishable: {', '.join(apart)}." if apart else "every pair distinguishable.")
        )
    elif suite.tests_note:
        lines.append(f"No rank tests: {suite.tests_note}.")
    if suite.intervals_note:
        lines.append(f"Intervals: {suite.intervals_note}.")
    for benchmark in dict.fromkeys(c.benchmark for c in suite.flatness):
        found = [
            f"{FLATNESS_MEASURES[c.measure]} τ = {_interval(c.tau, 2)} (n = {c.runs}, p = {c.p:.2g})"
            for c in suite.flatness
            if c.benchmark == benchmark
        ]
        lines.append(
            f"Flatness against the generalization gap on {benchmark} (Kendall's τ-b with test loss − training "
            f"loss over completed runs; > 0: sharper runs generalize worse): {'; '.join(found)}."
        )
    for name, why in suite.excluded_benchmarks:
        lines.append(f"Benchmark left out: {name} ({why}).")
    for name, why in suite.excluded_methods:
        lines.append(f"Method left out: {name} ({why}).")
    return lines


def _text(suite: SuiteBoard) -> str:
    header = _header(suite)
    rows = [_cells(suite, m) for m in suite.methods]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows), ""]
    out += [textwrap.fill(rule, RULES_WIDTH, break_on_hyphens=False) for rule in lines_under(suite)]
    return "\n".join(s.rstrip() for s in out) + "\n"


def _markdown(suite: SuiteBoard) -> str:
    def cells(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    header = _header(suite)
    out = ["## Suite", "", cells(header), "|" + "|".join("---" for _ in header) + "|"]
    out += [cells(_cells(suite, m)) for m in suite.methods]
    out += ["", *lines_under(suite)]
    return "\n".join(out) + "\n"


def to_dict(suite: SuiteBoard) -> dict[str, Any]:
    record = dataclasses.asdict(suite)
    record["nemenyi_p"] = [{"a": a, "b": b, "p": p} for (a, b), p in sorted(suite.nemenyi_p.items())]
    record["score_rule"] = suite.score_rule
    record["rules"] = lines_under(suite)
    return record


def _json(suite: SuiteBoard) -> str:
    return json.dumps(to_dict(suite), indent=2, allow_nan=False)


CSV_COLUMNS = (
    "regularizer",
    "iqm",
    "iqm_ci_low",
    "iqm_ci_high",
    "mean",
    "mean_ci_low",
    "mean_ci_high",
    "probability_of_improvement",
    "probability_of_improvement_ci_low",
    "probability_of_improvement_ci_high",
    "average_rank",
    "runs",
    "relative_passes_to_target",
    "runs_reaching_target",
    "runs_with_curves",
    "baseline",
    "benchmarks",
)


def _csv(suite: SuiteBoard) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for m in suite.methods:
        record: dict[str, Any] = {"regularizer": m.regularizer, "average_rank": m.average_rank, "runs": m.runs}
        speed = m.time_to_target
        record["relative_passes_to_target"] = None if speed is None else speed.relative_passes
        record["runs_reaching_target"] = None if speed is None else speed.reached
        record["runs_with_curves"] = None if speed is None else speed.runs
        for name in ("iqm", "mean", "probability_of_improvement"):
            value = getattr(m, name)
            record[name], record[f"{name}_ci_low"], record[f"{name}_ci_high"] = (
                ("", "", "") if value is None else (value.value, value.low, value.high)
            )
        record = {k: "" if v is None else v for k, v in record.items()}
        writer.writerow({**record, "baseline": suite.baseline, "benchmarks": " ".join(suite.benchmarks)})
    return out.getvalue()


def _latex(suite: SuiteBoard) -> str:
    best = max((m.iqm.value for m in suite.methods), default=None)
    rows = []
    for m in suite.methods:
        cells = [escape(c) for c in _cells(suite, m)]
        if m.iqm.value == best:
            cells[1] = rf"\textbf{{{cells[1]}}}"
        rows.append(" & ".join(cells) + r" \\")
    caption = escape(" ".join(lines_under(suite)))
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\begin{tabular}{lrrrrrr}",
            r"\toprule",
            " & ".join(escape(h) for h in _header(suite)) + r" \\",
            r"\midrule",
            *rows,
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{{caption}}}",
            r"\end{table}",
            "",
        ]
    )


def render_suite(suite: SuiteBoard, fmt: str) -> str:
    """The suite board in ``fmt``: ``table``, ``json``, ``csv``, ``markdown`` or ``latex``."""
    renderers = {"table": _text, "json": _json, "csv": _csv, "markdown": _markdown, "latex": _latex}
    if fmt not in renderers:
        raise ValueError(f"unknown suite format {fmt!r}; choose one of {', '.join(renderers)}")
    return renderers[fmt](suite)
