"""``sharpbench run --dry-run``: the plan of a run, and what it would cost, without running it.

Nothing starts (no Ray, no MLflow, no Optuna) and nothing is written. The plan is the run's own
(:func:`bench.plan.plan_methods`): per method the search trials, epochs, passes per step and the
hyperparameters searched, then the final runs. Resources per trial and the concurrency follow the
run's rule (``search.max_concurrent_trials``, at most the trials the CPUs, or GPUs, of this
machine hold at once; a cluster's own resources are known only when the run joins it).

The time estimate needs measured step times: a ``sharpbench perf --format json`` file (``--perf
FILE``, or ``RESULTS/perf.json`` when present) with the config's model and methods. Per trial,
epochs × training-set size / samples per second; the search is bounded above by every trial
running every epoch (ASHA stops many earlier), the finals run every epoch; the total is divided
by the concurrency. Validation, test and flatness passes, worker start-up and the report are not
counted, so read it as a lower bound on the finals and an upper bound on the search. The figures
must be timed with a trial's threads (a trial runs ``torch.set_num_threads(cpus_per_trial)``;
``perf`` uses torch's default, all cores, unless ``OMP_NUM_THREADS`` says otherwise): the
command the preview suggests sets it. Without figures, the preview says how to get them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regularizers
from bench.config import BenchmarkConfig
from bench.console import format_duration
from bench.data.loader import epoch_steps
from bench.plan import REGULARIZER_NAMESPACE, MethodPlan, model_has_batchnorm, plan_methods, recipe_warnings
from regularizers.averaging import SWA
from regularizers.space import Choice, Int

#: Where a run's folder keeps the step times ``--dry-run`` estimates from.
PERF_FILENAME = "perf.json"


class PreviewError(ValueError):
    """A perf file that cannot be read: one line."""


@dataclass(frozen=True)
class StepFigure:
    """One (model, method) of a ``sharpbench perf --format json`` file."""

    model: str
    method: str
    device: str
    batch_size: int
    samples_per_second: float


@dataclass(frozen=True)
class MethodPreview:
    method: str
    search_trials: int
    epochs: int
    passes_per_step: float
    searched: tuple[str, ...]
    final_runs: int
    samples_per_second: float | None  # from the perf figures, None when they lack this method
    #: Forward passes outside the training steps, at most, per trial: SWA's BatchNorm
    #: recomputation (one in-order sweep of the training split per snapshot, with a BatchNorm model).
    extra_forward_passes: int = 0


@dataclass(frozen=True)
class Preview:
    """What ``config`` would run here, and an estimate of its time when figures exist."""

    benchmark: str
    methods: tuple[MethodPreview, ...]
    cpus_per_trial: float  # per worker
    gpus_per_trial: float  # per worker
    concurrency: int
    concurrency_note: str
    train_samples: int | None  # None: the dataset could not be loaded here
    dataset_note: str | None
    perf_source: str | None  # the perf file used, None when there is none
    warnings: tuple[str, ...] = ()  # bench.plan.recipe_warnings: methods the recipe makes degenerate
    workers_per_trial: int = 1

    @property
    def trials(self) -> int:
        return sum(m.search_trials + m.final_runs for m in self.methods)

    def steps_per_epoch(self, batch_size: int) -> int | None:
        return None if self.train_samples is None else epoch_steps(self.train_samples, batch_size)

    def trial_seconds(self, method: MethodPreview) -> float | None:
        if self.train_samples is None or method.samples_per_second is None:
            return None
        return method.epochs * self.train_samples / method.samples_per_second

    def estimate_seconds(self) -> tuple[float, float] | None:
        """(search upper bound, finals) in wall seconds at the concurrency; None without figures
        for every method."""
        per_trial = [self.trial_seconds(m) for m in self.methods]
        if any(t is None for t in per_trial):
            return None
        search = sum(m.search_trials * t for m, t in zip(self.methods, per_trial, strict=True))  # type: ignore[operator]
        finals = sum(m.final_runs * t for m, t in zip(self.methods, per_trial, strict=True))  # type: ignore[operator]
        return search / self.concurrency, finals / self.concurrency


def read_perf(path: Path) -> list[StepFigure]:
    """The step figures of a ``sharpbench perf --format json`` file; PreviewError for anything else."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        return [
            StepFigure(
                str(r["model"]),
                str(r["method"]),
                str(r["device"]),
                int(r["batch_size"]),
                float(r["samples_per_second"]),
            )
            for r in records
        ]
    except OSError as error:
        raise PreviewError(f"cannot read perf figures {path}: {error.strerror}") from None
    except (ValueError, TypeError, KeyError) as error:
        raise PreviewError(
            f"{path} is not the output of `sharpbench perf --format json` ({type(error).__name__}: {error})"
        ) from None


