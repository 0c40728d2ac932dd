"""Data parallelism inside one trial (``resources.workers_per_trial``): N workers, one batch.

Every worker builds the same trainer (same seed: same initial weights, data order, augmentation
and method noise) and draws the same global batch; each keeps a contiguous shard of it. After
every whole-batch backward pass the gradients are replaced by their batch-weighted mean over the
workers (:meth:`DataParallel.average_gradients`, the hook of :class:`regularizers.BatchClosure`),
so each method's step sees the gradient of the global batch, as on one worker, and N workers give
one worker's result at the same global batch up to float rounding. What stays per worker is
stated in docs/methods.md (data parallelism): batch statistics of BatchNorm on CPU, micro-batch
slices, per-sample selections.

The process group is the caller's (Ray Train sets it up: gloo on CPU, nccl on GPU); this module
only talks to ``torch.distributed``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from regularizers.base import GradientSync


@dataclass(frozen=True)
class DataParallel:
    """This worker's place in a trial's process group."""

    rank: int
    world_size: int
    #: Where the group's own small tensors live (NCCL reduces CUDA tensors only).
    device: torch.device = torch.device("cpu")

    @classmethod
    def current(cls) -> DataParallel | None:
        """The initialized default process group as a :class:`DataParallel`; ``None`` without one
        or with a single worker (nothing to share)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        on_gpu = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)

    def shard(self, batch_size: int) -> slice:
        """This worker's contiguous part of a global batch of ``batch_size`` samples: sizes differ
        by at most one, the first ``batch_size % world_size`` workers holding the larger ones."""
        size, extra = divmod(batch_size, self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return slice(start, start + size + (1 if self.rank < extra else 0))

    def gradient_sync(self, shard_size: int, batch_size: int) -> GradientSync:
        """The closure hook for one step: this worker's gradient weighs ``shard_size / batch_size``."""
        return functools.partial(self.average_gradients, weight=shard_size / batch_size)

    @staticmethod
    @torch.no_grad()
    def average_gradients(parameters: Sequence[nn.Parameter], *, weight: float) -> None:
        """``p.grad`` ← Σ_workers weight_w · p.grad_w, in one all-reduce of a flat buffer.

        Exact for what a step accumulates: a part already synced (the same R on every worker) stays
        R, since the weights sum to 1. A gradient the loss did not reach counts as zeros."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = _flatten_dense_tensors(grads).mul_(weight)
        dist.all_reduce(flat)
        for p, mean in zip(parameters, _unflatten_dense_tensors(flat, grads), strict=True):
            p.grad = mean

    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over the workers (a new tensor; one all-reduce)."""
        total = values.clone()
        dist.all_reduce(total)
        return total

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true when it is true on any worker (one all-reduce): for decisions every
        worker must take together that depend on its own clock."""
        counts = self.sum(torch.tensor([float(flag) for flag in flags], device=self.device)).tolist()
        return tuple(bool(count > 0) for count in counts)

    @torch.no_grad()
    def average_buffers(self, modules: Sequence[nn.modules.batchnorm._NormBase]) -> None:
        """Running statistics averaged over the workers, so that every worker evaluates the same
        model (each updated them from its own shard's batch statistics)."""
        buffers = [b for m in modules for b in (m.running_mean, m.running_var) if b is not None]
        if not buffers:
            return
        flat = _flatten_dense_tensors(buffers).div_(self.world_size)
        dist.all_reduce(flat)
        torch._foreach_copy_(buffers, list(_unflatten_dense_tensors(flat, buffers)))
