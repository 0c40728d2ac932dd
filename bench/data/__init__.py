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
from bench.data.noise import flip_labels, stratified_subset
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
    """Load, split and normalize ``config.name`` (on the CPU; move it with :meth:`Dataset.to`).

    Then, on the training split only and in this order: the stratified ``train_fraction`` subset
    (seeded by ``split_seed``), the first ``max_train_samples``, and symmetric ``label_noise``
    (seeded by ``label_noise_seed``, default ``split_seed``) on what is left, so the noise rate
    is the rate of the samples trained on (:mod:`bench.data.noise`). Normalization statistics
    stay those of the full training split. Raises :class:`DatasetError` when nothing is left.
    """
    dataset = _DATASETS.get(config.name)(config)
    if config.train_fraction < 1.0:
        keep = stratified_subset(dataset.train.targets, config.train_fraction, config.split_seed)
        dataset.train = TensorSplit(dataset.train.inputs[keep], dataset.train.targets[keep])
    if config.max_train_samples is not None:
        dataset.train = dataset.train.head(config.max_train_samples)
    if len(dataset.train) == 0:
        raise DatasetError(f"dataset {config.name!r}: train_fraction {config.train_fraction} leaves no training samples")
    if config.label_noise > 0.0:
        seed = config.split_seed if config.label_noise_seed is None else config.label_noise_seed
        noisy = flip_labels(dataset.train.targets, dataset.num_classes, config.label_noise, seed)
        dataset.train = TensorSplit(dataset.train.inputs, noisy.targets)
    return dataset


def normalize(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Standardize every split per channel with the *training* split's statistics."""
    dims = [0, *range(2, train.dim())]
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return [(split - mean) / std for split in (train, *others)]


# Importing the modules registers the built-in datasets.
from bench.data import digits, vision  # noqa: E402,F401  isort: skip
