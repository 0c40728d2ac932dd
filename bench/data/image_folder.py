"""An image folder in torchvision's ``ImageFolder`` layout, streamed from disk.

``data_dir/train/<class>/<image>`` is the training set (every image file torchvision's
``ImageFolder`` takes: ``.png``, ``.jpg``, ...), the class folders' sorted names the classes.
``data_dir/val/`` and ``data_dir/test/``, when there, are the validation and test splits (with the
same class folders); a missing one is carved out of ``train/`` (stratified by class, seeded by
``split_seed``: ``val_fraction``, ``test_fraction``), as for the other datasets.

The images are never loaded whole: a :class:`~bench.data.stream.StreamSplit` names the files, and
loader workers (``dataset.loader_workers``) decode each one when a batch needs it, as RGB, resized
and centre-cropped to ``image_size`` (training: a random resized crop instead with
``random_resized_crop``), standardized with the ImageNet statistics that torchvision's pretrained
weights expect. The batched augmentation (``crop_padding``, ``horizontal_flip``, ``cutout``) is
then applied on the training device, as for every dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from bench.config import DataConfig
from bench.data import Dataset, DatasetError, register_dataset
from bench.data.splits import stratified_split
from bench.data.stream import StreamSplit
from bench.errors import first_line, printable

NAME = "image_folder"
#: ``image_size`` when the config leaves it out: what the CIFAR-style models here are built for.
DEFAULT_IMAGE_SIZE = 32
#: Per-channel mean and standard deviation of ImageNet: the inputs torchvision's (and timm's
#: ResNet) pretrained weights were trained on, and close to those of most photographs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: With random resized training crops, evaluation resizes to ``image_size / 0.875`` and crops the
#: centre, as torchvision's ImageNet recipe does (resize 256, crop 224): the object appears at the
#: scale the training crops showed it on average.
EVAL_CROP_FRACTION = 0.875

#: PIL image → normalized float tensor ``(3, image_size, image_size)``.
ImageTransform = Callable[[Image.Image], Tensor]


def image_transforms(config: DataConfig) -> tuple[ImageTransform, ImageTransform]:
    """The per-image ``(training, evaluation)`` transforms: PIL image → normalized float tensor."""
    # torchvision is imported here, not with bench.data: importing it imports torch._dynamo
    # (a second), which a process that never reads an image folder should not pay.
    from torchvision import transforms

    size = config.image_size or DEFAULT_IMAGE_SIZE
    to_tensor = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if config.random_resized_crop:
        train = transforms.Compose([transforms.RandomResizedCrop(size), *to_tensor])
        evaluation = transforms.Compose(
            [transforms.Resize(round(size / EVAL_CROP_FRACTION)), transforms.CenterCrop(size), *to_tensor]
        )
        return train, evaluation
    fitted = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), *to_tensor])
    return fitted, fitted


@dataclass(frozen=True)
class ImageFiles:
    """A :class:`~bench.data.stream.SampleReader` over image files: decodes ``paths[item]`` as RGB
    and transforms it."""

    #: File names as one numpy byte array rather than a list of str: forked loader workers share
    #: it page by page, where touching a million str objects' reference counts copies them all.
    paths: np.ndarray
    train_transform: ImageTransform
    eval_transform: ImageTransform

    def __call__(self, item: int, train: bool) -> Tensor:
        path = os.fsdecode(self.paths[item])
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
            raise DatasetError(f"{NAME}: cannot read image {printable(path)}: {first_line(error)}") from None
        return (self.train_transform if train else self.eval_transform)(rgb)


@dataclass(frozen=True)
class FolderFiles:
    """One ``<split>/<class>/<image>`` folder: its files (ImageFolder's order) and their labels."""

    paths: list[str]
    labels: np.ndarray  # int64


def _scan(folder: Path, classes: list[str] | None) -> tuple[list[str], FolderFiles]:
    """The class folders of ``folder`` and their images; ``classes``: the training folder's, which
    every other split must have exactly (ImageFolder numbers each folder's classes on its own, so
    a missing or extra folder would shift every label after it)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        found, class_to_index = find_classes(folder)
    except FileNotFoundError:
        raise DatasetError(
            f"{NAME}: {printable(folder)} holds no class folder; expected {printable(folder)}/<class>/<image>"
        ) from None
    except OSError as error:
        raise DatasetError(f"{NAME}: cannot read {printable(folder)}: {error.strerror or error}") from None
    if classes is not None and found != classes:
        differ = sorted(set(found) ^ set(classes))
        named = ", ".join(map(printable, differ[:5])) + (" ..." if len(differ) > 5 else "")
        raise DatasetError(
            f"{NAME}: the class folders of {printable(folder)} differ from train/'s in {named}: "
            "every split needs the same class folders"
        )
    samples = make_dataset(folder, class_to_index, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = np.bincount([label for _, label in samples], minlength=len(found))
    empty = [found[index] for index in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(
            f"{NAME}: class folder {printable(folder / empty[0])} holds no image "
            f"({', '.join(IMG_EXTENSIONS)})" + (f"; {len(empty) - 1} more empty" if len(empty) > 1 else "")
        )
    return found, FolderFiles([path for path, _ in samples], np.asarray([label for _, label in samples], np.int64))


def _root(config: DataConfig) -> Path:
    if config.data_dir is None:
        raise DatasetError(
            f"{NAME} needs dataset.data_dir: the folder holding train/<class>/<image> (and optionally val/, test/)"
        )
    root = Path(config.data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{NAME}: dataset.data_dir {printable(root)} is not a folder")
    if not (root / "train").is_dir():
        raise DatasetError(
            f"{NAME}: no train folder in {printable(root)}: expected {printable(root)}/train/<class>/<image> "
            "(torchvision's ImageFolder layout)"
        )
    return root


@register_dataset(NAME)
def load_image_folder(config: DataConfig) -> Dataset:
    """The image folder at ``config.data_dir``: its file lists only (no image is decoded here)."""
    root = _root(config)
    classes, train = _scan(root / "train", None)
    given = {name: _scan(root / name, classes)[1] for name in ("val", "test") if (root / name).is_dir()}
    carved = [name for name in ("val", "test") if name not in given]
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    # What is carved out of train/: val and test (as split_dataset), or the one missing.
    parts = stratified_split(train.labels, [fractions[n] for n in carved], seed=config.split_seed) if carved else []
    train_index = parts[-1] if parts else np.arange(len(train.labels))
    train_transform, eval_transform = image_transforms(config)
    size = config.image_size or DEFAULT_IMAGE_SIZE

    readers: dict[int, ImageFiles] = {}  # one per folder: carved splits share train/'s

    def split(files: FolderFiles, index: np.ndarray) -> StreamSplit:
        if id(files) not in readers:
            paths = np.array([os.fsencode(path) for path in files.paths])
            readers[id(files)] = ImageFiles(paths, train_transform, eval_transform)
        return StreamSplit(
            readers[id(files)],
            items=torch.from_numpy(index.astype(np.int64)),
            targets=torch.from_numpy(files.labels[index]),
            sample_shape=(3, size, size),
            workers=config.loader_workers,
        )

    def named(name: str) -> StreamSplit:
        if name in given:
            return split(given[name], np.arange(len(given[name].labels)))
        return split(train, parts[carved.index(name)])

    return Dataset(NAME, split(train, train_index), named("val"), named("test"), num_classes=len(classes))
