"""A conformance suite for regularizers, shipped with the package for plug-in authors.

:func:`check_regularizer` runs one method on a tiny model, with and without BatchNorm, stepping
with SGD and with Adam afterwards, and checks the contract of :class:`regularizers.Regularizer`:

* the weights are bit-identical after :meth:`~regularizers.Regularizer.step` (restored from a copy);
* the gradient rule: a step started from stale gradients in ``p.grad`` (garbage on the first step,
  the previous step's on the second, as a loop that never zeroes would leave them) leaves exactly
  the gradient of a step started from none, under the same RNG state;
* running statistics of every normalization layer that tracks them equal those after exactly one
  clean forward pass;
* the reported forward/backward passes equal the closure's counters, and over each period of
  :meth:`~regularizers.Regularizer.cost` (every step for most methods) they add up to it;
* every trainable parameter has a finite gradient of its own shape and dtype, frozen ones get none;
* the loss and the metrics are detached 0-dim tensors on the parameters' device;
* every closure carries ``sample_ids`` (the batch is the whole tiny training split, positions 0..5),
  as the training loop's do, for methods that remember per-sample outputs (SAF);
* the optimizer can step on the result, twice (two periods), and the weights stay finite;
* the state round trip: :meth:`~regularizers.Regularizer.state_dict` survives ``torch.save`` /
  ``torch.load(weights_only=True)``, and a fresh instance with the same hyperparameters that
  loads it gives bit-identical gradients to the original for the next period + 1 steps (a
  method that keeps undeclared state between steps fails here).

It raises :class:`AssertionError` naming the method and the broken rule. Example, for a plug-in's
own test suite::

    >>> import regularizers
    >>> from regularizers.testing import check_regularizer
    >>> check_regularizer("sam")
    >>> check_regularizer(regularizers.create("nso", num_samples=2, clean_gradient_weight=0.5))

The check seeds its own RNG inside :func:`torch.random.fork_rng`, so it is deterministic and
leaves the caller's random state untouched.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regularizers.base import BatchClosure, PassCost, Regularizer, StepReport, StepSchedule, batchnorm_modules
from regularizers.registry import create

__all__ = ["check_regularizer"]

_BATCH = 6
_CLASSES = 3
_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "SGD": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    "Adam": lambda params: torch.optim.Adam(params, lr=1e-2),
}


def _tiny_model(batchnorm: bool) -> nn.Module:
    """conv 3×3 (→ BN) → ReLU → pool → linear, with one frozen parameter the method must ignore."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=not batchnorm),
        nn.BatchNorm2d(4) if batchnorm else nn.Identity(),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
        nn.Tanh(),
        nn.Linear(5, _CLASSES),
    )
    model[5].bias.requires_grad_(False)  # frozen: no gradient, never touched
    return model


def _batchnorm_state(model: nn.Module) -> list[Tensor]:
    return [
        buffer.detach().clone()
        for module in batchnorm_modules(model)
        for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
        if buffer is not None
    ]


#: What the first checked step finds in ``p.grad``: finite, so that a method that adds onto it
#: fails the gradient-rule check (with its own message) rather than the finiteness one.
_STALE_GRADIENT = 7.0


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _gradients_from_a_clean_start(
    method: Regularizer,
    model: nn.Module,
    closure: BatchClosure,
    autocast: Callable[[], contextlib.AbstractContextManager[object]],
) -> list[Tensor | None]:
    """The gradients a step leaves when it starts with ``p.grad = None`` everywhere, on copies of
    the method and the model (so neither's state moves)."""
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.grad = None
    copy.deepcopy(method).step(
        BatchClosure(
            twin, closure.inputs, closure.targets, closure.loss_fn, autocast=autocast, sample_ids=closure.sample_ids
        )
    )
    return [None if p.grad is None else p.grad.detach().clone() for p in twin.parameters()]


def _same(a: Tensor, b: Tensor, exact: bool) -> bool:
    if exact:
        return torch.equal(a, b)
    return torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-6)


def _check_tensor_result(label: str, what: str, value: object, device: torch.device) -> None:
    assert isinstance(value, Tensor), f"{label}: {what} must be a torch.Tensor, got {type(value).__name__}"
    assert value.dim() == 0, f"{label}: {what} must be a 0-dim tensor, got shape {tuple(value.shape)}"
    assert not value.requires_grad, f"{label}: {what} must be detached (it still requires grad)"
    assert value.device == device, f"{label}: {what} must stay on the device {device}, found on {value.device}"
    assert bool(torch.isfinite(value)), f"{label}: {what} is not finite: {value}"


