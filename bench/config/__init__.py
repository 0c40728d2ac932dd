"""Benchmark configs: the schema (:mod:`bench.config.schema`) and reading YAML into it
(:mod:`bench.config.load`). The names most callers need are re-exported here."""

from bench.config.load import load_config, parse_config, with_final
from bench.config.schema import (
    AshaConfig,
    BenchmarkConfig,
    BudgetConfig,
    ConfigError,
    DataConfig,
    FinalConfig,
    FlatnessConfig,
    ModelConfig,
    RangeSpec,
    RegularizerEntry,
    ResourcesConfig,
    SamplerConfig,
    SearchConfig,
    TrainingConfig,
    startup_trials,
)

__all__ = [
    "AshaConfig",
    "BenchmarkConfig",
    "BudgetConfig",
    "ConfigError",
    "DataConfig",
    "FinalConfig",
    "FlatnessConfig",
    "ModelConfig",
    "RangeSpec",
    "RegularizerEntry",
    "ResourcesConfig",
    "SamplerConfig",
    "SearchConfig",
    "TrainingConfig",
    "load_config",
    "parse_config",
    "startup_trials",
    "with_final",
]
