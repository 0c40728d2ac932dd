"""gsam: g_p − α·g_⊥ with g_p = ∇L(w + ρ_t·g/‖g‖), g_⊥ the part of g orthogonal to g_p, and
ρ_t = ρ_min + (ρ_max − ρ_min)·lr_factor (Zhuang et al. 2022, Algorithm 1)."""

from __future__ import annotations

import pytest
import torch
from reg_helpers import (
    BATCHNORM_IDS,
    EPS,
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
from regularizers import StepSchedule
from regularizers.gsam import orthogonal_part
from regularizers.testing import check_regularizer


def inner(a, b):
    """⟨a, b⟩ over lists of tensors, written here rather than taken from the method's module."""
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def schedule(lr_factor: float) -> StepSchedule:
    return StepSchedule(step=3, total_steps=10, learning_rate=0.1 * lr_factor, lr_factor=lr_factor)


def step(model, batch, lr_factor: float | None = None, **hparams):
    method = regularizers.create("gsam", **hparams)
    if lr_factor is not None:
        method.start_step(schedule(lr_factor))
    closure = closure_for(model, batch)
    report = method.step(closure)
    return grads(model), report, closure


def expected_gsam(model, batch, radius: float, alpha: float) -> tuple[list, list, list]:
    """(g_p − α·g_⊥, g_p, g_⊥), written out with independent autograd."""
    w = weights(model)
    g = grad_at(model, w, batch)
    g_p = grad_at(model, add(w, scale(g, radius / norm(g))), batch)
    parallel = scale(g_p, sum((a * b).sum() for a, b in zip(g, g_p, strict=True)) / norm(g_p) ** 2)
    g_perp = add(g, parallel, alpha=-1.0)
    return add(g_p, g_perp, alpha=-alpha), g_p, g_perp


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize(("alpha", "lr_factor"), [(0.3, None), (1.0, 0.25), (0.01, 1.0)])
def test_step_is_perturbed_gradient_minus_alpha_orthogonal_part(batchnorm, alpha, lr_factor):
    rho_max, fraction = 0.3, 0.2
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    factor = 1.0 if lr_factor is None else lr_factor  # without start_step the radius is ρ_max
    radius = fraction * rho_max + (rho_max - fraction * rho_max) * factor
    expected, g_p, g_perp = expected_gsam(model, batch, radius, alpha)
    actual, report, closure = step(
        model, batch, lr_factor, perturbation_radius=rho_max, min_radius_fraction=fraction, surrogate_gap_weight=alpha
    )
    # Two gradient evaluations, a projection and an axpy, all in float64: a few hundred roundings at most.
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    assert (closure.forward_passes, closure.backward_passes) == (2, 2)
    assert_all_equal(weights(model), w, what="weight")  # the contract: restored from a copy
    torch.testing.assert_close(report.metrics["perturbation_radius"], torch.tensor(radius, dtype=torch.float64))
    # The sign: the correction is −α·g_⊥, so it points against g_⊥ (and the test above can fail:
    # g_⊥ is far from zero here).
    correction = add(actual, g_p, alpha=-1.0)
    assert float(inner(correction, g_perp)) < -0.5 * alpha * float(norm(g_perp)) ** 2
    assert float(norm(g_perp)) > 1e-3 * float(norm(g_p))


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("lr_factor", [None, 0.0, 0.37, 1.0])
def test_alpha_zero_with_constant_radius_is_sam_bit_for_bit(batchnorm, lr_factor):
    radius = 0.2
    batch = make_batch()
    sam_model, gsam_model = make_model(batchnorm), make_model(batchnorm)
    sam = regularizers.create("sam", perturbation_radius=radius)
    sam_report = sam.step(closure_for(sam_model, batch))
    gsam_grads, gsam_report, _ = step(
        gsam_model, batch, lr_factor, perturbation_radius=radius, min_radius_fraction=1.0, surrogate_gap_weight=0.0
    )
    # Exact: ρ_min = ρ_max gives ρ_t = ρ + 0·f = ρ; the ascent runs SAM's very ops (clone, then the same
    # rescale_ and ascend_and_regrad), and g_p + (−0)·g_⊥ = g_p for finite g_⊥.
    assert_all_equal(gsam_grads, grads(sam_model))
    assert torch.equal(gsam_report.loss, sam_report.loss)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_radius_follows_the_learning_rate_factor(batchnorm):
    gsam = regularizers.create("gsam", perturbation_radius=0.4, min_radius_fraction=0.25)
    # ρ_max at lr_factor 1, ρ_min = 0.25·0.4 at 0, linear in between; one or two roundings each.
    assert gsam.radius_at(1.0) == pytest.approx(0.4, rel=4 * EPS, abs=0)
    assert gsam.radius_at(0.0) == pytest.approx(0.1, rel=4 * EPS, abs=0)
    assert gsam.radius_at(0.5) == pytest.approx(0.25, rel=4 * EPS, abs=0)
    # The step uses it: at lr_factor 0, the gradient is SAM's at ρ_min (α = 0 isolates the radius).
    batch = make_batch()
    sam_model, gsam_model = make_model(batchnorm), make_model(batchnorm)
    regularizers.create("sam", perturbation_radius=gsam.radius_at(0.0)).step(closure_for(sam_model, batch))
    actual, report, _ = step(
        gsam_model, batch, 0.0, perturbation_radius=0.4, min_radius_fraction=0.25, surrogate_gap_weight=0.0
    )
    assert_all_equal(actual, grads(sam_model))  # exact: the same radius, SAM's ops (test above)
    assert float(report.metrics["perturbation_radius"]) == gsam.radius_at(0.0)
    # ... and differs from ρ_max's gradient, so the schedule is not ignored.
    at_max, _, _ = step(make_model(batchnorm), batch, 1.0, perturbation_radius=0.4, surrogate_gap_weight=0.0)
    assert max((a - b).abs().max().item() for a, b in zip(actual, at_max, strict=True)) > 1e-6


def test_orthogonal_part_decomposes_exactly():
    torch.manual_seed(0)
    vector = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    direction = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    perp = orthogonal_part(vector, direction)
    # ⟨g_⊥, d⟩ = 0 up to cancellation in a 17-term sum of products of size ~‖v‖‖d‖.
    assert abs(float(inner(perp, direction))) < 64 * EPS * float(norm(vector) * norm(direction))
    parallel = add(vector, perp, alpha=-1.0)
    cosine = inner(parallel, direction) / (norm(parallel) * norm(direction))
    assert float(cosine.abs()) == pytest.approx(1.0, rel=1e-12)
    # A zero direction leaves the vector whole (no 0/0).
    assert_all_equal(orthogonal_part(vector, [torch.zeros_like(d) for d in direction]), vector)


def test_no_state_and_the_schedule_is_not_state():
    gsam = regularizers.create("gsam")
    gsam.start_step(schedule(0.3))
    assert gsam.state == () and gsam.state_dict() == {}


def test_official_defaults():
    gsam = regularizers.create("gsam")
    # Paper Table 4, ResNet-50/101 with SGD: ρ_max = 0.04, ρ_min = 0.02 (fraction 0.5), α = 0.01.
    assert gsam.perturbation_radius == 0.04
    assert gsam.min_radius_fraction == 0.5
    assert gsam.surrogate_gap_weight == 0.01
    assert gsam.cost(has_batchnorm=True) == regularizers.PassCost(2, 2)


@pytest.mark.parametrize(
    "hparams",
    [
        {"min_radius_fraction": 1.0, "surrogate_gap_weight": 0.0},
        {"min_radius_fraction": 0.0, "surrogate_gap_weight": 1.0},
    ],
)
def test_variants_conform(hparams):
    check_regularizer(regularizers.create("gsam", **hparams))


def test_validation():
    gsam = regularizers.get("gsam")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="min_radius_fraction"):
            gsam(min_radius_fraction=bad)
    with pytest.raises(ValueError, match="surrogate_gap_weight"):
        gsam(surrogate_gap_weight=-0.1)
