"""Batches: what the trainer iterates, and its implementation for device-resident tensors.

In the airbench style the whole split lives on the training device; an epoch is one seeded
permutation and a batched augmentation per batch, with no worker processes and no per-sample
Python. Splits streamed from files implement the same :class:`Batches` in :mod:`bench.data.stream`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:  # bench.data imports this module's loader lazily: no import cycle at run time
    from bench.data import TensorSplit

#: ``augment(images, generator) -> images``: batched, on the images' device.
Augmentation = Callable[[Tensor, torch.Generator], Tensor]


class Batches(Protocol):
    """One pass over a split: ``(inputs, targets)`` batches on the training device.

    ``len()`` is the number of batches of a pass; :meth:`indexed` yields the same batches with the
    positions of their samples in the split (on the CPU)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def indexed(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]: ...


def drops_last(samples: int, batch_size: int) -> bool:
    """The training loader's rule: a short last batch is dropped when there is more than one batch
    (a batch of a few samples would give a noisy step; a split smaller than a batch still trains)."""
    return samples > batch_size


def epoch_steps(samples: int, batch_size: int) -> int:
    """Optimizer steps per training epoch under :func:`drops_last`."""
    full, rest = divmod(samples, batch_size)
    return full if drops_last(samples, batch_size) or rest == 0 else full + 1


class PassOfBatches:
    """What every loader shares (:class:`Batches`): the number of batches of a pass of
    ``split`` in ``batch_size`` batches, and the plain batches of its :meth:`indexed` pass."""

    split: Sized
    batch_size: int
    drop_last: bool

    def __len__(self) -> int:
        full, rest = divmod(len(self.split), self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for inputs, targets, _ in self.indexed():
            yield inputs, targets

    def indexed(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        raise NotImplementedError


class DeviceLoader(PassOfBatches):
    """Iterate ``(inputs, targets)`` batches of a device-resident split.

    The permutation is drawn on the CPU from ``generator`` (so the order is the same on CPU and
    CUDA for a given seed) and applied on the device.
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        augment: Augmentation | None = None,
        drop_last: bool = False,
    ) -> None:
        if shuffle and generator is None:
            raise ValueError("a shuffling loader needs a seeded generator")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.augment = augment
        self.drop_last = drop_last

    def indexed(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The same batches as iterating, each with the positions of its samples in the split
        (what methods that remember per-sample outputs key them by: SAF). The positions stay on the
        CPU, where the order is drawn: a method reads them (e.g. their largest) without a
        host-device sync, and indexing a device tensor with them copies them over asynchronously."""
        count = len(self.split)
        device = self.split.inputs.device
        on_host = torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        order = on_host.to(device, non_blocking=True) if self.shuffle else on_host
        for batch in range(len(self)):
            part = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            # In order, a batch is a slice: a view, not a gathered copy (evaluation reads every split).
            index = order[part] if self.shuffle else part
            inputs = self.split.inputs[index]
            if self.augment is not None:
                inputs = self.augment(inputs, self.generator)
            yield inputs, self.split.targets[index], on_host[part]
