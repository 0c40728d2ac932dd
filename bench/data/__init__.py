"""Datasets as device-resident tensors, found by name.

A dataset loader takes a :class:`~bench.config.DataConfig` and returns a :class:`Dataset`:
normalized float tensors ``(N, C, H, W)`` and int64 labels for train, validation and test. The
test split is only read for the final numbers of a trial; the search never sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.config import DataConfig
from bench.naming import Registry


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says where it looked and what to do."""


@dataclass
class TensorSplit:
    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))

    def head(self, count: int) -> TensorSplit:
        return TensorSplit(self.inputs[:count], self.targets[:count])


@dataclass
class Dataset:
    name: str
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train.inputs.shape[1:]
        return int(channels), int(height), int(width)

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.name, self.train.to(device), self.val.to(device), self.test.to(device), self.num_classes)


DatasetLoader = Callable[[DataConfig], Dataset]
_DATASETS: Registry[DatasetLoader] = Registry("dataset", DatasetError)

#: ``@register_dataset("name")`` on a loader ``(DataConfig) -> Dataset``.
register_dataset = _DATASETS.register
available_datasets = _DATASETS.names


def load_dataset(config: DataConfig) -> Dataset:
    """Load, split and normalize ``config.name`` (on the CPU; move it with :meth:`Dataset.to`)."""
    dataset = _DATASETS.get(config.name)(config)
    if config.max_train_samples is not None:
        dataset.train = dataset.train.head(config.max_train_samples)
    return dataset


def normalize(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Standardize every split per channel with the *training* split's statistics."""
    dims = [0, *range(2, train.dim())]
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return [(split - mean) / std for split in (train, *others)]


# Importing the modules registers the built-in datasets.
from bench.data import digits, vision  # noqa: E402,F401  isort: skip
