"""ResNet-18 for 32×32 inputs (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The CIFAR variant common in the flat-minima literature (SAM follow-ups report CIFAR results with
it): the ImageNet network's four stages of two basic blocks (64, 128, 256, 512 channels) behind a 3×3 stride-1
stem convolution with no max-pool, so a 32×32 image reaches the last stage at 4×4. Projection
shortcuts (1×1 convolution + BatchNorm, option B of the paper) where the shape changes. With
the default ``width=64``: 11,173,962 parameters for 10 classes, 11,220,132 for 100.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from bench.models import register_model


def he_init(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions, BatchNorm at identity, zero biases.

    The initialization of He et al., "Delving Deep into Rectifiers", ICCV 2015, as used by the
    reference ResNet and Wide ResNet code. Shared by the models of this package.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


BlockFactory = Callable[[int, int, int], nn.Module]  # (c_in, c_out, stride) -> block


def residual_stages(
    make_block: BlockFactory, c_in: int, widths: Sequence[int], counts: Sequence[int]
) -> tuple[nn.Sequential, int]:
    """Stages of ``counts[i]`` blocks with ``widths[i]`` channels; every stage after the first
    halves the resolution in its first block. Returns the stages and their output channels."""
    blocks: list[nn.Module] = []
    for stage, (c_out, count) in enumerate(zip(widths, counts, strict=True)):
        for index in range(count):
            blocks.append(make_block(c_in, c_out, 2 if stage > 0 and index == 0 else 1))
            c_in = c_out
    return nn.Sequential(*blocks), c_in


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, four stages of basic blocks (strides 1, 2, 2, 2), global average pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stages, c_in = residual_stages(
            BasicBlock, width, [width * 2**stage for stage in range(len(blocks))], blocks
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))))


@register_model("resnet18")
def resnet18(input_shape: tuple[int, int, int], num_classes: int, width: int = 64) -> nn.Module:
    """CIFAR ResNet-18; ``width`` is the first stage's channel count (64 in the paper)."""
    return CifarResNet(input_shape[0], num_classes, blocks=(2, 2, 2, 2), width=width)
