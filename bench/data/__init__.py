"""Datasets, found by name: device-resident tensors, or samples streamed from files.

A dataset loader takes a :class:`~bench.config.DataConfig` and returns a :class:`Dataset`: a
train, a validation and a test :class:`Split` and the number of classes. A split is either a
:class:`TensorSplit` (normalized float tensors ``(N, C, H, W)`` and int64 labels, moved whole to
the training device) or a :class:`~bench.data.stream.StreamSplit` (samples read and transformed
one by one in loader worker processes: datasets that do not fit in memory, such as an image
folder). Both hand the trainer their batches the same way (:meth:`Split.batches`). The test split
is only read for the final numbers of a trial; the search never sees it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from bench.config import DataConfig
from bench.data.noise import flip_labels, stratified_subset
from bench.data.splits import stratified_split
from bench.naming import Registry

if TYPE_CHECKING:
    from bench.data.loader import Augmentation, Batches


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says where it looked and what to do."""


class Split(Protocol):
    """What a dataset's train, validation or test split offers: its labels, its size, the subsets
    the config asks for, and its batches on the training device.

    ``select``, ``head`` and ``relabel`` return new splits (a split is never changed in place: the
    process cache shares them between trials)."""

    targets: Tensor

    def __len__(self) -> int: ...

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape, e.g. ``(C, H, W)``: what the model is built for."""
        ...

    def select(self, index: Tensor) -> Split:
        """The samples at positions ``index`` (int64), in that order."""
        ...

    def head(self, count: int) -> Split:
        """The first ``count`` samples."""
        ...

    def relabel(self, targets: Tensor) -> Split:
        """The same samples with other labels (label noise)."""
        ...

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Split:
        """Where (and in which float dtype) its batches are delivered."""
        ...

    def batches(
        self,
        batch_size: int,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        augment: Augmentation | None = None,
        drop_last: bool = False,
    ) -> Batches:
        """Its batches on the device: in order and as they are (``train=False``: evaluation,
        flatness, BatchNorm statistics), or a training epoch (``train=True``), shuffled by
        ``generator``, with the dataset's training augmentation and then ``augment`` (the batched
        one of :mod:`bench.data.augment`, drawn from ``generator``)."""
        ...


@dataclass
class TensorSplit:
    """A split held whole as tensors (on the CPU, or on the training device after :meth:`to`)."""

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(size) for size in self.inputs.shape[1:])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TensorSplit:
        inputs = self.inputs.to(device, non_blocking=True)
        if dtype is not None:
            inputs = inputs.to(dtype)
        return TensorSplit(inputs, self.targets.to(device, non_blocking=True))

    def head(self, count: int) -> TensorSplit:
        return TensorSplit(self.inputs[:count], self.targets[:count])

    def select(self, index: Tensor) -> TensorSplit:
        return TensorSplit(self.inputs[index], self.targets[index])

    def relabel(self, targets: Tensor) -> TensorSplit:
        return TensorSplit(self.inputs, targets)

    def batches(
        self,
        batch_size: int,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        augment: Augmentation | None = None,
        drop_last: bool = False,
    ) -> Batches:
        from bench.data.loader import DeviceLoader

        augment = augment if train else None
        return DeviceLoader(self, batch_size, shuffle=train, generator=generator, augment=augment, drop_last=drop_last)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train.sample_shape
        return int(channels), int(height), int(width)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Dataset:
        """Every split delivered on ``device`` (tensors are moved now, streamed batches as they come),
        float inputs as ``dtype`` when given."""
        train, val, test = (split.to(device, dtype) for split in (self.train, self.val, self.test))
        return Dataset(self.name, train, val, test, self.num_classes)


DatasetLoader = Callable[[DataConfig], Dataset]
#: Plug-ins add datasets through this entry-point group (a loader ``(DataConfig) -> Dataset``).
ENTRY_POINT_GROUP = "sharpbench.datasets"
_DATASETS: Registry[DatasetLoader] = Registry("dataset", DatasetError, ENTRY_POINT_GROUP)

#: ``@register_dataset("name")`` on a loader ``(DataConfig) -> Dataset``.
register_dataset = _DATASETS.register
available_datasets = _DATASETS.names


def load_dataset(config: DataConfig) -> Dataset:
    """Load, split and normalize ``config.name`` (on the CPU; move it with :meth:`Dataset.to`;
    a streamed dataset's samples are only listed here, and read when batches are drawn).

    Then, on the training split only and in this order: the stratified ``train_fraction`` subset
    (seeded by ``split_seed``), the first ``max_train_samples``, and symmetric ``label_noise``
    (seeded by ``label_noise_seed``, default ``split_seed``) on what is left, so the noise rate
    is the rate of the samples trained on (:mod:`bench.data.noise`). Normalization statistics
    stay those of the full training split. Raises :class:`DatasetError` when nothing is left.
    """
    dataset = _DATASETS.get(config.name)(config)
    if isinstance(dataset.train, TensorSplit) and (config.image_size is not None or config.random_resized_crop):
        # Said rather than ignored: a run that asked for 64-pixel images must not train on 32.
        raise DatasetError(
            f"dataset {config.name!r} is held as tensors of a fixed size: dataset.image_size and "
            "random_resized_crop apply to streamed image datasets (image_folder); leave them out"
        )
    if config.train_fraction < 1.0:
        keep = stratified_subset(dataset.train.targets, config.train_fraction, config.split_seed)
        dataset.train = dataset.train.select(keep)
    if config.max_train_samples is not None:
        dataset.train = dataset.train.head(config.max_train_samples)
    if len(dataset.train) == 0:
        raise DatasetError(
            f"dataset {config.name!r}: train_fraction {config.train_fraction} leaves no training samples"
        )
    for split, where in ((dataset.val, "validation"), (dataset.test, "test")):
        if len(split) == 0:
            # An empty split scores every trial 0 (a val_loss of 0 would even look perfect): refused.
            raise DatasetError(
                f"dataset {config.name!r}: the {where} split is empty ({len(dataset.train)} training samples); "
                f"give more samples, or a larger dataset.val_fraction / test_fraction"
            )
    if config.label_noise > 0.0:
        seed = config.split_seed if config.label_noise_seed is None else config.label_noise_seed
        noisy = flip_labels(dataset.train.targets, dataset.num_classes, config.label_noise, seed)
        dataset.train = dataset.train.relabel(noisy.targets)
    return dataset


class _ProcessCache:
    """The last dataset loaded in this process, keyed by its whole config (as JSON).

    One entry: a worker process serves one benchmark, whose trials share one dataset config, and
    a bigger cache would keep a second copy of a large dataset (CIFAR-100: ~0.6 GB) alive for
    nothing. The lock makes two threads asking at once load it once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._dataset: Dataset | None = None
        self.loads = 0  # how many times a dataset was actually loaded: tests and benchmarks read it

    def get(self, config: DataConfig) -> Dataset:
        key = config.model_dump_json()
        with self._lock:
            if self._key != key or self._dataset is None:
                self._dataset, self._key = None, None  # free the old one before loading the new
                self._dataset, self._key = load_dataset(config), key
                self.loads += 1
            cached = self._dataset
        # Fresh Dataset and split objects around the shared tensors: a caller may rebind a
        # split's fields without touching the cache.
        return Dataset(
            cached.name,
            dataclasses.replace(cached.train),
            dataclasses.replace(cached.val),
            dataclasses.replace(cached.test),
            cached.num_classes,
        )

    def clear(self) -> None:
        with self._lock:
            self._key, self._dataset = None, None


_PROCESS_CACHE = _ProcessCache()


def load_dataset_cached(config: DataConfig) -> Dataset:
    """:func:`load_dataset`, loaded once per process for consecutive calls with an equal config.

    For Ray Tune workers that run trial after trial (reused actors): the split, the subset and
    the label noise are computed once per worker process instead of once per trial. The same
    config always gives the same dataset (every step of :func:`load_dataset` is seeded), so the
    cached one is what a fresh load would return. The tensors are shared between callers: treat
    them as read-only (training never writes them; tests check that a trial leaves them
    bit-identical). Raises what :func:`load_dataset` raises; a failed load caches nothing.
    """
    return _PROCESS_CACHE.get(config)


def clear_dataset_cache() -> None:
    """Forget the dataset :func:`load_dataset_cached` holds (e.g. after its files changed on disk)."""
    _PROCESS_CACHE.clear()


def dataset_loads() -> int:
    """How many times :func:`load_dataset_cached` has loaded a dataset in this process."""
    return _PROCESS_CACHE.loads


def split_dataset(name: str, inputs: Tensor, targets: Tensor, num_classes: int, config: DataConfig) -> Dataset:
    """``inputs`` (N, C, H, W) and their labels split into train/val/test, stratified by label
    and fixed by ``config.split_seed`` (``val_fraction``, ``test_fraction``), each channel
    standardized with the training split's statistics."""
    val_index, test_index, train_index = stratified_split(
        targets.numpy(), [config.val_fraction, config.test_fraction], seed=config.split_seed
    )
    train, val, test = normalize(inputs[train_index], inputs[val_index], inputs[test_index])
    return Dataset(
        name=name,
        train=TensorSplit(train, targets[train_index]),
        val=TensorSplit(val, targets[val_index]),
        test=TensorSplit(test, targets[test_index]),
        num_classes=num_classes,
    )


def normalize(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Standardize every split per channel with the *training* split's statistics."""
    dims = [0, *range(2, train.dim())]
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return [(split - mean) / std for split in (train, *others)]


# Importing the modules registers the built-in datasets.
from bench.data import digits, image_folder, tabular, vision  # noqa: E402,F401  isort: skip
