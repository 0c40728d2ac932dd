"""SAM/ASAM options: m-sharpness (``micro_batch_size``), SAM-ON (``perturbed_layers``), ASAM's
``norm_epsilon``, and the closure's micro-batch views they rest on, in float64 against independent
autograd (reg_helpers).

Tolerances: the expected gradients take a few hundred float64 operations per entry on the same
inputs as the method, in another order; 1e-9 relative is far above their rounding (~1e-13) and far
below the differences the tests must see (> 1e-6, asserted).
"""

from __future__ import annotations

import pytest
import torch
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
from regularizers.sam import ASAM_NORM_EPSILON
from regularizers.testing import check_regularizer

DTYPE = torch.float64
BATCHNORM = [pytest.param(False, id="plain"), pytest.param(True, id="batchnorm")]
RTOL, ATOL = 1e-9, 1e-12


def run(name: str, model, batch, **hparams):
    closure = closure_for(model, batch)
    report = regularizers.create(name, **hparams).step(closure)
    return grads(model), report, closure


def part(batch, start: int, stop: int):
    return batch[0][start:stop], batch[1][start:stop]


def max_difference(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def sam_gradient(model, w, batch, radius: float, mask=None) -> list[torch.Tensor]:
    """∇L(w + ε) with ε = ρ·g/‖g‖ over the tensors ``mask`` selects (all by default), by hand."""
    g = grad_at(model, w, batch)
    mask = mask or [True] * len(w)
    selected = [gi for gi, keep in zip(g, mask, strict=True) if keep]
    factor = radius / norm(selected)
    epsilon = [gi * factor if keep else torch.zeros_like(gi) for gi, keep in zip(g, mask, strict=True)]
    return grad_at(model, add(w, epsilon), batch)


# --- m-sharpness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("batchnorm", BATCHNORM)
@pytest.mark.parametrize("micro", [4, 3])
def test_m_sharpness_averages_the_perturbed_micro_batch_gradients(batchnorm, micro):
    """Foret et al. 2021 §4: micro-batch i ascends along its own gradient; the applied gradient is the
    size-weighted mean of the perturbed micro-batch gradients (8 = 4 + 4, or 3 + 3 + 2)."""
    radius = 0.3
    model, batch = make_model(batchnorm), make_batch(8)
    w = weights(model)
    expected = [torch.zeros_like(t) for t in w]
    for start in range(0, 8, micro):
        stop = min(start + micro, 8)
        h = sam_gradient(model, w, part(batch, start, stop), radius)  # micro-batch statistics with BatchNorm
        expected = add(expected, h, alpha=(stop - start) / 8)
    actual, report, _ = run("sam", model, batch, perturbation_radius=radius, micro_batch_size=micro)
    assert_all_close(actual, expected, rtol=RTOL, atol=ATOL)
    whole_batch_sam = sam_gradient(model, w, batch, radius)
    assert max_difference(actual, whole_batch_sam) > 1e-6  # m-sharpness is not SAM: the test can tell them apart
    assert (report.forward_passes, report.backward_passes) == ((3, 2) if batchnorm else (2, 2))


@pytest.mark.parametrize("batchnorm", BATCHNORM)
@pytest.mark.parametrize("micro", [8, 20])
@pytest.mark.parametrize("name", ["sam", "asam"])
def test_one_micro_batch_is_sam_exactly(name, micro, batchnorm):
    """m ≥ B: one micro-batch, the whole batch: the very same operations as the plain step."""
    batch = make_batch(8)
    plain_model, micro_model = make_model(batchnorm), make_model(batchnorm)
    plain, plain_report, _ = run(name, plain_model, batch, perturbation_radius=0.3)
    actual, report, _ = run(name, micro_model, batch, perturbation_radius=0.3, micro_batch_size=micro)
    assert_all_equal(actual, plain)
    assert torch.equal(report.loss, plain_report.loss)
    assert torch.equal(report.metrics["grad_norm"], plain_report.metrics["grad_norm"])
    assert_all_equal(batchnorm_buffers(micro_model), batchnorm_buffers(plain_model), what="BatchNorm buffer")
    # Running statistics: one more whole-batch forward than SAM (module docstring); none without them.
    assert (report.forward_passes, report.backward_passes) == ((3, 2) if batchnorm else (2, 2))
    assert regularizers.create(name, micro_batch_size=micro).cost(batchnorm) == regularizers.PassCost(
        3 if batchnorm else 2, 2
    )


def test_m_sharpness_updates_running_statistics_once_from_the_whole_batch():
    model, batch = make_model(batchnorm=True), make_batch(8)
    reference = make_model(batchnorm=True)
    with torch.no_grad():
        reference(batch[0])  # one clean forward on the whole batch
    micro_first = make_model(batchnorm=True)
    with torch.no_grad():
        micro_first(batch[0][:2])  # what a micro-batch pass would leave instead
    assert max_difference(batchnorm_buffers(micro_first)[:2], batchnorm_buffers(reference)[:2]) > 1e-6
    run("sam", model, batch, micro_batch_size=2)
    assert_all_equal(batchnorm_buffers(model), batchnorm_buffers(reference), what="BatchNorm buffer")


def test_m_sharpness_loss_is_the_whole_batch_loss_without_batchnorm():
    model, batch = make_model(), make_batch(8)
    _, report, _ = run("sam", model, batch, micro_batch_size=3)
    expected = torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).detach()
    # Σ (m_i/B)·mean_i = mean over the batch: a few roundings apart.
    torch.testing.assert_close(report.loss, expected, rtol=1e-14, atol=0)


