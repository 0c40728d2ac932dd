"""The report's figures: each a function from typed data to a matplotlib Figure (no display needed).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state), except the
two drawn by Optuna's own ``optuna.visualization.matplotlib`` functions, which create their figure
through pyplot: :func:`use_agg` selects the Agg backend before they run, so nothing opens a
window. Every axis says its quantity and unit; accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, MaxNLocator

from bench.leaderboard import RANKED_BY_FINAL
from bench.report.data import FlatnessPoint, MethodResult, pareto_front
from bench.report.studies import RebuiltStudy, importance_evaluator, quiet_optuna

#: Width of the spread of one method's seeds on the distribution plot, in method slots.
SEED_SPREAD = 0.3


def use_agg() -> None:
    """Draw off-screen (PNG only), whatever backend the environment would pick."""
    matplotlib.use("Agg")


def method_colors(methods: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """One colour per method (sorted by name), the same in every figure of the report."""
    palette = matplotlib.colormaps["tab10"]
    return {name: palette(i % palette.N) for i, name in enumerate(sorted(set(methods)))}


def _log_if_wide(ax: Axes, values: Sequence[float], axis: str) -> bool:
    """Log scale for an axis whose positive values span a factor of 10 or more."""
    positive = [v for v in values if v > 0]
    wide = len(positive) == len(values) and bool(values) and max(values) / min(values) >= 10
    if wide:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    return wide


def _interval(result: MethodResult) -> list[list[float]] | None:
    if result.ci_low is None or result.ci_high is None:
        return None
    return [[result.test_accuracy - result.ci_low], [result.ci_high - result.test_accuracy]]


def compute_figure(results: Sequence[MethodResult], colors: Mapping[str, object], title: str) -> Figure:
    """Test accuracy against compute per method, Pareto front marked.

    Left: mean forward + backward passes of one training run of the chosen config; right: its mean
    wall time (s); both log scale. A point is the method's mean test accuracy with its t-interval
    (filled: final seeds; hollow: best search trial, n=1). The front is the set of methods that no
    other beats on both axes (:func:`bench.report.data.pareto_front`), ringed and joined."""
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
            ax.errorbar(
                cost,
                r.test_accuracy,
                yerr=_interval(r),
                fmt="o",
                markersize=7,
                capsize=4,
                color=colors[r.regularizer],
                markerfacecolor=colors[r.regularizer] if filled else "white",
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
    figure.legend(  # below the axes: inside, it would hide points or intervals
        handles=[
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
        ncols=3,
        fontsize=8,
    )
    figure.suptitle(f"{title}: test accuracy against compute")
    return figure


def seeds_figure(results: Sequence[MethodResult], colors: Mapping[str, object], title: str) -> Figure:
    """Each method's test accuracy over its final seeds: every seed a labelled point, the mean a
    bar and the t-interval a line. Methods in leaderboard order."""
    figure = Figure(figsize=(max(6.0, 1.6 * len(results) + 2), 4.4), layout="constrained")
    ax = figure.subplots()
    for x, r in enumerate(results):
        n = len(r.runs)
        offsets = [0.0] if n == 1 else [SEED_SPREAD * (i / (n - 1) - 0.5) for i in range(n)]
        filled = r.ranked_by == RANKED_BY_FINAL
        for offset, run in zip(offsets, r.runs, strict=True):
            ax.scatter(
                x + offset,
                run.test_accuracy,
                s=40,
                color=colors[r.regularizer],
                facecolors=colors[r.regularizer] if filled else "white",
                edgecolors=colors[r.regularizer],
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
    ax.set_xticks(
        range(len(results)),
        [r.regularizer if r.ranked_by == RANKED_BY_FINAL else f"{r.regularizer}\n(best search trial)" for r in results],
    )
    ax.set_xlim(-0.6, len(results) - 0.4)
    ax.set_xlabel("method (leaderboard order)")
    ax.set_ylabel("test accuracy (fraction)")
    ax.grid(True, axis="y", alpha=0.3)
    figure.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color="0.3", label="one final seed (sN = seed N)"),
            Line2D([], [], color="black", linewidth=1.5, label="mean"),
            Line2D([], [], color="black", linewidth=1.2, marker="|", label="95% t-interval"),
        ],
        loc="outside lower center",
        ncols=3,
        fontsize=8,
    )
    figure.suptitle(f"{title}: test accuracy over final seeds")
    return figure


def flatness_figure(points: Sequence[FlatnessPoint], colors: Mapping[str, object], title: str) -> Figure:
    """Test accuracy against the Hessian trace (left, with the estimator's standard error) and the
    top Hessian eigenvalue (right), one point per run that measured them; final runs filled,
    search trials hollow. An axis spanning a factor of 10 or more is log scale."""
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, attribute, label in (
        (axes[0], "hessian_trace", "Hessian trace Tr(H) of the training loss (± std. error)"),
        (axes[1], "hessian_top_eigenvalue", "top Hessian eigenvalue λ_max of the training loss"),
    ):
        measured = [p for p in points if getattr(p, attribute) is not None]
        for p in measured:
            final = p.phase == "final"
            xerr = p.hessian_trace_stderr if attribute == "hessian_trace" else None
            ax.errorbar(
                getattr(p, attribute),
                p.test_accuracy,
                xerr=xerr,
                fmt="o" if final else "^",
                markersize=6,
                capsize=3,
                color=colors[p.regularizer],
                markerfacecolor=colors[p.regularizer] if final else "white",
            )
        if measured:
            wide = _log_if_wide(ax, [getattr(p, attribute) for p in measured], "x")
            ax.set_xlabel(label + (" (log scale)" if wide else ""))
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center", color="0.4")
            ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy (fraction)")
    methods = sorted({p.regularizer for p in points})
    handles = [Line2D([], [], marker="s", linestyle="", color=colors[m], label=m) for m in methods]
    handles += [
        Line2D([], [], marker="o", linestyle="", color="0.3", label="final run"),
        Line2D([], [], marker="^", linestyle="", color="0.3", markerfacecolor="white", label="search trial"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    figure.suptitle(f"{title}: flatness against generalization")
    return figure


def history_figure(rebuilt: RebuiltStudy) -> Figure:
    """Optuna's optimization history of the rebuilt study: each completed trial's search-metric
    value and the best so far, against the trial number (order of start)."""
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
    ax.set_ylabel(f"{rebuilt.metric} (fraction)" if rebuilt.metric.endswith("accuracy") else f"{rebuilt.metric} (nats)")
    figure.set_layout_engine("constrained")
    return figure  # type: ignore[return-value]


def importance_figure(rebuilt: RebuiltStudy) -> Figure:
    """Optuna's hyperparameter-importance bar chart of the rebuilt study (seeded fANOVA). Call it
    only when :attr:`RebuiltStudy.importances` is not None."""
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
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()  # a single series named "Objective Value": the title says which objective
    figure.set_layout_engine("constrained")
    return figure  # type: ignore[return-value]


__all__ = [
    "compute_figure",
    "flatness_figure",
    "history_figure",
    "importance_figure",
    "method_colors",
    "seeds_figure",
    "use_agg",
]
