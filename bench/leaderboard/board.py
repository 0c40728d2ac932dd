"""The leaderboard: per benchmark, one standing per regularizer, ranked with its uncertainty.

Input is the table of :func:`bench.results.parquet.read_rows` (one row per trial, already
deduplicated by run_id). For each (benchmark, regularizer):

* **Search trials** are the rows with phase ``search``. All of them are counted (total /
  completed / stopped / failed) and make up the search cost: mean forward and backward passes per
  trial, the wall time summed over trials and the elapsed time (the time during which at least
  one trial ran, a row's span being its ``timestamp`` minus its ``wall_seconds`` to its
  ``timestamp``: the downtime of an interrupted and resumed run is not counted), and the summed time as
  trial-slot hours (GPU when the row's device is CUDA, CPU otherwise; one slot per trial, since
  rows do not record the resources a trial held).
* **Best config**: the rule of :mod:`bench.selection`, the same the search used to choose what
  the final seeds re-run: completed trials with a finite value of the search metric (the rows'
  ``search_metric``; val_accuracy for rows that predate it), in its direction, ties by the other
  objective, then run_id. The test accuracy reported is that trial's, never the best test
  accuracy of the search (that would be selection on the test set).
* **Final runs** are the completed rows with phase ``final`` and a test accuracy, grouped by the
  search trial they re-run (``selected_from_run_id``). The method stands by the group of the
  first trial in the selection order that has final runs (the top-1 config; others, from
  ``final.top_k`` > 1, are listed in ``other_final_groups``). Rows without
  ``selected_from_run_id`` (written before schema version 2) join the highest-ranked search
  trial with equal ``regularizer_hparams``; when no group matches any ranked trial, the most
  recently written group is used.
* **Statistics** (:mod:`bench.stats`): mean, sample std, n and a t-interval of the final test
  accuracies, cut at the accuracy's bounds [0, 1]; the difference to a baseline method with a
  paired t-test on seed-matched runs (Welch's otherwise), p-values Holm-adjusted over the board,
  and each method's verdict (better, not distinguishable, worse). A method ranked by its search
  trial alone has n=1: no interval and no test.
* **Rank**: the verdicts of the tests (:func:`bench.stats.groups_by_tests`) when at least one test
  ran on the board; else overlapping intervals (:func:`bench.stats.rank_groups`). The board's
  ``rank_rule`` says which. Methods without a rank (no test accuracy, or no test on a board
  ranked by the tests) are listed last.
* **Flatness** columns (Hessian top eigenvalue, trace, epsilon-sharpness, adaptive sharpness)
  are the means over the chosen rows (the final runs, or the best trial), None when not
  measured. The trace comes with the standard error of that mean from the rows' own trace
  errors, √(Σ se_i²)/k (the estimates are independent), None when a row lacks one.
  ``eos_ratio`` is the mean of each row's λ_max over the edge of stability of its optimizer at
  its configured (peak) learning rate, 2(1 + β)/η (Nesterov: 2(1 + β)/(η(1 + 2β))).

>>> from bench.results.schema import SCHEMA
>>> build_leaderboard(SCHEMA.empty_table())
[]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from bench import metrics as M
from bench import selection, stats
from bench.measure.stability import edge_of_stability
from bench.results.schema import FailureClass, Phase, TrialStatus

#: Flatness columns averaged over the chosen rows (declared in bench.metrics).
FLATNESS_COLUMNS = M.FLATNESS_COLUMNS

RANKED_BY_FINAL = "final"
RANKED_BY_SEARCH = "search"
RANKED_BY_NONE = "none"

#: The baseline method of the statistics, unless the caller names another.
DEFAULT_BASELINE = "erm"

#: How the board's rank groups were formed (:mod:`bench.stats`).
RankRule = Literal["tests", "intervals"]
RULE_TESTS: RankRule = "tests"
RULE_INTERVALS: RankRule = "intervals"

#: The bounds of the ranking metric (accuracy, a fraction): every interval is cut at them.
BOUNDS = M.METRICS[M.TEST_ACCURACY].bounds

#: Why a method ranked by one search trial has no interval.
NO_INTERVAL_SEARCH = "n=1, no interval"
NO_INTERVAL_ONE_SEED = "one final seed, no interval"

_NEEDED_COLUMNS = (
    "run_id",
    "budget",
    "benchmark",
    "regularizer",
    "phase",
    "status",
    "dataset",
    "model",
    "seed",
    "search_metric",
    "selected_from_run_id",
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
    M.DEVICE,
    "timestamp",
)


@dataclass(frozen=True)
class FinalGroup:
    """The final runs of one selected config: test accuracy (fraction) over its seeds."""

    selected_from_run_id: str | None  # None: rows predating the column that matched no search trial
    selection_rank: int | None  # that trial's position in the selection order (1 = best)
    regularizer_hparams: dict[str, Any]
    seeds: tuple[int, ...]
    n: int
    test_accuracy: float
    test_accuracy_std: float | None
    test_accuracy_ci_low: float | None
    test_accuracy_ci_high: float | None
    test_accuracy_ci_cut: bool


@dataclass(frozen=True)
class Standing:
    """One regularizer on one benchmark. Accuracies are fractions in [0, 1]."""

    rank: int | None  # shared by a rank group (bench.stats.rank_groups); None without a test accuracy
    rank_group: int | None
    tied: bool  # the rank group holds more than one method
    regularizer: str
    ranked_by: str  # "final" (mean over final seeds), "search" (best trial) or "none"
    search_metric: str  # the metric that chose the best config (bench.selection)
    test_accuracy: float | None  # the ranking value: final mean, else the best trial's
    test_accuracy_std: float | None  # sample std (ddof=1) over final seeds; None for fewer than 2
    test_accuracy_ci_low: float | None  # t-interval of the mean at the board's confidence level
    test_accuracy_ci_high: float | None
    test_accuracy_ci_cut: bool  # the t-interval reached past [0, 1] and was cut there
    interval_rough: bool  # an interval from fewer than bench.stats.FEW seeds: it says little
    interval_note: str | None  # why there is no interval
    n_seeds: int  # number of final runs (0 when ranked by the search)
    seeds: tuple[int, ...]  # their training seeds
    baseline: str | None  # the method compared against; None when the board has none
    vs_baseline_difference: float | None  # mean test accuracy minus the baseline's
    vs_baseline_ci_low: float | None  # t-interval of the difference
    vs_baseline_ci_high: float | None
    vs_baseline_test: str | None  # "paired" or "welch"; None when no test ran
    vs_baseline_p: float | None  # two-sided raw p-value
    vs_baseline_p_holm: float | None  # Holm-adjusted over the board's tests
    vs_baseline_significant: bool | None  # p_holm <= alpha
    vs_baseline_note: str | None  # why no test ran ("baseline" on the baseline itself)
    #: "better", "not distinguishable", "worse" (Holm, at the board's alpha), "baseline" or "no test";
    #: None when the board has no baseline.
    vs_baseline_verdict: str | None
    best_run_id: str | None  # the search trial chosen by bench.selection
    best_val_accuracy: float | None
    best_val_loss: float | None
    best_test_accuracy: float | None  # that trial's own test accuracy
    final_selected_from_run_id: str | None  # the search trial the ranked final group re-runs
    regularizer_hparams: dict[str, Any]
    training_hparams: dict[str, Any]
    #: The training hyperparameters the search tuned (those that vary across the method's trials).
    tuned_training_hparams: dict[str, Any]
    other_final_groups: tuple[FinalGroup, ...]  # final groups of other selected configs (top_k > 1)
    #: How the equal budget was counted for this method (the search rows' ``budget``, bench.plan.MethodBudget):
    #: kind "trials" or "passes", scale, trials, epochs, passes per step; empty for rows before schema v2.
    budget: dict[str, Any]
    #: The rows behind ``test_accuracy`` (the ranked final group, or the best search trial): the
    #: report plots exactly these, so it never re-derives which runs a standing stands on.
    behind_run_ids: tuple[str, ...]
    trials_total: int
    trials_completed: int
    trials_stopped: int
    trials_failed: int
    mean_forward_passes: float | None  # per search trial, all statuses
    mean_backward_passes: float | None
    mean_passes_per_trial: float | None  # forward + backward
    search_wall_seconds: float  # summed over all search trials
    search_elapsed_seconds: float  # time during which at least one search trial ran
    search_cpu_slot_hours: float  # summed wall time of CPU trials / 3600, one slot per trial
    search_gpu_slot_hours: float  # the same for trials on CUDA
    hessian_top_eigenvalue: float | None
    hessian_trace: float | None
    hessian_trace_stderr: float | None  # of that mean: the trace estimates' own errors
    epsilon_sharpness: float | None
    adaptive_sharpness: float | None
    #: Mean of λ_max / the edge of stability of each row's optimizer at its peak learning rate
    #: (:func:`bench.measure.stability.edge_of_stability`): ≈ 1 at the edge, < 1 flatter than it.
    eos_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BenchmarkBoard:
    """The ranked standings of one benchmark, with the settings of its statistics."""

    benchmark: str
    dataset: str  # comma-joined when rows disagree
    model: str
    standings: tuple[Standing, ...]
    baseline: str | None  # None when the requested baseline has no rows on this board
    baseline_note: str | None  # why there are no comparisons
    confidence: float
    alpha: float
    rank_rule: RankRule
    #: Trials lost to infrastructure faults (failure_class infra): recorded, retried by a
    #: replacement, and counted in no standing (they say nothing about their method).
    lost_to_infra: int = 0

    @property
    def has_flatness(self) -> bool:
        return any(getattr(s, c) is not None for s in self.standings for c in FLATNESS_COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "dataset": self.dataset,
            "model": self.model,
            "baseline": self.baseline,
            "baseline_note": self.baseline_note,
            "confidence": self.confidence,
            "alpha": self.alpha,
            "rank_rule": self.rank_rule,
            "lost_to_infra": self.lost_to_infra,
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


@dataclass(frozen=True)
class _Group:
    source: str | None
    position: int | None
    rows: tuple[Mapping[str, Any], ...]


def _final_groups(rows: Sequence[Mapping[str, Any]], order: Sequence[Mapping[str, Any]]) -> list[_Group]:
    """Completed final rows with a test accuracy, grouped by the search trial they re-run, in
    the order the method stands by them (selection order, then unmatched legacy groups, latest
    first). ``order``: the ranked search rows."""
    position = {r["run_id"]: i for i, r in enumerate(order, start=1)}
    finals = [
        r
        for r in rows
        if r["phase"] == Phase.FINAL.value
        and r["status"] == TrialStatus.COMPLETED.value
        and _num(r[M.TEST_ACCURACY]) is not None
    ]
    groups: dict[tuple[str | None, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in finals:
        source = r["selected_from_run_id"]
        if source is None:  # written before schema v2: match the config, as earlier versions did
            source = next((s["run_id"] for s in order if s["regularizer_hparams"] == r["regularizer_hparams"]), None)
        groups[(source, "" if source is not None else r["regularizer_hparams"])].append(r)
    out = [
        _Group(source, position.get(source) if source is not None else None, tuple(g))
        for (source, _), g in groups.items()
    ]

    def key(g: _Group) -> tuple[int, float]:
        latest = max(r["timestamp"] for r in g.rows).timestamp()
        return (g.position if g.position is not None else len(position) + 1, -latest)

    return sorted(out, key=key)


def _seeded(rows: Sequence[Mapping[str, Any]]) -> dict[int, float] | list[float]:
    """Test accuracies keyed by seed (pairable), or a plain list when a seed repeats."""
    values = [float(r[M.TEST_ACCURACY]) for r in rows]
    seeds = [int(r["seed"]) for r in rows]
    return dict(zip(seeds, values, strict=True)) if len(set(seeds)) == len(seeds) else values


def _final_group(group: _Group, confidence: float) -> FinalGroup:
    ordered = sorted(group.rows, key=lambda r: (r["seed"], r["run_id"]))
    summary = stats.summarize([float(r[M.TEST_ACCURACY]) for r in ordered], confidence, BOUNDS)
    return FinalGroup(
        selected_from_run_id=group.source,
        selection_rank=group.position,
        regularizer_hparams=_hparams(ordered[0]["regularizer_hparams"]),
        seeds=tuple(int(r["seed"]) for r in ordered),
        n=summary.n,
        test_accuracy=summary.mean,  # type: ignore[arg-type]
        test_accuracy_std=summary.std,
        test_accuracy_ci_low=summary.ci_low,
        test_accuracy_ci_high=summary.ci_high,
        test_accuracy_ci_cut=summary.cut,
    )


def _tuned(search: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen values of the training hyperparameters that differ between search trials."""
    recipes = [_hparams(r["training_hparams"]) for r in search]
    return {k: v for k, v in chosen.items() if len({json.dumps(recipe.get(k)) for recipe in recipes}) > 1}


