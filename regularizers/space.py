"""Search-space domains declared next to each hyperparameter field.

A regularizer is a dataclass; each hyperparameter field carries its domain in the field metadata
(see :func:`hparam`). The domains are plain data: ``bench.search`` translates them into Optuna
suggestions, ``sharpbench list`` prints them, and nothing here imports Optuna.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Float:
    """A real-valued range searched on a linear or log scale."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Float domain needs low <= high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale Float domain needs low > 0, got {self.low}")

    @property
    def scale(self) -> str:
        return "log" if self.log else "linear"

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= float(value) <= self.high

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}] {self.scale}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "scale": self.scale}


@dataclass(frozen=True)
class Int:
    """An integer range, both ends included."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Int domain needs low <= high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale Int domain needs low > 0, got {self.low}")

    @property
    def scale(self) -> str:
        return "log" if self.log else "linear"

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{{{self.low}..{self.high}}} {self.scale}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "scale": self.scale}


@dataclass(frozen=True)
class Choice:
    """A finite set of options (strings, numbers or booleans)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("Choice domain needs at least one option")

    scale = "categorical"

    def contains(self, value: Any) -> bool:
        return value in self.options

    def describe(self) -> str:
        return "{" + ", ".join(map(str, self.options)) + "}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "choice", "options": list(self.options), "scale": self.scale}


Domain = Union[Float, Int, Choice]

_DOMAIN_KEY = "sharpbench_domain"
_HELP_KEY = "sharpbench_help"
_SEARCHED_KEY = "sharpbench_searched"
_BOUNDS_KEY = "sharpbench_bounds"


def hparam(
    default: Any,
    domain: Domain,
    help: str,
    *,
    searched: bool = True,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Declare a hyperparameter field: its default, its search domain and one line of help.

    ``minimum``/``maximum`` bound the values that are *valid* (checked on creation), which is
    wider than the search range: ``gnp`` with α = 0 is valid (it is ERM) but not searched.
    A :class:`Choice` domain is its own validity set. ``searched=False`` marks an *option* (a
    variant switch such as the projection kind): configs can open it, the default search does not.
    """
    if not domain.contains(default):
        # Defaults lie inside the search domain; catch typos early.
        raise ValueError(f"default {default!r} lies outside its domain {domain.describe()}")
    return dataclasses.field(
        default=default,
        metadata={_DOMAIN_KEY: domain, _HELP_KEY: help, _SEARCHED_KEY: searched, _BOUNDS_KEY: (minimum, maximum)},
    )


def validate(instance: Any) -> None:
    """Raise ``ValueError`` naming the first hyperparameter of ``instance`` outside its valid values."""
    for field in dataclasses.fields(instance):
        if _DOMAIN_KEY not in field.metadata:
            continue
        value = getattr(instance, field.name)
        domain = field.metadata[_DOMAIN_KEY]
        if isinstance(domain, Choice):
            if not domain.contains(value):
                raise ValueError(f"{field.name} must be one of {domain.describe()}, got {value!r}")
            continue
        minimum, maximum = field.metadata[_BOUNDS_KEY]
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            raise ValueError(f"{field.name} must lie in [{minimum:g}, {maximum:g}], got {value}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{field.name} must be >= {minimum:g}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{field.name} must be <= {maximum:g}, got {value}")


@dataclass(frozen=True)
class HyperParameter:
    """One declared hyperparameter of a regularizer, as read back from its dataclass."""

    name: str
    type: type
    default: Any
    domain: Domain
    help: str
    searched: bool
    minimum: float | None = None  # valid values (wider than the search domain)
    maximum: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "domain": self.domain.to_dict(),
            "help": self.help,
            "searched": self.searched,
            "valid": {"minimum": self.minimum, "maximum": self.maximum},
        }


_TYPES = {"float": float, "int": int, "bool": bool, "str": str}


def hyperparameters(cls: type) -> tuple[HyperParameter, ...]:
    """The hyperparameters a regularizer dataclass declares, in field order."""
    result = []
    for field in dataclasses.fields(cls):
        if _DOMAIN_KEY not in field.metadata:
            continue
        field_type = field.type if isinstance(field.type, type) else _TYPES.get(str(field.type), object)
        result.append(
            HyperParameter(
                name=field.name,
                type=field_type,
                default=field.default,
                domain=field.metadata[_DOMAIN_KEY],
                help=field.metadata[_HELP_KEY],
                searched=field.metadata[_SEARCHED_KEY],
                minimum=field.metadata[_BOUNDS_KEY][0],
                maximum=field.metadata[_BOUNDS_KEY][1],
            )
        )
    return tuple(result)
