"""Model registry, in the style of timm's ``register_model``: a decorator, a name, defaults.

A factory takes the input shape ``(C, H, W)``, the number of classes and its own keyword
options (from the config's ``model.options``) and returns an ``nn.Module`` producing logits.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}


class ModelError(ValueError):
    """Unknown model or option; one printable line."""


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return decorator


def available_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
    try:
        factory = _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelError(f"unknown model {name!r}{hint}; valid: {', '.join(available_models())}") from None
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("input_shape", "num_classes")]
    for key in options:
        if key not in accepted:
            raise ModelError(f"model {name!r} has no option {key!r}; valid: {', '.join(accepted) or '(none)'}")
    return factory(input_shape=input_shape, num_classes=num_classes, **options)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Importing the modules registers the built-in models.
from bench.models import preact_resnet, pyramidnet, resnet, small, vgg, wide_resnet  # noqa: E402,F401  isort: skip
