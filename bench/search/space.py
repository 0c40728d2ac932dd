"""A method's search space as Optuna sees it, and the sampler that explores it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from bench.config import SearchConfig, startup_trials
from bench.plan import SearchParam
from regularizers.space import Choice, Float, Int


@dataclass(frozen=True)
class DefineByRun:
    """An Optuna define-by-run space for ``params`` (keys ``namespace/name``).

    Called on a fresh trial it samples; called on a trial that already holds the values (a trial
    re-attached after an interruption) Optuna returns the stored ones, so the same call both
    draws a config and reads one back.
    """

    params: tuple[SearchParam, ...]

    def __call__(self, trial: optuna.Trial) -> None:
        for param in self.params:
            domain = param.domain
            if isinstance(domain, Float):
                trial.suggest_float(param.key, domain.low, domain.high, log=domain.log)
            elif isinstance(domain, Int):
                trial.suggest_int(param.key, domain.low, domain.high, log=domain.log)
            elif isinstance(domain, Choice):
                trial.suggest_categorical(param.key, list(domain.options))
            else:  # pragma: no cover - Domain is a closed union
                raise TypeError(f"unsupported domain {domain!r} for {param.key}")


def nested(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"regularizer/rho": 0.1}`` → ``{"regularizer": {"rho": 0.1}}``: the trial config's shape."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        namespace, name = key.split("/", 1)
        out.setdefault(namespace, {})[name] = value
    return out


def sampler_settings(search: SearchConfig, trials: int) -> dict[str, Any]:
    """The sampler ``search.sampler`` names, with every setting it is built with (recorded in rows).

    Model-based samplers (TPE, GP, CMA-ES) draw ``n_startup_trials`` at random first; by default
    :func:`bench.config.startup_trials` of the method's ``trials``, so that the model is used
    within the budget. TPE is Optuna's multivariate TPE with grouped conditional parameters;
    QMC is scrambled Sobol; CMA-ES learns from pruned trials too.
    """
    name = search.sampler.name
    startup = search.sampler.n_startup_trials
    startup = startup_trials(trials) if startup is None else startup
    settings: dict[str, Any] = {"name": name, "seed": search.seed}
    if name == "tpe":
        settings.update(n_startup_trials=startup, multivariate=True, group=True)
    elif name == "gp":
        settings.update(n_startup_trials=startup)
    elif name == "cmaes":
        settings.update(n_startup_trials=startup, consider_pruned_trials=True)
    elif name == "qmc":
        settings.update(qmc_type="sobol", scramble=True)
    return settings


_SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
}


def make_sampler(settings: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of :func:`sampler_settings` (its keys are the constructor's arguments)."""
    arguments = {key: value for key, value in settings.items() if key != "name"}
    return _SAMPLERS[settings["name"]](**arguments)