def _check_one_step(
    method: Regularizer,
    label: str,
    model: nn.Module,
    closure: BatchClosure,
    autocast: Callable[[], contextlib.AbstractContextManager[object]],
    device: torch.device,
    exact: bool,
) -> tuple[int, int]:
    named = list(model.named_parameters())
    weights_before = [p.detach().clone() for _, p in named]
    # Exactly one clean forward in training mode, under the loop's autocast or in full precision
    # (BatchClosure(full_precision=True)): which one is the method's choice.
    expected_stats = []
    for precision in (autocast, contextlib.nullcontext):
        reference = copy.deepcopy(model)
        with torch.no_grad(), precision():
            reference(closure.inputs)
        expected_stats.append(_batchnorm_state(reference))

    rng = _rng_state(device)
    from_clean_start = _gradients_from_a_clean_start(method, model, closure, autocast)
    _set_rng_state(rng, device)  # the checked step draws the same noise as the clean-start one
    report = method.step(closure)

    assert isinstance(report, StepReport), f"{label}: step() must return a StepReport, got {type(report).__name__}"
    assert model.training, f"{label}: step() must leave the model in training mode"
    for (name, p), before in zip(named, weights_before, strict=True):
        assert torch.equal(p.detach(), before), (
            f"{label}: parameter {name!r} changed during step(); restore weights from a copy "
            "(WeightBackup / perturbed_weights), never by subtracting the perturbation"
        )
    stats = _batchnorm_state(model)
    # Not strict: a different number of buffers fails the assert below, which names the method.
    mismatches = [
        [index for index, (got, want) in enumerate(zip(stats, expected, strict=False)) if not _same(got, want, exact)]
        for expected in expected_stats
    ]
    assert len(stats) == len(expected_stats[0]) and not all(mismatches), (
        f"{label}: running statistics of normalization layers (buffers #{mismatches[0]}) differ from one clean "
        "forward pass; only the clean pass may run with update_bn=True, exactly once"
    )

    counted = (closure.forward_passes, closure.backward_passes)
    reported = (report.forward_passes, report.backward_passes)
    assert reported == counted, (
        f"{label}: report says {reported} forward/backward passes but the closure counted {counted}; "
        "build the report with self.report(closure, ...)"
    )

    for (name, p), expected in zip(named, from_clean_start, strict=True):
        if not p.requires_grad:
            assert p.grad is None, f"{label}: frozen parameter {name!r} received a gradient"
            continue
        assert p.grad is not None, f"{label}: trainable parameter {name!r} has no gradient after step()"
        assert p.grad.shape == p.shape and p.grad.dtype == p.dtype, (
            f"{label}: gradient of {name!r} has shape {tuple(p.grad.shape)} / {p.grad.dtype}, "
            f"expected {tuple(p.shape)} / {p.dtype}"
        )
        assert not p.grad.requires_grad, f"{label}: gradient of {name!r} is attached to a graph"
        assert bool(torch.isfinite(p.grad).all()), f"{label}: gradient of {name!r} is not finite"
        assert expected is not None and _same(p.grad, expected, exact), (
            f"{label}: the gradient of {name!r} after a step started from stale gradients in p.grad differs "
            "from a step started with none; step() must leave exactly the gradient to apply: never read or "
            "add to p.grad before the first closure call (the closure's first pass clears it)"
        )

    _check_tensor_result(label, "report.loss", report.loss, device)
    assert isinstance(report.metrics, dict), f"{label}: report.metrics must be a dict"
    for key, value in report.metrics.items():
        assert isinstance(key, str), f"{label}: metric names must be strings, got {key!r}"
        _check_tensor_result(label, f"metric {key!r}", value, device)
    return counted


def _check_cost(method: Regularizer, label: str, has_batchnorm: bool, counted: list[tuple[int, int]]) -> None:
    """The passes of each complete period of steps add up to :meth:`Regularizer.cost`."""
    cost = method.cost(has_batchnorm)
    for start in range(0, len(counted) - cost.period + 1, cost.period):
        window = counted[start : start + cost.period]
        total = (sum(f for f, _ in window), sum(b for _, b in window))
        steps = f"step {start + 1}" if cost.period == 1 else f"steps {start + 1}-{start + cost.period}"
        assert total == (cost.forward, cost.backward), (
            f"{label}: cost(has_batchnorm={has_batchnorm}) says {(cost.forward, cost.backward)} forward/backward "
            f"passes per {cost.period} step(s) but {steps} ran {total}"
        )


def _sample_ids(targets: Tensor) -> Tensor:
    """The batch's positions in a training split, as the loop passes them: the tiny split is this one batch."""
    return torch.arange(targets.shape[0], device=targets.device)


def _schedule(step: int, total_steps: int) -> StepSchedule:
    """A cosine learning-rate position, so that methods tied to the schedule see it move."""
    factor = 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return StepSchedule(step=step, total_steps=total_steps, learning_rate=0.1 * factor, lr_factor=factor)


