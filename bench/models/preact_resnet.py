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

from torch import Tensor, nn

from bench.models import register_model
from bench.models.resnet import he_init


class PreActBlock(nn.Module):
    """BN → ReLU → conv3×3 → BN → ReLU → conv3×3, plus the (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.projection: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.projection = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        c_in = width
        for stage, count in enumerate(blocks):
            c_out = width * 2**stage
            for index in range(count):
                stages.append(PreActBlock(c_in, c_out, stride=2 if stage > 0 and index == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.stages(self.stem(x))))


@register_model("preact_resnet18")
def preact_resnet18(input_shape: tuple[int, int, int], num_classes: int, width: int = 64) -> nn.Module:
    """Pre-activation ResNet-18; ``width`` is the first stage's channel count (64 in the paper)."""
    return PreActResNet(input_shape[0], num_classes, blocks=(2, 2, 2, 2), width=width)
