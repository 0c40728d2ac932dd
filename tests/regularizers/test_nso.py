"""nso: G = 1/(2k) Σⱼ [∇L(W+Uⱼ) + ∇L(W−Uⱼ)], Uⱼ ~ N(0, σ²I)."""

from __future__ import annotations

import pytest
import torch
from reg_helpers import (
    BATCHNORM_IDS,
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
    objective_at,
    weights,
)
from torch import nn

import regularizers
from regularizers import BatchClosure
from regularizers import nso as nso_module
from regularizers.nso import PERTURBED_LOSS

DTYPE = torch.float64


@pytest.fixture
def recorded_noise(monkeypatch):
    """Every noise draw the method makes: (the buffers it filled, a copy of what they held)."""
    draws: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    original = nso_module.gaussian_noise_

    def spy(buffers, std):
        original(buffers, std)
        draws.append((list(buffers), [b.clone() for b in buffers]))

    monkeypatch.setattr(nso_module, "gaussian_noise_", spy)
    return draws


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("samples", [1, 3])
def test_zero_noise_is_erm(batchnorm, samples):
    batch = make_batch()
    erm_model, nso_model = make_model(batchnorm), make_model(batchnorm)
    erm_report = regularizers.create("erm").step(closure_for(erm_model, batch))
    report = regularizers.create("nso", noise_scale=0.0, num_samples=samples).step(closure_for(nso_model, batch))
    # σ = 0 draws exact zeros, so every point is w and every pass runs ERM's ops on it.
    points = 2 * samples
    if samples == 1:  # (g + g)·½ is g exactly: doubling and halving do not round
        assert_all_equal(grads(nso_model), grads(erm_model))
    else:
        # Summing 2k copies of g rounds up to 2k − 1 times, then ·1/(2k) once more.
        assert_all_close(grads(nso_model), grads(erm_model), rtol=(points + 1) * EPS, atol=0)
    # Without BatchNorm the loss is the mean of 2k equal losses (the same bound); with it, ERM's loss.
    torch.testing.assert_close(report.loss, erm_report.loss, rtol=(points + 1) * EPS, atol=0)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("mix", [0.0, 0.4])
def test_two_point_estimator_with_the_drawn_noise(batchnorm, mix, recorded_noise):
    sigma, samples = 0.05, 2
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    closure = closure_for(model, batch)
    report = regularizers.create("nso", noise_scale=sigma, num_samples=samples, clean_gradient_weight=mix).step(closure)

    assert len(recorded_noise) == samples
    points = [add(w, u, alpha=sign) for _, u in recorded_noise for sign in (1.0, -1.0)]
    estimate = [sum(parts) / len(points) for parts in zip(*(grad_at(model, p, batch) for p in points), strict=True)]
    clean = grad_at(model, w, batch)
    expected = [(1 - mix) * e + mix * c for e, c in zip(estimate, clean, strict=True)]
    assert_all_close(grads(model), expected, rtol=1e-9, atol=1e-12)
    assert_all_equal(weights(model), w, what="weight")  # the contract: restored from a copy

    perturbed_loss = torch.stack([objective_at(model, p, batch) for p in points]).mean()
    torch.testing.assert_close(report.metrics[PERTURBED_LOSS], perturbed_loss, rtol=1e-12, atol=0)
    clean_loss = objective_at(model, w, batch)
    uses_clean_pass = batchnorm or mix > 0
    torch.testing.assert_close(report.loss, clean_loss if uses_clean_pass else perturbed_loss, rtol=1e-12, atol=0)
    assert not torch.allclose(perturbed_loss, clean_loss, rtol=1e-9, atol=0)  # the two reports can be told apart

    # One noise buffer serves every draw and both signs; σ is its standard deviation.
    buffers = [[b.data_ptr() for b in filled] for filled, _ in recorded_noise]
    assert all(ptrs == buffers[0] for ptrs in buffers)
    values = torch.cat([u.flatten() for _, draw in recorded_noise for u in draw])
    assert values.std().item() == pytest.approx(sigma, rel=0.3)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("samples", [1, 2, 3])
