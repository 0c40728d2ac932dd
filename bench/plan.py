"""What to search, per method: the regularizer's declared space merged with the config's overrides.

Pure data (no Ray, no Optuna): ``bench.search`` turns a :class:`MethodPlan` into Optuna
suggestions, and turns a sampled trial config back into a :class:`~bench.training.TrialSpec`.
Search keys are namespaced ``regularizer/<name>`` and ``training/<name>``; Ray Tune unflattens
them into nested dicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

import regularizers
from bench.config import BenchmarkConfig, RangeSpec, TrainingConfig
from bench.data.loader import epoch_steps
from bench.training import TrialSpec
from regularizers.space import Choice, Domain, Float, Int

REGULARIZER_NAMESPACE = "regularizer"
TRAINING_NAMESPACE = "training"
SEED_KEY = "seed"
#: Every trial of the one Tune experiment says which method and phase it belongs to.
METHOD_KEY = "method"
PHASE_KEY = "phase"
#: ... and its place among the trials of that method × phase as the searcher issued them (0, 1, ...):
#: the ``t007`` of its MLflow run's name.
ORDINAL_KEY = "ordinal"
#: Search trials also say how the searcher drew their config: "default", "startup" or "model"
#: (:data:`bench.search.space.SUGGESTION_KINDS`); the sink writes it into the row.
SUGGESTION_KEY = "suggestion_kind"
#: Final-phase trials carry the search trial they re-run under this key: ``{"run_id": ..., "config": {...}}``.
SELECTED_KEY = "selected"


@dataclass(frozen=True)
class SearchParam:
    namespace: str
    name: str
    domain: Domain
    default: Any

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


#: Forward + backward passes of one ERM step: the unit of ``search.budget: passes``.
REFERENCE_PASSES_PER_STEP = 2


@dataclass(frozen=True)
class MethodBudget:
    """What one method's share of the equal budget buys (see :class:`bench.config.BudgetConfig`)."""

    kind: str  # "trials" or "passes"
    scale: str  # with passes: what a costlier method gives up, "trials" or "epochs"
    trials: int
    epochs: int  # planned epochs per trial (the config's, or scaled down with scale=epochs)
    passes_per_step: float  # forward + backward of one step (mean), at the method's default hyperparameters
    reference_passes_per_step: int = REFERENCE_PASSES_PER_STEP

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class MethodPlan:
    benchmark: str
    regularizer: str
    fixed: dict[str, Any]
    params: tuple[SearchParam, ...]
    budget: MethodBudget

    def search_name(self, phase: str) -> str:
        """Stable across runs, so an interrupted search resumes under the same name."""
        return f"{self.benchmark}-{self.regularizer}-{phase}"

    def parent_key(self, phase: str, instance: str) -> str:
        """The MLflow parent run's key: the search name within one run instance (bench.run_record),
        so a fresh run of the same benchmark never reuses an old run's parent."""
        return f"{self.search_name(phase)}@{instance}" if instance else self.search_name(phase)

    @property
    def described_space(self) -> dict[str, str]:
        """The searched space as text, ``{param key: domain description}`` (a parent run's param)."""
        return {p.key: p.domain.describe() for p in self.params}

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial of this plan can run: ASHA's ``max_t`` must reach it."""
        epochs = self.budget.epochs
        for param in self.params:
            if param.namespace == TRAINING_NAMESPACE and param.name == "epochs":
                domain = param.domain
                epochs = max(epochs, int(max(domain.options) if isinstance(domain, Choice) else domain.high))
        return epochs

    @property
    def passes_per_step(self) -> float:
        """Forward + backward passes of one of the method's steps (the mean, for methods whose
        pattern repeats every few steps): the budget's (``search.budget: passes``), else the
        regularizer's declared cost at its fixed values, counted without BatchNorm (NSO's extra
        pass with it is not counted)."""
        if self.budget.passes_per_step:
            return self.budget.passes_per_step
        return regularizers.create(self.regularizer, **self.fixed).cost(False).per_step

    def default_point(self) -> dict[str, Any]:
        """The papers' defaults (and the config's recipe), evaluated first; only values inside the searched ranges."""
        return {p.key: p.default for p in self.params if p.domain.contains(p.default)}


def _domain_from_range(spec: RangeSpec, value_type: type) -> Domain:
    if spec.choices is not None:
        return Choice(tuple(spec.choices))
    assert spec.low is not None and spec.high is not None  # checked by RangeSpec
    if value_type is int or spec.integer:
        return Int(int(spec.low), int(spec.high), log=spec.log)
    return Float(float(spec.low), float(spec.high), log=spec.log)


def plan_methods(config: BenchmarkConfig) -> list[MethodPlan]:
    """One plan per listed regularizer; every plan shares the opened training hyperparameters."""
    training_params = []
    for name, spec in config.search.space.items():
        annotation = TrainingConfig.model_fields[name].annotation
        value_type = annotation if isinstance(annotation, type) else float
        domain = (
            Choice((False, True))
            if value_type is bool and spec.choices is None
            else _domain_from_range(spec, value_type)
        )
        training_params.append(SearchParam(TRAINING_NAMESPACE, name, domain, getattr(config.training, name)))

    has_batchnorm = model_has_batchnorm(config) if config.search.budget.kind == "passes" else None
    plans = []
    for entry in config.regularizers:
        params = []
        for hp in regularizers.hyperparameters_of(entry.name):
            if hp.name in entry.fixed:
                continue
            if hp.name in entry.space:
                params.append(
                    SearchParam(
                        REGULARIZER_NAMESPACE, hp.name, _domain_from_range(entry.space[hp.name], hp.type), hp.default
                    )
                )
            elif hp.searched:
                params.append(SearchParam(REGULARIZER_NAMESPACE, hp.name, hp.domain, hp.default))
        plans.append(
            MethodPlan(
                benchmark=config.benchmark,
                regularizer=entry.name,
                fixed=dict(entry.fixed),
                params=tuple(params) + tuple(training_params),
                budget=_budget(
                    config, entry.name, entry.fixed, has_batchnorm, searched=bool(params or training_params)
                ),
            )
        )
    return plans


