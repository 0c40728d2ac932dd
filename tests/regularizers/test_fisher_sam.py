"""fisher_sam: the gradient at w + γ·f⁻¹g/sqrt(gᵀf⁻¹g), f = 1 + η·g² (diagonal Fisher of the batch gradient)."""

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


def run(model, batch, **hparams):
    method = regularizers.create("fisher_sam", **hparams)
    closure = closure_for(model, batch)
    report = method.step(closure)
    return grads(model), report, closure


def test_paper_defaults():
    method = regularizers.create("fisher_sam")
    # γ = 0.1, η = 1.0, written from memory of Kim et al. 2022: not verified against the paper's text (not
    # available offline), and no official code was found to compare with.
    assert (method.perturbation_radius, method.fisher_scale) == (0.1, 1.0)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_ascent_in_the_fisher_ellipsoid(batchnorm):
    radius = 0.2
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    g = grad_at(model, w, batch)
    # η with η·g² of order 1 on the largest coordinates (|g| up to 0.3 without BatchNorm, 2 with), so that
    # f = 1 + η·g² is far from 1 and the ellipsoid far from SAM's ball.
    eta = 30.0
    fisher = [1 + eta * gi * gi for gi in g]
    natural = [gi / fi for gi, fi in zip(g, fisher, strict=True)]  # f⁻¹g
    quadratic = sum((gi * ni).sum() for gi, ni in zip(g, natural, strict=True))  # gᵀf⁻¹g
    epsilon = scale(natural, radius / torch.sqrt(quadratic))
    # The hand ε sits on the ellipsoid's boundary: εᵀfε = γ².
    boundary = sum((e * f * e).sum() for e, f in zip(epsilon, fisher, strict=True))
    torch.testing.assert_close(boundary, torch.tensor(radius**2, dtype=boundary.dtype), rtol=1e-14, atol=0)
    expected = grad_at(model, add(w, epsilon), batch)
    actual, report, closure = run(model, batch, perturbation_radius=radius, fisher_scale=eta)
    # One formula in two op orders (the method divides by sqrt(f) twice and adds a 1e-12 guard to the
    # norm, ~1e-12 relative): 1e-9 bounds both.
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    assert (closure.forward_passes, closure.backward_passes) == (2, 2)
    n = sum(gi.numel() for gi in g)
    mean_gain = eta * sum((gi * gi).sum() for gi in g) / n
    torch.testing.assert_close(report.metrics["fisher_gain"], mean_gain, rtol=1e-12, atol=0)
    # The ellipsoid's point is not SAM's: the comparison above can fail.
    sam_point = grad_at(model, add(w, scale(g, radius / norm(g))), batch)
    assert max((a - s).abs().max().item() for a, s in zip(actual, sam_point, strict=True)) > 1e-5


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_eta_zero_is_sam_exactly(batchnorm):
    batch = make_batch()
    sam_model, fisher_model = make_model(batchnorm), make_model(batchnorm)
    sam_report = regularizers.create("sam", perturbation_radius=0.3).step(closure_for(sam_model, batch))
    actual, report, _ = run(fisher_model, batch, perturbation_radius=0.3, fisher_scale=0.0)
    # Exact: f = 1 takes SAM's ops (norm, rescale with the same guard, ascent) on the same inputs.
    assert_all_equal(actual, grads(sam_model))
    assert torch.equal(report.loss, sam_report.loss)
    assert report.metrics["fisher_gain"].item() == 0.0


def test_validation():
    with pytest.raises(regularizers.RegistryError, match="fisher_scale"):
        regularizers.create("fisher_sam", fisher_scale=-1.0)


@pytest.mark.parametrize("hparams", [{"fisher_scale": 0.0}, {"fisher_scale": 30.0}])
def test_variants_conform(hparams):
    check_regularizer(regularizers.create("fisher_sam", **hparams))
