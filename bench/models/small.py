"""Small models for the digits benchmark (and fast tests): an MLP and a compact CNN."""

from __future__ import annotations

from torch import nn

from bench.models import register_model


@register_model("mlp")
def mlp(input_shape: tuple[int, int, int], num_classes: int, hidden: int = 128, depth: int = 2) -> nn.Module:
    """``depth`` hidden layers of width ``hidden`` with ReLU."""
    channels, height, width = input_shape
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = channels * height * width
    for _ in range(depth):
        layers += [nn.Linear(width_in, hidden), nn.ReLU()]
        width_in = hidden
    layers.append(nn.Linear(width_in, num_classes))
    return nn.Sequential(*layers)


@register_model("cnn")
def cnn(input_shape: tuple[int, int, int], num_classes: int, width: int = 32, batchnorm: bool = True) -> nn.Module:
    """Two 3×3 conv blocks (conv → BN → ReLU), a 2×2 max-pool after each, global average pool, linear."""
    channels = input_shape[0]

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        norm: nn.Module = nn.BatchNorm2d(c_out) if batchnorm else nn.Identity()
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm), norm, nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(channels, width),
        *block(width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