def model_has_batchnorm(config: BenchmarkConfig) -> bool:
    """Whether the config's model has normalization layers with running statistics (NSO's cost
    depends on it). Built on the meta device: no memory, no data needed; the input shape only
    sizes layers, it adds or removes none."""
    from bench.models import create_model

    with torch.device("meta"):
        model = create_model(config.model.name, (3, 32, 32), 10, **config.model.options)
    return bool(regularizers.batchnorm_modules(model))


def recipe_warnings(plans: list[MethodPlan], train_samples: int, batch_size: int) -> list[str]:
    """One line per method whose every searched configuration would not be what its name says under
    the recipe (:meth:`regularizers.Regularizer.recipe_warnings`: a penalty that starts after the
    last epoch, an average over more steps than a trial has). Checked at the default point and at
    each end of each searched range of the method's own hyperparameters: a method is named only
    when the warning holds at all of them (a search that can leave the bad region is left alone)."""
    steps = epoch_steps(train_samples, batch_size)
    lines = []
    for plan in plans:
        default = {p.name: p.default for p in plan.params if p.namespace == REGULARIZER_NAMESPACE}
        points = [default] + [
            {**default, p.name: value}
            for p in plan.params
            if p.namespace == REGULARIZER_NAMESPACE
            for value in (p.domain.options if isinstance(p.domain, Choice) else (p.domain.low, p.domain.high))
        ]
        said = [
            regularizers.create(plan.regularizer, **plan.fixed, **point).recipe_warnings(plan.budget.epochs, steps)
            for point in points
        ]
        if all(said):
            everywhere = " (at every point of its search range)" if len(points) > 1 else ""
            lines.append(f"{plan.regularizer}{everywhere}: {'; '.join(said[0])}")
    return lines


def _budget(
    config: BenchmarkConfig, method: str, fixed: dict[str, Any], has_batchnorm: bool | None, *, searched: bool
) -> MethodBudget:
    """Trials and epochs of one method under ``search.budget`` (passes counted at its defaults).

    A method with nothing to search runs one trial: every other would repeat it exactly (same
    config, same training seed), spending budget on nothing.
    """
    spec = config.search.budget
    trials, epochs = (config.search.trials_per_method if searched else 1), config.training.epochs
    if spec.kind == "trials":
        return MethodBudget(spec.kind, spec.scale, trials, epochs, 0)
    passes = regularizers.create(method, **fixed).cost(bool(has_batchnorm)).per_step
    ratio = passes / REFERENCE_PASSES_PER_STEP
    if spec.scale == "trials":
        trials = max(1, math.floor(trials / ratio + 0.5))
    else:
        epochs = max(1, math.floor(epochs / ratio + 0.5))
    return MethodBudget(spec.kind, spec.scale, trials, epochs, passes)


@dataclass(frozen=True)
class SelectedConfig:
    """A search trial chosen for the final phase (``bench.selection``), as a Tune config."""

    run_id: str  # the search row it came from: final rows record it as ``selected_from_run_id``
    config: dict[str, Any]  # {"regularizer": {...}, "training": {...}}: the searched values only

    @classmethod
    def from_row(cls, plan: MethodPlan, row: dict[str, Any]) -> SelectedConfig:
        """The searched values of a Parquet search row (its JSON columns hold the full recipe)."""
        recorded = {
            REGULARIZER_NAMESPACE: json.loads(row["regularizer_hparams"] or "{}"),
            TRAINING_NAMESPACE: json.loads(row["training_hparams"] or "{}"),
        }
        chosen: dict[str, dict[str, Any]] = {}
        for param in plan.params:
            if param.name in recorded[param.namespace]:
                chosen.setdefault(param.namespace, {})[param.name] = recorded[param.namespace][param.name]
        return cls(row["run_id"], chosen)

    def to_tune(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "config": self.config}


def trial_spec(config: BenchmarkConfig, plan: MethodPlan, sampled: dict[str, Any]) -> TrialSpec:
    """The full trial from a (nested) Ray Tune config: ``{"regularizer": {...}, "training": {...}, "seed": s}``;
    a final trial's values come from its ``selected`` entry instead."""
    if SELECTED_KEY in sampled:
        sampled = {**sampled, **sampled[SELECTED_KEY]["config"]}
    hparams = {**plan.fixed, **sampled.get(REGULARIZER_NAMESPACE, {})}
    recipe = {**config.training.model_dump(), "epochs": plan.budget.epochs, **sampled.get(TRAINING_NAMESPACE, {})}
    training = TrainingConfig.model_validate(recipe)
    return TrialSpec(
        benchmark=config.benchmark,
        dataset=config.dataset,
        model=config.model,
        training=training,
        regularizer=plan.regularizer,
        regularizer_hparams=hparams,
        flatness=config.flatness,
        seed=int(sampled.get(SEED_KEY, config.seed)),
    )
