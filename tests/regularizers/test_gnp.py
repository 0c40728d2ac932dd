"""gnp: (1−α)·c + α∇L(w + r·g/‖g‖), c = g/‖g‖ (authors' code) or g (paper eq. 8), the
finite-difference gradient of L + αr·‖∇L‖ in the paper's form."""

from __future__ import annotations

import pytest
import torch
from reg_helpers import (
    BATCHNORM_IDS,
    add,
    assert_all_close,
    assert_all_equal,
    closure_for,
    finite_difference_grad,
    grad_at,
    grads,
    loss_and_grad_at,
    make_batch,
    make_model,
    norm,
    scale,
    weights,
)

import regularizers


def step(name, model, batch, **hparams):
    closure = closure_for(model, batch)
    report = regularizers.create(name, **hparams).step(closure)
    return grads(model), report, closure


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("radius", [0.05, 0.3])
def test_alpha_one_is_sam_bit_for_bit(batchnorm, radius):
    batch = make_batch()
    sam_model, gnp_model = make_model(batchnorm), make_model(batchnorm)
    sam_grads, sam_report, _ = step("sam", sam_model, batch, perturbation_radius=radius)
    # SAM's 1e-12 guard; the clean term has weight 1 − α = 0 whatever its form.
    gnp_grads, gnp_report, _ = step(
        "gnp", gnp_model, batch, perturbation_radius=radius, perturbed_gradient_weight=1.0, norm_epsilon=1e-12
    )
    # Exact by contract (gnp.py): at α = 1 with SAM's guard GNP runs SAM's very operations, in one process.
    assert_all_equal(gnp_grads, sam_grads)
    assert torch.equal(gnp_report.loss, sam_report.loss)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_alpha_zero_is_erm_bit_for_bit_in_one_pass(batchnorm):
    batch = make_batch()
    erm_model, gnp_model = make_model(batchnorm), make_model(batchnorm)
    erm_grads, _, _ = step("erm", erm_model, batch)
    gnp_grads, _, closure = step("gnp", gnp_model, batch, perturbed_gradient_weight=0.0, normalize_clean_gradient=False)
    assert_all_equal(gnp_grads, erm_grads)  # exact: α = 0 returns after ERM's one pass
    assert (closure.forward_passes, closure.backward_passes) == (1, 1)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("alpha", [0.3, 0.8])
@pytest.mark.parametrize("normalized", [True, False])
def test_mixture_of_clean_and_perturbed_gradients(batchnorm, alpha, normalized):
    radius = 0.2
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    g = grad_at(model, w, batch)
    perturbed = grad_at(model, add(w, scale(g, radius / norm(g))), batch)
    clean_term = scale(g, 1 / norm(g)) if normalized else g
    expected = [(1 - alpha) * a + alpha * b for a, b in zip(clean_term, perturbed, strict=True)]
    actual, _, closure = step(
        "gnp",
        model,
        batch,
        perturbation_radius=radius,
        perturbed_gradient_weight=alpha,
        normalize_clean_gradient=normalized,
    )
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    assert (closure.forward_passes, closure.backward_passes) == (2, 2)
    assert_all_equal(weights(model), w, what="weight")  # the contract: restored from a copy


def test_matches_finite_differences_of_the_gradient_norm_penalty():
    """For small r the paper's form is ∇[L + λ‖∇L‖] with λ = α·r (Zhao et al. 2022, eq. 8), up to O(r²)."""
    radius, alpha = 1e-3, 0.8
    penalty = alpha * radius
    model, batch = make_model(), make_batch()
    w = weights(model)

    def penalized(point):
        loss, gradient = loss_and_grad_at(model, point, batch)
        return loss + penalty * norm(gradient)

    target = finite_difference_grad(penalized, w, step=1e-5)
    actual, _, _ = step(
        "gnp", model, batch, perturbation_radius=radius, perturbed_gradient_weight=alpha, normalize_clean_gradient=False
    )
    clean = grad_at(model, w, batch)
    penalty_part = norm(add(actual, clean, alpha=-1.0))
    assert penalty_part > 1e-6  # the penalty really moves the gradient ...
    assert norm(add(actual, target, alpha=-1.0)) < 0.01 * penalty_part  # ... exactly as its finite difference says
    assert norm(add(clean, target, alpha=-1.0)) > 0.5 * penalty_part  # and the clean gradient alone would fail


def test_validation():
    gnp = regularizers.get("gnp")
    with pytest.raises(ValueError, match="perturbation_radius"):
        gnp(perturbation_radius=-0.1)
    with pytest.raises(ValueError, match="perturbed_gradient_weight"):
        gnp(perturbed_gradient_weight=-0.5)
    assert gnp(perturbed_gradient_weight=0.0).cost(True).forward == 1
