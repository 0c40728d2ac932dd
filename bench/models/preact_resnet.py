"""Pre-activation ResNet-18 for 32×32 inputs (He et al., "Identity Mappings in Deep Residual
Networks", ECCV 2016).

The ResNet-18 layout of :mod:`bench.models.resnet` (3×3 stride-1 stem, no max-pool, stages of
64-128-256-512 channels) with full pre-activation units: BN → ReLU → conv3×3 → BN → ReLU →
conv3×3, added to an identity shortcut, or to a 1×1 projection (no BatchNorm) of the
pre-activated input where the shape changes. The stem is a bare convolution and a final
BN → ReLU precedes the pooling, as in the paper's Fig. 4(e)/appendix. With ``width=64``:
11,172,170 parameters for 10 classes, 11,218,340 for 100 (the
common re-implementation without the final BN has 1,024 fewer).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bench.models import register_model
from bench.models.resnet import he_init, residual_stages


class PreActBlock(nn.Module):
    """BN → ReLU → conv3×3 → BN → ReLU → [dropout] → conv3×3, plus the (projected) shortcut.

    With ``dropout > 0`` it is the Wide ResNet block B(3,3) with dropout between the convolutions.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.projection: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.projection = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(pre)
        out = self.relu(self.bn2(self.conv1(pre)))
        return self.conv2(self.dropout(out)) + shortcut


class PreActNetwork(nn.Module):
    """Bare 3×3 stem, stages of pre-activation blocks, then BN → ReLU → pool → linear.

    The shared skeleton of the pre-activation ResNet and the Wide ResNet.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stem_width: int,
        widths: Sequence[int],
        counts: Sequence[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False)
        self.stages, c_out = residual_stages(
            lambda c_in, c_out, stride: PreActBlock(c_in, c_out, stride, dropout), stem_width, widths, counts
        )
        self.head = nn.Sequential(nn.BatchNorm2d(c_out), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_out, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.stages(self.stem(x))))


class PreActResNet(PreActNetwork):
    """Stages of ``blocks[i]`` pre-activation blocks with ``width·2^i`` channels."""

    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...], width: int) -> None:
        super().__init__(in_channels, num_classes, width, [width * 2**stage for stage in range(len(blocks))], blocks)


@register_model("preact_resnet18")
def preact_resnet18(input_shape: tuple[int, int, int], num_classes: int, width: int = 64) -> nn.Module:
    """Pre-activation ResNet-18; ``width`` is the first stage's channel count (64 in the paper)."""
    return PreActResNet(input_shape[0], num_classes, blocks=(2, 2, 2, 2), width=width)
