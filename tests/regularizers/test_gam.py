"""gam: accelerated GAM (Zhang et al. 2023, Appendix D, Algorithm 2): h₊ − γ·h₋^⊥ with
h₊ = α·g₁ + (1 − α)·g₃ and h₋ = β·g₀ + (1 − β)·g₂ from four gradients on one batch."""

from __future__ import annotations

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


def inner(a, b):
    """⟨a, b⟩ over lists of tensors, written here rather than taken from the method's module."""
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def lerp(start, end, weight):
    return [weight * e + (1 - weight) * s for s, e in zip(start, end, strict=True)]


def expected_gam(model, batch, rho_prime, rho, alpha, beta, gamma, reference="code"):
    """Algorithm 2, lines 5-16, with independent autograd (ξ = 0: the 1e-12 guards are far below the
    tolerances for gradients of these norms); h₋ as the official code builds it, g₀ + |1 − β|·g₂,
    or as line 14 writes it (``reference="paper"``)."""
    w = weights(model)
    g0 = grad_at(model, w, batch)
    g1 = grad_at(model, add(w, scale(g0, rho_prime / norm(g0))), batch)
    h0 = add(g1, g0, alpha=-1.0)
    theta2 = add(w, scale(h0, rho / norm(h0)))
    g2 = grad_at(model, theta2, batch)
    g3 = grad_at(model, add(theta2, scale(g2, rho_prime / norm(g2))), batch)
    h_plus = lerp(g3, g1, alpha)
    h_minus = lerp(g2, g0, beta) if reference == "paper" else add(g0, scale(g2, abs(1 - beta)))
    h_minus_perp = add(h_minus, scale(h_plus, inner(h_minus, h_plus) / norm(h_plus) ** 2), alpha=-1.0)
    return add(h_plus, h_minus_perp, alpha=-gamma), g0, g1


def step(model, batch, **hparams):
    closure = closure_for(model, batch)
    report = regularizers.create("gam", **hparams).step(closure)
    return grads(model), report, closure


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize(
    "hparams",
    [
        {},  # the official defaults
        {
            "perturbation_radius": 0.05,
            "gradient_norm_radius": 0.3,
            "sam_gradient_weight": 0.2,
            "orthogonal_weight": 0.5,
        },
        {"sam_gradient_weight": 0.0, "clean_gradient_weight": 1.0, "orthogonal_weight": 0.1},
        {"descent_reference": "paper"},
        {"descent_reference": "paper", "clean_gradient_weight": 0.2, "orthogonal_weight": 0.5},
        {"clean_gradient_weight": 0.2, "orthogonal_weight": 0.5},
    ],
)
def test_step_follows_algorithm_2(batchnorm, hparams):
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    method = regularizers.create("gam", **hparams)
    expected, g0, g1 = expected_gam(
        model,
        batch,
        method.perturbation_radius,
        method.gradient_norm_radius,
        method.sam_gradient_weight,
        method.clean_gradient_weight,
        method.orthogonal_weight,
        method.descent_reference,
    )
    closure = closure_for(model, batch)
    report = method.step(closure)
    actual = grads(model)
    # Four gradient evaluations at chained points, a difference g₁ − g₀ of nearby gradients (its direction
    # carries ~‖g₀‖/‖h₀‖ ≈ 1e2 times the rounding), a projection: well inside 1e-9 relative in float64.
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    assert (closure.forward_passes, closure.backward_passes) == (4, 4)
    assert_all_equal(weights(model), w, what="weight")  # the contract: restored from a copy
    assert torch.equal(report.loss, torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).detach())
    # Neither the clean nor SAM's gradient: the test can fail.
    for other in (g0, g1):
        assert max((a - o).abs().max().item() for a, o in zip(actual, other, strict=True)) > 1e-6


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_sam_gradient_weight_one_without_decomposition_is_sam_bit_for_bit(batchnorm):
    radius = 0.1
    batch = make_batch()
    sam_model, gam_model = make_model(batchnorm), make_model(batchnorm)
    sam_report = regularizers.create("sam", perturbation_radius=radius).step(closure_for(sam_model, batch))
    gam_grads, gam_report, closure = step(
        gam_model, batch, perturbation_radius=radius, sam_gradient_weight=1.0, orthogonal_weight=0.0
    )
    # Exact: g₁ comes from SAM's very ops (the ascent rescaled on a clone, added to the weights), lerp at
    # weight 1 returns its end exactly (end − (end − start)·0), and h₊ + (−0)·h₋^⊥ = h₊.
    assert_all_equal(gam_grads, grads(sam_model))
    assert torch.equal(gam_report.loss, sam_report.loss)
    assert (closure.forward_passes, closure.backward_passes) == (4, 4)  # still GAM's four passes


def test_only_the_clean_pass_moves_batchnorm_statistics():
    model, batch = make_model(batchnorm=True), make_batch()
    reference = make_model(batchnorm=True)
    with torch.no_grad():
        reference(batch[0])  # one clean forward
    step(model, batch)
    for (name, got), (_, want) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        assert torch.equal(got, want), name  # exact: the three perturbed passes' updates are undone from a copy


def test_official_defaults():
    gam = regularizers.create("gam")
    # xxgege/GAM main_cifar.py, its default run (CIFAR-100, resnet18_c): grad_norm_rho, grad_rho,
    # grad_beta_0, grad_beta_1, grad_gamma = 0.2, 0.02, 0.5, 0.6, 0.03.
    assert gam.gradient_norm_radius == 0.2
    assert gam.perturbation_radius == 0.02
    assert gam.clean_gradient_weight == 0.5
    assert gam.sam_gradient_weight == 0.6
    assert gam.orthogonal_weight == 0.03
    # gam/gam.py, GAM.step: four get_grad() calls, every step.
    assert gam.cost(has_batchnorm=False) == gam.cost(has_batchnorm=True) == regularizers.PassCost(4, 4)
    assert gam.state == ()


def test_variant_conforms():
    check_regularizer(
        regularizers.create("gam", sam_gradient_weight=1.0, clean_gradient_weight=0.0, orthogonal_weight=0.0)
    )


def test_validation():
    gam = regularizers.get("gam")
    for name in ("sam_gradient_weight", "clean_gradient_weight"):
        for bad in (-0.1, 1.5):
            with pytest.raises(ValueError, match=name):
                gam(**{name: bad})
