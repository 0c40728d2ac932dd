"""What the Hessian trace costs at its target: Hutchinson against Hutch++ on the shipped CPU configs.

``python -m bench.benchmarks.trace [--config configs/digits.yaml --config configs/digits_noisy.yaml]
[--method erm --method sam] [--sketch 5 --sketch 10 ...] [--seeds 5] [--rel-stderr 0.05]
[--max-probes 400] [--min-probes N] [--epochs N] [--exact] [--format table|json]``

A measurement, not a test: it prints figures and asserts nothing. For each config and method it
trains the config's model with the config's recipe (training seed 1, the config's epochs unless
``--epochs``; the method's default hyperparameters), in this process, then measures the trace
on the subset a trial measures (``flatness.subset_size`` training samples in batches of
``flatness.batch_size``, as :meth:`bench.training.Trainer._maybe_flatness` builds it; the
averaged weights for SWA and EMA) with each estimator: plain Hutchinson
(:func:`bench.measure.flatness.hutchinson_trace`) and Hutch++ with each ``--sketch`` size
(:func:`bench.measure.flatness.hutchpp_trace`), from ``--seeds`` probe seeds each, at the target
``--rel-stderr`` with the config's ``trace_min_probes`` (or ``--min-probes``) and a cap of
``--max-probes`` probes (far above any config's, so the figure is what the target costs, not
where a cap cuts it).

Printed per estimator: the Hessian-vector products (HVPs) per estimate and the relative standard
error achieved, median and range (min–max) over the seeds; how many estimates met the target
within the config's own cap (``trace_max_probes`` probes, besides Hutch++'s 2k sketch HVPs); the
wall time per estimate. With ``--exact`` it also computes the exact trace (one HVP per parameter:
minutes for the digits CNN) and prints each estimator's actual relative error |estimate − tr H| / tr H.
The machine may be shared: the 1-minute load average is printed with the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import typer

from bench.catalog import load_benchmark
from bench.config import BenchmarkConfig
from bench.measure.flatness import (
    TraceResult,
    _hessian_vector_products,
    hutchinson_trace,
    hutchpp_trace,
    measurement_mode,
    trainable_parameters,
)
from bench.plan import plan_methods, trial_spec
from bench.training import Trainer

DEFAULT_CONFIGS = [Path("configs/digits.yaml"), Path("configs/digits_noisy.yaml")]


@dataclass
class EstimatorFigures:
    estimator: str  # "hutchinson" or "hutchpp k=K"
    sketch_size: int
    hvps: list[int] = field(default_factory=list)
    relative_stderr: list[float] = field(default_factory=list)
    traces: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    met_within_cap: int = 0  # estimates that met the target within the config's trace_max_probes
    relative_error: list[float] = field(default_factory=list)  # with --exact


@dataclass
class ModelFigures:
    config: str
    method: str
    epochs: int
    val_accuracy: float
    parameters: int
    subset: int
    min_probes: int
    config_max_probes: int
    exact_trace: float | None
    estimators: list[EstimatorFigures]
    load_average: float


def _spread(values: list[float], digits: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):{digits}} ({min(values):{digits}}–{max(values):{digits}})"


def trained_model(config: BenchmarkConfig, method: str, epochs: int | None) -> tuple[Trainer, int]:
    """The config's model trained by ``method`` with the config's recipe and training seed 1."""
    plan = next(p for p in plan_methods(config) if p.regularizer == method)
    sampled: dict = {"seed": 1}
    if epochs is not None:
        sampled["training"] = {"epochs": epochs}
    trainer = Trainer(trial_spec(config, plan, sampled))
    while not trainer.finished:
        trainer.train_epoch()
    return trainer, trainer.epochs_done


def exact_trace(model: torch.nn.Module, batches, probes_per_pass: int = 64) -> float:
    """Σ_i e_iᵀHe_i: one HVP per parameter."""
    parameters = trainable_parameters(model)
    sizes = [p.numel() for p in parameters]
    dimension = sum(sizes)
    total = 0.0
    with measurement_mode(model):
        for start in range(0, dimension, probes_per_pass):
            indices = range(start, min(dimension, start + probes_per_pass))
            vectors = []
            for index in indices:
                unit = torch.zeros(dimension, dtype=parameters[0].dtype)
                unit[index] = 1.0
                vectors.append([c.view_as(p) for c, p in zip(torch.split(unit, sizes), parameters, strict=True)])
            products = _hessian_vector_products(model, batches, F.cross_entropy, parameters, vectors)
            for index, product in zip(indices, products, strict=True):
                total += float(torch.cat([part.reshape(-1) for part in product])[index])
    return total


def measure_model(
    config_path: Path,
    method: str,
    epochs: int | None,
    sketches: list[int],
    seeds: int,
    rel_stderr: float,
    max_probes: int,
    exact: bool,
    min_probes: int | None = None,
) -> ModelFigures:
    config = load_benchmark(config_path)
    trainer, epochs_done = trained_model(config, method, epochs)
    flatness = config.flatness
    batches = trainer.flatness_batches()
    # The weights a trial measures: the average when the method keeps one (SWA, EMA).
    model = trainer.averager.module if trainer.averaged else trainer.model
    truth = exact_trace(model, batches) if exact else None
    min_probes = flatness.trace_min_probes if min_probes is None else min_probes
    stopping = dict(rel_stderr=rel_stderr, min_probes=min_probes, max_probes=max(max_probes, min_probes))
    figures = [EstimatorFigures("hutchinson", 0)] + [EstimatorFigures(f"hutchpp k={k}", k) for k in sketches]
    for seed in range(seeds):
        for figure in figures:
            generator = torch.Generator().manual_seed(seed)
            started = time.perf_counter()
            if figure.sketch_size == 0:
                result: TraceResult = hutchinson_trace(model, batches, F.cross_entropy, generator, **stopping)
            else:
                result = hutchpp_trace(
                    model, batches, F.cross_entropy, generator, sketch_size=figure.sketch_size, **stopping
                )
            figure.seconds.append(time.perf_counter() - started)
            figure.hvps.append(result.probes)
            figure.relative_stderr.append(result.relative_stderr)
            figure.traces.append(result.trace)
            # The same probes under the config's cap: the stop would have come at the same count.
            met = result.relative_stderr <= rel_stderr and result.residual_probes <= flatness.trace_max_probes
            figure.met_within_cap += int(met)
            if truth is not None:
                figure.relative_error.append(abs(result.trace - truth) / abs(truth))
        typer.echo(f"{config.benchmark}/{method}: probe seed {seed} done", err=True)
    return ModelFigures(
        config=str(config_path),
        method=method,
        epochs=epochs_done,
        val_accuracy=trainer.evaluate(trainer.data.val).test_accuracy,
        parameters=sum(p.numel() for p in trainable_parameters(model)),
        subset=sum(len(targets) for _, targets in batches),
        min_probes=min_probes,
        config_max_probes=flatness.trace_max_probes,
        exact_trace=truth,
        estimators=figures,
        load_average=os.getloadavg()[0],
    )


def print_table(results: list[ModelFigures], rel_stderr: float, seeds: int) -> None:
    for model in results:
        exact = "" if model.exact_trace is None else f", exact trace {model.exact_trace:.4g}"
        typer.echo(
            f"\n{model.config} / {model.method}: {model.epochs} epochs (val accuracy {model.val_accuracy:.3f}), "
            f"{model.parameters} parameters, subset {model.subset}{exact}; target {rel_stderr:.0%}, "
            f"min {model.min_probes} probes; {seeds} seeds; load {model.load_average:.1f}"
        )
        header = (
            f"{'estimator':<14} | {'HVPs: median (range)':<22} | {'rel. stderr: median (range)':<28} | "
            f"{'met ≤ cap ' + str(model.config_max_probes):<13} | {'s/estimate':<10}"
        )
        if model.exact_trace is not None:
            header += " | |error|/tr: median (max)"
        typer.echo(header)
        for figure in model.estimators:
            line = (
                f"{figure.estimator:<14} | {_spread(figure.hvps, 'g'):<22} | "
                f"{_spread([100 * r for r in figure.relative_stderr], '.2f') + ' %':<28} | "
                f"{f'{figure.met_within_cap}/{len(figure.hvps)}':<13} | {statistics.median(figure.seconds):<10.2f}"
            )
            if figure.relative_error:
                errors = [100 * e for e in figure.relative_error]
                line += f" | {statistics.median(errors):.2f} % ({max(errors):.2f} %)"
            typer.echo(line)


def main(
    configs: list[Path] = typer.Option(DEFAULT_CONFIGS, "--config", help="Benchmark YAMLs (repeatable)."),
    methods: list[str] = typer.Option(["erm", "sam"], "--method", help="Regularizers that train the model."),
    sketches: list[int] = typer.Option([5, 10, 15, 20], "--sketch", help="Hutch++ sketch sizes k (repeatable)."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Probe seeds per estimator."),
    rel_stderr: float = typer.Option(0.05, "--rel-stderr", min=0.0, help="The target relative standard error."),
    max_probes: int = typer.Option(400, "--max-probes", min=2, help="Cap on (residual) probes while measuring."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Training epochs (default: the config's)."),
    min_probes: int | None = typer.Option(
        None, "--min-probes", min=2, help="Minimum (residual) probes (default: the config's trace_min_probes)."
    ),
    exact: bool = typer.Option(False, "--exact", help="Also compute the exact trace (one HVP per parameter)."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """HVPs per trace estimate and the relative standard error achieved: Hutchinson against Hutch++."""
    if fmt not in ("table", "json"):
        typer.echo("error: --format must be table or json", err=True)
        raise typer.Exit(2)
    from bench.console import Verbosity, quiet_third_party

    quiet_third_party(Verbosity.normal)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results = [
        measure_model(path, method, epochs, sketches, seeds, rel_stderr, max_probes, exact, min_probes)
        for path in configs
        for method in methods
    ]
    if fmt == "json":
        sys.stdout.write(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        return
    print_table(results, rel_stderr, seeds)


if __name__ == "__main__":
    typer.run(main)
