"""Numerics of the skeleton's methods (ERM, SAM, ASAM, weight decay) against independent autograd."""

from __future__ import annotations

import pytest
import torch
from reg_helpers import (
    EPS,
    add,
    assert_all_close,
    assert_all_equal,
    batchnorm_buffers,
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

BATCHNORM = [pytest.param(False, id="plain"), pytest.param(True, id="batchnorm")]


def run(name: str, model, batch, **hparams):
    method = regularizers.create(name, **hparams)
    report = method.step(closure_for(model, batch))
    return grads(model), report


@pytest.mark.parametrize("batchnorm", BATCHNORM)
def test_erm_is_the_plain_gradient(batchnorm):
    model, batch = make_model(batchnorm), make_batch()
    expected = grad_at(model, weights(model), batch)
    actual, report = run("erm", model, batch)
    assert_all_close(actual, expected, rtol=1e-13, atol=1e-15)
    assert (report.forward_passes, report.backward_passes) == (1, 1)


@pytest.mark.parametrize("batchnorm", BATCHNORM)
def test_sam_with_zero_radius_is_erm_exactly(batchnorm):
    batch = make_batch()
    erm_model, sam_model = make_model(batchnorm), make_model(batchnorm)
    erm_grads, erm_report = run("erm", erm_model, batch)
    sam_grads, sam_report = run("sam", sam_model, batch, perturbation_radius=0.0)
    # Exact: ρ = 0 scales the ascent to exact zeros, so the second pass repeats ERM's ops at w.
    assert_all_equal(sam_grads, erm_grads)
    assert torch.equal(sam_report.loss, erm_report.loss)


@pytest.mark.parametrize("batchnorm", BATCHNORM)
@pytest.mark.parametrize("radius", [0.05, 0.5])
def test_sam_gradient_is_taken_at_the_normalized_ascent_point(batchnorm, radius):
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    g = grad_at(model, w, batch)
    expected = grad_at(model, add(w, scale(g, radius / norm(g))), batch)
    actual, report = run("sam", model, batch, perturbation_radius=radius)
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    # The perturbed gradient is not the clean one, so the comparison above can fail.
    assert max((a - c).abs().max().item() for a, c in zip(actual, g, strict=True)) > 1e-6
    # Two formulas for one norm of n elements (per-tensor norms then their norm, vs one sum of
    # squares): each within ~n eps relative, so 2n eps apart at most.
    n = sum(t.numel() for t in g)
    torch.testing.assert_close(report.metrics["grad_norm"], norm(g), rtol=2 * n * EPS, atol=0)


@pytest.mark.parametrize("batchnorm", BATCHNORM)
def test_asam_follows_its_formula(batchnorm):
    """T = |w| + η on every tensor (adaptive_tensors="all"); the authors' rule is in test_variants."""
    radius, eta = 0.5, 0.01
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    g = grad_at(model, w, batch)
    operator = [p.abs() + eta for p in w]
    scaled = [t * gi for t, gi in zip(operator, g, strict=True)]  # T·g
    epsilon = [t * t * gi * (radius / norm(scaled)) for t, gi in zip(operator, g, strict=True)]  # ρ·T²g/‖Tg‖
    expected = grad_at(model, add(w, epsilon), batch)
    actual, _ = run("asam", model, batch, perturbation_radius=radius, eta=eta, adaptive_tensors="all")
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    # ASAM's point differs from SAM's at the same radius: the test distinguishes the two.
    sam_point = grad_at(model, add(w, scale(g, radius / norm(g))), batch)
    assert max((a - s).abs().max().item() for a, s in zip(actual, sam_point, strict=True)) > 1e-6


@pytest.mark.parametrize("penalty", [1e-4, 1e-2])
def test_weight_decay_adds_lambda_w(penalty):
    model, batch = make_model(), make_batch()
    w = weights(model)
    expected = add(grad_at(model, w, batch), w, alpha=penalty)
    actual, _ = run("weight_decay", model, batch, penalty_weight=penalty)
    assert_all_close(actual, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("batchnorm", BATCHNORM)
@pytest.mark.parametrize("name", ["erm", "sam", "asam", "weight_decay"])
def test_weights_are_bit_identical_after_a_step(name, batchnorm):
    model, batch = make_model(batchnorm), make_batch()
    before = weights(model)
    hparams = {"perturbation_radius": 0.7} if name in ("sam", "asam") else {}
    run(name, model, batch, **hparams)
    assert_all_equal(weights(model), before, what="weight")  # the contract: restored from a copy


def test_restoring_by_subtraction_would_be_caught():
    """The bit-identity test above is meaningful: (w + e) − e differs from w for this model."""
    model, batch = make_model(), make_batch()
    w = weights(model)
    g = grad_at(model, w, batch)
    e = scale(g, 0.7 / norm(g))
    round_trip = [(wi + ei) - ei for wi, ei in zip(w, e, strict=True)]
    assert any(not torch.equal(a, b) for a, b in zip(round_trip, w, strict=True))


@pytest.mark.parametrize("name", ["sam", "asam"])
def test_perturbed_pass_leaves_batchnorm_statistics_alone(name):
    model, batch = make_model(batchnorm=True), make_batch()
    reference = make_model(batchnorm=True)
    with torch.no_grad():
        reference(batch[0])  # one clean forward
    after_clean = batchnorm_buffers(reference)
    with torch.no_grad():
        reference(batch[0] * 3.0)  # a second, different forward would move them again
    assert any(not torch.equal(a, b) for a, b in zip(batchnorm_buffers(reference), after_clean, strict=True))

    run(name, model, batch, perturbation_radius=0.5)
    # Exact by contract: the perturbed pass's updates are undone from a copy, and the clean pass
    # ran the reference's ops on the same weights and batch.
    assert_all_equal(batchnorm_buffers(model), after_clean, what="BatchNorm buffer")