# --- SAM-ON ---------------------------------------------------------------------------------------


class Blocks(nn.Module):
    """Linear → LayerNorm → tanh → Linear → GroupNorm → linear, the norms under names without 'norm'/'bn'."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.first, self.a = nn.Linear(4, 6), nn.LayerNorm(6)
        self.second, self.b = nn.Linear(6, 6), nn.GroupNorm(2, 6)
        self.head = nn.Linear(6, 3)
        with torch.no_grad():  # affine parameters away from their (1, 0) start, so the test sees them
            for layer in (self.a, self.b):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
        self.to(DTYPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(torch.tanh(self.second(torch.tanh(self.a(self.first(x)))))))


def norm_mask(model: nn.Module) -> list[bool]:
    """By hand: the parameters of BatchNorm1d / LayerNorm / GroupNorm modules."""
    kinds = (nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm)
    owned = {id(p) for m in model.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False)}
    return [id(p) in owned for p in model.parameters()]


@pytest.mark.parametrize("model_name", ["batchnorm", "layer_and_group_norm"])
def test_sam_on_perturbs_only_normalization_parameters(model_name):
    """Mueller et al. 2023: ε = ρ·g_N/‖g_N‖ on the normalization parameters N alone, chosen by type."""
    radius = 0.2
    model = make_model(batchnorm=True) if model_name == "batchnorm" else Blocks()
    batch = make_batch(8)
    w, mask = weights(model), norm_mask(model)
    assert any(mask) and not all(mask)
    expected = sam_gradient(model, w, batch, radius, mask)
    actual, report, _ = run("sam", model, batch, perturbation_radius=radius, perturbed_layers="normalization")
    assert_all_close(actual, expected, rtol=RTOL, atol=ATOL)
    assert max_difference(actual, sam_gradient(model, w, batch, radius)) > 1e-6  # not SAM on every tensor
    assert max_difference(actual, grad_at(model, w, batch)) > 1e-6  # and not the clean gradient
    torch.testing.assert_close(report.metrics["grad_norm"], norm(grad_at(model, w, batch)), rtol=1e-13, atol=0)


def test_sam_on_without_normalization_layers_is_the_clean_gradient_in_two_passes():
    """Nothing to perturb: the second pass runs at w itself (cost stays 2/2) and repeats ERM's ops."""
    batch = make_batch(8)
    erm_model, model = make_model(), make_model()
    erm, erm_report, _ = run("erm", erm_model, batch)
    actual, report, _ = run("sam", model, batch, perturbation_radius=0.5, perturbed_layers="normalization")
    assert_all_equal(actual, erm)
    assert torch.equal(report.loss, erm_report.loss)
    assert (report.forward_passes, report.backward_passes) == (2, 2)
    asam, _, _ = run("asam", make_model(), batch, perturbed_layers="normalization")
    assert_all_equal(asam, erm)


def test_asam_on_uses_the_authors_tensor_rule_within_normalization_layers():
    """T = |w| + η on the BatchNorm scale, T = 1 on its shift; ‖T·g‖ over those two tensors only. The first
    layer has no bias, so positions among all tensors and among the normalization ones differ."""
    radius, eta = 0.5, 0.01
    model, batch = make_model(batchnorm=True), make_batch(8)
    model[0].register_parameter("bias", None)
    w, mask = weights(model), norm_mask(model)
    names = [name for name, _ in model.named_parameters()]
    g = grad_at(model, w, batch)
    operator = [
        (p.abs() + eta if "weight" in name else torch.ones_like(p)) if keep else torch.zeros_like(p)
        for p, name, keep in zip(w, names, mask, strict=True)
    ]
    scaled = [t * gi for t, gi in zip(operator, g, strict=True)]
    epsilon = [t * t * gi * (radius / (norm(scaled) + ASAM_NORM_EPSILON)) for t, gi in zip(operator, g, strict=True)]
    expected = grad_at(model, add(w, epsilon), batch)
    actual, _, _ = run("asam", model, batch, perturbation_radius=radius, eta=eta, perturbed_layers="normalization")
    assert_all_close(actual, expected, rtol=RTOL, atol=ATOL)
    assert max_difference(actual, g) > 1e-6


