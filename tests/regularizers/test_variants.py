"""The reference variants (ASAM's tensor rule, GNP's clean term and norm, NSO one-point), NRS under
bf16 autocast, the running-statistics policy for every normalization layer, and the gradient rule.

Hand-derived values use ``Linear(1, 1)`` with w = 1, b = 0, x = 1, target 0 and squared error
L = (w·x + b)², so g = (∂L/∂w, ∂L/∂b) = (2, 2) and the gradient at any point (w', b') is 2(w' + b')
for both tensors. Float64 tolerances: each expected value is ≲ 20 float64 operations, each off by
at most half an ulp, so 20·2⁻⁵³ ≈ 2.2e-15 relative bounds the rounding on either side.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from reg_helpers import (
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
from torch import nn

import regularizers
from regularizers import BatchClosure
from regularizers import nso as nso_module
from regularizers.nrs import NEIGHBOUR_KL, gaussian_direction, kl_to_clean

DTYPE = torch.float64
#: Relative tolerance of the hand-derived float64 values (module docstring): 2·(20·2⁻⁵³) on both sides.
HAND_RTOL = 5e-15


# --- models -------------------------------------------------------------------------------------


def linear_toy() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model = nn.Linear(1, 1).to(DTYPE)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    return model, (torch.ones(1, 1, dtype=DTYPE), torch.zeros(1, 1, dtype=DTYPE))


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs - targets) ** 2).sum()


def toy_gradient(name: str, **hparams) -> tuple[float, float]:
    """(∂/∂w, ∂/∂b) the method leaves on the Linear(1, 1) toy."""
    model, batch = linear_toy()
    regularizers.create(name, **hparams).step(closure_for(model, batch, loss_fn=squared_error))
    return model.weight.grad.item(), model.bias.grad.item()


def make_cnn(norm_layer: str = "batchnorm", seed: int = 0) -> nn.Module:
    """conv 3×3 (with bias) → norm → tanh → linear on 2×4×4 inputs, float64, training mode."""
    torch.manual_seed(seed)
    norms = {
        "batchnorm": lambda: nn.BatchNorm2d(3),
        "instancenorm": lambda: nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
    }
    return (
        nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), norms[norm_layer](), nn.Tanh(), nn.Flatten(), nn.Linear(48, 3))
        .to(DTYPE)
        .train()
    )


def cnn_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, 2, 4, 4, generator=generator, dtype=DTYPE), torch.randint(0, 3, (8,), generator=generator)


MODELS = {
    "mlp": (lambda: make_model(batchnorm=False), make_batch),
    "batchnorm_cnn": (make_cnn, cnn_batch),
}


def named_weights_mask(model: nn.Module) -> list[bool]:
    return ["weight" in name for name, p in model.named_parameters() if p.requires_grad]


# --- ASAM: which tensors get T = |w| + η --------------------------------------------------------


def test_asam_authors_rule_on_the_linear_toy():
    """SamsungLabs/ASAM: T = |w| + η on the weight, T = 1 on the bias (issue: 3.4213)."""
    radius, eta = 0.5, 0.01
    t_w, t_b = 1.0 + eta, 1.0
    scaled_norm = math.hypot(t_w * 2.0, t_b * 2.0)  # ‖T·g‖
    point = 1.0 + radius * (t_w * t_w * 2.0 + t_b * t_b * 2.0) / scaled_norm  # w' + b'
    expected = 2.0 * point
    grad_w, grad_b = toy_gradient("asam", perturbation_radius=radius)  # the defaults: authors' rule, η = 0.01
    assert grad_w == pytest.approx(expected, rel=HAND_RTOL, abs=0) and grad_b == pytest.approx(
        expected, rel=HAND_RTOL, abs=0
    )
    assert grad_w == pytest.approx(3.4213, abs=5e-5)


@pytest.mark.parametrize(("eta", "figure"), [(0.01, 3.0100), (0.0, 3.0)])
def test_asam_every_tensor_on_the_linear_toy(eta, figure):
    """T = |w| + η everywhere (issue: 3.0100 with η = 0.01); η = 0 is davda54/sam's adaptive port:
    T_b = |0| = 0, so only w moves, by ρ·T_w²g_w/‖Tg‖ = 0.5."""
    radius = 0.5
    t_w, t_b = 1.0 + eta, 0.0 + eta
    scaled_norm = math.hypot(t_w * 2.0, t_b * 2.0)
    expected = 2.0 * (1.0 + radius * (t_w * t_w * 2.0 + t_b * t_b * 2.0) / scaled_norm)
    grad_w, grad_b = toy_gradient("asam", perturbation_radius=radius, eta=eta, adaptive_tensors="all")
    assert grad_w == pytest.approx(expected, rel=HAND_RTOL, abs=0) and grad_b == pytest.approx(
        expected, rel=HAND_RTOL, abs=0
    )
    assert grad_w == pytest.approx(figure, abs=5e-5)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_asam_authors_rule_on_models_with_biases_and_batchnorm(model_name):
    """T = |w| + η on tensors named *weight* (conv, linear, BatchNorm scale), T = 1 on biases and shift."""
    make, batch_of = MODELS[model_name]
    model, batch = make(), batch_of()
    radius, eta = 0.5, 0.01
    w = weights(model)
    mask = named_weights_mask(model)
    assert any(mask) and not all(mask)  # both kinds of tensor are present
    g = grad_at(model, w, batch)
    operator = [p.abs() + eta if adaptive else torch.ones_like(p) for p, adaptive in zip(w, mask, strict=True)]
    scaled = [t * gi for t, gi in zip(operator, g, strict=True)]
    ascent = [t * t * gi * (radius / norm(scaled)) for t, gi in zip(operator, g, strict=True)]
    expected = grad_at(model, add(w, ascent), batch)

    every_tensor_model = copy.deepcopy(model)
    regularizers.create("asam", perturbation_radius=radius, eta=eta).step(closure_for(model, batch))
    # ~a few hundred float64 operations per entry; 1e-9 relative is far above their rounding.
    assert_all_close(grads(model), expected, rtol=1e-9, atol=1e-12)
    regularizers.create("asam", perturbation_radius=radius, eta=eta, adaptive_tensors="all").step(
        closure_for(every_tensor_model, batch)
    )
    differences = [(a - b).abs().max().item() for a, b in zip(grads(model), grads(every_tensor_model), strict=True)]
    assert max(differences) > 1e-6  # the two rules lead to different points: the test can tell them apart


def test_asam_rejects_a_parameter_outside_the_model():
    model, batch = linear_toy()
    stranger = nn.Parameter(torch.ones(1, dtype=DTYPE))
    closure = BatchClosure(model, *batch, squared_error, parameters=[*model.parameters(), stranger])
    with pytest.raises(ValueError, match="not a parameter of closure.model"):
        regularizers.create("asam").step(closure)


# --- GNP: the clean term and the norm -----------------------------------------------------------

GNP_RADIUS, GNP_ALPHA = 0.1, 0.8
#: w' + b' at the perturbed point w + r·g/‖g‖ with g = (2, 2): each coordinate moves by r/√2.
GNP_POINT = 1.0 + GNP_RADIUS * math.sqrt(2.0)


def test_gnp_authors_default_normalizes_the_clean_gradient():
    """(1−α)·g/‖g‖ + α·∇L(w + r·g/‖g‖) (zhaoyang-0204/gnp, norm_perturbations=True; issue: 1.96770)."""
    expected = (1 - GNP_ALPHA) * 2.0 / math.sqrt(8.0) + GNP_ALPHA * 2.0 * GNP_POINT
    grad_w, grad_b = toy_gradient("gnp", perturbation_radius=GNP_RADIUS, perturbed_gradient_weight=GNP_ALPHA)
    assert grad_w == pytest.approx(expected, rel=HAND_RTOL, abs=0) and grad_b == pytest.approx(
        expected, rel=HAND_RTOL, abs=0
    )
    assert grad_w == pytest.approx(1.96770, abs=5e-6)


def test_gnp_paper_form_uses_the_raw_clean_gradient():
    """(1−α)·g + α·∇L(w + r·g/‖g‖) (Zhao et al. 2022, eq. 8; issue: 2.22627)."""
    expected = (1 - GNP_ALPHA) * 2.0 + GNP_ALPHA * 2.0 * GNP_POINT
    grad_w, _ = toy_gradient(
        "gnp", perturbation_radius=GNP_RADIUS, perturbed_gradient_weight=GNP_ALPHA, normalize_clean_gradient=False
    )
    assert grad_w == pytest.approx(expected, rel=HAND_RTOL, abs=0)
    assert grad_w == pytest.approx(2.22627, abs=5e-6)


def test_gnp_exact_norm_has_no_epsilon_error():
    """The default divides by ‖g‖ exactly; the 1e-12 guard moves the result by ~4e-14 relative,
    about 7× the float64 tolerance, so only the exact division meets the hand value."""
    expected = (1 - GNP_ALPHA) * 2.0 + GNP_ALPHA * 2.0 * GNP_POINT
    hparams = {
        "perturbation_radius": GNP_RADIUS,
        "perturbed_gradient_weight": GNP_ALPHA,
        "normalize_clean_gradient": False,
    }
    exact, _ = toy_gradient("gnp", **hparams)
    guarded, _ = toy_gradient("gnp", norm_epsilon=1e-12, **hparams)
    assert exact == pytest.approx(expected, rel=HAND_RTOL, abs=0)
    assert guarded != pytest.approx(expected, rel=HAND_RTOL, abs=0)
    # The guard shrinks the step by the factor ‖g‖/(‖g‖ + 1e-12): that much and no more.
    shrunk = 1.0 + GNP_RADIUS * math.sqrt(2.0) * math.sqrt(8.0) / (math.sqrt(8.0) + 1e-12)
    assert guarded == pytest.approx((1 - GNP_ALPHA) * 2.0 + GNP_ALPHA * 2.0 * shrunk, rel=HAND_RTOL, abs=0)


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("epsilon", [0.0, 1e-12])
def test_gnp_zero_gradient_gives_a_zero_step(normalized, epsilon):
    """At a stationary point g = 0 there is no direction: no 0/0, the gradient to apply is 0."""
    model, batch = linear_toy()
    with torch.no_grad():
        model.weight.zero_()
    regularizers.create("gnp", normalize_clean_gradient=normalized, norm_epsilon=epsilon).step(
        closure_for(model, batch, loss_fn=squared_error)
    )
    assert model.weight.grad.item() == 0.0 and model.bias.grad.item() == 0.0


def test_gnp_normalized_form_on_the_batchnorm_cnn():
    model, batch = make_cnn(), cnn_batch()
    w = weights(model)
    g = grad_at(model, w, batch)
    perturbed = grad_at(model, add(w, scale(g, GNP_RADIUS / norm(g))), batch)
    expected = [(1 - GNP_ALPHA) * a / norm(g) + GNP_ALPHA * b for a, b in zip(g, perturbed, strict=True)]
    regularizers.create("gnp", perturbation_radius=GNP_RADIUS, perturbed_gradient_weight=GNP_ALPHA).step(
        closure_for(model, batch)
    )
    assert_all_close(grads(model), expected, rtol=1e-9, atol=1e-12)


# --- NSO: the one-point estimator ---------------------------------------------------------------


@pytest.fixture
def recorded_noise(monkeypatch):
    """A copy of every noise draw NSO makes."""
    draws: list[list[torch.Tensor]] = []
    original = nso_module.gaussian_noise_

    def spy(buffers, std):
        original(buffers, std)
        draws.append([b.clone() for b in buffers])

    monkeypatch.setattr(nso_module, "gaussian_noise_", spy)
    return draws


@pytest.mark.parametrize("model_name", list(MODELS))
def test_nso_one_point_estimator_with_the_drawn_noise(model_name, recorded_noise):
    """G₁ = 1/k Σⱼ ∇L(W + Uⱼ): k perturbed passes, plus a clean forward with BatchNorm."""
    make, batch_of = MODELS[model_name]
    model, batch = make(), batch_of()
    samples = 3
    w = weights(model)
    method = regularizers.create("nso", noise_scale=0.05, num_samples=samples, estimator="one_point")
    closure = closure_for(model, batch)
    method.step(closure)
    assert len(recorded_noise) == samples
    points = [add(w, u) for u in recorded_noise]
    expected = [sum(parts) / samples for parts in zip(*(grad_at(model, p, batch) for p in points), strict=True)]
    assert_all_close(grads(model), expected, rtol=1e-9, atol=1e-12)
    assert_all_equal(weights(model), w, what="weight")
    has_batchnorm = model_name == "batchnorm_cnn"
    expected_passes = (samples + has_batchnorm, samples)
    assert (closure.forward_passes, closure.backward_passes) == expected_passes
    cost = method.cost(has_batchnorm)
    assert (cost.forward, cost.backward) == expected_passes
    # Not the two-point estimate of the same draws: the −U points are really left out.
    two_point = [
        sum(parts) / (2 * samples)
        for parts in zip(
            *(grad_at(model, add(w, u, alpha=s), batch) for u in recorded_noise for s in (1.0, -1.0)), strict=True
        )
    ]
    assert max((a - b).abs().max().item() for a, b in zip(grads(model), two_point, strict=True)) > 1e-6


# --- NRS under bf16 autocast ---------------------------------------------------------------------


def _nrs_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)).train()


def test_nrs_kl_under_bf16_autocast_matches_float32_at_the_smallest_radius():
    """r = 0.005, the bottom of NRS's search range: the KL under CPU bf16 autocast is within 5% of
    float32 (its passes run outside autocast), where two bf16 passes would be off by far more."""
    radius = 0.005
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(64, 16, generator=generator), torch.randint(0, 10, (64,), generator=generator)
    bf16 = functools.partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16)
    results = {}
    for name, autocast in (("float32", contextlib.nullcontext), ("bf16", bf16)):
        model = _nrs_mlp()
        torch.manual_seed(7)  # the same neighbour Δ for both
        report = regularizers.create("nrs", perturbation_radius=radius).step(
            BatchClosure(model, inputs, targets, F.cross_entropy, autocast=autocast)
        )
        results[name] = (report.metrics[NEIGHBOUR_KL].item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    kl32, grad32 = results["float32"]
    kl16, grad16 = results["bf16"]
    assert kl32 > 0.0
    assert abs(kl16 / kl32 - 1.0) < 0.05
    assert F.cosine_similarity(grad16, grad32, dim=0).item() > 0.99

    # What the check guards against: the same KL from two bf16-autocast passes is far off.
    model = _nrs_mlp()
    parameters = list(model.parameters())
    torch.manual_seed(7)
    with torch.no_grad(), bf16():
        clean_logits = model(inputs)
    delta = gaussian_direction(parameters, radius)
    with torch.no_grad():
        torch._foreach_add_(parameters, delta)
        with bf16():
            two_bf16_passes = kl_to_clean(clean_logits)(model(inputs), targets).item()
    assert abs(two_bf16_passes / kl32 - 1.0) > 0.5


# --- running statistics of every normalization layer that tracks them -----------------------------


def test_instancenorm_with_running_stats_counts_as_batchnorm():
    tracking = make_cnn("instancenorm")
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.InstanceNorm2d(3), nn.Flatten())
    assert closure_for(tracking, cnn_batch()).has_batchnorm
    assert not closure_for(plain, cnn_batch()).has_batchnorm


@pytest.mark.parametrize("name", regularizers.available())
def test_instancenorm_statistics_come_from_the_clean_pass_only(name):
    model, batch = make_cnn("instancenorm"), cnn_batch()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference(batch[0])  # exactly one clean forward
    after_clean = batchnorm_buffers(reference)
    moved = copy.deepcopy(reference)
    with torch.no_grad():
        moved[0].weight.add_(0.1)
        moved(batch[0])  # a forward at other weights moves them again: the check can fail
    assert any(not torch.equal(a, b) for a, b in zip(batchnorm_buffers(moved), after_clean, strict=True))

    regularizers.create(name).step(closure_for(model, batch))
    assert_all_equal(batchnorm_buffers(model), after_clean, what="InstanceNorm buffer")


# --- the gradient rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["erm", "sam", "gnp", "amp", "nso"])
def test_a_step_ignores_the_gradients_the_loop_left(name):
    """ERM, SAM, GNP and AMP used to add onto p.grad (two erm steps gave 2×); now every step
    leaves exactly its own gradient, bit for bit, whatever p.grad held."""
    batch = make_batch()
    fresh_model, stale_model = make_model(), make_model()
    method = regularizers.create(name)
    torch.manual_seed(5)
    method.step(closure_for(fresh_model, batch))
    for p in stale_model.parameters():
        p.grad = torch.full_like(p, 3.0)
    torch.manual_seed(5)
    method.step(closure_for(stale_model, batch))
    assert_all_equal(grads(stale_model), grads(fresh_model))
    torch.manual_seed(5)
    method.step(closure_for(stale_model, batch))  # and again, on the gradients the first step left
    assert_all_equal(grads(stale_model), grads(fresh_model))
