"""The CIFAR model zoo: parameter counts against the papers, output shapes, channels_last and bf16.

Parameter counts are taken on the ``meta`` device (no memory, no initialization cost); real
forward passes use tiny batches and, where a model is heavy, a narrower instance of the same
class.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from bench.models import ModelError, available_models, create_model, parameter_count
from bench.models.preact_resnet import PreActResNet
from bench.models.pyramidnet import PyramidNet
from bench.models.resnet import CifarResNet
from bench.models.vgg import VGG, VGG16_LAYERS
from bench.models.wide_resnet import WideResNet

CIFAR_MODELS = ["resnet18", "preact_resnet18", "wrn28_10", "wrn16_8", "vgg16_bn", "pyramidnet110", "pyramidnet272"]


def meta_model(name: str, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), **options):
    with torch.device("meta"):
        return create_model(name, input_shape, num_classes, **options)


# (model, options, published count, relative tolerance, source of the figure)
PUBLISHED = [
    ("resnet18", {}, 11.17e6, 0.01, "CIFAR ResNet-18 as re-implemented for SAM-style CIFAR studies: 11.17M"),
    ("preact_resnet18", {}, 11.17e6, 0.01, "PreAct ResNet-18 (He et al. 2016b layout on CIFAR): 11.17M"),
    ("wrn28_10", {}, 36.5e6, 0.01, "Zagoruyko & Komodakis 2016, Table 5: WRN-28-10 36.5M"),
    ("wrn16_8", {}, 11.0e6, 0.01, "Zagoruyko & Komodakis 2016, Table 5: WRN-16-8 11.0M"),
    ("vgg16_bn", {}, 14.7e6, 0.01, "VGG-16-BN with a single linear classifier on CIFAR: 14.7M"),
    ("pyramidnet110", {}, 28.3e6, 0.01, "Han et al. 2017, Table 4: PyramidNet-110 (alpha=270, basic units) 28.3M"),
    ("pyramidnet272", {}, 26.0e6, 0.01, "Han et al. 2017, Table 4: PyramidNet-272 (alpha=200, bottleneck) 26.0M"),
]


@pytest.mark.parametrize(("name", "options", "published", "tolerance", "source"), PUBLISHED, ids=lambda v: str(v)[:20])
def test_parameter_count_matches_the_published_figure(name, options, published, tolerance, source):
    count = parameter_count(meta_model(name, **options))
    assert abs(count - published) <= tolerance * published, f"{name}: {count:,} vs {source}"


# Exact counts (10 classes) pinned so that an accidental change of architecture shows up. The
# PyramidNet-110 figures agree to the parameter with osmr/imgclsmob's independent implementation
# (1,772,706 / 3,904,446 / 28,485,477); the paper prints alpha=48 as "1.7M" and alpha=84 as "3.8M".
EXACT = [
    ("resnet18", {}, 11_173_962),
    ("preact_resnet18", {}, 11_172_170),
    ("wrn28_10", {}, 36_479_194),
    ("wrn16_8", {}, 10_961_370),
    ("vgg16_bn", {}, 14_724_042),
    ("vgg16_bn", {"classifier": "mlp"}, 15_249_354),
    ("pyramidnet110", {}, 28_485_477),
    ("pyramidnet110", {"alpha": 48}, 1_772_706),
    ("pyramidnet110", {"alpha": 84}, 3_904_446),
    ("pyramidnet272", {}, 26_210_842),
]


@pytest.mark.parametrize(("name", "options", "expected"), EXACT, ids=lambda v: str(v))
def test_exact_parameter_counts(name, options, expected):
    assert parameter_count(meta_model(name, **options)) == expected


def test_pyramidnet_alpha48_is_the_small_published_network():
    # Han et al. 2017, Table 4: PyramidNet-110 (alpha=48) "1.7M", output width 16 + 48 = 64.
    model = meta_model("pyramidnet110", alpha=48)
    assert 1.7e6 <= parameter_count(model) < 1.8e6
    assert model.fc.in_features == 64
    assert meta_model("pyramidnet110").fc.in_features == 286  # 16 + 270
    assert meta_model("pyramidnet272").fc.in_features == 864  # 4 × (16 + 200)


def test_vgg_mlp_head_adds_exactly_two_hidden_layers():
    linear, mlp = meta_model("vgg16_bn"), meta_model("vgg16_bn", classifier="mlp")
    assert parameter_count(mlp) - parameter_count(linear) == 2 * (512 * 512 + 512)


@pytest.mark.parametrize("name", CIFAR_MODELS)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_every_model_is_registered_and_maps_images_to_logits(name, num_classes):
    assert name in available_models()
    model = meta_model(name, num_classes)
    # A forward pass on the meta device checks every shape without computing anything.
    out = model(torch.empty(2, 3, 32, 32, device="meta"))
    assert out.shape == (2, num_classes)
    head_classes = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert head_classes == num_classes


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "wrn16_8", "pyramidnet110"])
def test_input_channels_follow_input_shape(name):
    model = meta_model(name, input_shape=(1, 28, 28))
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    assert model(torch.empty(2, 1, 28, 28, device="meta")).shape == (2, 10)


# PyramidNets are left to the narrow instances below: every unit has its own width, so on a CPU
# oneDNN builds a new convolution kernel per layer and a first forward takes seconds.
@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "vgg16_bn", "wrn16_8"])
def test_real_forward_on_two_images(name):
    torch.manual_seed(0)
    model = create_model(name, (3, 32, 32), 10).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


# Narrow instances of every architecture class: the same code paths, a fraction of the cost.
SMALL_BUILDERS = {
    "resnet": lambda: CifarResNet(3, 10, blocks=(1, 1, 1, 1), width=8),
    "preact_resnet": lambda: PreActResNet(3, 10, blocks=(1, 1, 1, 1), width=8),
    "wide_resnet": lambda: WideResNet(3, 10, depth=10, widen=1, dropout=0.0),
    "vgg": lambda: VGG(3, 10, tuple(c // 8 for c in VGG16_LAYERS), classifier="mlp"),
    "pyramidnet": lambda: PyramidNet(3, 10, depth=20, alpha=12, bottleneck=False),
    "pyramidnet_bottleneck": lambda: PyramidNet(3, 10, depth=29, alpha=12, bottleneck=True),
}


@pytest.mark.parametrize("kind", sorted(SMALL_BUILDERS))
def test_channels_last_and_bf16_autocast(kind):
    torch.manual_seed(0)
    model = SMALL_BUILDERS[kind]().eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(images)
        model_cl = model.to(memory_format=torch.channels_last)
        channels_last = model_cl(images.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model_cl(images.to(memory_format=torch.channels_last))
    # float32, the same convolutions summed in another order: ~sqrt(K)·depth·eps32 relative
    # (measured ≤ 2e-7 relative to the largest logit on AMD EPYC), far inside 1e-4; a layout bug
    # changes the logits by O(1).
    torch.testing.assert_close(channels_last, reference, rtol=1e-4, atol=1e-4)
    assert bf16.dtype == torch.bfloat16
    assert torch.isfinite(bf16).all()
    assert (bf16.float() - reference).abs().max() <= 0.1 * reference.abs().max() + 0.05

    # Training step under autocast: gradients reach every parameter and are finite.
    model_cl.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model_cl(images.to(memory_format=torch.channels_last)).float().logsumexp(1).mean()
    loss.backward()
    for name, parameter in model_cl.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_wide_resnet_dropout_option():
    model = meta_model("wrn16_8", dropout=0.3)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert rates == [0.3] * 6  # one per block, (16 - 4) / 6 = 2 blocks in each of 3 groups
    assert not any(isinstance(m, nn.Dropout) for m in meta_model("wrn16_8").modules())
    assert parameter_count(model) == 10_961_370


def test_width_option_scales_resnets():
    narrow = parameter_count(meta_model("resnet18", width=32))
    assert narrow < parameter_count(meta_model("resnet18")) / 3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: meta_model("vgg16_bn", classifier="deep"), "unknown classifier 'deep'"),
        (lambda: meta_model("vgg16_bn", input_shape=(1, 8, 8)), "at least 32×32"),
        (lambda: WideResNet(3, 10, depth=27, widen=2), "6n + 4"),
        (lambda: PyramidNet(3, 10, depth=111, alpha=48, bottleneck=False), "6n + 2"),
        (lambda: meta_model("wrn28_10", width=3), "has no option 'width'"),
    ],
)
def test_bad_options_raise_one_line_model_errors(build, message):
    with pytest.raises(ModelError, match=re.escape(message)) as error:
        build()
    assert "\n" not in str(error.value)
