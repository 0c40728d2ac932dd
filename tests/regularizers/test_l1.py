"""l1: g = ∇L(w) + λ·sign(w)."""

from __future__ import annotations

import pytest
import torch
from reg_helpers import EPS, assert_all_close, closure_for, grad_at, grads, make_batch, make_model, trainable, weights

import regularizers


@pytest.mark.parametrize("penalty", [1e-5, 1e-2])
def test_l1_adds_lambda_sign_w(penalty):
    model, batch = make_model(), make_batch()
    with torch.no_grad():
        trainable(model)[1][:2] = 0.0  # sign(0) = 0: no push on exact zeros
    w = weights(model)
    expected = [g + penalty * torch.sign(wi) for g, wi in zip(grad_at(model, w, batch), w, strict=True)]
    regularizers.create("l1", penalty_weight=penalty).step(closure_for(model, batch))
    actual = grads(model)
    assert_all_close(actual, expected, rtol=1e-12, atol=1e-15)
    clean = grad_at(model, w, batch)
    # No push on the zeros: λ·sign(0) = 0 leaves the clean gradient. The method and the reference
    # compute it in separate autograd runs: sums over the batch of 8, so ≤ 8 eps·max|g| apart,
    # while a push would move it by λ ≥ 1e-5.
    bound = 8 * EPS * float(clean[1].abs().max())
    torch.testing.assert_close(actual[1][:2], clean[1][:2], rtol=0, atol=bound)
    # λ·w (weight decay) would not pass: the test tells L1 from L2.
    l2 = [g + penalty * wi for g, wi in zip(clean, w, strict=True)]
    assert max((a - b).abs().max().item() for a, b in zip(actual, l2, strict=True)) > penalty * 1e-3


def test_l1_rejects_a_negative_weight():
    with pytest.raises(ValueError, match="penalty_weight"):
        regularizers.get("l1")(penalty_weight=-1e-4)