def _elapsed(rows: Sequence[Mapping[str, Any]]) -> float:
    """Seconds covered by the union of the rows' spans, each from its start (end − wall time)
    to its end (``timestamp``). Not first start to last end: a run interrupted overnight and
    resumed would count the night."""
    spans = sorted(
        (r["timestamp"] - dt.timedelta(seconds=_num(r[M.WALL_SECONDS]) or 0.0), r["timestamp"]) for r in rows
    )
    total, covered_to = 0.0, None
    for start, end in spans:
        if covered_to is not None and start < covered_to:
            start = covered_to
        if end > start:
            total += (end - start).total_seconds()
        covered_to = end if covered_to is None else max(covered_to, end)
    return total


def _slot_hours(rows: Sequence[Mapping[str, Any]], gpu: bool) -> float:
    return sum(_num(r[M.WALL_SECONDS]) or 0.0 for r in rows if str(r[M.DEVICE]).startswith("cuda") == gpu) / 3600.0


@dataclass(frozen=True)
class _Method:
    """A method's standing before the board-wide statistics, with the values they need."""

    standing: Standing
    values: dict[int, float] | list[float]  # final test accuracies (by seed when pairable)


def _method(regularizer: str, rows: Sequence[Mapping[str, Any]], confidence: float) -> _Method:
    search = [r for r in rows if r["phase"] == Phase.SEARCH.value]
    metric = selection.metric_of_rows(search)
    by_id = {r["run_id"]: r for r in search}
    order = [by_id[c.run_id] for c in selection.ranked((selection.candidate_from_row(r) for r in search), metric)]
    best = order[0] if order else None
    raw_groups = _final_groups(rows, order)
    groups = [_final_group(g, confidence) for g in raw_groups]
    chosen_rows = list(raw_groups[0].rows) if raw_groups else []

    def count(status: TrialStatus) -> int:
        return sum(r["status"] == status.value for r in search)

    values: dict[int, float] | list[float] = []
    if groups:
        top = groups[0]
        ranked_by = RANKED_BY_FINAL
        summary = stats.Summary(
            top.n,
            top.test_accuracy,
            top.test_accuracy_std,
            top.test_accuracy_ci_low,
            top.test_accuracy_ci_high,
            top.test_accuracy_ci_cut,
        )
        interval_note = NO_INTERVAL_ONE_SEED if top.n < 2 else None
        values = _seeded(chosen_rows)
        flat_rows: Sequence[Mapping[str, Any]] = chosen_rows
        config = chosen_rows[0]
    else:
        best_test = _num(best[M.TEST_ACCURACY]) if best is not None else None
        ranked_by = RANKED_BY_SEARCH if best_test is not None else RANKED_BY_NONE
        summary = stats.Summary(1 if best_test is not None else 0, best_test, None, None, None)
        interval_note = NO_INTERVAL_SEARCH if best_test is not None else None
        flat_rows = [best] if best is not None else []
        config = best
    forward = _mean([r[M.FORWARD_PASSES] for r in search])
    backward = _mean([r[M.BACKWARD_PASSES] for r in search])
    standing = Standing(
        rank=None,
        rank_group=None,
        tied=False,
        regularizer=regularizer,
        ranked_by=ranked_by,
        search_metric=metric,
        test_accuracy=summary.mean,
        test_accuracy_std=summary.std,
        test_accuracy_ci_low=summary.ci_low,
        test_accuracy_ci_high=summary.ci_high,
        test_accuracy_ci_cut=summary.cut,
        interval_rough=summary.rough,
        interval_note=interval_note,
        n_seeds=groups[0].n if groups else 0,
        seeds=groups[0].seeds if groups else (),
        baseline=None,
        vs_baseline_difference=None,
        vs_baseline_ci_low=None,
        vs_baseline_ci_high=None,
        vs_baseline_test=None,
        vs_baseline_p=None,
        vs_baseline_p_holm=None,
        vs_baseline_significant=None,
        vs_baseline_note=None,
        vs_baseline_verdict=None,
        best_run_id=best["run_id"] if best is not None else None,
        best_val_accuracy=_num(best[M.VAL_ACCURACY]) if best is not None else None,
        best_val_loss=_num(best[M.VAL_LOSS]) if best is not None else None,
        best_test_accuracy=_num(best[M.TEST_ACCURACY]) if best is not None else None,
        final_selected_from_run_id=groups[0].selected_from_run_id if groups else None,
        # Show the config whose numbers are reported: the one the ranked final group re-ran, if any.
        regularizer_hparams=_hparams(config["regularizer_hparams"]) if config is not None else {},
        training_hparams=_hparams(config["training_hparams"]) if config is not None else {},
        tuned_training_hparams=_tuned(search, _hparams(config["training_hparams"]) if config is not None else {}),
        other_final_groups=tuple(groups[1:]),
        budget=_hparams(max(search, key=lambda r: r["timestamp"])["budget"]) if search else {},
        behind_run_ids=tuple(r["run_id"] for r in flat_rows) if summary.mean is not None else (),
        trials_total=len(search),
        trials_completed=count(TrialStatus.COMPLETED),
        trials_stopped=count(TrialStatus.STOPPED),
        trials_failed=count(TrialStatus.FAILED),
        mean_forward_passes=forward,
        mean_backward_passes=backward,
        mean_passes_per_trial=None if forward is None or backward is None else forward + backward,
        search_wall_seconds=float(sum(_num(r[M.WALL_SECONDS]) or 0.0 for r in search)),
        search_elapsed_seconds=_elapsed(search),
        search_cpu_slot_hours=_slot_hours(search, gpu=False),
        search_gpu_slot_hours=_slot_hours(search, gpu=True),
        **{column: _mean([r[column] for r in flat_rows]) for column in FLATNESS_COLUMNS},
        hessian_trace_stderr=_stderr_of_mean(flat_rows),
        eos_ratio=_mean([_eos_ratio(r) for r in flat_rows]),
    )
    return _Method(standing, values)


