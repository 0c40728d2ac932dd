"""The report's figures: each a function from typed data to a matplotlib Figure (no display needed).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state), except the
two drawn by Optuna's own ``optuna.visualization.matplotlib`` functions, which create their figure
through pyplot: :func:`use_agg` selects the Agg backend before they run, so nothing opens a
window. Every axis says its quantity and unit; accuracies are fractions in [0, 1]. Each method
keeps one colour and marker everywhere (:mod:`bench.report.palette`); a filled marker is a final
run, a hollow one a search trial, so the figures read in greyscale too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.markers import MarkerStyle
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter, MaxNLocator

from bench.leaderboard import RANKED_BY_FINAL
from bench.leaderboard.suite import SuiteBoard, score_distribution
from bench.report.data import FlatnessPoint, MethodCurve, MethodResult, pareto_front
from bench.report.palette import Style
from bench.report.reference import ReferenceComparison
from bench.report.studies import RebuiltStudy, importance_evaluator, quiet_optuna

Styles = Mapping[str, Style]

#: Width of the spread of one method's seeds on the distribution plot, in method slots.
SEED_SPREAD = 0.3


#: Opacity of the reference intervals drawn behind a run's own numbers.
REFERENCE_ALPHA = 0.16


def use_agg() -> None:
    """Draw off-screen, whatever backend the environment would pick (Agg also saves SVG and PDF)."""
    matplotlib.use("Agg")


def method_handles(methods: Sequence[str], styles: Styles) -> list[Line2D]:
    """One legend entry per method: its colour and marker."""
    return [
        Line2D([], [], marker=styles[m].marker, linestyle="", color=styles[m].color, markersize=7, label=m)
        for m in methods
    ]


def _legend_columns(entries: int) -> int:
    return max(1, min(entries, 6))


def _log_if_wide(ax: Axes, values: Sequence[float], axis: str) -> bool:
    """Log scale for an axis whose positive values span a factor of 10 or more."""
    positive = [v for v in values if v > 0]
    wide = len(positive) == len(values) and bool(values) and max(values) / min(values) >= 10
    if wide:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        # Plain numbers (100, 1000): the default labels are TeX (10^{2}), which the report draws
        # literally (text.parse_math off, so that names with "$" stay text).
        which = ax.xaxis if axis == "x" else ax.yaxis
        which.set_major_formatter(LogFormatter(labelOnlyBase=False))
        which.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # minor labels on a narrow range only
    return wide


def _interval(result: MethodResult) -> list[list[float]] | None:
    if result.ci_low is None or result.ci_high is None:
        return None
    return [[result.test_accuracy - result.ci_low], [result.ci_high - result.test_accuracy]]


def compute_figure(results: Sequence[MethodResult], styles: Styles, title: str) -> Figure:
    """Test accuracy against compute per method, Pareto front marked.

    Left: mean forward + backward passes of one training run of the chosen config; right: its mean
    wall time (s); both log scale. A point is the method's mean test accuracy with its t-interval
    (filled: final seeds; hollow: best search trial, n=1), in the method's colour and marker. The
    front is the set of methods that no other beats on both axes
    (:func:`bench.report.data.pareto_front`), ringed and joined."""
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, attribute, label in (
        (axes[0], "passes_per_run", "forward + backward passes per training run (log scale)"),
        (axes[1], "seconds_per_run", "wall time per training run (s, log scale)"),
    ):
        costs = [getattr(r, attribute) for r in results]
        values = [r.test_accuracy for r in results]
        for r, cost in zip(results, costs, strict=True):
            filled = r.ranked_by == RANKED_BY_FINAL
            style = styles[r.regularizer]
            ax.errorbar(
                cost,
                r.test_accuracy,
                yerr=_interval(r),
                fmt=style.marker,
                markersize=7,
                capsize=4,
                color=style.color,
                markerfacecolor=style.color if filled else "white",
            )
            ax.annotate(r.regularizer, (cost, r.test_accuracy), textcoords="offset points", xytext=(7, 5), fontsize=9)
        front = pareto_front(costs, values)
        if front:
            ax.plot([costs[i] for i in front], [values[i] for i in front], "--", color="0.35", linewidth=1.2, zorder=0)
            ax.scatter(
                [costs[i] for i in front],
                [values[i] for i in front],
                s=260,
                facecolors="none",
                edgecolors="0.2",
                linewidths=1.3,
            )
        if costs and all(c > 0 for c in costs):
            ax.set_xscale("log")
            low, high = min(costs), max(costs)
            ax.set_xlim(low / 1.6, high * 1.6)  # room for the labels right of the points
            # Plain numbers (30, 40, 100) rather than 3×10^1 on a narrow log range.
            ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy (fraction; mean, 95% CI)")
    methods = [r.regularizer for r in results]
    figure.legend(  # below the axes: inside, it would hide points or intervals
        handles=[
            *method_handles(methods, styles),
            Line2D([], [], marker="o", linestyle="", color="0.3", label="mean over final seeds, 95% t-interval"),
            Line2D(
                [], [], marker="o", linestyle="", color="0.3", markerfacecolor="white", label="best search trial (n=1)"
            ),
            Line2D(
                [],
                [],
                marker="o",
                linestyle="--",
                color="0.35",
                markerfacecolor="none",
                markersize=14,
                label="Pareto front",
            ),
        ],
        loc="outside lower center",
        ncols=_legend_columns(len(methods) + 3),
        fontsize=8,
    )
    figure.suptitle(f"{title}: test accuracy against compute")
    return figure


def seeds_figure(
    results: Sequence[MethodResult], styles: Styles, title: str, reference: ReferenceComparison | None = None
) -> Figure:
    """Each method's test accuracy over its final seeds: every seed a labelled point in the
    method's colour and marker, the mean a bar and the t-interval a line. Methods in leaderboard
    order. With a ``reference``, each method's reference interval is a faint band behind its
    seeds and the reference mean a dashed line across it."""
    figure = Figure(figsize=(max(6.0, 1.6 * len(results) + 2), 4.4), layout="constrained")
    ax = figure.subplots()
    referenced = False
    for x, r in enumerate(results):
        style = styles[r.regularizer]
        n = len(r.runs)
        offsets = [0.0] if n == 1 else [SEED_SPREAD * (i / (n - 1) - 0.5) for i in range(n)]
        filled = r.ranked_by == RANKED_BY_FINAL
        for offset, run in zip(offsets, r.runs, strict=True):
            ax.scatter(
                x + offset,
                run.test_accuracy,
                s=40,
                marker=style.marker,
                facecolors=style.color if filled else "white",
                edgecolors=style.color,
                zorder=3,
            )
            ax.annotate(
                f"s{run.seed}",
                (x + offset, run.test_accuracy),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
                color="0.35",
            )
        ax.hlines(r.test_accuracy, x - 0.28, x + 0.28, color="black", linewidth=1.5, zorder=2)
        if r.ci_low is not None and r.ci_high is not None:
            ax.vlines(x + 0.3, r.ci_low, r.ci_high, color="black", linewidth=1.2)
        known = reference.interval_of(r.regularizer) if reference is not None else None
        if known is not None:
            referenced = True
            if known.ci_low is not None and known.ci_high is not None:
                ax.fill_between(
                    [x - 0.42, x + 0.42], known.ci_low, known.ci_high, color=style.color, alpha=REFERENCE_ALPHA, lw=0
                )
            ax.hlines(known.mean, x - 0.42, x + 0.42, color=style.color, linestyle="--", linewidth=1.2, zorder=1)
    ax.set_xticks(
        range(len(results)),
        [r.regularizer if r.ranked_by == RANKED_BY_FINAL else f"{r.regularizer}\n(best search trial)" for r in results],
    )
    ax.set_xlim(-0.6, len(results) - 0.4)
    ax.set_xlabel("method (leaderboard order)")
    ax.set_ylabel("test accuracy (fraction)")
    ax.grid(True, axis="y", alpha=0.3)
    handles = [
        Line2D([], [], marker="o", linestyle="", color="0.3", label="one final seed (sN = seed N)"),
        Line2D([], [], color="black", linewidth=1.5, label="mean"),
        Line2D([], [], color="black", linewidth=1.2, marker="|", label="95% t-interval"),
    ]
    if referenced:
        handles += [
            Patch(facecolor="0.3", alpha=REFERENCE_ALPHA * 2, label="reference interval"),
            Line2D([], [], color="0.3", linestyle="--", linewidth=1.2, label="reference mean"),
        ]
    # Three to a row: the figure may be as narrow as 6 inches (a few methods).
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    figure.suptitle(f"{title}: test accuracy over final seeds")
    return figure


def curves_figure(curves: Sequence[MethodCurve], styles: Styles, title: str) -> Figure:
    """Learning curves against compute: validation accuracy (left) and training loss (right, log
    scale) against the forward + backward passes spent so far, one line per method (the median
    over the runs behind its standing, in its colour and marker) with a band from the lowest to
    the highest run; x on a log scale when it spans a factor of 10 or more."""
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True)
    for ax, attribute, label in (
        (axes[0], "val_accuracy", "validation accuracy (fraction)"),
        (axes[1], "train_loss", "training loss (nats)"),
    ):
        for curve in curves:
            style = styles[curve.regularizer]
            low, middle, high = zip(*getattr(curve, attribute), strict=True)
            every = max(1, len(curve.passes) // 8)  # markers sparse enough to see the line
            ax.plot(curve.passes, middle, color=style.color, marker=style.marker, markevery=every, markersize=5, lw=1.4)
            if curve.runs > 1:
                ax.fill_between(curve.passes, low, high, color=style.color, alpha=REFERENCE_ALPHA, lw=0)
        ax.set_ylabel(label)
        ax.set_xlabel("forward + backward passes so far")
        ax.grid(True, which="both", alpha=0.3)
    _log_if_wide(axes[0], [p for c in curves for p in c.passes], "x")
    _log_if_wide(axes[1], [v for c in curves for _, v, _ in c.train_loss], "y")
    figure.legend(
        handles=method_handles([c.regularizer for c in curves], styles),
        loc="outside lower center",
        ncols=_legend_columns(len(curves)),
        fontsize=8,
    )
    figure.suptitle(f"{title}: learning curves against compute")
    return figure


def critical_difference_figure(suite: SuiteBoard, styles: Styles) -> Figure:
    """Demšar's critical-difference diagram (drawn by scikit-posthocs): each method at its average
    rank over the suite's benchmarks (1 = best, on the left), a bar joining the methods Nemenyi's
    test does not tell apart, and the critical difference above the axis."""
    import pandas as pd
    import scikit_posthocs

    names = [m.regularizer for m in suite.methods]
    p = pd.DataFrame(1.0, index=names, columns=names)
    for (a, b), value in suite.nemenyi_p.items():
        p.loc[a, b] = p.loc[b, a] = value
    figure = Figure(figsize=(9, 1.6 + 0.32 * len(names)), layout="constrained")
    ax = figure.subplots()
    scikit_posthocs.critical_difference_diagram(
        {m.regularizer: m.average_rank for m in suite.methods},
        p,
        cd=suite.critical_difference,
        alpha=suite.alpha,
        ax=ax,
        color_palette={name: styles[name].color for name in names},
        label_fmt_left="{label} ({rank:.2f})",
        label_fmt_right="({rank:.2f}) {label}",
    )
    figure.suptitle(
        f"Average rank over {len(suite.benchmarks)} benchmarks; bars join methods Nemenyi's test does not tell "
        f"apart (α = {suite.alpha:g}, CD = {suite.critical_difference:.2f})",
        fontsize=10,
    )
    return figure


def profile_figure(suite: SuiteBoard, styles: Styles) -> Figure:
    """rliable's performance profiles: for every τ, the fraction of a method's runs whose normalized
    score exceeds τ (each benchmark weighted equally), one line per method."""
    scores = [s for m in suite.methods for task in m.scores for s in task]
    low, high = min(scores), max(scores)
    pad = 0.05 * (high - low or 1.0)
    taus = [low - pad + (high - low + 2 * pad) * i / 400 for i in range(401)]
    figure = Figure(figsize=(8, 4.6), layout="constrained")
    ax = figure.subplots()
    for m in suite.methods:
        style = styles[m.regularizer]
        ax.plot(taus, score_distribution(m.scores, taus), color=style.color, lw=1.6, label=m.regularizer)
    ax.axvline(0.0, color="0.4", linestyle=":", lw=1)
    ax.set_xlabel(f"normalized score τ (relative error reduction vs {suite.baseline}; 0 = {suite.baseline}'s mean)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    figure.legend(
        handles=method_handles([m.regularizer for m in suite.methods], styles),
        loc="outside lower center",
        ncols=_legend_columns(len(suite.methods)),
        fontsize=8,
    )
    figure.suptitle("Performance profiles over the suite")
    return figure


def flatness_figure(points: Sequence[FlatnessPoint], styles: Styles, title: str) -> Figure:
    """Test accuracy against the Hessian trace (left, with the estimator's standard error) and the
    top Hessian eigenvalue (right), one point per run that measured them, in its method's colour
    and marker; final runs filled, search trials hollow. An axis spanning a factor of 10 or more
    is log scale. Both are second derivatives of the loss (nats) in the weights."""
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, attribute, label in (
        (axes[0], "hessian_trace", "Hessian trace Tr(H) of the training loss (± std. error)\nnats per unit weight²"),
        (axes[1], "hessian_top_eigenvalue", "top Hessian eigenvalue λ_max of the training loss\nnats per unit weight²"),
    ):
        measured = [p for p in points if getattr(p, attribute) is not None]
        for p in measured:
            final = p.phase == "final"
            xerr = p.hessian_trace_stderr if attribute == "hessian_trace" else None
            style = styles[p.regularizer]
            ax.errorbar(
                getattr(p, attribute),
                p.test_accuracy,
                xerr=xerr,
                fmt=style.marker,
                markersize=6,
                capsize=3,
                color=style.color,
                markerfacecolor=style.color if final else "white",
            )
        if measured:
            wide = _log_if_wide(ax, [getattr(p, attribute) for p in measured], "x")
            ax.set_xlabel(label + (", log scale" if wide else ""))
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="0.4")
            ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy (fraction)")
    methods = list(dict.fromkeys(p.regularizer for p in points))  # first seen: the rows' order
    handles = method_handles(methods, styles)
    handles += [
        Line2D([], [], marker="o", linestyle="", color="0.3", label="final run (filled)"),
        Line2D([], [], marker="o", linestyle="", color="0.3", markerfacecolor="white", label="search trial (hollow)"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(len(handles)), fontsize=8)
    figure.suptitle(f"{title}: flatness against generalization")
    return figure


def _metric_label(metric: str) -> str:
    return f"{metric} (fraction)" if metric.endswith("accuracy") else f"{metric} (nats)"


def history_figure(rebuilt: RebuiltStudy, style: Style) -> Figure:
    """Optuna's optimization history of the rebuilt study: each completed trial's search-metric
    value (in the method's colour and marker) and the best so far, against the trial number
    (order of start)."""
    import optuna.visualization.matplotlib as ovm

    use_agg()
    # Optuna switches pyplot to its ggplot style for good (plt.style.use): keep that to its figure.
    with matplotlib.rc_context(), quiet_optuna():
        ax = ovm.plot_optimization_history(rebuilt.study, target_name=rebuilt.metric)
    figure = ax.figure
    figure.set_size_inches(6.2, 4.2)
    ax.set_title(f"{rebuilt.regularizer}: search history")
    ax.set_xlabel("trial (in order of start)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_metric_label(rebuilt.metric))
    # Optuna draws the trials as a scatter labelled with the target's name (tab10 blue circles) and
    # the best so far as its only line: redrawn in the method's style, with a legend saying which is which.
    trials = next((c for c in ax.collections if c.get_label() in (rebuilt.metric, "Objective Value")), None)
    if trials is not None:
        marker = MarkerStyle(style.marker)
        trials.set_paths([marker.get_path().transformed(marker.get_transform())])
        trials.set_facecolor(style.color)
        trials.set_edgecolor(style.color)
    for line in ax.get_lines():
        line.set_color("0.25")
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()
    figure.legend(
        handles=[
            Line2D(
                [],
                [],
                marker=style.marker,
                linestyle="",
                color=style.color,
                label=f"completed trial's {rebuilt.metric}",
            ),
            Line2D([], [], color="0.25", alpha=0.5, label="best so far"),
        ],
        loc="outside lower center",
        ncols=2,
        fontsize=8,
    )
    figure.set_layout_engine("constrained")
    return figure  # type: ignore[return-value]


def importance_figure(rebuilt: RebuiltStudy, style: Style) -> Figure:
    """Optuna's hyperparameter-importance bar chart of the rebuilt study (seeded fANOVA), the bars
    in the method's colour. Call it only when :attr:`RebuiltStudy.importances` is not None."""
    import optuna.visualization.matplotlib as ovm

    if rebuilt.importances is None:
        raise ValueError(f"no importances for {rebuilt.regularizer}: {rebuilt.importance_note}")
    use_agg()
    with matplotlib.rc_context(), quiet_optuna():
        ax = ovm.plot_param_importances(rebuilt.study, evaluator=importance_evaluator())
    figure = ax.figure
    figure.set_size_inches(6.2, 4.2)
    ax.set_title("", loc="left")  # Optuna's generic title, replaced by the centred one below
    ax.set_title(f"{rebuilt.regularizer}: importance for {rebuilt.metric}")
    ax.set_xlabel("fANOVA importance (share of the variance; sums to 1)")
    ax.set_ylabel("hyperparameter")
    for bar in ax.patches:
        bar.set_facecolor(style.color)
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()  # Optuna's "Objective Value": replaced by one that names the objective
    figure.legend(
        handles=[Patch(facecolor=style.color, label=f"{rebuilt.regularizer}: importance for {rebuilt.metric}")],
        loc="outside lower center",
        fontsize=8,
    )
    figure.set_layout_engine("constrained")
    return figure  # type: ignore[return-value]


__all__ = [
    "compute_figure",
    "flatness_figure",
    "history_figure",
    "importance_figure",
    "method_handles",
    "seeds_figure",
    "use_agg",
]
