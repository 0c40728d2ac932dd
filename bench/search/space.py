"""A method's search space as Optuna sees it, and the sampler that explores it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.config import SearchConfig, startup_trials
from bench.plan import SearchParam
from bench.results.schema import SuggestionKind
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
    within the budget. TPE is Optuna's multivariate TPE with grouped conditional parameters and
    the constant liar (running trials count as bad ones, so suggestions made while others run
    spread out instead of repeating the same point); QMC is scrambled Sobol; CMA-ES learns from
    pruned trials too.
    """
    name = search.sampler.name
    startup = search.sampler.n_startup_trials
    startup = startup_trials(trials) if startup is None else startup
    settings: dict[str, Any] = {"name": name, "seed": search.seed}
    if name == "tpe":
        settings.update(n_startup_trials=startup, multivariate=True, group=True, constant_liar=True)
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


#: ``suggestion_kind`` of a search trial (trial config, study trial attribute, Parquet row):
#: the enqueued default point, a draw made without a model (the startup phase of TPE, GP or
#: CMA-ES, and every draw of the random and QMC samplers, which have no model), or a draw from
#: the sampler's model.
#: Plain strings (they travel in Tune's trial config); declared once in the row schema.
DEFAULT, STARTUP, MODEL = (kind.value for kind in SuggestionKind)
SUGGESTION_KINDS = (DEFAULT, STARTUP, MODEL)


def startup_count(settings: dict[str, Any]) -> int | None:
    """How many counted trials the sampler needs before it models the space; ``None`` for a
    sampler without a model (random, QMC)."""
    startup = settings.get("n_startup_trials")
    return None if startup is None else int(startup)


def counted_trials(settings: dict[str, Any], trials: list[optuna.trial.FrozenTrial]) -> int:
    """How many of ``trials`` the sampler counts against its ``n_startup_trials``, as Optuna 5
    counts them: TPE takes COMPLETE and PRUNED trials, GP only COMPLETE ones, CMA-ES COMPLETE
    ones and (``consider_pruned_trials``) PRUNED ones that reported a value. RUNNING, WAITING
    and FAIL trials never count: a trial asked while too few have *finished* is a random draw."""
    name = settings["name"]
    count = 0
    for trial in trials:
        pruned_counts = name == "tpe" or (
            name == "cmaes" and bool(settings.get("consider_pruned_trials")) and bool(trial.intermediate_values)
        )
        if trial.state is TrialState.COMPLETE or (trial.state is TrialState.PRUNED and pruned_counts):
            count += 1
    return count