def _eos_ratio(row: Mapping[str, Any]) -> float | None:
    """λ_max of ``row`` over the edge of stability of its optimizer at its configured (peak)
    learning rate; None without λ_max or a learning rate."""
    eigenvalue = _num(row[M.HESSIAN_TOP_EIGENVALUE])
    recipe = _hparams(row["training_hparams"])
    rate = recipe.get("learning_rate")
    if eigenvalue is None or not isinstance(rate, (int, float)) or rate <= 0:
        return None
    momentum = float(recipe.get("momentum") or 0.0)
    return eigenvalue / edge_of_stability(float(rate), momentum, bool(recipe.get("nesterov")))


def _compared(methods: Sequence[_Method], baseline: str | None, confidence: float, alpha: float) -> list[Standing]:
    """Standings with the vs-baseline fields filled in (Holm over this board's tests)."""
    if baseline is None:
        return [m.standing for m in methods]
    (base,) = [m for m in methods if m.standing.regularizer == baseline]
    others = [m for m in methods if m is not base]
    comparisons = stats.holm_adjust_comparisons([_comparison(m, base, confidence) for m in others], alpha)
    out = []
    for m in methods:
        if m is base:
            out.append(
                dataclasses.replace(
                    m.standing, baseline=baseline, vs_baseline_note="baseline", vs_baseline_verdict=stats.BASELINE
                )
            )
            continue
        c = comparisons[others.index(m)]
        out.append(
            dataclasses.replace(
                m.standing,
                baseline=baseline,
                vs_baseline_difference=c.mean_difference,
                vs_baseline_ci_low=c.ci_low,
                vs_baseline_ci_high=c.ci_high,
                vs_baseline_test=c.test,
                vs_baseline_p=c.p_value,
                vs_baseline_p_holm=c.p_holm,
                vs_baseline_significant=c.significant,
                vs_baseline_note=c.note,
                vs_baseline_verdict=stats.verdict(c),
            )
        )
    return out


