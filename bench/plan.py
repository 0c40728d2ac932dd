"""What to search, per method: the regularizer's declared space merged with the config's overrides.

Pure data (no Ray, no Optuna): ``bench.search`` turns a :class:`MethodPlan` into Optuna
suggestions, and turns a sampled trial config back into a :class:`~bench.training.TrialSpec`.
Search keys are namespaced ``regularizer/<name>`` and ``training/<name>``; Ray Tune unflattens
them into nested dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import regularizers
from bench.config import BenchmarkConfig, RangeSpec, TrainingConfig
from bench.training import TrialSpec
from regularizers.space import Choice, Domain, Float, Int

REGULARIZER_NAMESPACE = "regularizer"
TRAINING_NAMESPACE = "training"
SEED_KEY = "seed"


@dataclass(frozen=True)
class SearchParam:
    namespace: str
    name: str
    domain: Domain
    default: Any

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class MethodPlan:
    benchmark: str
    regularizer: str
    fixed: dict[str, Any]
    params: tuple[SearchParam, ...]

    def search_name(self, phase: str) -> str:
        """Stable across runs, so an interrupted search resumes under the same name."""
        return f"{self.benchmark}-{self.regularizer}-{phase}"

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
        domain = Choice((False, True)) if value_type is bool and spec.choices is None else _domain_from_range(spec, value_type)
        training_params.append(SearchParam(TRAINING_NAMESPACE, name, domain, getattr(config.training, name)))

    plans = []
    for entry in config.regularizers:
        params = []
        for hp in regularizers.hyperparameters_of(entry.name):
            if hp.name in entry.fixed:
                continue
            if hp.name in entry.space:
                params.append(SearchParam(REGULARIZER_NAMESPACE, hp.name, _domain_from_range(entry.space[hp.name], hp.type), hp.default))
            elif hp.searched:
                params.append(SearchParam(REGULARIZER_NAMESPACE, hp.name, hp.domain, hp.default))
        plans.append(
            MethodPlan(
                benchmark=config.benchmark,
                regularizer=entry.name,
                fixed=dict(entry.fixed),
                params=tuple(params) + tuple(training_params),
            )
        )
    return plans


def trial_spec(config: BenchmarkConfig, plan: MethodPlan, sampled: dict[str, Any]) -> TrialSpec:
    """The full trial from a (nested) Ray Tune config: ``{"regularizer": {...}, "training": {...}, "seed": s}``."""
    hparams = {**plan.fixed, **sampled.get(REGULARIZER_NAMESPACE, {})}
    training = TrainingConfig.model_validate({**config.training.model_dump(), **sampled.get(TRAINING_NAMESPACE, {})})
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
