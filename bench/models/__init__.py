"""Model registry, in the style of timm's ``register_model``: a decorator, a name, defaults.

A factory takes the input shape ``(C, H, W)``, the number of classes and its own keyword
options (from the config's ``model.options``) and returns an ``nn.Module`` producing logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from bench.naming import Registry

ModelFactory = Callable[..., nn.Module]


class ModelError(ValueError):
    """Unknown model or option; one printable line."""


#: Plug-ins add models through this entry-point group (a factory as below).
ENTRY_POINT_GROUP = "sharpbench.models"
_MODELS: Registry[ModelFactory] = Registry("model", ModelError, ENTRY_POINT_GROUP)

#: ``@register_model("name")`` on a factory ``(input_shape, num_classes, **options) -> nn.Module``.
register_model = _MODELS.register
available_models = _MODELS.names


def model_factory(name: str) -> ModelFactory:
    """The factory registered as ``name``; :class:`ModelError` (did-you-mean) otherwise."""
    return _MODELS.get(name)


def create_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **options: Any) -> nn.Module:
    factory = _MODELS.get(name)
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("input_shape", "num_classes")]
    for key in options:
        if key not in accepted:
            raise ModelError(f"model {name!r} has no option {key!r}; valid: {', '.join(accepted) or '(none)'}")
    return factory(input_shape=input_shape, num_classes=num_classes, **options)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Importing the modules registers the built-in models.
from bench.models import preact_resnet, pyramidnet, resnet, small, vgg, wide_resnet  # noqa: E402,F401  isort: skip