def _check_state_round_trip(
    method: Regularizer,
    label: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor],
    autocast: Callable[[], contextlib.AbstractContextManager[object]],
    device: torch.device,
    exact: bool,
    steps: int,
) -> None:
    """A fresh instance that loads ``method.state_dict()`` continues exactly as ``method`` does."""
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    try:
        saved = torch.load(buffer, weights_only=True)
    except Exception as error:  # re-raised as the contract's message, the cause kept
        raise AssertionError(
            f"{label}: state_dict() cannot be read back with torch.load(weights_only=True) ({error}); "
            "keep state to tensors, numbers, None and lists/tuples/dicts of them"
        ) from error
    twin = dataclasses.replace(method)  # same hyperparameters, state as __post_init__ makes it
    twin.load_state_dict(saved)
    twin.start_epoch(0, 2)
    twin_model = copy.deepcopy(model)
    twin_optimizer = type(optimizer)([p for p in twin_model.parameters() if p.requires_grad], **optimizer.defaults)
    # A deep copy: load_state_dict keeps the very buffer tensors when dtype and device match.
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    ids = _sample_ids(batch[1])
    for index in range(steps):
        rng = _rng_state(device)
        gradients = []
        for runner, net, opt in ((method, model, optimizer), (twin, twin_model, twin_optimizer)):
            _set_rng_state(rng, device)
            runner.start_step(_schedule(2 * steps + index, 3 * steps))
            runner.step(BatchClosure(net, batch[0], batch[1], F.cross_entropy, autocast=autocast, sample_ids=ids))
            gradients.append([(name, p.grad) for name, p in net.named_parameters() if p.requires_grad])
            opt.step()
        for (name, got), (_, want) in zip(gradients[1], gradients[0], strict=True):
            assert got is not None and want is not None and _same(got, want, exact), (
                f"{label}: at step {index + 1} after a state round trip, the gradient of {name!r} from a fresh "
                "instance that loaded state_dict() differs from the original's; name every attribute that "
                "carries over between steps in the class's `state` (and create it in __post_init__)"
            )


def check_regularizer(
    name_or_instance: str | Regularizer,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> None:
    """Run the conformance checks on a registered name (created with its defaults) or an instance.

    ``dtype`` is the parameters' dtype (float64 makes the bit-exact checks meaningful on CPU);
    ``autocast_dtype`` (e.g. ``torch.bfloat16`` on CUDA) runs the closure under autocast as the
    training loop does, with float32 parameters. On devices other than the CPU, BatchNorm
    statistics are compared to a tight tolerance instead of bit for bit.

    >>> check_regularizer("erm")
    """
    method = create(name_or_instance) if isinstance(name_or_instance, str) else name_or_instance
    assert isinstance(method, Regularizer), f"{name_or_instance!r} is not a Regularizer"
    device = torch.device(device)
    exact = device.type == "cpu" and autocast_dtype is None

    def autocast() -> contextlib.AbstractContextManager[object]:
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=autocast_dtype)

    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        for batchnorm in (False, True):
            for optimizer_name, make_optimizer in _OPTIMIZERS.items():
                setting = f"{'BatchNorm' if batchnorm else 'no BatchNorm'}, {optimizer_name}"
                label = f"{type(method).__name__} {method!r} [{setting}]"
                # Each setting starts the method afresh (a trial does), keeping any state it was given.
                runner = copy.deepcopy(method)
                model = _tiny_model(batchnorm).to(device=device, dtype=dtype).train()
                optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
                inputs = torch.randn(_BATCH, 3, 5, 5, device=device, dtype=dtype)
                targets = torch.arange(_BATCH, device=device) % _CLASSES
                cost = runner.cost(batchnorm)
                assert isinstance(cost, PassCost), f"{label}: cost() must return a PassCost, got {type(cost).__name__}"
                steps = 2 * cost.period  # two periods: the second runs on optimizer state and stale gradients
                runner.start_epoch(0, 2)
                with torch.no_grad():  # the gradient rule: whatever the loop left is not ours to use
                    for p in model.parameters():
                        if p.requires_grad:
                            p.grad = torch.full_like(p, _STALE_GRADIENT)
                counted = []
                for index in range(steps):
                    runner.start_step(_schedule(index, 3 * steps))
                    closure = BatchClosure(
                        model, inputs, targets, F.cross_entropy, autocast=autocast, sample_ids=_sample_ids(targets)
                    )
                    counted.append(_check_one_step(runner, label, model, closure, autocast, device, exact))
                    frozen = [p.detach().clone() for p in model.parameters() if not p.requires_grad]
                    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
                    optimizer.step()
                    after = [p.detach() for p in model.parameters() if p.requires_grad]
                    assert all(bool(torch.isfinite(p).all()) for p in after), (
                        f"{label}: {optimizer_name} produced non-finite weights from the method's gradient"
                    )
                    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), (
                        f"{label}: {optimizer_name}.step() left every weight unchanged; is the gradient in p.grad?"
                    )
                    frozen_after = [p.detach() for p in model.parameters() if not p.requires_grad]
                    assert all(torch.equal(a, b) for a, b in zip(frozen, frozen_after, strict=True)), (
                        f"{label}: a frozen parameter changed"
                    )
                _check_cost(runner, label, batchnorm, counted)
                _check_state_round_trip(
                    runner, label, model, optimizer, (inputs, targets), autocast, device, exact, cost.period + 1
                )