def test_sam_on_combines_with_m_sharpness():
    radius = 0.2
    model, batch = make_model(batchnorm=True), make_batch(8)
    w, mask = weights(model), norm_mask(model)
    first = sam_gradient(model, w, part(batch, 0, 4), radius, mask)
    second = sam_gradient(model, w, part(batch, 4, 8), radius, mask)
    expected = add(scale(first, 0.5), scale(second, 0.5))
    hparams = {"perturbation_radius": radius, "micro_batch_size": 4, "perturbed_layers": "normalization"}
    actual, _, _ = run("sam", model, batch, **hparams)
    assert_all_close(actual, expected, rtol=RTOL, atol=ATOL)


# --- ASAM's norm guard ----------------------------------------------------------------------------


def test_asam_norm_epsilon_default_is_the_authors_guard():
    # SamsungLabs/ASAM asam.py: wgrad_norm = torch.norm(...) + 1.e-16.
    assert ASAM_NORM_EPSILON == 1e-16
    assert regularizers.create("asam").norm_epsilon == 1e-16
    declared = {hp.name: hp for hp in regularizers.hyperparameters_of("asam")}
    assert declared["norm_epsilon"].searched is False


@pytest.mark.parametrize("epsilon", [0.0, 1.0])
def test_asam_norm_epsilon_is_the_guard_it_uses(epsilon):
    """ε = ρ·T²g/(‖Tg‖ + guard), T = |w| + η everywhere; a guard of 1 moves the point visibly."""
    radius, eta = 0.5, 0.01
    model, batch = make_model(), make_batch(8)
    w = weights(model)
    g = grad_at(model, w, batch)
    operator = [p.abs() + eta for p in w]
    scaled = [t * gi for t, gi in zip(operator, g, strict=True)]
    factor = radius / (norm(scaled) + epsilon)
    expected = grad_at(model, add(w, [t * t * gi * factor for t, gi in zip(operator, g, strict=True)]), batch)
    hparams = {"perturbation_radius": radius, "eta": eta, "adaptive_tensors": "all", "norm_epsilon": epsilon}
    actual, _, _ = run("asam", model, batch, **hparams)
    assert_all_close(actual, expected, rtol=RTOL, atol=ATOL)
    if epsilon:
        default, _, _ = run("asam", make_model(), batch, **{**hparams, "norm_epsilon": ASAM_NORM_EPSILON})
        assert max_difference(actual, default) > 1e-6


# --- the closure's micro-batch views --------------------------------------------------------------


def test_micro_batch_views_slice_the_batch_and_share_the_count():
    model, batch = make_model(), make_batch(8)
    closure = BatchClosure(model, *batch, torch.nn.functional.cross_entropy, sample_ids=torch.arange(10, 18))
    views = closure.micro_batches(3)
    assert [v.targets.shape[0] for v in views] == [3, 3, 2]
    assert torch.equal(torch.cat([v.inputs for v in views]), batch[0])
    assert [v.sample_ids.tolist() for v in views] == [[10, 11, 12], [13, 14, 15], [16, 17]]
    assert all(v.parameters is closure.parameters for v in views)
    views[0]()
    assert closure.forward_passes == views[2].forward_passes == 3 / 8  # m/B of a pass, on the shared count
    views[1](backward=False)
    views[2]()
    assert (closure.forward_passes, closure.backward_passes) == (1, 5 / 8)
    assert isinstance(closure.forward_passes, int)  # a whole sweep counts as one pass, an int as before
    closure()
    assert (closure.forward_passes, closure.backward_passes) == (2, 13 / 8)
    with pytest.raises(ValueError, match="at least 1"):
        closure.micro_batches(0)


def test_a_view_pass_first_in_the_step_clears_stale_gradients():
    """The gradient rule holds for the step, whichever closure or view runs its first pass."""
    model, batch = make_model(), make_batch(8)
    expected = grad_at(model, weights(model), part(batch, 0, 4))
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    closure_for(model, batch).micro_batches(4)[0]()
    assert_all_close(grads(model), expected, rtol=1e-13, atol=1e-15)


def test_view_passes_follow_the_running_statistics_policy():
    model, batch = make_model(batchnorm=True), make_batch(8)
    before = batchnorm_buffers(model)
    view = closure_for(model, batch).micro_batches(4)[1]
    view(update_bn=False)
    assert_all_equal(batchnorm_buffers(model), before, what="BatchNorm buffer")
    view(update_bn=True)
    assert max_difference(batchnorm_buffers(model)[:2], before[:2]) > 1e-6


# --- the conformance kit on every option that changes the control flow ----------------------------


@pytest.mark.parametrize(
    "hparams",
    [
        {"micro_batch_size": 2},
        {"micro_batch_size": 4},  # 6 = 4 + 2: a shorter last micro-batch
        {"perturbed_layers": "normalization"},
        {"micro_batch_size": 3, "perturbed_layers": "normalization"},
    ],
    ids=str,
)
@pytest.mark.parametrize("name", ["sam", "asam"])
def test_options_conform(name, hparams):
    check_regularizer(regularizers.create(name, **hparams))


def test_asam_exact_norm_conforms():
    check_regularizer(regularizers.create("asam", norm_epsilon=0.0))
