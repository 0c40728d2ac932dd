"""Additive PyramidNet (Han, Kim & Kim, "Deep Pyramidal Residual Networks", CVPR 2017).

Instead of doubling the width at each downsampling, every residual unit widens by ``alpha / N``
channels (``N`` units in all), from 16 after the stem to ``16 + alpha`` at the end. The paper's
pyramidal unit is BN → conv3×3 → BN → ReLU → conv3×3 → BN (no ReLU first, none at the end);
the bottleneck unit is BN → conv1×1 → BN → ReLU → conv3×3 → BN → ReLU → conv1×1 (×4) → BN. The
shortcut is the identity, 2×2 average-pooled where the unit downsamples and zero-padded to the
new width, so shortcuts carry no parameters. Stem: conv3×3 → BN; head: BN → ReLU → global
average pool → linear.

Registered variants (parameter counts for 10 classes; in brackets the figures of the paper's
Table 4 and the authors' README, printed to 0.1M):

* ``pyramidnet110``: depth 110, basic units (18 per stage), ``alpha=270`` by default:
  28,485,477 [28.3M], final width 286 — the paper's best basic-unit network; ``alpha=48`` gives
  1,772,706 [1.7M] and ``alpha=84`` 3,904,446 [3.8M].
* ``pyramidnet272``: depth 272, bottleneck units (30 per stage), ``alpha=200``: 26,210,842
  [26.0M], final width 864 — the network of the SAM and ASAM papers (they add ShakeDrop, which
  is not implemented here).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bench.models import ModelError, register_model
from bench.models.resnet import he_init


class PyramidUnit(nn.Module):
    """One pyramidal residual unit, basic (two 3×3) or bottleneck (1×1, 3×3, 1×1 with 4× output)."""

    def __init__(self, c_in: int, planes: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        if bottleneck:
            c_out = 4 * planes
            layers: list[nn.Module] = [
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
                nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
                nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
            ]  # fmt: skip
        else:
            c_out = planes
            layers = [
                nn.BatchNorm2d(c_in),
                nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(),
                nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes),
            ]  # fmt: skip
        if c_out < c_in:
            raise ModelError(f"a pyramidal unit cannot narrow ({c_in} → {c_out} channels)")
        self.residual = nn.Sequential(*layers)
        self.extra_channels = c_out - c_in
        self.pool: nn.Module = nn.AvgPool2d(2, ceil_mode=True) if stride != 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.pool(x)
        if self.extra_channels:
            # Zero-pad the channel dimension: (W left, W right, H top, H bottom, C front, C back).
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return self.residual(x) + shortcut


class PyramidNet(nn.Module):
    """Additive PyramidNet of ``depth`` layers: 6n + 2 with basic units, 9n + 2 with bottlenecks."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, alpha: float, bottleneck: bool) -> None:
        super().__init__()
        layers_per_unit = 3 if bottleneck else 2
        if (depth - 2) % (3 * layers_per_unit) != 0 or depth <= 2:
            raise ModelError(f"a PyramidNet's depth must be {3 * layers_per_unit}n + 2, got {depth}")
        if alpha <= 0:
            raise ModelError(f"alpha must be positive, got {alpha}")
        per_stage = (depth - 2) // (3 * layers_per_unit)
        total = 3 * per_stage
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        units: list[nn.Module] = []
        c_in = 16
        for index in range(total):
            planes = int(round(16 + alpha * (index + 1) / total))
            stride = 2 if index > 0 and index % per_stage == 0 else 1
            units.append(PyramidUnit(c_in, planes, stride, bottleneck))
            c_in = 4 * planes if bottleneck else planes
        self.units = nn.Sequential(*units)
        self.head = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.units(self.stem(x))))


@register_model("pyramidnet110")
def pyramidnet110(input_shape: tuple[int, int, int], num_classes: int, alpha: float = 270.0) -> nn.Module:
    """Additive PyramidNet-110 with basic units; ``alpha`` is the total widening (270: 28.3M, 48: 1.7M)."""
    return PyramidNet(input_shape[0], num_classes, depth=110, alpha=alpha, bottleneck=False)


@register_model("pyramidnet272")
def pyramidnet272(input_shape: tuple[int, int, int], num_classes: int, alpha: float = 200.0) -> nn.Module:
    """Additive PyramidNet-272 with bottleneck units; ``alpha=200`` (26.0M) as in the SAM paper, without ShakeDrop."""
    return PyramidNet(input_shape[0], num_classes, depth=272, alpha=alpha, bottleneck=True)
