"""Reading a benchmark config: YAML (a key given twice is an error), validation against
:mod:`bench.config.schema`, and one-line messages for what is wrong, naming the key and the
valid ones. Names that live in registries (datasets, models, regularizers) are checked above
this room, by :func:`bench.catalog.check_names`, so the schema does not depend on what is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bench.config.schema import BenchmarkConfig, ConfigError, FinalConfig, RegularizerEntry
from bench.config.suite import SuiteConfig, is_suite, parse_suite
from bench.errors import unknown_name


def _format_validation_error(error: ValidationError) -> str:
    errors = error.errors()
    # A typo'd key is also a missing one ("regularisers:" leaves "regularizers" required): name the
    # typo, with its did-you-mean, before the field it left missing.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        keys = _valid_keys(first["loc"][:-1])
        if keys is None:
            return f"unknown key {where!r}"
        return unknown_name("key", where, keys, compared=str(first["loc"][-1]))
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _valid_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the section at ``loc`` accepts; None where the section is not a model."""
    model: Any = BenchmarkConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else (RegularizerEntry if part == "regularizers" else None)
        )
    return None if model is None else list(model.model_fields)


def parse_config(raw: Any, *, source: str = "config") -> BenchmarkConfig:
    """Validate a parsed YAML mapping; raise :class:`ConfigError` with a one-line message."""
    if raw is None:
        raise ConfigError(
            f"{source}: the config is empty; expected a mapping with benchmark, regularizers and the other sections"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = BenchmarkConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {_format_validation_error(error)}") from None
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: plain
    PyYAML keeps the last one, so ``epochs: 50`` above a forgotten ``epochs: 5`` would silently lose."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor`` merges keys that the mapping's own may override
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


#: Keys added to the schema after runs had begun whose default changes what a run does, with the
#: value that reproduces what runs did before the key existed. A run record written before (it
#: lacks the key) is read with this value, so resuming it under a config that keeps the new
#: default is refused by name (``differs in flatness.trace_estimator``) rather than silently
#: mixing two behaviours in one run. Keys whose default keeps the old behaviour need no entry.
PRIOR_VALUES: dict[str, Any] = {"flatness.trace_estimator": "hutchinson"}


def with_prior_values(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a stored config) with :data:`PRIOR_VALUES` for the keys it lacks (a copy)."""
    result = {**raw}
    for dotted, value in PRIOR_VALUES.items():
        *sections, key = dotted.split(".")
        node = result
        for section in sections:
            child = node.get(section, {})
            if not isinstance(child, dict):
                break
            node[section] = node = {**child}
        else:
            node.setdefault(key, value)
    return result


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML document of ``path``; :class:`ConfigError` with one line on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"cannot read config {path}: it is a folder, not a YAML file") from None
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"cannot read config {path}: not UTF-8 text (byte {error.start}); is it a YAML file?"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', error)}") from None


def load_workload(path: str | Path) -> BenchmarkConfig | SuiteConfig:
    """Read and validate a YAML file: one benchmark config, or a suite of them (it has
    ``benchmarks:``, :mod:`bench.config.suite`)."""
    raw = read_yaml(path)
    if is_suite(raw):
        return parse_suite(raw, source=str(path), parse=parse_config)
    return parse_config(raw, source=str(path))


def load_config(path: str | Path, benchmark: str | None = None) -> BenchmarkConfig:
    """Read and validate a YAML benchmark config; for a suite file, its benchmark ``benchmark``."""
    workload = load_workload(path)
    if isinstance(workload, SuiteConfig):
        if benchmark is None:
            names = ", ".join(c.benchmark for c in workload.benchmarks)
            raise ConfigError(f"{path} is a suite of benchmarks ({names}); name one with --benchmark NAME")
        return workload.named(benchmark)
    if benchmark is not None and benchmark != workload.benchmark:
        raise ConfigError(f"{path} holds one benchmark, {workload.benchmark!r}, not {benchmark!r}")
    return workload


def with_final(config: BenchmarkConfig, **changes: Any) -> BenchmarkConfig:
    """A copy of ``config`` with ``final`` fields replaced (validated, e.g. from ``--seeds``);
    raises :class:`ConfigError`."""
    try:
        final = FinalConfig.model_validate({**config.final.model_dump(), **changes})
    except ValidationError as error:
        raise ConfigError(f"final: {_format_validation_error(error)}") from None
    return config.model_copy(update={"final": final})
