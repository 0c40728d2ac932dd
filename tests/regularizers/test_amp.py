"""amp: δ ← Π_ε(δ + ζ∇L(w+δ)) N times, then ∇L(w+δ_N) applied at w."""

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
    weights,
)

import regularizers
from regularizers.amp import GLOBAL, PER_TENSOR, PERTURBATION_NORM, ascent_step

DTYPE = torch.float64


def project(delta, radius, kind):
    """Π_ε written from its definition: scale back onto the ball only when outside it."""
    if kind == PER_TENSOR:
        return [d * min(1.0, radius / d.norm().item()) if d.norm() > 0 else d for d in delta]
    total = norm(delta).item()
    return [d * min(1.0, radius / total) for d in delta]


def random_tensors(seed, shapes=((3, 4), (4,), (2, 2, 3)), scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator, dtype=DTYPE) * scale for s in shapes]


@pytest.mark.parametrize("seed", range(5))
def test_per_tensor_projection_bounds_every_tensor(seed):
    radius = 0.5
    delta = random_tensors(seed, scale=0.1)
    g = random_tensors(seed + 100, scale=0.3)
    start = [d.clone() for d in delta]
    ascent_step(delta, g, ascent_step_size=0.7, perturbation_radius=radius, projection=PER_TENSOR)
    for d in delta:
        # ‖δ‖·ε/(‖δ‖ + 1e-12) ≤ ε in exact arithmetic; a norm of ≤ 12 terms and 3 scalings add
        # ~15 roundings, far below the 1e-12 slack.
        assert d.norm().item() <= radius * (1 + 1e-12)
    assert_all_close(delta, project(add(start, g, alpha=0.7), radius, PER_TENSOR), rtol=1e-10, atol=1e-15)
    # The global ball would be violated: per-tensor and global projections really differ here.
    assert norm(delta).item() > radius


@pytest.mark.parametrize("seed", range(5))
def test_global_projection_bounds_the_global_norm(seed):
    radius = 0.5
    delta = random_tensors(seed, scale=0.1)
    g = random_tensors(seed + 100, scale=0.3)
    start = [d.clone() for d in delta]
    ascent_step(delta, g, ascent_step_size=0.7, perturbation_radius=radius, projection=GLOBAL)
    assert norm(delta).item() == pytest.approx(radius, rel=1e-10)
    assert_all_close(delta, project(add(start, g, alpha=0.7), radius, GLOBAL), rtol=1e-10, atol=1e-15)


def test_projection_leaves_points_inside_the_ball_alone():
    delta = [torch.zeros(3, dtype=DTYPE), torch.zeros(2, dtype=DTYPE)]
    g = [torch.tensor([0.1, 0.0, 0.0], dtype=DTYPE), torch.tensor([0.0, 0.2], dtype=DTYPE)]
    for kind in (PER_TENSOR, GLOBAL):
        d = [t.clone() for t in delta]
        ascent_step(d, g, ascent_step_size=1.0, perturbation_radius=0.5, projection=kind)
        assert_all_close(d, g, rtol=1e-12, atol=0)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("projection", [PER_TENSOR, GLOBAL])
@pytest.mark.parametrize("steps", [1, 2])
def test_amp_gradient_is_taken_at_the_projected_ascent_point(batchnorm, projection, steps):
    radius, step_size = 0.3, 1.0
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    delta = [torch.zeros_like(t) for t in w]
    for _ in range(steps):
        delta = project(add(delta, grad_at(model, add(w, delta), batch), alpha=step_size), radius, projection)
    expected = grad_at(model, add(w, delta), batch)
    method = regularizers.create(
        "amp", perturbation_radius=radius, ascent_step_size=step_size, inner_steps=steps, projection=projection
    )
    closure = closure_for(model, batch)
    report = method.step(closure)
    assert_all_close(grads(model), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(report.metrics[PERTURBATION_NORM], norm(delta), rtol=1e-10, atol=0)
    assert (closure.forward_passes, closure.backward_passes) == (steps + 1, steps + 1)
    assert_all_equal(weights(model), w, what="weight")  # the contract: restored from a copy
    clean = grad_at(model, w, batch)
    assert max((a - c).abs().max().item() for a, c in zip(grads(model), clean, strict=True)) > 1e-6


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("hparams", [{"inner_steps": 0}, {"perturbation_radius": 0.0}, {"ascent_step_size": 0.0}])
def test_degenerate_amp_is_erm_exactly(batchnorm, hparams):
    batch = make_batch()
    erm_model, amp_model = make_model(batchnorm), make_model(batchnorm)
    regularizers.create("erm").step(closure_for(erm_model, batch))
    closure = closure_for(amp_model, batch)
    report = regularizers.create("amp", **hparams).step(closure)
    # Exact: δ = 0·(…) is exactly 0, so the last pass runs ERM's ops on the same weights and batch.
    assert_all_equal(grads(amp_model), grads(erm_model))
    assert report.metrics[PERTURBATION_NORM].item() == 0.0  # ‖0‖: an exact zero, not a rounded one
    assert closure.forward_passes == regularizers.create("amp", **hparams).cost(batchnorm).forward


def test_validation():
    amp = regularizers.get("amp")
    invalid = ({"perturbation_radius": -0.1}, {"ascent_step_size": -1.0}, {"inner_steps": -1}, {"projection": "l_inf"})
    for bad in invalid:
        with pytest.raises(ValueError, match=next(iter(bad))):
            amp(**bad)
    assert amp(inner_steps=0).cost(False).forward == 1
    with pytest.raises(ValueError, match="projection"):
        ascent_step([torch.zeros(1)], [torch.ones(1)], ascent_step_size=1.0, perturbation_radius=1.0, projection="x")
