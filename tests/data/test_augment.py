"""Batched augmentation: each output is checked against slow, per-image reasoning.

Crop, flip and Cutout only move or zero pixels (no arithmetic), so outputs are compared bit for
bit: that is exact on every CPU.
"""

from __future__ import annotations

import pytest
import torch

from bench.config import DataConfig
from bench.data.augment import BatchAugmentation, build_augmentation


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def slow_pad(image: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero padding of one (C, H, W) image, written out by hand (independent of F.pad)."""
    channels, height, width = image.shape
    padded = torch.zeros(channels, height + 2 * padding, width + 2 * padding, dtype=image.dtype)
    padded[:, padding : padding + height, padding : padding + width] = image
    return padded


def matching_offsets(output: torch.Tensor, image: torch.Tensor, padding: int, mirrored: bool) -> list[tuple]:
    """Every (dy, dx[, flipped]) whose window of the padded image (or its mirror) equals ``output``."""
    _, height, width = image.shape
    padded = slow_pad(image, padding)
    found = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[:, dy : dy + height, dx : dx + width]
            if torch.equal(output, window):
                found.append((dy, dx, False))
            if mirrored and torch.equal(output, window.flip(-1)):
                found.append((dy, dx, True))
    return found


def test_none_when_everything_is_off():
    assert build_augmentation(DataConfig()) is None
    assert build_augmentation(DataConfig(crop_padding=0, horizontal_flip=False, cutout=0)) is None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"crop_padding": 4}, BatchAugmentation(crop_padding=4)),
        ({"horizontal_flip": True}, BatchAugmentation(horizontal_flip=True)),
        ({"cutout": 8}, BatchAugmentation(cutout=8)),
        ({"crop_padding": 4, "horizontal_flip": True, "cutout": 16}, BatchAugmentation(4, True, 16)),
    ],
)
def test_build_from_config(options, expected):
    assert build_augmentation(DataConfig(**options)) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shape_dtype_device_preserved(dtype, channels_last):
    images = torch.randn(6, 3, 32, 32).to(dtype)
    if channels_last:
        images = images.to(memory_format=torch.channels_last)
    out = BatchAugmentation(crop_padding=4, horizontal_flip=True, cutout=8)(images, generator())
    assert out.shape == images.shape
    assert out.dtype == dtype
    assert out.device == images.device
    assert not torch.equal(out, images)


@pytest.mark.parametrize(("padding", "size"), [(2, 8), (4, 32)])
def test_random_crop_is_a_shifted_window_of_the_zero_padded_image(padding, size):
    count = 400 if size == 8 else 12
    images = torch.rand(count, 3, size, size) + 0.5  # no zeros: padding is recognizable
    out = BatchAugmentation(crop_padding=padding)(images, generator(1))
    offsets = []
    for output, image in zip(out, images, strict=True):
        found = matching_offsets(output, image, padding, mirrored=False)
        assert len(found) == 1, found
        offsets.append(found[0][:2])
    if count == 400:  # every one of the (2p + 1)² offsets is drawn
        assert set(offsets) == {(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)}


def test_flip_mirrors_about_half_the_images():
    images = torch.rand(2000, 1, 4, 4)
    out = BatchAugmentation(horizontal_flip=True)(images, generator(2))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert bool((flipped ^ kept).all())  # each image is either mirrored or untouched, never both
    assert 0.45 < flipped.float().mean().item() < 0.55  # ± 4.5 standard deviations


def test_crop_and_flip_together():
    images = torch.rand(64, 3, 8, 8) + 0.5
    out = BatchAugmentation(crop_padding=2, horizontal_flip=True)(images, generator(3))
    found = [matching_offsets(o, i, 2, mirrored=True) for o, i in zip(out, images, strict=True)]
    assert all(len(f) == 1 for f in found)
    assert {f[0][2] for f in found} == {False, True}


@pytest.mark.parametrize("side", [4, 5, 16])
def test_cutout_zeroes_one_clipped_side_by_side_square(side):
    height, width = 12, 10
    images = torch.rand(300, 3, height, width) + 0.5  # no zeros before Cutout
    out = BatchAugmentation(cutout=side)(images, generator(4))
    zero = out == 0
    assert bool((zero == zero[:, :1]).all())  # the same square in every channel
    assert torch.equal(out[~zero], images[~zero])  # nothing else changes
    interior = 0
    for mask in zero[:, 0]:
        rows = mask.any(1).nonzero().flatten()
        cols = mask.any(0).nonzero().flatten()
        assert len(rows) > 0  # the centre pixel is always inside the image
        # A full rectangle of contiguous rows × contiguous columns ...
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        assert int(mask.sum()) == len(rows) * len(cols)
        # ... whose sides are exactly ``side`` unless the square was clipped at a border.
        for index, limit in ((rows, height), (cols, width)):
            extent, first, last = len(index), index[0], index[-1]
            assert extent <= side
            if first > 0 and last < limit - 1:
                assert extent == side
        interior += int(mask.sum()) == side * side
    if side < min(height, width) - 2:
        assert interior > 0  # some squares lie fully inside, others are clipped
        assert interior < len(images)


def test_same_seed_same_result_and_the_generator_advances():
    images = torch.randn(32, 3, 16, 16)
    augment = BatchAugmentation(crop_padding=4, horizontal_flip=True, cutout=6)
    first = augment(images, generator(7))
    assert torch.equal(first, augment(images, generator(7)))
    assert not torch.equal(first, augment(images, generator(8)))
    shared = generator(7)
    assert torch.equal(augment(images, shared), first)
    assert not torch.equal(augment(images, shared), first)  # the next batch gets new draws


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_identical_on_cpu_and_cuda():
    images = torch.randn(64, 3, 32, 32)
    augment = BatchAugmentation(crop_padding=4, horizontal_flip=True, cutout=8)
    on_cpu = augment(images, generator(9))
    on_cuda = augment(images.cuda(), generator(9))
    assert on_cuda.device.type == "cuda"
    assert torch.equal(on_cuda.cpu(), on_cpu)
