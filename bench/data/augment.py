"""Batched image augmentation on the images' device: random crop, horizontal flip, Cutout.

Every random number is drawn from the CPU ``torch.Generator`` the loader passes, then moved to
the images' device, so a seed gives the same augmented batch on CPU and CUDA. The work itself is
a handful of tensor operations over the whole batch (pad, two gathers, a ``where``, a mask);
there is no per-sample Python loop.

The images are already standardized when they are augmented, so the zero used for padding and
for Cutout is the training set's mean colour (as in DeVries & Taylor's code, which applies Cutout
after normalization).

References: random 32×32 crops of 4-pixel zero-padded images and horizontal flips as in
He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2; Cutout from
DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout",
arXiv:1708.04552, 2017.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.config import DataConfig
from bench.data.loader import Augmentation


@dataclass(frozen=True)
class BatchAugmentation:
    """Crop (``crop_padding`` > 0), then flip (``horizontal_flip``), then Cutout (``cutout`` > 0).

    Called as ``augment(images, generator)`` on a batch ``(N, C, H, W)``; returns a new batch of
    the same shape, dtype and device.

    >>> augment = BatchAugmentation(crop_padding=4, horizontal_flip=True, cutout=8)
    >>> augment(torch.randn(5, 3, 32, 32), torch.Generator().manual_seed(0)).shape
    torch.Size([5, 3, 32, 32])
    """

    crop_padding: int = 0
    horizontal_flip: bool = False
    cutout: int = 0

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if images.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(images.shape)}")
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.horizontal_flip:
            images = random_horizontal_flip(images, generator)
        if self.cutout:
            images = cutout(images, self.cutout, generator)
        return images


def _to_device(values: Tensor, device: torch.device) -> Tensor:
    """Move CPU-drawn random numbers to the images' device without a host-device sync.

    A plain ``.to("cuda")`` from pageable memory waits for the GPU to drain every batch; a pinned
    buffer copied with ``non_blocking`` lets the host run ahead (PyTorch's pinned-memory allocator
    keeps the buffer alive until the copy is done).
    """
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad each side by ``padding`` and cut an ``H×W`` window at a random offset per image.

    The offsets ``(dy, dx)`` are uniform on ``{0, ..., 2·padding}²``, drawn on the CPU.
    """
    count, channels, height, width = images.shape
    offsets = _to_device(torch.randint(0, 2 * padding + 1, (count, 2), generator=generator), images.device)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (N, W)
    row_index = rows[:, None, :, None].expand(count, channels, height, width + 2 * padding)
    band = padded.gather(2, row_index)  # (N, C, H, W + 2p): the chosen rows
    col_index = cols[:, None, None, :].expand(count, channels, height, width)
    return band.gather(3, col_index)


def random_horizontal_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = _to_device(torch.rand(images.shape[0], generator=generator) < 0.5, images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Zero a ``size×size`` square per image, centred at a uniformly drawn pixel.

    As in DeVries & Taylor (2017) the centre may lie anywhere in the image, so the square is
    clipped at the borders and can be partly outside: rows ``[cy - size//2, cy - size//2 + size)``
    and the same for columns, intersected with the image.
    """
    count, _, height, width = images.shape
    centre_y = torch.randint(0, height, (count,), generator=generator)
    centre_x = torch.randint(0, width, (count,), generator=generator)
    top = _to_device(centre_y - size // 2, images.device)
    left = _to_device(centre_x - size // 2, images.device)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (N, H)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (N, W)
    square = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]  # (N, 1, H, W)
    return images.masked_fill(square, 0)


def build_augmentation(config: DataConfig) -> Augmentation | None:
    """The training augmentation ``config`` asks for, or ``None`` when it asks for none."""
    if not (config.crop_padding or config.horizontal_flip or config.cutout):
        return None
    return BatchAugmentation(
        crop_padding=config.crop_padding, horizontal_flip=config.horizontal_flip, cutout=config.cutout
    )
