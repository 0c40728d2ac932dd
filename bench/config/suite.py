"""A suite: several benchmarks in one YAML file, run as one workload (``sharpbench run SUITE``).

A suite file has three keys::

    suite: suite_cpu            # its name (the same characters as a benchmark name)
    defaults: {...}             # any part of a benchmark config, shared by every benchmark
    benchmarks:                 # at least two; each a benchmark config, laid over the defaults
      - {benchmark: digits_clean}
      - {benchmark: digits_noise20, dataset: {label_noise: 0.2}}

Each benchmark is ``defaults`` with its own entry laid over it, mapping by mapping (a mapping in
the entry merges into the default's key by key; anything else, lists included, replaces the
default's). The ``options`` of a named thing belong to that thing: an entry that names another
one (``model: {name: mlp}`` over a default ``cnn`` with ``options: {width: 16}``) does not
inherit them. Then each is validated as a whole
:class:`~bench.config.schema.BenchmarkConfig`. So every benchmark of a suite is an ordinary
benchmark: its own run identity (config hash), rows, studies and resume.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.config.schema import BenchmarkConfig, ConfigError
from bench.errors import unknown_name

#: The keys of a suite file.
SUITE_KEYS = ("suite", "defaults", "benchmarks")
#: The key that tells a suite file from a benchmark config.
MARKER = "benchmarks"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SuiteConfig(BaseModel):
    """A suite: its name and its benchmarks, each a whole benchmark config."""

    model_config = ConfigDict(frozen=True)

    suite: str
    benchmarks: tuple[BenchmarkConfig, ...]

    def named(self, benchmark: str) -> BenchmarkConfig:
        """One benchmark of the suite by name; :class:`ConfigError` naming the others."""
        for config in self.benchmarks:
            if config.benchmark == benchmark:
                return config
        raise ConfigError(
            f"suite {self.suite!r}: " + unknown_name("benchmark", benchmark, [c.benchmark for c in self.benchmarks])
        )


def is_suite(raw: Any) -> bool:
    """Whether a parsed YAML document is a suite (it has ``benchmarks:``), not one benchmark."""
    return isinstance(raw, dict) and MARKER in raw


def laid_over(base: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` laid over ``base``: mappings merge key by key, anything else replaces (a copy);
    a mapping that names another thing (its ``name`` differs) leaves the old one's ``options``.

    >>> laid_over({"training": {"epochs": 5, "batch_size": 64}, "regularizers": ["erm", "sam"]},
    ...           {"training": {"epochs": 9}, "regularizers": ["erm"]})
    {'training': {'epochs': 9, 'batch_size': 64}, 'regularizers': ['erm']}
    >>> laid_over({"model": {"name": "cnn", "options": {"width": 16}}}, {"model": {"name": "mlp"}})
    {'model': {'name': 'mlp'}}
    >>> laid_over({"dataset": {"name": "cifar10", "crop_padding": 4}}, {"dataset": {"name": "cifar100"}})
    {'dataset': {'name': 'cifar100', 'crop_padding': 4}}
    """
    merged = dict(base)
    for key, value in entry.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if value.get("name", old.get("name")) != old.get("name"):
                old = {k: v for k, v in old.items() if k != "options"}  # the options of the old thing
            merged[key] = laid_over(old, value)
        else:
            merged[key] = value
    return merged


def _blamed(
    error: ConfigError, defaults: dict[str, Any], entry: dict[str, Any], source: str, index: int, parse: Any
) -> ConfigError:
    """``error`` of benchmark ``index``, said of ``defaults`` when the defaults alone (with the
    entry's name) fail the same way: a typo there is not the first benchmark's."""
    said = str(error).removeprefix(f"{source}: benchmarks[{index}]: ")
    try:
        parse({**defaults, "benchmark": entry["benchmark"]}, source="")
    except ConfigError as alone:
        if str(alone).removeprefix(": ") == said:
            return ConfigError(f"{source}: defaults: {said}")
    return error


def parse_suite(raw: dict[str, Any], *, source: str, parse: Any) -> SuiteConfig:
    """Validate a suite document; ``parse(raw, source=...)`` validates one benchmark config
    (:func:`bench.config.load.parse_config`). Raises :class:`ConfigError` with one line."""
    for key in raw:
        if key not in SUITE_KEYS:
            raise ConfigError(
                f"{source}: a suite file has only {', '.join(SUITE_KEYS)}; " + unknown_name("key", str(key), SUITE_KEYS)
            )
    name = raw.get("suite")
    if not isinstance(name, str) or not _NAME.match(name) or set(name) == {"."}:
        raise ConfigError(f"{source}: suite: a name of letters, digits, '_', '.' and '-' (got {name!r})")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: defaults: expected a mapping (part of a benchmark config)")
    if "benchmark" in defaults:
        raise ConfigError(f"{source}: defaults: 'benchmark' names one benchmark; give it in each entry of benchmarks")
    entries = raw.get(MARKER)
    if not isinstance(entries, list) or len(entries) < 2:
        raise ConfigError(f"{source}: benchmarks: a list of at least 2 benchmark configs (one benchmark: no suite)")
    configs: list[BenchmarkConfig] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("benchmark"), str):
            raise ConfigError(f"{source}: benchmarks[{index}]: a mapping with a 'benchmark' name")
        try:
            configs.append(parse(laid_over(defaults, entry), source=f"{source}: benchmarks[{index}]"))
        except ConfigError as error:
            raise _blamed(error, defaults, entry, source, index, parse) from None
    names = [c.benchmark for c in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{source}: benchmark {twice[0]!r} appears twice; each benchmark needs its own name")
    return SuiteConfig(suite=name, benchmarks=tuple(configs))
