"""Wide Residual Networks (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

WRN-d-k for 32×32 inputs: a 3×3 convolution to 16 channels, three groups of ``(d - 4) / 6``
pre-activation basic blocks with ``16k``, ``32k``, ``64k`` channels (strides 1, 2, 2), then
BN → ReLU → global average pool → linear. A block is BN → ReLU → conv3×3 → BN → ReLU →
dropout → conv3×3 (the paper's B(3,3) with dropout between the convolutions, rate 0 by default);
where the shape changes the shortcut is a 1×1 convolution of the pre-activated input, as in the
authors' code. Convolutions have no bias.

Parameter counts for 10 classes: WRN-28-10 36,479,194 (the paper's 36.5M), WRN-16-8 10,961,370
(11.0M); for 100 classes 36,536,884 and 11,007,540. WRN-28-10 is a main CIFAR network of the SAM
(Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021) papers.
"""

from __future__ import annotations

from torch import Tensor, nn

from bench.models import ModelError, register_model
from bench.models.resnet import he_init


class WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
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


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``; ``depth`` must be 6n + 4."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widen: int, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ModelError(f"a Wide ResNet's depth must be 6n + 4 (10, 16, 22, 28, ...), got {depth}")
        if not 0 <= dropout < 1:
            raise ModelError(f"dropout must be in [0, 1), got {dropout}")
        per_group = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = 16
        for group, c_out in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for index in range(per_group):
                blocks.append(WideBlock(c_in, c_out, stride=2 if group > 0 and index == 0 else 1, dropout=dropout))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.blocks(self.stem(x))))


@register_model("wrn28_10")
def wrn28_10(input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> nn.Module:
    """WRN-28-10 (36.5M parameters); ``dropout`` between each block's convolutions (0.3 in the paper's best runs)."""
    return WideResNet(input_shape[0], num_classes, depth=28, widen=10, dropout=dropout)


@register_model("wrn16_8")
def wrn16_8(input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> nn.Module:
    """WRN-16-8 (11.0M parameters); ``dropout`` between each block's convolutions."""
    return WideResNet(input_shape[0], num_classes, depth=16, widen=8, dropout=dropout)
