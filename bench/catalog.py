"""What is installed, and a config checked against it: datasets, models, regularizers (with
their plug-ins) and each regularizer's hyperparameters.

This sits above :mod:`bench.config` (which knows only the schema), :mod:`bench.data`,
:mod:`bench.models` and :mod:`regularizers`, so the schema never imports the registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import regularizers
from bench.config import BenchmarkConfig, ConfigError, load_config
from bench.config.load import load_workload
from bench.config.suite import SuiteConfig
from bench.data import DatasetError, available_datasets, load_dataset
from bench.errors import unknown_name
from bench.models import available_models
from bench.models.pretrained import check_pretrained
from bench.preflight import PreflightError, check_model_options


def load_benchmark(path: str | Path, benchmark: str | None = None) -> BenchmarkConfig:
    """Read, validate and check a YAML benchmark config (of a suite file: its benchmark
    ``benchmark``): :class:`ConfigError` (one line) on any problem."""
    config = load_config(path, benchmark)
    check_registered(config, str(path))
    return config


def load_any(path: str | Path) -> BenchmarkConfig | SuiteConfig:
    """Read, validate and check a benchmark config or a suite (every benchmark of it)."""
    workload = load_workload(path)
    for config in workload.benchmarks if isinstance(workload, SuiteConfig) else [workload]:
        check_registered(config, f"{path} ({config.benchmark})" if isinstance(workload, SuiteConfig) else str(path))
    return workload


def check_registered(config: BenchmarkConfig, source: str) -> None:
    """Names that live in registries: datasets, models, regularizers and their hyperparameters."""
    if config.dataset.name not in available_datasets():
        raise ConfigError(f"{source}: " + unknown_name("dataset", config.dataset.name, available_datasets()))
    if config.model.name not in available_models():
        raise ConfigError(f"{source}: " + unknown_name("model", config.model.name, available_models()))
    try:
        check_model_options(config)  # also for --dry-run, which runs no other preflight check
    except PreflightError as error:
        raise ConfigError(f"{source}: {error}") from None
    try:
        regularizers.load_entry_points()  # a plug-in that fails to import is named
    except regularizers.RegistryError as error:
        raise ConfigError(f"{source}: {error}") from None
    for entry in config.regularizers:
        try:
            regularizers.get(entry.name)  # a registered name, or one with +swa / +ema
        except regularizers.RegistryError as error:
            raise ConfigError(f"{source}: {error}") from None
        declared = {hp.name: hp for hp in regularizers.hyperparameters_of(entry.name)}
        for key in [*entry.fixed, *entry.space]:
            if key not in declared:
                raise ConfigError(
                    f"{source}: regularizer {entry.name!r}: " + unknown_name("hyperparameter", key, sorted(declared))
                )
        overlap = sorted(set(entry.fixed) & set(entry.space))
        if overlap:
            raise ConfigError(f"{source}: regularizer {entry.name!r}: {overlap[0]!r} is both fixed and searched")
        try:
            method = regularizers.create(entry.name, **entry.fixed)
        except regularizers.RegistryError as error:
            raise ConfigError(f"{source}: {error}") from None
        if config.resources.workers_per_trial > 1 and method.data_parallel_refusal:
            raise ConfigError(
                f"{source}: regularizer {entry.name!r} cannot train on several workers "
                f"(resources.workers_per_trial {config.resources.workers_per_trial}): {method.data_parallel_refusal}"
            )
        for key, spec in entry.space.items():
            # Every corner of a searched range must be a valid value: else a trial crashes mid-run.
            corners = spec.choices if spec.choices is not None else (spec.low, spec.high)
            for value in corners:
                if declared[key].type is int and isinstance(value, float) and value.is_integer():
                    value = int(value)  # YAML ranges are read as floats; the search draws integers
                try:
                    regularizers.create(entry.name, **{**entry.fixed, key: value})
                except regularizers.RegistryError as error:
                    raise ConfigError(f"{source}: search range of {key}: {error}") from None


@dataclass(frozen=True)
class DataCheck:
    """What loading a config's dataset told before its run: its size, and lines worth saying."""

    train_samples: int
    notes: list[str]


def check_data_and_model(config: BenchmarkConfig) -> DataCheck:
    """Load ``config``'s dataset here (a missing one fails before any trial) and match the
    checkpoint ``model.pretrained`` names, if any, against the model built for that data (its
    input shape and classes; on the meta device). Raises :class:`bench.data.DatasetError` or
    :class:`bench.models.ModelError` (one line); a classifier head left out is a note."""
    dataset = load_dataset(config.dataset)
    workers = config.resources.workers_per_trial
    if workers > 1 and min(config.training.batch_size, len(dataset.train)) < workers:
        raise DatasetError(
            f"a batch of {min(config.training.batch_size, len(dataset.train))} samples cannot be shared by "
            f"{workers} workers (resources.workers_per_trial): raise training.batch_size"
        )
    notes = []
    if config.model.pretrained is not None:
        model = config.model
        notice = check_pretrained(model.name, model.options, model.pretrained, dataset.input_shape, dataset.num_classes)
        notes += [notice] if notice is not None else []
    return DataCheck(train_samples=len(dataset.train), notes=notes)
