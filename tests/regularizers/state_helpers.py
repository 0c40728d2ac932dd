"""Helpers for the tests of methods that keep state between steps (vasso, fsam).

A trajectory of a few steps, each on its own batch with a plain SGD move in between, so that the
gradients and the state change from step to step; and the checkpoint round trip the training loop
performs (``state_dict`` → ``torch.save`` → ``torch.load(weights_only=True)`` → ``load_state_dict``).
"""

from __future__ import annotations

import copy
import dataclasses
import io

import torch
from reg_helpers import assert_all_equal, closure_for, differs, grads, make_batch, make_model, trainable
from torch import nn

import regularizers
from regularizers import Regularizer, StepReport

#: SGD step size of the trajectories: large enough for the gradients to change visibly between steps.
LEARNING_RATE = 0.5


def batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` different batches, one per step."""
    return [make_batch(seed=10 + index) for index in range(count)]


@torch.no_grad()
def sgd_move(model: nn.Module, gradient: list[torch.Tensor], lr: float = LEARNING_RATE) -> None:
    """w ← w − lr·gradient on the trainable parameters."""
    for p, g in zip(trainable(model), gradient, strict=True):
        p.sub_(lr * g)


def step_and_move(method: Regularizer, model: nn.Module, batch) -> tuple[list[torch.Tensor], StepReport]:
    """One method step on ``batch``, then the SGD move with its gradient; returns (gradient, report)."""
    report = method.step(closure_for(model, batch))
    gradient = grads(model)
    sgd_move(model, gradient)
    return gradient, report


def round_trip(method: Regularizer) -> Regularizer:
    """A fresh instance with ``method``'s hyperparameters that loaded its state through a checkpoint file."""
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    twin = dataclasses.replace(method)  # same hyperparameters, state as __post_init__ makes it
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    return twin


def assert_state_carries_over(name: str, **hparams) -> None:
    """Two steps into a trajectory, a checkpoint round trip gives a twin that continues bit for bit
    (the same ops on the same state), while a fresh instance at the same weights differs (so the
    state is what carries over, and the comparison can fail)."""
    model = make_model(batchnorm=True)
    method = regularizers.create(name, **hparams)
    steps = batches(4)
    for batch in steps[:2]:
        step_and_move(method, model, batch)
    twin, twin_model = round_trip(method), copy.deepcopy(model)
    forgot, _ = step_and_move(regularizers.create(name, **hparams), copy.deepcopy(model), steps[2])
    for index, batch in enumerate(steps[2:]):
        expected, _ = step_and_move(method, model, batch)
        actual, _ = step_and_move(twin, twin_model, batch)
        assert_all_equal(actual, expected)
        if index == 0:
            assert differs(forgot, expected)
