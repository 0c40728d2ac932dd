"""esam: ∇L_{B⁺}(w + (ρ/β)·m⊙g/‖m⊙g‖), m ~ Bernoulli(β) per tensor, B⁺ the γ·|B| samples whose loss rose most."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
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
    objective_at,
    weights,
)

import regularizers
from regularizers import esam as esam_module
from regularizers.esam import ESAM_NORM_EPSILON, keep_mask
from regularizers.testing import check_regularizer

#: The training loss of these tests: label smoothing makes a per-sample loss that plain cross-entropy is not.
SMOOTHED = functools.partial(F.cross_entropy, label_smoothing=0.1)


def per_sample(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=0.1, reduction="none")


def hand_esam(model, batch, radius: float, keep: list[bool], fraction: float) -> tuple[list[torch.Tensor], int]:
    """The ESAM gradient written out with independent autograd: (gradient, |B⁺|)."""
    w = weights(model)
    g = grad_at(model, w, batch, SMOOTHED)
    kept_norm = norm([gi for gi, k in zip(g, keep, strict=True) if k])
    epsilon = [
        gi * (radius / (kept_norm + ESAM_NORM_EPSILON)) if k else torch.zeros_like(gi)
        for gi, k in zip(g, keep, strict=True)
    ]
    point = add(w, epsilon)
    size = batch[1].shape[0]
    count = max(1, math.floor(fraction * size))
    rise = objective_at(model, point, batch, per_sample) - objective_at(model, w, batch, per_sample)
    chosen = torch.topk(rise, count).indices
    subset_loss = lambda logits, targets: SMOOTHED(logits[chosen], targets[chosen])  # noqa: E731
    return grad_at(model, point, batch, subset_loss), count


def run(model, batch, **hparams):
    method = regularizers.create("esam", **hparams)
    closure = closure_for(model, batch, SMOOTHED)
    report = method.step(closure)
    return grads(model), report, closure


def test_official_defaults():
    method = regularizers.create("esam")
    # dydjw9/Efficient_SAM: utils/options.py --rho default 0.05; run.sh's ResNet-18 CIFAR lines --beta 0.6
    # --gamma 0.5 (options.py's own defaults, 1.0 and 1.0, are plain SAM); utils/Esam.py guards ‖g‖ with 1e-7.
    assert (method.perturbation_radius, method.weight_keep_probability, method.sample_fraction) == (0.05, 0.6, 0.5)
    assert method.norm_epsilon == ESAM_NORM_EPSILON == 1e-7


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_beta_and_gamma_one_is_sam(batchnorm):
    batch = make_batch()
    sam_model, esam_model, guarded_model = make_model(batchnorm), make_model(batchnorm), make_model(batchnorm)
    sam = regularizers.create("sam", perturbation_radius=0.1)
    sam_report = sam.step(closure_for(sam_model, batch, SMOOTHED))
    everything = {"perturbation_radius": 0.1, "weight_keep_probability": 1.0, "sample_fraction": 1.0}
    actual, report, _ = run(esam_model, batch, norm_epsilon=1e-12, **everything)
    # Exact: with SAM's guard, β = 1 keeps every tensor (ρ/1 = ρ) and γ = 1 the whole batch, so the step
    # runs SAM's ops on the same inputs.
    assert_all_equal(actual, grads(sam_model))
    assert torch.equal(report.loss, sam_report.loss)
    # With the authors' guard, ε shrinks by ρ·1e-7/(‖g‖ + 1e-7) ≤ 1.6e-8 in norm (ρ = 0.1, ‖g‖ ≈ 0.64 or
    # 3.3), and the gradient at w + ε moves by at most ‖∇²L‖ times that; ‖∇²L‖ is O(1) for this tiny net.
    guarded, _, _ = run(guarded_model, batch, **everything)
    assert_all_close(guarded, grads(sam_model), rtol=0, atol=1e-7)


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_sharpest_half_of_the_batch(batchnorm):
    model, batch = make_model(batchnorm), make_batch()
    expected, count = hand_esam(model, batch, radius=0.3, keep=[True] * len(weights(model)), fraction=0.5)
    actual, report, closure = run(model, batch, perturbation_radius=0.3, weight_keep_probability=1.0)
    # Two evaluations of one formula by different op orders (the method's foreach norm and vmap'd
    # per-sample losses): float64 agrees to ~1e-15 relative; 1e-9 leaves room for the chained ops.
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    assert count == 4
    assert report.metrics["selected_fraction"].item() == 0.5
    assert report.metrics["perturbed_fraction"].item() == 1.0
    assert (closure.forward_passes, closure.backward_passes) == (2, 2)
    # The subset's gradient is not the whole batch's (SAM's): the comparison above can fail.
    sam_model = make_model(batchnorm)
    regularizers.create("sam", perturbation_radius=0.3).step(closure_for(sam_model, batch, SMOOTHED))
    assert max((a - s).abs().max().item() for a, s in zip(actual, grads(sam_model), strict=True)) > 1e-4


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_only_the_kept_tensors_are_perturbed(batchnorm, monkeypatch):
    model, batch = make_model(batchnorm), make_batch()
    tensors = len(weights(model))
    keep = [index % 2 == 0 for index in range(tensors)]  # weight, bias, weight, ...: some of each
    drawn = []

    def fixed_mask(count, probability):
        drawn.append((count, probability))
        return keep

    monkeypatch.setattr(esam_module, "keep_mask", fixed_mask)
    beta = 0.5
    # ε = (ρ/β)·m⊙g/‖m⊙g‖: the hand version takes the radius ρ/β.
    expected, _ = hand_esam(model, batch, radius=0.2 / beta, keep=keep, fraction=1.0)
    actual, report, closure = run(
        model, batch, perturbation_radius=0.2, weight_keep_probability=beta, sample_fraction=1
    )
    assert drawn == [(tensors, beta)]
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-12)
    kept = sum(w.numel() for w, k in zip(weights(model), keep, strict=True) if k)
    assert report.metrics["perturbed_fraction"].item() == pytest.approx(kept / sum(w.numel() for w in weights(model)))
    assert report.metrics["selected_fraction"].item() == 1.0
    assert (closure.forward_passes, closure.backward_passes) == (2, 2)
    # Perturbing every tensor gives another gradient: the mask matters.
    every, _ = hand_esam(model, batch, radius=0.2 / beta, keep=[True] * tensors, fraction=1.0)
    assert max((a - e).abs().max().item() for a, e in zip(actual, every, strict=True)) > 1e-5


def test_no_tensor_kept_is_the_clean_gradient(monkeypatch):
    monkeypatch.setattr(esam_module, "keep_mask", lambda count, probability: [False] * count)
    batch = make_batch()
    erm_model, esam_model = make_model(), make_model()
    regularizers.create("erm").step(closure_for(erm_model, batch, SMOOTHED))
    actual, report, _ = run(esam_model, batch, weight_keep_probability=0.5, sample_fraction=1.0)
    # Exact: nothing is added to the weights, so the second pass repeats ERM's ops at w.
    assert_all_equal(actual, grads(erm_model))
    assert report.metrics["perturbed_fraction"].item() == 0.0


def test_keep_mask_draws_bernoulli_from_the_global_rng():
    torch.manual_seed(3)
    mask = keep_mask(20_000, 0.6)
    # Binomial(20000, 0.6)/20000 has standard deviation sqrt(0.24/20000) ≈ 0.0035: 5σ ≈ 0.017.
    assert sum(mask) / len(mask) == pytest.approx(0.6, abs=0.017)
    torch.manual_seed(3)
    assert keep_mask(20_000, 0.6) == mask  # the global RNG, seeded by the training loop
    state = torch.get_rng_state()
    assert keep_mask(5, 1.0) == [True] * 5
    assert torch.equal(torch.get_rng_state(), state)  # β = 1 draws nothing


@pytest.mark.parametrize(("fraction", "size", "count"), [(0.5, 8, 4), (0.3, 8, 2), (0.01, 8, 1), (0.99, 8, 7)])
def test_selected_count_is_the_floor_of_gamma_times_the_batch(fraction, size, count):
    model, batch = make_model(), make_batch(size=size)
    _, report, closure = run(model, batch, sample_fraction=fraction)
    assert report.metrics["selected_fraction"].item() == count / size
    assert (closure.forward_passes, closure.backward_passes) == (2, 2)


def test_validation():
    for name in ("weight_keep_probability", "sample_fraction"):
        for bad in (0.0, -0.1, 1.5):
            with pytest.raises(regularizers.RegistryError, match=name):
                regularizers.create("esam", **{name: bad})


@pytest.mark.parametrize(
    "hparams",
    [
        {"weight_keep_probability": 1.0, "sample_fraction": 1.0, "norm_epsilon": 1e-12},
        {"weight_keep_probability": 1.0},
        {"sample_fraction": 1.0},
        {"weight_keep_probability": 0.2, "sample_fraction": 0.1},  # often no tensor kept; one sample of six
    ],
)
def test_variants_conform(hparams):
    check_regularizer(regularizers.create("esam", **hparams))