def _comparison(method: _Method, base: _Method, confidence: float) -> stats.Comparison:
    a, b = method.standing, base.standing
    if a.test_accuracy is None:
        return stats.Comparison(None, 0, b.n_seeds, None, None, None, None, note="no test accuracy: no test")
    if a.ranked_by != RANKED_BY_FINAL or b.ranked_by != RANKED_BY_FINAL:
        difference = None if a.test_accuracy is None or b.test_accuracy is None else a.test_accuracy - b.test_accuracy
        who = "baseline" if b.ranked_by != RANKED_BY_FINAL else "method"
        return stats.Comparison(
            None, a.n_seeds, b.n_seeds, difference, None, None, None, note=f"{who} has no final seeds (n=1): no test"
        )
    return stats.compare(method.values, base.values, confidence, BOUNDS)


def _rank_rule(standings: Sequence[Standing]) -> RankRule:
    """Rank by the tests when at least one ran on the board; else by overlapping intervals."""
    return RULE_TESTS if any(s.vs_baseline_p is not None for s in standings) else RULE_INTERVALS


def _ranked(standings: Sequence[Standing], rule: RankRule) -> tuple[Standing, ...]:
    scored = {s.regularizer: s for s in standings if s.test_accuracy is not None}
    if rule == RULE_TESTS:
        groups = stats.groups_by_tests(
            [stats.Tested(s.regularizer, s.test_accuracy, s.vs_baseline_verdict) for s in scored.values()]  # type: ignore[arg-type]
        )
    else:
        groups = stats.rank_groups(
            [
                stats.Interval(s.regularizer, s.test_accuracy, s.test_accuracy_ci_low, s.test_accuracy_ci_high)
                for s in scored.values()
            ]  # type: ignore[arg-type]
        )
    out = [dataclasses.replace(scored[g.name], rank=g.rank, rank_group=g.group, tied=g.tied) for g in groups]
    placed = {g.name for g in groups}
    # unranked last: untested methods by mean, then methods without any test accuracy by name
    unranked = sorted(
        (s for s in standings if s.regularizer not in placed),
        key=lambda s: (s.test_accuracy is None, -(s.test_accuracy or 0.0), s.regularizer),
    )
    return (*out, *unranked)


