"""CIFAR-10, CIFAR-100 and SVHN, read with torchvision's own dataset classes; and
``synthetic_cifar10``, random pixels of CIFAR-10's shape, a stand-in where CIFAR-10 cannot be read.

The files are the official ones (``cifar-10-batches-py/``, ``cifar-100-python/``,
``train_32x32.mat`` / ``test_32x32.mat``) in ``config.data_dir`` (default
``~/.cache/sharpbench/data``); torchvision checks their md5 sums and, with
``dataset.download: true``, fetches them. The validation split is carved out of the official
training set (stratified, seeded by ``config.split_seed``); the official test set is the test
split. Images become float ``(N, 3, 32, 32)`` tensors in ``[0, 1]``, standardized per channel with
the training split's statistics.

References: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009 (CIFAR);
Netzer et al., "Reading Digits in Natural Images with Unsupervised Feature Learning", 2011 (SVHN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.config import DataConfig
from bench.data import Dataset, DatasetError, TensorSplit, normalize, register_dataset
from bench.data.splits import stratified_split
from bench.errors import first_line

#: Where datasets live when ``dataset.data_dir`` is not set.
DEFAULT_DATA_DIR = Path("~/.cache/sharpbench/data")


@dataclass(frozen=True)
class _Source:
    """How to read one dataset with torchvision and what to tell a user who lacks its files."""

    name: str
    num_classes: int
    #: ``(root, train, download) -> (images uint8 (N, C, H, W), labels int64 (N,))``.
    read: Callable[[str, bool, bool], tuple[np.ndarray, np.ndarray]]
    #: The files (or folder) to copy into ``data_dir`` by hand.
    files: str


def data_root(config: DataConfig) -> Path:
    """The folder ``config`` reads datasets from, with ``~`` expanded."""
    return Path(config.data_dir).expanduser() if config.data_dir is not None else DEFAULT_DATA_DIR.expanduser()


def _read_cifar(class_name: str) -> Callable[[str, bool, bool], tuple[np.ndarray, np.ndarray]]:
    def read(root: str, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
        from torchvision import datasets

        dataset = getattr(datasets, class_name)(root, train=train, download=download)
        images = np.ascontiguousarray(np.asarray(dataset.data, dtype=np.uint8).transpose(0, 3, 1, 2))  # NHWC → NCHW
        return images, np.asarray(dataset.targets, dtype=np.int64)

    return read


def _read_svhn(root: str, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision import datasets

    # torchvision already maps SVHN's label 10 to digit 0 and returns (N, C, H, W).
    dataset = datasets.SVHN(root, split="train" if train else "test", download=download)
    return np.ascontiguousarray(dataset.data, dtype=np.uint8), np.asarray(dataset.labels, dtype=np.int64)


_CIFAR10 = _Source("cifar10", 10, _read_cifar("CIFAR10"), "cifar-10-batches-py")
_CIFAR100 = _Source("cifar100", 100, _read_cifar("CIFAR100"), "cifar-100-python")
_SVHN = _Source("svhn", 10, _read_svhn, "train_32x32.mat and test_32x32.mat")

#: CIFAR-10's official split sizes, which the synthetic stand-in copies.
CIFAR10_TRAIN_IMAGES, CIFAR10_TEST_IMAGES = 50_000, 10_000


def _read_synthetic_cifar10(root: str, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    # Uniform uint8 pixels and balanced labels, seeded (one seed per split): the same arrays on
    # every machine, read through the very path real CIFAR-10 takes, so an epoch costs what a
    # real one costs (sizes, split, normalization, memory). ``root`` and ``download`` are unused.
    count = CIFAR10_TRAIN_IMAGES if train else CIFAR10_TEST_IMAGES
    generator = np.random.default_rng(0 if train else 1)
    images = generator.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
    labels = generator.permutation(np.arange(count, dtype=np.int64) % 10)
    return images, labels


_SYNTHETIC_CIFAR10 = _Source("synthetic_cifar10", 10, _read_synthetic_cifar10, "nothing (generated)")


def _first_line(error: BaseException) -> str:
    # A URLError's message is its ``reason``.
    reason = getattr(error, "reason", None)
    return first_line(reason if isinstance(reason, (str, BaseException)) and str(reason).strip() else error)


def _read_split(source: _Source, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read one official split, turning torchvision's errors into a one-line :class:`DatasetError`."""
    try:
        return source.read(str(root), train, download)
    except RuntimeError as error:
        # torchvision raises RuntimeError("Dataset not found or corrupted. ...") when a file is
        # missing or its md5 does not match, and "File not found or corrupted." after a download.
        if "not found or corrupted" not in str(error):
            raise
        raise DatasetError(
            f"{source.name}: files missing or corrupted (md5 mismatch) in {root}; "
            f"set dataset.download: true on a machine with internet, or copy {source.files} into {root}"
        ) from None
    except OSError as error:  # urllib's URLError is an OSError: no network, DNS, HTTP errors
        raise DatasetError(
            f"{source.name}: could not download into {root} ({_first_line(error)}); "
            f"copy {source.files} into {root} from a machine with internet"
        ) from None


def _as_unit_float(images: np.ndarray) -> Tensor:
    """uint8 ``(N, C, H, W)`` → contiguous float32 in ``[0, 1]``."""
    return torch.from_numpy(images).to(torch.float32).div_(255.0).contiguous()


def _load(source: _Source, config: DataConfig) -> Dataset:
    root = data_root(config)
    train_images, train_labels = _read_split(source, root, train=True, download=config.download)
    test_images, test_labels = _read_split(source, root, train=False, download=config.download)
    val_index, train_index = stratified_split(train_labels, [config.val_fraction], seed=config.split_seed)

    # Index the uint8 arrays first: a float copy of the whole training set would be 600 MB for CIFAR.
    labels = torch.from_numpy(train_labels)
    train, val, test = normalize(
        _as_unit_float(train_images[train_index]), _as_unit_float(train_images[val_index]), _as_unit_float(test_images)
    )
    return Dataset(
        name=source.name,
        train=TensorSplit(train, labels[train_index]),
        val=TensorSplit(val, labels[val_index]),
        test=TensorSplit(test, torch.from_numpy(test_labels)),
        num_classes=source.num_classes,
    )


@register_dataset("cifar10")
def load_cifar10(config: DataConfig) -> Dataset:
    """CIFAR-10: 50,000 training (minus validation) and 10,000 test 32×32 colour images, 10 classes."""
    return _load(_CIFAR10, config)


@register_dataset("cifar100")
def load_cifar100(config: DataConfig) -> Dataset:
    """CIFAR-100 with its 100 fine labels: 50,000 training (minus validation) and 10,000 test images."""
    return _load(_CIFAR100, config)


@register_dataset("svhn")
def load_svhn(config: DataConfig) -> Dataset:
    """SVHN cropped digits (``train_32x32.mat``, without ``extra``): 73,257 training and 26,032 test images."""
    return _load(_SVHN, config)


@register_dataset("synthetic_cifar10")
def load_synthetic_cifar10(config: DataConfig) -> Dataset:
    """Random pixels of CIFAR-10's shape and sizes (50,000 training minus validation, 10,000 test,
    10 balanced classes), needing no files: a *throughput* stand-in for machines that cannot
    download CIFAR-10 (a step costs the same whatever the pixels). Its accuracies mean nothing."""
    return _load(_SYNTHETIC_CIFAR10, config)
