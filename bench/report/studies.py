"""Optuna studies rebuilt from the Parquet search rows, for Optuna's own history and importance tools.

The runs persist their Optuna studies (:mod:`bench.search.studies`), but the report reads the
record, Parquet, which it can combine across results folders and which stays when a study's
database is elsewhere or gone: it rebuilds one study per (benchmark, method) from the rows
(the same trials and states as the persisted study's): each search row becomes a trial added with
``study.add_trial(optuna.trial.create_trial(...))``, in the order the trials started (a row's
``timestamp`` is its end; start = end − ``wall_seconds``, ties by run id).

* **State**: completed with a finite search-metric value → COMPLETE with that value; stopped by
  ASHA → PRUNED; failed, or completed without a finite value → FAIL. This mirrors
  :mod:`bench.selection`, so the study's best value is the leaderboard's best config's value.
* **Space** (the Optuna distributions): the declared one when the results folder recorded the
  config (``runs/<benchmark>.json``, :mod:`bench.run_record`: :func:`bench.plan.plan_methods` gives each method's
  searched hyperparameters, ranges and scales). Otherwise it is inferred from the rows: the
  hyperparameters whose values vary across the method's search trials; numbers get their
  observed range, on a log scale when min > 0 and max/min ≥ 10 (a guess, said in the caption),
  integers an integer range, anything else a categorical distribution.
* **Importance**: ``optuna.importance.get_param_importances`` with fANOVA (Hutter, Hoos &
  Leyton-Brown 2014, "An Efficient Approach for Assessing Hyperparameter Importance", ICML),
  seeded, on the COMPLETE trials. It needs at least 2 of them and a searched hyperparameter that
  varies among them; otherwise :attr:`RebuiltStudy.importance_note` says why there is none.

This module and :mod:`bench.search` are the only ones that import Optuna.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from bench import selection
from bench.config import BenchmarkConfig
from bench.plan import REGULARIZER_NAMESPACE, TRAINING_NAMESPACE, SearchParam, plan_methods
from bench.report.data import Row, finite
from bench.results.schema import Phase, TrialStatus
from regularizers.space import Choice, Float, Int

#: An inferred numeric range is drawn on a log scale when max/min reaches this ratio (and min > 0).
LOG_RATIO = 10.0
#: Seed of the fANOVA random forest, so the report is the same each time it is built.
IMPORTANCE_SEED = 0

SPACE_RECORDED = "recorded"
SPACE_INFERRED = "inferred"


@dataclass(frozen=True)
class RebuiltStudy:
    """One method's search as an Optuna study, with what the figures' captions need."""

    benchmark: str
    regularizer: str
    metric: str  # the search metric (bench.selection.metric_of_rows)
    study: optuna.Study
    space_source: str  # SPACE_RECORDED or SPACE_INFERRED
    space_note: str  # the searched hyperparameters and where their distributions come from
    completed: int  # COMPLETE trials (scored)
    pruned: int  # stopped by ASHA
    failed: int  # failed, or completed without a finite metric value
    importances: dict[str, float] | None  # name → fANOVA importance (sums to 1); None: see the note
    importance_note: str  # how the importances were computed, or why there are none


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines ("A new study created") and its ExperimentalWarning for the matplotlib
    plots are noise in a report; other warnings still show."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(previous)


def _hparams(row: Row, namespace: str) -> dict[str, Any]:
    text = row["regularizer_hparams"] if namespace == REGULARIZER_NAMESPACE else row["training_hparams"]
    return json.loads(text) if text else {}


def _display_names(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Bare hyperparameter names, namespaced only where a regularizer and a training
    hyperparameter share one."""
    counts: dict[str, int] = {}
    for _, name in keys:
        counts[name] = counts.get(name, 0) + 1
    return {(ns, name): name if counts[name] == 1 else f"{ns}/{name}" for ns, name in keys}


def _distribution(domain: Float | Int | Choice) -> BaseDistribution:
    if isinstance(domain, Float):
        return FloatDistribution(domain.low, domain.high, log=domain.log)
    if isinstance(domain, Int):
        return IntDistribution(domain.low, domain.high, log=domain.log)
    return CategoricalDistribution(list(domain.options))


def declared_space(config: BenchmarkConfig, regularizer: str) -> dict[tuple[str, str], BaseDistribution] | None:
    """The method's searched hyperparameters as Optuna distributions, keyed (namespace, name);
    None when ``config`` does not list ``regularizer``."""
    plan = next((p for p in plan_methods(config) if p.regularizer == regularizer), None)
    if plan is None:
        return None
    params: tuple[SearchParam, ...] = plan.params
    return {(p.namespace, p.name): _distribution(p.domain) for p in params}


def inferred_space(rows: Sequence[Row]) -> dict[tuple[str, str], BaseDistribution]:
    """Distributions for the hyperparameters that vary across ``rows`` (see the module docstring)."""
    space: dict[tuple[str, str], BaseDistribution] = {}
    for namespace in (REGULARIZER_NAMESPACE, TRAINING_NAMESPACE):
        recipes = [_hparams(r, namespace) for r in rows]
        for name in sorted({k for recipe in recipes for k in recipe}):
            values = [recipe.get(name) for recipe in recipes]
            if len({json.dumps(v, sort_keys=True) for v in values}) < 2:
                continue  # held fixed: not searched
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(numbers) == len(values) and all(math.isfinite(v) for v in numbers):
                low, high = min(numbers), max(numbers)
                log = low > 0 and high / low >= LOG_RATIO
                if all(isinstance(v, int) for v in numbers):
                    space[(namespace, name)] = IntDistribution(int(low), int(high), log=log)
                else:
                    space[(namespace, name)] = FloatDistribution(float(low), float(high), log=log)
            elif all(v is None or isinstance(v, (str, bool, int, float)) for v in values):
                space[(namespace, name)] = CategoricalDistribution(sorted(set(values), key=lambda v: json.dumps(v)))
    return space


