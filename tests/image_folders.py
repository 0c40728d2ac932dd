"""Tiny image folders (torchvision's ImageFolder layout) and checkpoints, written by the tests
themselves: no download, a few kilobytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: A colour per class: a model separates them in one epoch, so a trial has something to learn.
COLOURS = ((210, 40, 40), (40, 210, 40), (40, 40, 210), (210, 210, 40))


def write_image_folder(
    root: Path,
    *,
    classes: int = 3,
    per_class: int = 12,
    size: int = 16,
    splits: tuple[str, ...] = ("train",),
    seed: int = 0,
) -> Path:
    """``root/<split>/class<k>/<i>.png`` for every split: ``per_class`` noisy RGB images of
    ``size``×``size`` pixels per class (alternately ``.png`` and ``.jpg``, a few of them
    rectangular or greyscale, as real folders are); returns ``root``."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(per_class):
                height = size + (4 if index % 5 == 4 else 0)  # not every photo is square
                noise = rng.integers(-50, 50, (height, size, 3))
                pixels = np.clip(np.asarray(COLOURS[label]) + noise, 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if index % 7 == 6:
                    image = image.convert("L")  # a greyscale file among colour ones
                suffix = "jpg" if index % 2 else "png"
                image.save(folder / f"{index:03d}.{suffix}")
    return root


def save_checkpoint(path: Path, model: torch.nn.Module, *, nest: str | None = None, prefix: str = "") -> Path:
    """``model``'s state dict saved with ``torch.save`` (under the key ``nest`` of a training
    checkpoint, and with ``prefix`` before every key, when given); returns ``path``."""
    state = {prefix + key: value.clone() for key, value in model.state_dict().items()}
    torch.save({nest: state, "epoch": 7} if nest else state, path)
    return path
