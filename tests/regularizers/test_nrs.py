"""nrs: ∇L(w) + λ·∇_v KL(p_w ‖ p_v) at v = w + Δ, ‖Δ‖ = r, with p_w detached."""

from __future__ import annotations

import pytest
import torch
from reg_helpers import (
    BATCHNORM_IDS,
    EPS,
    add,
    assert_all_close,
    closure_for,
    finite_difference_grad,
    grad_at,
    grads,
    make_batch,
    make_model,
    norm,
    objective_at,
    scale,
    weights,
)

import regularizers
from regularizers import nrs as nrs_module
from regularizers.nrs import NEIGHBOUR_KL, NRS, gaussian_direction


def kl(clean_logits, logits):
    """KL(softmax(clean) ‖ softmax(logits)) averaged over the batch, from its definition."""
    p = torch.softmax(clean_logits, dim=-1)
    return (p * (torch.log(p) - torch.log_softmax(logits, dim=-1))).sum(dim=-1).mean()


def fixed_direction(model, radius, seed=3):
    generator = torch.Generator().manual_seed(seed)
    z = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in model.parameters()]
    return scale(z, radius / norm(z))


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("neighbour", ["random", "adversarial"])
def test_zero_radius_has_zero_kl_and_is_erm(batchnorm, neighbour):
    batch = make_batch()
    erm_model, nrs_model = make_model(batchnorm), make_model(batchnorm)
    regularizers.create("erm").step(closure_for(erm_model, batch))
    report = regularizers.create("nrs", perturbation_radius=0.0, penalty_weight=5.0, neighbour=neighbour).step(
        closure_for(nrs_model, batch)
    )
    # Δ = 0·z is exactly 0: KL(p ‖ p) = Σ p·(log p − log p) = 0. Were the neighbour's log-probabilities
    # one rounding off (eps·|log p| each), the sum could reach 2 eps·max|log p| (p sums to 1).
    clean_logits = objective_at(erm_model, weights(erm_model), batch, objective=lambda logits, _: logits)
    log_p = torch.log_softmax(clean_logits, dim=-1)
    assert abs(report.metrics[NEIGHBOUR_KL].item()) <= 2 * EPS * log_p.abs().max().item()
    assert_all_close(grads(nrs_model), grads(erm_model), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_gradient_matches_finite_differences_of_the_objective(batchnorm, monkeypatch):
    """Φ(w) = L(w) + λ·KL(p_{w₀} ‖ p_{w+Δ}) with Δ fixed and p_{w₀} frozen: ∇Φ(w₀) is the update."""
    radius, penalty = 0.4, 2.0
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    delta = fixed_direction(model, radius)
    monkeypatch.setattr(nrs_module, "gaussian_direction", lambda parameters, r: scale(delta, r / radius))
    clean_logits = objective_at(model, w, batch, objective=lambda logits, _: logits)

    def objective(point):
        loss = objective_at(model, point, batch)
        neighbour_kl = objective_at(model, add(point, delta), batch, lambda logits, _: kl(clean_logits, logits))
        return loss + penalty * neighbour_kl

    target = finite_difference_grad(objective, w, step=1e-5)
    closure = closure_for(model, batch)
    report = regularizers.create("nrs", perturbation_radius=radius, penalty_weight=penalty).step(closure)
    assert_all_close(grads(model), target, rtol=1e-6, atol=1e-8)
    expected_kl = objective_at(model, add(w, delta), batch, lambda logits, _: kl(clean_logits, logits))
    torch.testing.assert_close(report.metrics[NEIGHBOUR_KL], expected_kl, rtol=1e-10, atol=1e-15)
    assert expected_kl > 1e-4
    assert (closure.forward_passes, closure.backward_passes) == (2, 2)

    # Differentiating through the clean distribution as well gives a different gradient: the
    # comparison above really checks that p_w is detached.
    def undetached(point):
        logits = objective_at(model, point, batch, objective=lambda out, _: out)
        loss = objective_at(model, point, batch)
        return loss + penalty * objective_at(model, add(point, delta), batch, lambda out, _: kl(logits, out))

    other = finite_difference_grad(undetached, w, step=1e-5)
    assert norm(add(other, target, alpha=-1.0)) > 1e-3 * norm(target)


def test_adversarial_neighbour_is_the_normalized_kl_ascent_from_the_random_start(monkeypatch):
    radius, penalty = 0.3, 1.5
    model, batch = make_model(), make_batch()
    w = weights(model)
    start = fixed_direction(model, radius, seed=5)
    monkeypatch.setattr(nrs_module, "gaussian_direction", lambda parameters, r: scale(start, r / radius))
    found = []
    original = NRS.find_neighbour
    monkeypatch.setattr(NRS, "find_neighbour", lambda self, *a: found.append(original(self, *a)) or found[-1])

    clean_logits = objective_at(model, w, batch, objective=lambda logits, _: logits)
    to_clean = lambda logits, _: kl(clean_logits, logits)  # noqa: E731
    ascent = finite_difference_grad(lambda v: objective_at(model, v, batch, to_clean), add(w, start), step=1e-5)
    expected_delta = scale(ascent, radius / norm(ascent))

    closure = closure_for(model, batch)
    method = regularizers.create("nrs", perturbation_radius=radius, penalty_weight=penalty, neighbour="adversarial")
    method.step(closure)
    (delta,) = found
    assert norm(delta).item() == pytest.approx(radius, rel=1e-10)
    assert_all_close(delta, expected_delta, rtol=1e-5, atol=1e-8, what="neighbour")
    expected = add(grad_at(model, w, batch), grad_at(model, add(w, delta), batch, to_clean), alpha=penalty)
    assert_all_close(grads(model), expected, rtol=1e-9, atol=1e-12)
    assert (closure.forward_passes, closure.backward_passes) == (3, 3)
    # The adversarial neighbour raises the KL above the random start it began from.
    assert objective_at(model, add(w, delta), batch, to_clean) > objective_at(model, add(w, start), batch, to_clean)


def test_gaussian_direction_has_norm_r_and_is_random():
    params = [torch.zeros(3, 4, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)]
    torch.manual_seed(0)
    first = gaussian_direction(params, 0.05)
    second = gaussian_direction(params, 0.05)
    torch.manual_seed(0)
    again = gaussian_direction(params, 0.05)
    # r·‖z‖/(‖z‖ + 1e-12) with ‖z‖ ≈ 4: 2.5e-13 below r, plus ~20 roundings of the norm.
    assert norm(first).item() == pytest.approx(0.05, rel=1e-12)
    assert not torch.equal(first[0], second[0])
    # Same seed, same process, same ops: bit-exact by contract (the global RNG drives the draw).
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_kl_objective_works_in_low_precision_logits():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=generator).to(torch.bfloat16)
    shifted = logits.float() + 0.1 * torch.randn(4, 3, generator=generator)
    value = nrs_module.kl_to_clean(logits)(shifted, None)
    # KL ≈ ½·Var(0.1·noise) ≈ 1e-3 here; rounding in float32 (≤ 3 classes · a few eps·|log p|) is
    # ~1e-6, so a positive value is a real divergence, not noise around 0.
    assert value.dtype == torch.float32 and value > 1e3 * torch.finfo(torch.float32).eps


def test_validation():
    with pytest.raises(ValueError, match="perturbation_radius"):
        NRS(perturbation_radius=-1.0)
    with pytest.raises(ValueError, match="penalty_weight"):
        NRS(penalty_weight=-1.0)
    with pytest.raises(ValueError, match="neighbour"):
        NRS(neighbour="worst")
