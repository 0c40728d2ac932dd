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

from torch import nn

from bench.models import ModelError, register_model
from bench.models.preact_resnet import PreActNetwork


class WideResNet(PreActNetwork):
    """WRN-``depth``-``widen``; ``depth`` must be 6n + 4."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widen: int, dropout: float = 0.0) -> None:
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ModelError(f"a Wide ResNet's depth must be 6n + 4 (10, 16, 22, 28, ...), got {depth}")
        if not 0 <= dropout < 1:
            raise ModelError(f"dropout must be in [0, 1), got {dropout}")
        per_group = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        super().__init__(in_channels, num_classes, 16, widths, (per_group,) * 3, dropout=dropout)


@register_model("wrn28_10")
def wrn28_10(input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> nn.Module:
    """WRN-28-10 (36.5M parameters); ``dropout`` between each block's convolutions (0.3 in the paper's best runs)."""
    return WideResNet(input_shape[0], num_classes, depth=28, widen=10, dropout=dropout)


@register_model("wrn16_8")
def wrn16_8(input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> nn.Module:
    """WRN-16-8 (11.0M parameters); ``dropout`` between each block's convolutions."""
    return WideResNet(input_shape[0], num_classes, depth=16, widen=8, dropout=dropout)
