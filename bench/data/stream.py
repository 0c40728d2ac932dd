"""Splits streamed from storage: samples read and transformed one by one in DataLoader workers.

For datasets that do not fit in memory (an image folder). A :class:`StreamSplit` holds only
which samples it has and their labels; a :class:`SampleReader` reads one sample (decodes an
image, resizes it) when a batch needs it, in ``workers`` processes of a torch ``DataLoader``
(0: in the training process). Batches are moved to the training device as they come, and the
batched augmentation of :mod:`bench.data.augment` is applied there, as for tensor datasets.

Determinism: an epoch's order and one seed per sample are drawn in the training process from the
trainer's generator, and each sample's random transform runs under its own seed (torch's RNG
forked around it). A seed therefore gives the same batches whatever the number of workers and
whichever worker reads which sample, and the training process's global RNG (the model's init,
the methods' noise) is never touched by the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from bench.data import DatasetError
from bench.data.loader import Augmentation, PassOfBatches

#: The largest per-sample seed base drawn per epoch (sample seeds are ``base + position``: < 2**63).
_SEED_BASE_LIMIT = 2**62
#: The seed of a sample whose transform draws nothing (evaluation): no RNG is forked for it.
_NO_SEED = -1


class SampleReader(Protocol):
    """Reads sample ``item`` of a source as a float tensor of the split's ``sample_shape``, with
    the source's random training transform (``train=True``) or its deterministic one. Runs in
    loader worker processes: it must be picklable and draw randomness only from torch's global
    RNG (which is seeded per sample around the call)."""

    def __call__(self, item: int, train: bool) -> Tensor: ...


@dataclass(frozen=True)
class StreamSplit:
    """The samples ``items`` of ``reader`` (in this order) with their labels ``targets``."""

    reader: SampleReader
    items: Tensor  # (n,) int64: which samples of the reader
    targets: Tensor  # (n,) int64
    sample_shape: tuple[int, ...]
    #: DataLoader worker processes reading samples (0: read in the training process).
    workers: int = 0
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if len(self.items) != len(self.targets):
            raise ValueError(f"{len(self.items)} samples but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def select(self, index: Tensor) -> StreamSplit:
        return dataclasses.replace(self, items=self.items[index], targets=self.targets[index])

    def head(self, count: int) -> StreamSplit:
        return dataclasses.replace(self, items=self.items[:count], targets=self.targets[:count])

    def relabel(self, targets: Tensor) -> StreamSplit:
        return dataclasses.replace(self, targets=targets)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> StreamSplit:
        return dataclasses.replace(self, device=torch.device(device), dtype=dtype or self.dtype)

    def batches(
        self,
        batch_size: int,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        augment: Augmentation | None = None,
        drop_last: bool = False,
    ) -> StreamLoader:
        return StreamLoader(self, batch_size, train=train, generator=generator, augment=augment, drop_last=drop_last)


class _Samples(TorchDataset):
    """What the DataLoader's workers index: a key ``(position, seed)`` → ``(sample, label, position)``."""

    def __init__(self, split: StreamSplit, train: bool) -> None:
        self.reader = split.reader
        self.items = split.items.tolist()  # plain ints: a worker indexes them per sample
        self.targets = split.targets
        self.train = train

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor, int]:
        position, seed = key
        if seed == _NO_SEED:
            sample = self.reader(self.items[position], self.train)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                sample = self.reader(self.items[position], self.train)
        return sample, self.targets[position], position


def _worker_init(worker_id: int) -> None:
    # A worker reads one sample at a time: torch's intra-op threads in every worker would
    # oversubscribe the CPUs the trial was given. Its RNG needs no seed: each sample has its own.
    torch.set_num_threads(1)


def _one_line(error: DatasetError) -> DatasetError:
    """A DatasetError raised in a worker comes back as "Caught DatasetError in DataLoader worker
    process 0." followed by the worker's traceback, whose last line holds the message."""
    lines = str(error).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught "):
        return DatasetError(lines[-1].partition(": ")[2] or lines[-1])
    return error


class StreamLoader(PassOfBatches):
    """Passes over a :class:`StreamSplit` through a torch DataLoader (:class:`bench.data.loader.Batches`).

    Each pass starts its own worker processes and ends them. Workers kept between passes
    (``persistent_workers``) would save a fork per pass, but a process forked for another split's
    loader meanwhile inherits them and tears their queues down as it exits (seen here: broken
    pipes, then a hang); an epoch of a dataset worth streaming dwarfs a fork."""

    def __init__(
        self,
        split: StreamSplit,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None,
        augment: Augmentation | None,
        drop_last: bool,
    ) -> None:
        if train and generator is None:
            raise ValueError("a shuffling loader needs a seeded generator")
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.generator = generator
        self.augment = augment if train else None
        self.drop_last = drop_last

    def keys(self) -> Iterator[list[tuple[int, int]]]:
        """One pass's batches of ``(position, seed)`` keys. Training draws from the generator (in
        the training process, when the pass starts): the permutation, as
        :class:`~bench.data.loader.DeviceLoader` draws it, then the base of the samples' seeds."""
        count = len(self.split)
        if self.train:
            order = torch.randperm(count, generator=self.generator).tolist()
            base = int(torch.randint(0, _SEED_BASE_LIMIT, (), generator=self.generator))
            keys = [(position, base + position) for position in order]
        else:
            keys = [(position, _NO_SEED) for position in range(count)]
        for batch in range(len(self)):
            yield keys[batch * self.batch_size : (batch + 1) * self.batch_size]

    def indexed(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        split = self.split
        loader = DataLoader(
            _Samples(split, self.train),
            batch_sampler=list(self.keys()),
            num_workers=split.workers,
            pin_memory=split.device.type == "cuda",
            worker_init_fn=_worker_init if split.workers else None,
            # The DataLoader draws its workers' base seed from this generator: without one it would
            # draw from the global RNG, which the model's init and the methods' noise use.
            generator=torch.Generator().manual_seed(0),
        )
        try:
            for inputs, targets, positions in loader:
                inputs = inputs.to(split.device, split.dtype, non_blocking=True)
                if self.augment is not None:
                    inputs = self.augment(inputs, self.generator)
                yield inputs, targets.to(split.device, non_blocking=True), positions
        except DatasetError as error:
            raise _one_line(error) from None