def _fits(rows: Sequence[Row], space: Mapping[tuple[str, str], BaseDistribution]) -> bool:
    """Whether every row's value of every searched hyperparameter lies in its distribution."""
    for row in rows:
        for (namespace, name), distribution in space.items():
            value = _hparams(row, namespace).get(name)
            if value is None:
                return False
            try:
                distribution.to_internal_repr(value)
            except ValueError:
                return False
            if (
                isinstance(distribution, (FloatDistribution, IntDistribution))
                and not distribution.low <= value <= distribution.high
            ):
                return False
    return True


def _start(row: Row) -> tuple[float, str]:
    return (row["timestamp"].timestamp() - float(row["wall_seconds"] or 0.0), row["run_id"])


def _describe(distribution: BaseDistribution) -> str:
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        return f"[{distribution.low:g}, {distribution.high:g}] {'log' if distribution.log else 'linear'}"
    assert isinstance(distribution, CategoricalDistribution)
    return "{" + ", ".join(map(str, distribution.choices)) + "}"


def rebuild_study(
    benchmark: str, regularizer: str, rows: Sequence[Row], config: BenchmarkConfig | None
) -> RebuiltStudy:
    """The method's search rows (``rows``: its rows on the board; final rows are ignored) as an
    in-memory Optuna study, with its importances. ``config``: the recorded config of the
    benchmark, or None. Raises ValueError for an unknown search metric in the rows."""
    search = sorted((r for r in rows if r["phase"] == Phase.SEARCH.value), key=_start)
    metric = selection.metric_of_rows(search)
    declared = declared_space(config, regularizer) if config is not None else None
    if declared is not None and _fits(search, declared):
        space, source = declared, SPACE_RECORDED
        where = "declared space, from the recorded config"
    else:
        space, source = inferred_space(search), SPACE_INFERRED
        why = (
            "no recorded config"
            if declared is None
            else "the recorded config's space does not hold every trial's values"
        )
        where = (
            f"space inferred from the trials ({why}): the hyperparameters that vary, over their observed range, "
            f"log scale when max/min ≥ {LOG_RATIO:g}"
        )
    names = _display_names(list(space))
    with quiet_optuna():
        study = optuna.create_study(direction="maximize" if selection.direction(metric) == "max" else "minimize")
        counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        for row in search:
            value = finite(row[metric])
            if row["status"] == TrialStatus.COMPLETED.value and value is not None:
                state = TrialState.COMPLETE
            elif row["status"] == TrialStatus.STOPPED.value:
                state, value = TrialState.PRUNED, None
            else:
                state, value = TrialState.FAIL, None
            counts[state] += 1
            params = {names[key]: _hparams(row, key[0]).get(key[1]) for key in space}
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    value=value,
                    params=params,
                    distributions={names[key]: d for key, d in space.items()},
                    user_attrs={"run_id": row["run_id"]},
                )
            )
        importances, importance_note = _importances(study)
    searched = ", ".join(f"{names[k]} {_describe(d)}" for k, d in space.items()) or "none"
    return RebuiltStudy(
        benchmark=benchmark,
        regularizer=regularizer,
        metric=metric,
        study=study,
        space_source=source,
        space_note=f"Searched: {searched} ({where}).",
        completed=counts[TrialState.COMPLETE],
        pruned=counts[TrialState.PRUNED],
        failed=counts[TrialState.FAIL],
        importances=importances,
        importance_note=importance_note,
    )


def importance_evaluator() -> optuna.importance.FanovaImportanceEvaluator:
    """The evaluator of every importance in the report (seeded fANOVA)."""
    return optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)


def _importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not study.trials or not study.trials[0].distributions:
        return None, "no hyperparameter was searched: no importance"
    if len(complete) < 2:
        return None, f"{len(complete)} completed trial{'' if len(complete) == 1 else 's'}: importance needs at least 2"
    varying = [name for name in complete[0].params if len({json.dumps(t.params[name]) for t in complete}) > 1]
    if not varying:
        return None, "the searched hyperparameters took one value over the completed trials: no importance"
    values = {t.value for t in complete}
    if len(values) == 1:
        # fANOVA divides by the variance of the objective: with one value there is none to explain.
        return (
            None,
            f"all {len(complete)} completed trials scored the same value: no variance to attribute, no importance",
        )
    importances = optuna.importance.get_param_importances(study, evaluator=importance_evaluator())
    note = (
        f"fANOVA importance (Hutter et al. 2014; Optuna's FanovaImportanceEvaluator, seed {IMPORTANCE_SEED}) "
        f"of each searched hyperparameter for the search metric, over the {len(complete)} completed trials; "
        f"importances sum to 1."
    )
    if len(varying) == 1 and len(complete[0].params) == 1:
        note += " With one searched hyperparameter its importance is 1 by construction."
    return {name: float(v) for name, v in importances.items()}, note


__all__ = [
    "IMPORTANCE_SEED",
    "LOG_RATIO",
    "SPACE_INFERRED",
    "SPACE_RECORDED",
    "RebuiltStudy",
    "declared_space",
    "importance_evaluator",
    "inferred_space",
    "quiet_optuna",
    "rebuild_study",
]
