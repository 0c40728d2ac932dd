"""coherent_l1 / coherent_l2: the penalty is added to a tensor iff cos(g, g + penalty) > τ."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reg_helpers import EPS
from torch import nn

import regularizers
from regularizers import BatchClosure
from regularizers.coherent import IMPOSED_FRACTION

DTYPE = torch.float64


class LinearLoss(nn.Module):
    """loss = Σ_t ⟨c_t, w_t⟩: the data gradient of tensor t is the constant c_t, set by the test."""

    def __init__(self, weights: list[torch.Tensor], slopes: list[torch.Tensor]) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(w.clone()) for w in weights])
        self.slopes = slopes

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return sum((c * w).sum() for c, w in zip(self.slopes, self.weights, strict=True)) + 0.0 * inputs.sum()


def step_on(name: str, weights, slopes, **hparams):
    model = LinearLoss(weights, slopes)
    closure = BatchClosure(model, torch.zeros(1, dtype=DTYPE), torch.zeros(1), lambda out, _: out)
    method = regularizers.create(name, **hparams)
    report = method.step(closure)
    return [p.grad.clone() for p in model.weights], report, method


def penalty_gradient(name, w, penalty):
    return penalty * (torch.sign(w) if name == "coherent_l1" else w)


def assert_gradient(actual, data_gradient, penalty):
    """``actual`` is ``data_gradient + penalty`` up to the rounding of that one sum.

    The method computes g + λ·d in one addcmul, which a CPU's vector kernel may or may not fuse
    into a multiply-add: the two results differ by at most one rounding of the product (eps·|λd|)
    and one of the sum (eps·|result|). The branches differ by λ·d itself, far above that.
    """
    torch.testing.assert_close(actual, data_gradient + penalty, rtol=2 * EPS, atol=2 * EPS * float(penalty.abs().max()))


#: The test recomputes each cosine with F.cosine_similarity, another formula than the method's:
#: on tensors of ≤ 9 elements each has a relative error ≤ (9 + 6 further roundings)·eps, so two
#: cosines farther apart from τ than this give the same decision on every CPU.
COSINE_MARGIN = 32 * EPS


@pytest.mark.parametrize("name", ["coherent_l1", "coherent_l2"])
def test_imposed_on_the_coherent_tensor_only(name):
    penalty = 1e-2
    # Tensor 0: the penalty points the same way as the data gradient (cos = 1 > 0).
    # Tensor 1: the penalty is 10× the data gradient and opposite to it (cos = -1 < 0).
    slopes = [torch.tensor([1e-3, 2e-3], dtype=DTYPE), torch.tensor([1e-3, -1e-3, 1e-3], dtype=DTYPE)]
    w0 = torch.tensor([0.5, 1.0], dtype=DTYPE)
    direction = -torch.sign(slopes[1]) if name == "coherent_l1" else -slopes[1] / 1e-3
    w1 = direction * (10.0 if name == "coherent_l2" else 1.0)
    weights = [w0, w1]
    actual, report, _ = step_on(name, weights, slopes, penalty_weight=penalty, coherence_threshold=0.0)

    combined = [c + penalty_gradient(name, w, penalty) for c, w in zip(slopes, weights, strict=True)]
    cosines = [F.cosine_similarity(c, m, dim=0) for c, m in zip(slopes, combined, strict=True)]
    assert cosines[0] > 0 > cosines[1]  # the constructed case: one passes, one fails
    assert_gradient(actual[0], slopes[0], penalty_gradient(name, w0, penalty))
    assert_gradient(actual[1], slopes[1], torch.zeros_like(slopes[1]))
    torch.testing.assert_close(report.metrics[IMPOSED_FRACTION], torch.tensor(0.5, dtype=DTYPE))


@pytest.mark.parametrize("name", ["coherent_l1", "coherent_l2"])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5])
def test_decision_matches_the_cosine_test_on_random_tensors(name, threshold):
    generator = torch.Generator().manual_seed(7)
    shapes = [(3,), (4, 2), (5,), (2, 3), (6,), (3, 3), (4,), (2, 2)]
    slopes = [torch.randn(s, generator=generator, dtype=DTYPE) for s in shapes]
    weights = [torch.randn(s, generator=generator, dtype=DTYPE) * 3 for s in shapes]
    penalty = 3.0 if name == "coherent_l1" else 1.0  # strong enough for the cosines to straddle τ
    actual, report, _ = step_on(name, weights, slopes, penalty_weight=penalty, coherence_threshold=threshold)
    imposed = 0
    for c, w, a in zip(slopes, weights, actual, strict=True):
        combined = c + penalty_gradient(name, w, penalty)
        cosine = F.cosine_similarity(c.flatten(), combined.flatten(), dim=0).item()
        assert abs(cosine - threshold) > COSINE_MARGIN, "a cosine this close to τ could flip with rounding"
        coherent = cosine > threshold
        imposed += coherent
        assert_gradient(a, c, penalty_gradient(name, w, penalty) if coherent else torch.zeros_like(c))
    assert 0 < imposed < len(shapes)  # mixed outcomes: both branches are exercised
    torch.testing.assert_close(report.metrics[IMPOSED_FRACTION], torch.tensor(imposed / len(shapes), dtype=DTYPE))


def test_threshold_decides_between_imposed_and_not():
    # g = (1, 0) and λ·w = (-0.4, 0.8): g + λ·w = (0.6, 0.8), a unit vector, so the cosine is 0.6.
    slopes = [torch.tensor([1.0, 0.0], dtype=DTYPE)]
    weights = [torch.tensor([-40.0, 80.0], dtype=DTYPE)]  # λ·w = (-0.4, 0.8) with λ = 0.01
    for threshold, imposed in ((0.5, True), (0.7, False)):
        actual, report, _ = step_on("coherent_l2", weights, slopes, penalty_weight=0.01, coherence_threshold=threshold)
        expected = torch.tensor([0.6, 0.8], dtype=DTYPE) if imposed else slopes[0]
        # 1 − 40·0.01 and 80·0.01 against the literals 0.6 and 0.8: a few roundings, ≤ 4 eps.
        torch.testing.assert_close(actual[0], expected, rtol=4 * EPS, atol=4 * EPS)
        # A fraction of booleans (one tensor): 0.0 or 1.0 exactly, no rounding involved.
        assert report.metrics[IMPOSED_FRACTION].item() == float(imposed)


@pytest.mark.parametrize("name", ["coherent_l1", "coherent_l2"])
def test_delayed_variant_waits_gamma_epochs(name):
    slopes = [torch.tensor([1.0, 2.0], dtype=DTYPE)]
    weights = [torch.tensor([1.0, 1.0], dtype=DTYPE)]  # aligned: imposed whenever active
    model = LinearLoss(weights, slopes)
    closure = lambda: BatchClosure(model, torch.zeros(1, dtype=DTYPE), torch.zeros(1), lambda out, _: out)  # noqa: E731
    method = regularizers.create(name, penalty_weight=1e-3, delay_epochs=2)
    for epoch, active in ((0, False), (1, False), (2, True), (3, True)):
        method.start_epoch(epoch, 4)
        for p in model.parameters():
            p.grad = None
        report = method.step(closure())
        penalty = penalty_gradient(name, weights[0], 1e-3) if active else torch.zeros_like(slopes[0])
        assert_gradient(model.weights[0].grad, slopes[0], penalty)
        assert report.metrics[IMPOSED_FRACTION].item() == float(active)  # 0/1 of one tensor: exact


def test_validation():
    with pytest.raises(ValueError, match="penalty_weight"):
        regularizers.get("coherent_l2")(penalty_weight=-1.0)
    with pytest.raises(ValueError, match="coherence_threshold"):
        regularizers.get("coherent_l1")(coherence_threshold=1.5)
    with pytest.raises(ValueError, match="delay_epochs"):
        regularizers.get("coherent_l1")(delay_epochs=-1)
    regularizers.get("coherent_l1")(coherence_threshold=-0.5)  # valid, although outside the search range
