"""fsam: the gradient at w + ρ·(g − σm)/‖g − σm‖, then m ← λm + (1 − λ)g, m₀ = g₀ (the authors' order)."""

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

STEPS = 3


def at_normalized(model, w, batch, direction, radius):
    """∇L at w + ρ·direction/‖direction‖ (the 1e-12 guard is below float64 resolution here)."""
    return grad_at(model, add(w, scale(direction, radius / norm(direction))), batch)


def test_official_defaults():
    method = regularizers.create("fsam")
    # nblt/F-SAM, train.py: --rho 0.1, --sigma 1, --lmbda 0.95 (run.sh's CIFAR-100 example: rho 0.2, lmbda 0.6).
    assert (method.perturbation_radius, method.subtraction_weight, method.average_decay) == (0.1, 1.0, 0.95)
    assert method.state_dict() == {"average": None}


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("sigma", [1.0, 0.5])
def test_follows_the_authors_recursion(batchnorm, sigma):
    radius, decay = 0.2, 0.6
    model = make_model(batchnorm)
    method = regularizers.create("fsam", perturbation_radius=radius, subtraction_weight=sigma, average_decay=decay)
    average = None
    for batch in batches(STEPS):
        w = weights(model)
        g = grad_at(model, w, batch)
        # The authors' FriendlySAM.first_step: m₀ = g₀ with no subtraction; then g_t − σ·m_{t−1}, and only
        # after that m_t = λ·m_{t−1} + (1 − λ)·g_t.
        direction = g if average is None else add(g, average, alpha=-sigma)
        expected = at_normalized(model, w, batch, direction, radius)
        paper = None
        if average is not None:  # the paper's order subtracts the updated average m_t
            updated = add(scale(average, decay), g, alpha=1 - decay)
            paper = at_normalized(model, w, batch, add(g, updated, alpha=-sigma), radius)
        average = g if average is None else add(scale(average, decay), g, alpha=1 - decay)
        actual, report = step_and_move(method, model, batch)
        # One formula in different op orders (lerp vs λm + (1 − λ)g, foreach vs summed norms): float64
        # agrees to ~1e-15 relative per step; 1e-9 leaves room for the three chained steps.
        assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
        assert (report.forward_passes, report.backward_passes) == (2, 2)
        if paper is not None:
            assert differs(actual, grad_at(model, add(w, scale(g, radius / norm(g))), batch))  # not SAM's point
            if sigma == 1.0:
                # g − m_t = λ·(g − m_{t−1}): the same normalized ε as the paper's order (module docstring).
                assert_all_close(actual, paper, rtol=1e-9, atol=1e-12)
            else:
                assert differs(actual, paper)
    assert_all_close(method.state_dict()["average"], average, rtol=1e-9, atol=1e-12, what="average")


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_sigma_zero_is_sam_exactly(batchnorm):
    sam_model, fsam_model = make_model(batchnorm), make_model(batchnorm)
    sam = regularizers.create("sam", perturbation_radius=0.2)
    fsam = regularizers.create("fsam", perturbation_radius=0.2, subtraction_weight=0.0)
    for batch in batches(STEPS):
        expected, _ = step_and_move(sam, sam_model, batch)
        actual, _ = step_and_move(fsam, fsam_model, batch)
        # Exact: σ = 0 scales the clean gradient in place with SAM's guard, as SAM does.
        assert_all_equal(actual, expected)
    assert fsam.state_dict() == {"average": None}  # no average is kept for nothing


def test_first_step_is_sam_exactly():
    batch = make_batch()
    sam_model, fsam_model = make_model(), make_model()
    regularizers.create("sam", perturbation_radius=0.1).step(closure_for(sam_model, batch))
    regularizers.create("fsam").step(closure_for(fsam_model, batch))
    # Exact: the authors' first step only stores m₀ = g₀ and perturbs along g₀ with SAM's guard (1e-12).
    assert_all_equal(grads(fsam_model), grads(sam_model))


def test_state_round_trip_continues_identically():
    assert_state_carries_over("fsam", average_decay=0.6)


def test_validation():
    for name, bad in (("average_decay", 1.5), ("subtraction_weight", -0.5)):
        with pytest.raises(regularizers.RegistryError, match=name):
            regularizers.create("fsam", **{name: bad})


@pytest.mark.parametrize("hparams", [{"subtraction_weight": 0.0}, {"subtraction_weight": 0.5, "average_decay": 0.6}])
def test_variants_conform(hparams):
    check_regularizer(regularizers.create("fsam", **hparams))
