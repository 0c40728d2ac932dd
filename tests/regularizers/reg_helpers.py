"""Shared helpers of the regularizer tests: tiny float64 models and independent gradients.

The independent computations here never go through :class:`regularizers.BatchClosure` or a
method: they evaluate the loss on a deep copy of the model with plain autograd, so a test that
compares a method's gradient against them checks the method against the math.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regularizers import BatchClosure

DTYPE = torch.float64
#: Unit roundoff scale of DTYPE (2.2e-16): tolerances below are small multiples of it, sized by
#: how many roundings the compared computations can differ by.
EPS = torch.finfo(DTYPE).eps


def make_model(batchnorm: bool = False, seed: int = 0, width: int = 5) -> nn.Module:
    """A smooth (tanh) 4 → width → 3 classifier in float64, BatchNorm1d after the first layer if asked."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, width)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(width))
    layers += [nn.Tanh(), nn.Linear(width, 3)]
    return nn.Sequential(*layers).to(DTYPE).train()


def make_batch(size: int = 8, seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, 4, generator=generator, dtype=DTYPE)
    targets = torch.randint(0, 3, (size,), generator=generator)
    return inputs, targets


def closure_for(model: nn.Module, batch: tuple[Tensor, Tensor], loss_fn=F.cross_entropy) -> BatchClosure:
    """A closure on ``batch`` with the sample ids the training loop passes (the batch is positions 0..n-1)."""
    return BatchClosure(model, batch[0], batch[1], loss_fn, sample_ids=torch.arange(batch[1].shape[0]))


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def weights(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in trainable(model)]


def grads(model: nn.Module) -> list[Tensor]:
    return [p.grad.detach().clone() for p in trainable(model)]


def batchnorm_buffers(model: nn.Module) -> list[Tensor]:
    return [b.detach().clone() for name, b in model.named_buffers() if "running" in name or "num_batches" in name]


def _copy_at(model: nn.Module, point: Sequence[Tensor]) -> nn.Module:
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, value in zip(trainable(twin), point, strict=True):
            p.copy_(value)
    for p in twin.parameters():
        p.grad = None
    return twin


def objective_at(
    model: nn.Module,
    point: Sequence[Tensor],
    batch: tuple[Tensor, Tensor],
    objective: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> Tensor:
    """objective(model at ``point`` on ``batch``), on a copy of the model (training mode, batch statistics)."""
    twin = _copy_at(model, point)
    return objective(twin(batch[0]), batch[1]).detach()


def grad_at(
    model: nn.Module,
    point: Sequence[Tensor],
    batch: tuple[Tensor, Tensor],
    objective: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> list[Tensor]:
    """∇ objective at ``point`` with plain autograd on a copy of the model."""
    twin = _copy_at(model, point)
    value = objective(twin(batch[0]), batch[1])
    return [g.detach() for g in torch.autograd.grad(value, trainable(twin))]


def loss_and_grad_at(
    model: nn.Module,
    point: Sequence[Tensor],
    batch: tuple[Tensor, Tensor],
    objective: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> tuple[Tensor, list[Tensor]]:
    """(objective, ∇ objective) at ``point``, with plain autograd on a copy of the model."""
    twin = _copy_at(model, point)
    value = objective(twin(batch[0]), batch[1])
    return value.detach(), [g.detach() for g in torch.autograd.grad(value, trainable(twin))]


def finite_difference_grad(
    function: Callable[[list[Tensor]], Tensor], point: Sequence[Tensor], step: float = 1e-5
) -> list[Tensor]:
    """Central differences of a scalar function of a list of tensors, coordinate by coordinate."""
    point = [t.detach().clone() for t in point]
    result = []
    for tensor in point:
        derivative = torch.zeros_like(tensor)
        flat, out = tensor.view(-1), derivative.view(-1)
        for i in range(flat.numel()):
            original = flat[i].item()
            flat[i] = original + step
            upper = function(point)
            flat[i] = original - step
            lower = function(point)
            flat[i] = original
            out[i] = (upper - lower) / (2 * step)
        result.append(derivative)
    return result


def add(a: Sequence[Tensor], b: Sequence[Tensor], alpha: float = 1.0) -> list[Tensor]:
    return [x + alpha * y for x, y in zip(a, b, strict=True)]


def scale(a: Sequence[Tensor], factor) -> list[Tensor]:
    return [x * factor for x in a]


def norm(a: Sequence[Tensor]) -> Tensor:
    return torch.sqrt(sum((x.double() ** 2).sum() for x in a))


def assert_all_equal(actual: Sequence[Tensor], expected: Sequence[Tensor], what: str = "gradient") -> None:
    """Bit-for-bit equality. Only for what the contract makes exact: weights restored from a copy,
    or the very same operations on the same inputs in one process (a degenerate setting that runs
    ERM's ops); never for two different formulas, which may round differently on another CPU."""
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert torch.equal(a, e), f"{what} #{index} differs (max abs diff {(a - e).abs().max().item():.3e})"


def assert_all_close(
    actual: Sequence[Tensor],
    expected: Sequence[Tensor],
    rtol: float = 1e-10,
    atol: float = 1e-12,
    what: str = "gradient",
) -> None:
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, index=index: f"{what} #{index}: {m}")


#: ``@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)``: a model without and with BatchNorm.
BATCHNORM_IDS = [False, True]


def differs(a: Sequence[Tensor], b: Sequence[Tensor], by: float = 1e-6) -> bool:
    """Whether two gradients differ somewhere by more than ``by``: a test's proof that its
    comparison could fail (the method's gradient is not the clean one, not SAM's, ...)."""
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True)) > by