@pytest.mark.parametrize("mix", [0.0, 0.5])
def test_cost_counts_the_clean_pass_only_when_needed(batchnorm, samples, mix):
    model, batch = make_model(batchnorm), make_batch()
    before = batchnorm_buffers(model)
    method = regularizers.create("nso", num_samples=samples, clean_gradient_weight=mix)
    closure = closure_for(model, batch)
    method.step(closure)
    expected = {
        (False, False): (2 * samples, 2 * samples),
        (True, False): (2 * samples + 1, 2 * samples),
        (False, True): (2 * samples + 1, 2 * samples + 1),
        (True, True): (2 * samples + 1, 2 * samples + 1),
    }[(batchnorm, mix > 0)]
    assert (closure.forward_passes, closure.backward_passes) == expected
    cost = method.cost(batchnorm)
    assert (cost.forward, cost.backward) == expected
    if batchnorm:  # the clean forward updated the statistics, once
        assert batchnorm_buffers(model)[-1].item() == before[-1].item() + 1


def test_full_clean_weight_is_erm():
    batch = make_batch()
    erm_model, nso_model = make_model(), make_model()
    regularizers.create("erm").step(closure_for(erm_model, batch))
    regularizers.create("nso", noise_scale=0.3, clean_gradient_weight=1.0).step(closure_for(nso_model, batch))
    # Exact: torch.lerp(a, b, 1) computes b − (b − a)·0 = b, and b is ERM's gradient from ERM's ops.
    assert_all_equal(grads(nso_model), grads(erm_model))


# --- the estimator in expectation: ∇L + (σ²/2)·∇tr(H) on a model whose Hessian is exact ------------


def _quartic(scores: torch.Tensor) -> torch.Tensor:
    return scores**4 / 4 + scores**3 / 2 + scores**2


class QuarticModel(nn.Module):
    """L(a, b) = mean_i f(x_i·[a; b]) with f(s) = s⁴/4 + s³/2 + s²: ∇L is a cubic polynomial."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(3, generator=generator, dtype=DTYPE) * 0.5)
        self.b = nn.Parameter(torch.randn(2, generator=generator, dtype=DTYPE) * 0.5)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ torch.cat([self.a, self.b])


def _loss(inputs, flat_weights):
    return _quartic(flat_weights @ inputs.T).mean(dim=-1)


@pytest.mark.parametrize(("samples", "steps"), [(1, 2000), (2, 1000)])
def test_expectation_is_gradient_plus_half_sigma_squared_grad_trace_hessian(samples, steps):
    """For a quartic loss the identity E[G] = ∇L + (σ²/2)∇tr(∇²L) holds exactly (odd Taylor terms cancel)."""
    sigma = 0.1
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(6, 5, generator=generator, dtype=DTYPE)
    model = QuarticModel(generator)
    w = torch.cat([model.a, model.b]).detach()
    loss = lambda v: _loss(inputs, v)  # noqa: E731
    gradient = torch.autograd.functional.jacobian(loss, w)
    trace_hessian = lambda v: torch.trace(torch.autograd.functional.hessian(loss, v, create_graph=True))  # noqa: E731
    grad_trace = torch.autograd.functional.jacobian(trace_hessian, w)
    target = gradient + sigma**2 / 2 * grad_trace

    method = regularizers.create("nso", noise_scale=sigma, num_samples=samples)
    torch.manual_seed(1234)
    draws = []
    for _ in range(steps):  # a closure serves one step (its first pass clears p.grad)
        method.step(BatchClosure(model, inputs, torch.zeros(6), lambda scores, _: _quartic(scores).mean()))
        draws.append(torch.cat([model.a.grad, model.b.grad]))
    draws = torch.stack(draws)
    mean, standard_error = draws.mean(0), draws.std(0) / steps**0.5

    assert ((mean - target).abs() < 5 * standard_error).all(), f"z-scores {(mean - target) / standard_error}"
    # ∇L alone is far outside the error bars: the curvature term is really there and really checked.
    assert ((mean - gradient).abs() / standard_error).max() > 20

    # The antithetic pair cancels the H·U term: lower variance than the one-point estimator ∇L(W+U)
    # averaged over as many gradient evaluations (2k).
    noise = torch.randn(20000, 5, generator=generator, dtype=DTYPE) * sigma
    points = (w + noise).requires_grad_(True)
    (one_point,) = torch.autograd.grad(loss(points).sum(), points)
    one_point_variance = one_point.var(0).sum() / (2 * samples)
    two_point_variance = draws.var(0).sum()
    assert two_point_variance < 0.25 * one_point_variance


def test_validation():
    nso = regularizers.get("nso")
    with pytest.raises(ValueError, match="noise_scale"):
        nso(noise_scale=-0.01)
    with pytest.raises(ValueError, match="num_samples"):
        nso(num_samples=0)
    with pytest.raises(ValueError, match="clean_gradient_weight"):
        nso(clean_gradient_weight=1.5)
