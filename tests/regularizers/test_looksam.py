"""looksam: SAM's gradient g_s every k-th step, storing g_v = g_s − (⟨g_s, g⟩/‖g‖²)·g; in between
g + α·(‖g‖/‖g_v‖)·g_v in one pass (Liu et al. 2022, Algorithm 1)."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from reg_helpers import (
    BATCHNORM_IDS,
    add,
    assert_all_close,
    assert_all_equal,
    closure_for,
    grad_at,
    grads,
    make_batch,
    make_model,
    norm,
    scale,
    weights,
)

import regularizers
from regularizers.testing import check_regularizer

BATCHES = [make_batch(seed=seed) for seed in range(1, 9)]


def inner(a, b):
    """⟨a, b⟩ over lists of tensors, written here rather than taken from the method's module."""
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def train(method, model, batches, lr: float = 0.05):
    """Step ``method`` through ``batches`` with SGD + momentum; per step: (weights before, gradient, passes)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    record = []
    for batch in batches:
        w = weights(model)
        closure = closure_for(model, batch)
        method.step(closure)
        record.append((w, grads(model), (closure.forward_passes, closure.backward_passes)))
        optimizer.step()
    return record


def round_trip(method):
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    twin = dataclasses.replace(method)  # same hyperparameters, fresh state
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    return twin


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("period", [2, 3])
def test_steps_follow_algorithm_1(batchnorm, period):
    radius, alpha = 0.3, 0.7
    model = make_model(batchnorm)
    method = regularizers.create("looksam", perturbation_radius=radius, reuse_weight=alpha, period=period)
    record = train(method, model, BATCHES[: 2 * period + 1])
    g_v = None
    for index, ((w, actual, passes), batch) in enumerate(zip(record, BATCHES, strict=False)):
        g = grad_at(model, w, batch)
        if index % period == 0:
            expected = grad_at(model, add(w, scale(g, radius / norm(g))), batch)  # g_s
            g_v = add(expected, scale(g, inner(expected, g) / norm(g) ** 2), alpha=-1.0)
            assert passes == (2, 2)
        else:
            expected = add(g, scale(g_v, alpha * norm(g) / norm(g_v)))
            assert passes == (1, 1)
            # The reused component changes the step: it is not the plain gradient.
            assert max((a - c).abs().max().item() for a, c in zip(actual, g, strict=True)) > 1e-4
        # Two gradient evaluations, a projection and an axpy in float64; the weights are the model's own.
        assert_all_close(actual, expected, rtol=1e-9, atol=1e-12, what=f"gradient at step {index}")
    # The stored g_v is the last SAM step's, orthogonal to that step's g.
    assert_all_close(method.orthogonal_gradient, g_v, rtol=1e-9, atol=1e-12, what="g_v")


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_period_one_is_sam_bit_for_bit(batchnorm):
    sam_model, look_model = make_model(batchnorm), make_model(batchnorm)
    sam = train(regularizers.create("sam", perturbation_radius=0.2), sam_model, BATCHES[:4])
    look = train(regularizers.create("looksam", perturbation_radius=0.2, period=1), look_model, BATCHES[:4])
    # Exact: every step is a SAM step running SAM's ops (the ascent on a clone of g, rescaled the same way),
    # and the optimizer sees the same gradients, so the weights stay identical too.
    for (_, sam_grads, _), (_, look_grads, passes) in zip(sam, look, strict=True):
        assert_all_equal(look_grads, sam_grads)
        assert passes == (2, 2)
    assert_all_equal(weights(look_model), weights(sam_model), what="weight")


@pytest.mark.parametrize("period", [2, 5, 10])
def test_passes_per_step_are_below_two_and_match_the_cost(period):
    method = regularizers.create("looksam", period=period)
    record = train(method, make_model(), [BATCHES[i % len(BATCHES)] for i in range(2 * period)])
    forward = [p[0] for _, _, p in record]
    backward = [p[1] for _, _, p in record]
    assert forward == backward == ([2] + [1] * (period - 1)) * 2
    cost = method.cost(has_batchnorm=False)
    assert (cost.forward, cost.backward, cost.period) == (sum(forward[:period]), sum(backward[:period]), period)
    measured = (sum(forward) + sum(backward)) / len(record)
    assert measured == cost.per_step == 2 * (period + 1) / period
    assert sum(forward) / len(record) < 2  # the saving is real: fewer than SAM's 2 forward passes per step


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_state_round_trip_continues_identically(batchnorm):
    period = 3
    model = make_model(batchnorm)
    method = regularizers.create("looksam", perturbation_radius=0.2, period=period)
    train(method, model, BATCHES[:2])  # mid-period: the next step reuses g_v
    assert method.state_dict()["steps_done"] == 2 and method.orthogonal_gradient is not None
    twin, twin_model = round_trip(method), make_model(batchnorm)
    twin_model.load_state_dict(model.state_dict())
    original = train(method, model, BATCHES[2:6])
    resumed = train(twin, twin_model, BATCHES[2:6])
    # Exact: the same state and weights run the same ops (both optimizers start afresh at the same weights).
    for (_, a, passes_a), (_, b, passes_b) in zip(original, resumed, strict=True):
        assert_all_equal(b, a)
        assert passes_a == passes_b
    assert [p for _, _, p in resumed] == [(1, 1), (2, 2), (1, 1), (1, 1)]
    # Without the state a fresh instance would take a SAM step first: the round trip carries it.
    fresh_model = make_model(batchnorm)
    fresh_model.load_state_dict(twin_model.state_dict())
    assert train(dataclasses.replace(method), fresh_model, BATCHES[:1])[0][2] == (2, 2)


def test_official_defaults():
    look = regularizers.create("looksam")
    # No official code. k = 5 is the paper's LookSAM-5; α = 0.7 and ρ = 0.05 are rollovd/LookSAM's defaults
    # (α = 0.7 also in MarlonBecker/MSAM's configs: lookSAMalpha = 0.7); ρ = 0.05 is also `sam`'s here.
    assert (look.period, look.reuse_weight, look.perturbation_radius) == (5, 0.7, 0.05)
    assert look.cost(has_batchnorm=True) == regularizers.PassCost(6, 6, period=5)
    assert look.state == ("steps_done", "orthogonal_gradient")


@pytest.mark.parametrize("hparams", [{"period": 1}, {"period": 2}, {"period": 3, "reuse_weight": 0.0}])
def test_variants_conform(hparams):
    check_regularizer(regularizers.create("looksam", **hparams))


def test_validation():
    with pytest.raises(ValueError, match="period"):
        regularizers.get("looksam")(period=0)
    with pytest.raises(ValueError, match="reuse_weight"):
        regularizers.get("looksam")(reuse_weight=-0.1)
