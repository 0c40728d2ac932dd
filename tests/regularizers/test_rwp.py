"""rwp: α·∇L(w + ε) + (1 − α)·∇L(w), ε filter-wise Gaussian with std γ·‖W_filter‖."""

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
    weights,
)

import regularizers
from regularizers import rwp as rwp_module
from regularizers.rwp import filter_wise_noise

DTYPE = torch.float64


@pytest.fixture
def recorded_noise(monkeypatch):
    draws: list[torch.Tensor] = []
    original = rwp_module.filter_wise_noise

    def spy(weight, relative_scale):
        noise = original(weight, relative_scale)
        draws.append(noise.clone())
        return noise

    monkeypatch.setattr(rwp_module, "filter_wise_noise", spy)
    return draws


def test_filter_wise_noise_scales_with_each_filter_norm():
    torch.manual_seed(0)
    weight = torch.zeros(4, 50, 40, dtype=DTYPE)
    for i, value in enumerate((0.0, 0.01, 1.0, 3.0)):
        weight[i] = value
    gamma = 0.05
    noise = filter_wise_noise(weight, gamma)
    # A zero filter is not perturbed: its std is 0·γ, and z·0 is an exact (signed) zero.
    assert torch.equal(noise[0], torch.zeros_like(noise[0]))
    for i in range(1, 4):
        expected = gamma * weight[i].norm().item()
        assert noise[i].std().item() == pytest.approx(expected, rel=0.05)
        assert noise[i].mean().item() == pytest.approx(0.0, abs=4 * expected / 2000**0.5)


def test_one_dimensional_tensors_use_the_whole_tensor_norm():
    torch.manual_seed(0)
    bias = torch.linspace(-1, 2, 4000, dtype=DTYPE)
    noise = filter_wise_noise(bias, 0.02)
    assert noise.std().item() == pytest.approx(0.02 * bias.norm().item(), rel=0.05)
    # Element-wise scaling would give a std that follows |b_i|; here both halves share one scale.
    assert noise[:2000].std().item() == pytest.approx(noise[2000:].std().item(), rel=0.1)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_mixture_of_clean_and_perturbed_gradients(batchnorm, alpha, recorded_noise):
    model, batch = make_model(batchnorm), make_batch()
    w = weights(model)
    closure = closure_for(model, batch)
    regularizers.create("rwp", noise_scale=0.05, perturbed_gradient_weight=alpha).step(closure)
    assert len(recorded_noise) == len(w)
    perturbed = grad_at(model, add(w, recorded_noise), batch)
    clean = grad_at(model, w, batch)
    expected = [alpha * p + (1 - alpha) * c for p, c in zip(perturbed, clean, strict=True)]
    assert_all_close(grads(model), expected, rtol=1e-9, atol=1e-12)
    assert_all_equal(weights(model), w, what="weight")  # the contract: restored from a copy
    expected_passes = (2, 2) if alpha < 1 else (2, 1)  # α = 1 needs no clean gradient
    assert (closure.forward_passes, closure.backward_passes) == expected_passes
    assert max((a - c).abs().max().item() for a, c in zip(grads(model), clean, strict=True)) > 1e-7


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("hparams", [{"perturbed_gradient_weight": 0.0}, {"noise_scale": 0.0}])
def test_degenerate_rwp_is_erm_exactly(batchnorm, hparams):
    batch = make_batch()
    erm_model, rwp_model = make_model(batchnorm), make_model(batchnorm)
    regularizers.create("erm").step(closure_for(erm_model, batch))
    closure = closure_for(rwp_model, batch)
    regularizers.create("rwp", **hparams).step(closure)
    # Exact: α = 0 stops after ERM's pass; γ = 0 adds exact zeros, so both passes repeat ERM's ops
    # at w and lerp(g, g, ½) = g + ½·0 = g.
    assert_all_equal(grads(rwp_model), grads(erm_model))
    if hparams.get("perturbed_gradient_weight") == 0.0:
        assert (closure.forward_passes, closure.backward_passes) == (1, 1)


def test_validation():
    rwp = regularizers.get("rwp")
    with pytest.raises(ValueError, match="noise_scale"):
        rwp(noise_scale=-0.1)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="perturbed_gradient_weight"):
            rwp(perturbed_gradient_weight=bad)
