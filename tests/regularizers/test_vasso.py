"""vasso: the gradient at w + ρ·d/‖d‖ with d ← (1 − θ)·d + θ·g, d₀ = g₀, carried between steps."""

from __future__ import annotations

import pytest
from reg_helpers import (
    BATCHNORM_IDS,
    add,
    assert_all_close,
    assert_all_equal,
    closure_for,
    differs,
    grad_at,
    grads,
    make_batch,
    make_model,
    norm,
    scale,
    weights,
)
from state_helpers import assert_state_carries_over, batches, step_and_move

import regularizers
from regularizers.testing import check_regularizer
from regularizers.vasso import VASSO_NORM_EPSILON

STEPS = 3


def test_official_defaults():
    method = regularizers.create("vasso")
    # BingcongLi/VaSSO: configs/defaulf_cfg.py --rho 0.05 and --theta 0.9 (train.sh: theta 0.9, rho 0.2 on
    # WRN-28-10 CIFAR-100); solver/vasso.py guards ‖d‖ with 1e-7.
    assert (method.perturbation_radius, method.averaging_weight) == (0.05, 0.9)
    assert method.norm_epsilon == VASSO_NORM_EPSILON == 1e-7
    assert method.state_dict() == {"direction": None}


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("theta", [0.3, 0.9])
def test_follows_the_moving_average_over_steps(batchnorm, theta):
    radius = 0.2
    model = make_model(batchnorm)
    method = regularizers.create("vasso", perturbation_radius=radius, averaging_weight=theta)
    direction = None
    for index, batch in enumerate(batches(STEPS)):
        w = weights(model)
        g = grad_at(model, w, batch)
        # The paper's recursion with the authors' first step: d₀ = g₀, then d_t = (1 − θ)·d_{t−1} + θ·g_t.
        direction = g if direction is None else add(scale(direction, 1 - theta), g, alpha=theta)
        expected = grad_at(model, add(w, scale(direction, radius / (norm(direction) + VASSO_NORM_EPSILON))), batch)
        actual, report = step_and_move(method, model, batch)
        # Different op orders for the same formula (lerp vs (1 − θ)d + θg, foreach vs summed norms): float64
        # agrees to ~1e-15 relative per step; 1e-9 leaves room for the three chained steps.
        assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
        assert (report.forward_passes, report.backward_passes) == (2, 2)
        if index > 0:  # from the second step on, d is not g: the average matters
            assert differs(actual, grad_at(model, add(w, scale(g, radius / norm(g))), batch))
    assert_all_close(method.state_dict()["direction"], direction, rtol=1e-9, atol=1e-12, what="average")


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_theta_one_is_sam_exactly(batchnorm):
    sam_model, vasso_model = make_model(batchnorm), make_model(batchnorm)
    sam = regularizers.create("sam", perturbation_radius=0.2)
    vasso = regularizers.create("vasso", perturbation_radius=0.2, averaging_weight=1.0, norm_epsilon=1e-12)
    for batch in batches(STEPS):
        expected, _ = step_and_move(sam, sam_model, batch)
        actual, _ = step_and_move(vasso, vasso_model, batch)
        # Exact: lerp(d, g, 1) is g bit for bit, and the guard is SAM's, so every step runs SAM's ops.
        assert_all_equal(actual, expected)


def test_first_step_is_sam_whatever_theta():
    batch = make_batch()
    sam_model, vasso_model = make_model(), make_model()
    regularizers.create("sam").step(closure_for(sam_model, batch))
    regularizers.create("vasso", averaging_weight=0.3, norm_epsilon=1e-12).step(closure_for(vasso_model, batch))
    # Exact: d₀ = g₀ (the authors' initialization), not θ·g₀; the direction is normalized either way,
    # but the next average would differ (see test_follows_the_moving_average_over_steps).
    assert_all_equal(grads(vasso_model), grads(sam_model))


def test_state_round_trip_continues_identically():
    assert_state_carries_over("vasso", averaging_weight=0.5)


def test_validation():
    with pytest.raises(regularizers.RegistryError, match="averaging_weight"):
        regularizers.create("vasso", averaging_weight=1.5)


@pytest.mark.parametrize("hparams", [{"averaging_weight": 1.0, "norm_epsilon": 1e-12}, {"averaging_weight": 0.0}])
def test_variants_conform(hparams):
    check_regularizer(regularizers.create("vasso", **hparams))
