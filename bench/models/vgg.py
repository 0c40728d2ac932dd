"""VGG-16 with BatchNorm for 32×32 inputs (Simonyan & Zisserman, "Very Deep Convolutional Networks
for Large-Scale Image Recognition", ICLR 2015; BatchNorm from Ioffe & Szegedy, ICML 2015).

Configuration D's thirteen 3×3 convolutions (64, 64, M, 128, 128, M, 256×3, M, 512×3, M,
512×3, M), each followed by BatchNorm and ReLU; five 2×2 max-pools take 32×32 to 1×1.
Convolutions carry no bias (BatchNorm's shift makes it redundant).

Classifier, the ``classifier`` option:

* ``"linear"`` (default): one linear layer 512 → classes, the common CIFAR variant ("14.7M"):
  14,718,912 + 5,130 = 14,724,042 parameters for 10 classes, 14,770,212 for 100 (4,224 fewer
  than re-implementations that keep the redundant convolution biases).
* ``"mlp"``: the original network's three-layer head scaled to CIFAR, 512 → 512 → 512 → classes
  with ReLU and dropout 0.5: 15,249,354 parameters for 10 classes.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from bench.models import ModelError, register_model
from bench.models.resnet import he_init

#: Configuration D: output channels of each 3×3 convolution, ``0`` for a 2×2 max-pool.
VGG16_LAYERS = (64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0)
CLASSIFIERS = ("linear", "mlp")


class VGG(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, layers: tuple[int, ...], classifier: str) -> None:
        super().__init__()
        features: list[nn.Module] = []
        c_in = in_channels
        for c_out in layers:
            if c_out == 0:
                features.append(nn.MaxPool2d(2))
            else:
                features += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
        self.features = nn.Sequential(*features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        if classifier == "linear":
            self.classifier: nn.Module = nn.Linear(c_in, num_classes)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(c_in, 512), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(512, num_classes),
            )  # fmt: skip
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("vgg16_bn")
def vgg16_bn(
    input_shape: tuple[int, int, int], num_classes: int, classifier: Literal["linear", "mlp"] = "linear"
) -> nn.Module:
    """VGG-16-BN; ``classifier`` is ``"linear"`` (512 → classes) or ``"mlp"`` (512 → 512 → 512 → classes)."""
    if classifier not in CLASSIFIERS:
        raise ModelError(f"vgg16_bn: unknown classifier {classifier!r}; valid: {', '.join(CLASSIFIERS)}")
    channels, height, width = input_shape
    if min(height, width) < 32:
        raise ModelError(f"vgg16_bn needs inputs of at least 32×32 (five 2×2 max-pools), got {height}×{width}")
    return VGG(channels, num_classes, VGG16_LAYERS, classifier)
