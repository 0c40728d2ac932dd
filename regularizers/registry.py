"""Name → regularizer class registry, with third-party discovery through entry points.

Modelled on timm's ``register_model``: a decorator, a stable name, defaults in the class.
Plugins declare, in their own package metadata::

    [project.entry-points."sharpbench.regularizers"]
    my_method = "my_package.module:MyMethod"

The entry point may name a class already decorated with :func:`register`, or a plain
``Regularizer`` dataclass, which is then registered under the entry point's name. Entry points
are loaded lazily, on the first lookup or listing, so importing this package has no side effects
beyond registering the built-in methods.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable
from typing import Any, TypeVar

from bench.errors import described, unknown_name
from regularizers.averaging import KINDS, SEPARATOR, Averaging
from regularizers.base import Regularizer
from regularizers.space import HyperParameter, hyperparameters

ENTRY_POINT_GROUP = "sharpbench.regularizers"

R = TypeVar("R", bound=type[Regularizer])

_REGISTRY: dict[str, type[Regularizer]] = {}
#: ``<method>+<averaging>`` classes, made on first use (:func:`get`); not listed by :func:`available`.
_COMPOSED: dict[str, type[Regularizer]] = {}
_entry_points_loaded = False


class RegistryError(ValueError):
    """A lookup or registration problem, with a message fit to print as one line."""


def register(name: str) -> Callable[[R], R]:
    """Class decorator: register a :class:`Regularizer` dataclass under ``name``.

    >>> from dataclasses import dataclass
    >>> from regularizers.erm import ERM
    >>> @register("doc_example")
    ... @dataclass
    ... class DocExample(ERM): ...
    >>> get("doc_example") is DocExample
    True
    >>> unregister("doc_example")
    """

    def decorator(cls: R) -> R:
        _add(name, cls)
        return cls

    return decorator


def _add(name: str, cls: type[Regularizer]) -> None:
    if not isinstance(cls, type) or not issubclass(cls, Regularizer):
        raise RegistryError(f"{name!r}: {cls!r} is not a Regularizer subclass")
    if not dataclasses.is_dataclass(cls):
        raise RegistryError(f"{name!r}: {cls.__name__} must be a dataclass (its fields are its hyperparameters)")
    if SEPARATOR in name:
        raise RegistryError(f"{name!r}: {SEPARATOR!r} in a name is reserved for weight averaging (sam{SEPARATOR}swa)")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise RegistryError(
            f"regularizer name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    cls.name = name
    _REGISTRY[name] = cls


def unregister(name: str) -> None:
    """Remove a registration (for tests and interactive sessions), and its averaged compositions."""
    _REGISTRY.pop(name, None)
    for composed in [key for key in _COMPOSED if key.rsplit(SEPARATOR, 1)[0] == name]:
        del _COMPOSED[composed]


def load_entry_points(force: bool = False) -> None:
    """Import every plugin declared under :data:`ENTRY_POINT_GROUP` (once, unless ``force``).

    A plugin that fails to import raises: a benchmark silently missing a method is worse than
    an error.
    """
    global _entry_points_loaded
    if _entry_points_loaded and not force:
        return
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as error:  # re-raised with the plugin named, as one line
            detail = described(error)
            raise RegistryError(
                f"plugin {entry_point.name!r} ({entry_point.value}) failed to load: {detail}"
            ) from error
        if isinstance(loaded, type) and _REGISTRY.get(getattr(loaded, "name", "")) is loaded:
            continue  # the plugin registered itself with @register
        _add(entry_point.name, loaded)
    # Only once every plug-in loaded: a failed one raises again on the next lookup instead of
    # leaving a registry that silently lacks it.
    _entry_points_loaded = True


def available() -> list[str]:
    """Names of every registered regularizer, built-in and plugin, sorted."""
    load_entry_points()
    return sorted(_REGISTRY)


def builtin() -> list[str]:
    """Names of the methods this package ships (classes defined in ``regularizers.*``), in
    registration order: the import order at the end of ``regularizers/__init__.py``, then the
    order within each module. Plug-ins are not listed. The report's palette gives each its fixed
    colour and marker by this order (bench/report/palette.py), so a new method goes at the end."""
    return [name for name, cls in _REGISTRY.items() if cls.__module__.startswith(f"{__package__}.")]


def get(name: str) -> type[Regularizer]:
    """The class registered under ``name``; a did-you-mean error otherwise.

    ``<method>+swa`` and ``<method>+ema`` name ``<method>`` with weight averaging
    (:mod:`regularizers.averaging`): a subclass adding the averaging's hyperparameters, made once.
    """
    if name in _COMPOSED:
        return _COMPOSED[name]
    if name not in _REGISTRY:
        load_entry_points()
    if name not in _REGISTRY and SEPARATOR in name:
        return _compose(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RegistryError(unknown_name("regularizer", name, _REGISTRY)) from None


def _compose(name: str) -> type[Regularizer]:
    base_name, kind = name.rsplit(SEPARATOR, 1)
    base = get(base_name)  # the method first: 'SAM+SWA' is an unknown method before a bad suffix
    if kind not in KINDS:
        raise RegistryError(f"regularizer {name!r}: " + unknown_name("weight averaging", kind, KINDS))
    if base.averaging_kind is not None:
        raise RegistryError(
            f"regularizer {name!r}: {base_name!r} already averages its weights; one averaging per method"
        )
    averaging: type[Averaging] = KINDS[kind]
    declared = {f.name for f in dataclasses.fields(base)}
    added = [f for f in dataclasses.fields(averaging)]
    clash = sorted(declared & {f.name for f in added})
    if clash:
        raise RegistryError(f"regularizer {name!r}: {base_name!r} has hyperparameters named like {kind}'s: {clash}")
    composed = dataclasses.make_dataclass(
        f"{base.__name__}With{averaging.__name__}",
        [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata)) for f in added],
        bases=(base,),
        namespace={
            "averaging_kind": averaging,
            "__doc__": f"{(base.__doc__ or base.__name__).strip().splitlines()[0]} With {averaging.__doc__}",
        },
    )
    composed.__module__ = base.__module__
    composed.name = name
    _COMPOSED[name] = composed
    return composed


def is_known(name: str) -> bool:
    """Whether :func:`get` finds ``name`` (registered, or a registered method with an averaging suffix)."""
    try:
        get(name)
    except RegistryError:
        return False
    return True


def hyperparameters_of(name: str) -> tuple[HyperParameter, ...]:
    """The hyperparameters the regularizer registered as ``name`` declares, with defaults, domains
    and scales (:func:`regularizers.space.hyperparameters` of its class). Raises
    :class:`RegistryError` for an unknown name."""
    return hyperparameters(get(name))


def create(name: str, **hparams: Any) -> Regularizer:
    """Instantiate ``name`` with ``hparams`` (checked: unknown names and wrong types are errors)."""
    cls = get(name)
    declared = {field.name: field for field in dataclasses.fields(cls)}
    for key, value in hparams.items():
        if key not in declared:
            raise RegistryError(f"regularizer {name!r}: " + unknown_name("hyperparameter", key, declared))
        hparams[key] = _coerce(name, key, value, space_types={hp.name: hp.type for hp in hyperparameters(cls)})
    try:
        return cls(**hparams)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"regularizer {name!r}: {error}") from error


def _coerce(method: str, key: str, value: Any, space_types: dict[str, type]) -> Any:
    expected = space_types.get(key)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # YAML writes 1 for 1.0
    wrong_bool = isinstance(value, bool) and expected in (int, float)  # bool is an int subclass
    if expected is not None and expected is not object and (wrong_bool or not isinstance(value, expected)):
        raise RegistryError(
            f"regularizer {method!r}: {key} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return value