def methods_present(table: pa.Table) -> list[str]:
    """The regularizers that have rows in ``table``, sorted (to validate a baseline name)."""
    return sorted(set(table.column("regularizer").to_pylist())) if "regularizer" in table.column_names else []


def build_leaderboard(
    table: pa.Table,
    *,
    baseline: str = DEFAULT_BASELINE,
    confidence: float = stats.CONFIDENCE,
    alpha: float = stats.ALPHA,
) -> list[BenchmarkBoard]:
    """One :class:`BenchmarkBoard` per benchmark (sorted by name) from a :func:`read_rows` table.

    ``baseline``: the method every other is tested against; a board without it has no
    comparisons (``baseline_note`` says so). ``confidence``: level of every interval;
    ``alpha``: family-wise level of the Holm-adjusted tests. Raises ValueError for missing
    columns, a level outside (0, 1) or an unknown search metric in the rows."""
    missing = [c for c in _NEEDED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"leaderboard table lacks columns {missing}")
    for name, level in (("confidence", confidence), ("alpha", alpha)):
        if not 0.0 < level < 1.0:
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {level}")
    by_benchmark: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    lost: Counter[str] = Counter()
    columns = [*_NEEDED_COLUMNS, *(["failure_class"] if "failure_class" in table.column_names else [])]
    for row in table.select(columns).to_pylist():
        if row.get("failure_class") == FailureClass.INFRA.value:
            lost[row["benchmark"]] += 1  # not the method's result: outside every count
            continue
        by_benchmark[row["benchmark"]][row["regularizer"]].append(row)
    boards = []
    for benchmark in sorted(by_benchmark):
        methods = by_benchmark[benchmark]
        rows = [r for rs in methods.values() for r in rs]
        built = [_method(name, rs, confidence) for name, rs in sorted(methods.items())]
        present = baseline in methods
        note = None if present else f"no rows of baseline {baseline!r} on this benchmark: no comparisons"
        compared = _compared(built, baseline if present else None, confidence, alpha)
        rule = _rank_rule(compared)
        boards.append(
            BenchmarkBoard(
                benchmark=benchmark,
                dataset=", ".join(sorted({r["dataset"] for r in rows})),
                model=", ".join(sorted({r["model"] for r in rows})),
                standings=_ranked(compared, rule),
                baseline=baseline if present else None,
                baseline_note=note,
                confidence=confidence,
                alpha=alpha,
                rank_rule=rule,
                lost_to_infra=lost[benchmark],
            )
        )
    return boards


def pooled_line(board: BenchmarkBoard) -> str | None:
    """The board's line on methods with more search trials on record than one search's budget
    gives: rows of several searches pooled (two runs of one config, folders ranked as one), whose
    best is chosen over all of them. None when every method is within its budget."""
    over = [
        f"{s.regularizer} {s.trials_total} (budget {s.budget['trials']})"
        for s in board.standings
        if isinstance(s.budget.get("trials"), int) and 0 < s.budget["trials"] < s.trials_total
    ]
    if not over:
        return None
    return (
        f"More search trials on record than one search's budget: {', '.join(over)}. Rows of several searches "
        "are pooled (e.g. two runs of one config), and the best config is chosen over all of them."
    )


def infra_line(board: BenchmarkBoard) -> str | None:
    """The board's one line on trials lost to infrastructure faults; None when none was."""
    n = board.lost_to_infra
    if not n:
        return None
    return f"{n} trial{'' if n == 1 else 's'} lost to infrastructure faults (retried, not counted)"


def board_notes(board: BenchmarkBoard) -> list[str]:
    """The board's notes on what its rows are (every format shows them): trials lost to
    infrastructure, searches pooled."""
    return [line for line in (infra_line(board), pooled_line(board)) if line]