def _train_samples(config: BenchmarkConfig) -> tuple[int | None, str | None]:
    from bench.data import DatasetError, load_dataset

    try:
        return len(load_dataset(config.dataset).train), None
    except DatasetError as error:
        return None, f"dataset not loadable here ({str(error).splitlines()[0]}): no passes or time estimate"


def _cost_choices(plan: MethodPlan) -> list[dict[str, Any]]:
    """Every combination of the values of the method's searched integer and choice
    hyperparameters that can change its passes (the ends of an integer range, every choice),
    with its fixed values: the most a drawn trial can cost is among them. Float ranges (radii,
    weights) do not change pass counts."""
    options: list[list[tuple[str, Any]]] = []
    for param in plan.params:
        if param.namespace != REGULARIZER_NAMESPACE:
            continue
        if isinstance(param.domain, Int):
            options.append([(param.name, param.domain.low), (param.name, param.domain.high)])
        elif isinstance(param.domain, Choice):
            options.append([(param.name, value) for value in param.domain.options])
    return [{**plan.fixed, **dict(combination)} for combination in itertools.product(*options)]


def _passes(plan: MethodPlan, has_batchnorm: bool, train_samples: int | None, batch_size: int) -> tuple[float, int]:
    """Passes per step as the trials will run them, at most (over the searched integer and
    choice hyperparameters that change them: NSO's draws, AMP's inner steps), with the model's
    BatchNorm (which the budget leaves out: MSAM's extra clean forward), and at most how many
    forward passes SWA's BatchNorm sweeps add to a trial: one sweep per snapshot, each of
    ⌈samples / batch⌉ batches (the sweep keeps the short last batch), counted from the earliest
    start the search can draw."""
    method = regularizers.create(plan.regularizer, **plan.fixed)
    averaging = method.averaging
    extra = 0
    if isinstance(averaging, SWA) and has_batchnorm and train_samples is not None:
        epochs = plan.budget.epochs
        starts = [averaging.swa_start] + [
            p.domain.low for p in plan.params if p.namespace == REGULARIZER_NAMESPACE and p.name == "swa_start"
        ]
        snapshots = epochs - min(SWA(swa_start=start).start_epoch(epochs) for start in starts)
        extra = snapshots * math.ceil(train_samples / batch_size)
    most = max(
        regularizers.create(plan.regularizer, **values).cost(has_batchnorm).per_step for values in _cost_choices(plan)
    )
    return most, extra


def preview(
    config: BenchmarkConfig,
    *,
    perf: Sequence[StepFigure] = (),
    perf_source: str | None = None,
    num_cpus: int | None = None,
    address: str | None = None,
) -> Preview:
    """The plan of ``config`` (see the module docstring); ``perf``: step figures to estimate from."""
    plans: list[MethodPlan] = plan_methods(config)
    finals = len(config.final.seeds) * config.final.top_k
    resources = config.resources
    limit = config.search.max_concurrent_trials
    if address is not None:
        slots = limit or 1
        note = "the cluster's resources decide, when the run joins it" + (f"; at most {limit}" if limit else "")
    else:
        cpus = num_cpus or os.cpu_count() or 1
        gpus = 0
        if resources.gpus_per_trial > 0:
            import torch

            gpus = torch.cuda.device_count()
        here = resources.slots(cpus, gpus)  # the run's rule, on this machine's resources
        slots = min(limit or here, here)
        note = f"{cpus} CPUs here" + (f", search.max_concurrent_trials {limit}" if limit else "")
    speed = {(f.model, f.method): f.samples_per_second for f in perf}
    train, data_note = _train_samples(config)
    has_batchnorm = model_has_batchnorm(config)
    methods = tuple(
        MethodPreview(
            method=p.regularizer,
            search_trials=p.budget.trials,
            epochs=p.budget.epochs,
            passes_per_step=passes,
            searched=tuple(param.key for param in p.params),
            final_runs=finals,
            samples_per_second=speed.get((config.model.name, p.regularizer)),
            extra_forward_passes=extra,
        )
        for p in plans
        for passes, extra in [_passes(p, has_batchnorm, train, config.training.batch_size)]
    )
    return Preview(
        benchmark=config.benchmark,
        methods=methods,
        cpus_per_trial=resources.cpus_per_trial,
        gpus_per_trial=resources.gpus_per_trial,
        concurrency=slots,
        concurrency_note=note,
        train_samples=train,
        dataset_note=data_note,
        perf_source=perf_source,
        warnings=() if train is None else tuple(recipe_warnings(plans, train, config.training.batch_size)),
        workers_per_trial=resources.workers_per_trial,
    )


def lines(p: Preview, config: BenchmarkConfig) -> list[str]:
    """The preview as the lines ``--dry-run`` prints."""
    batch = config.training.batch_size
    steps = p.steps_per_epoch(batch)
    out = [
        f"{p.benchmark}: dry run, nothing started or written. {len(p.methods)} methods, {p.trials} trials "
        f"({config.dataset.name}, {config.model.name}, batch {batch}"
        + (f", {p.train_samples} training samples = {steps} steps per epoch)" if steps else ")"),
        f"{'method':<16} {'search':>6} {'epochs':>6} {'passes/step':>11} {'finals':>6} {'passes/trial':>13}  searched",
    ]
    total_passes = 0
    for m in p.methods:
        # Whole passes: a mean per step (LookSAM's 2.4) times the steps rounds to a count.
        passes = None if steps is None else round(m.epochs * m.passes_per_step * steps) + m.extra_forward_passes
        total_passes += (passes or 0) * (m.search_trials + m.final_runs)
        out.append(
            f"{m.method:<16} {m.search_trials:>6} {m.epochs:>6} {m.passes_per_step:>11g} {m.final_runs:>6} "
            f"{'–' if passes is None else format(passes, ','):>13}  {', '.join(m.searched) or '(nothing)'}"
        )
    if steps is not None:
        out.append(
            f"passes in all: at most {total_passes:,} forward+backward (every search trial to its last epoch"
            + ("; ASHA stops many earlier" if config.search.asha.enabled else "")
            + "), flatness and evaluation not counted"
            + ("; with SWA's BatchNorm sweeps" if any(m.extra_forward_passes for m in p.methods) else "")
        )
    elif p.dataset_note:
        out.append(p.dataset_note)
    gpus = f", {p.gpus_per_trial:g} GPU" if p.gpus_per_trial else ", no GPU"
    each = f"{p.cpus_per_trial:g} CPU{gpus}"
    if p.workers_per_trial > 1:
        each = f"{p.workers_per_trial} workers × ({each}), one Ray Train run"
    out.append(
        f"resources per trial: {each}; concurrency: {p.concurrency} trial"
        f"{'' if p.concurrency == 1 else 's'} at once ({p.concurrency_note})"
    )
    estimate = p.estimate_seconds()
    if estimate is not None:
        search, finals = estimate
        out.append(
            f"time estimate (from {p.perf_source}): search at most {format_duration(search)}, finals about "
            f"{format_duration(finals)}, at {p.concurrency} at once; training steps only (no evaluation, flatness, "
            "start-up)"
            + (
                f"; at one worker's speed ({p.workers_per_trial} workers' is not measured)"
                if p.workers_per_trial > 1
                else ""
            )
        )
    else:
        missing = sorted({m.method for m in p.methods if m.samples_per_second is None})
        why = (
            f"{p.perf_source} has no figures for {config.model.name} with {', '.join(missing)}"
            if p.perf_source
            else "no step figures"
        )
        if p.train_samples is None:
            why = "the training-set size is unknown here"
        methods = " ".join(f"--method {m}" for m in missing or [m.method for m in p.methods])
        out.append(
            f"time estimate: none ({why}); measure with: OMP_NUM_THREADS={max(1, int(p.cpus_per_trial))} "
            f"sharpbench perf --model {config.model.name} {methods} --dataset {config.dataset.name} "
            f"--batch-size {batch} --format json > RESULTS/{PERF_FILENAME}"
        )
    out.extend(f"warning: {line}" for line in p.warnings)
    return out


__all__ = ["PERF_FILENAME", "MethodPreview", "Preview", "PreviewError", "StepFigure", "lines", "preview", "read_perf"]
