"""msam: ∇L(w − ρ·v/‖v‖) applied at w, with the method's own momentum buffer v ← μ·v + g
(Becker et al. 2024, Algorithm 1); the plain gradient on the first step (v = 0)."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from reg_helpers import (
    BATCHNORM_IDS,
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
    objective_at,
    scale,
    weights,
)

import regularizers
from regularizers.testing import check_regularizer

BATCHES = [make_batch(seed=seed) for seed in range(1, 7)]


def train(method, model, batches, momentum: float = 0.9, lr: float = 0.05, weight_decay: float = 0.0):
    """Step ``method`` through ``batches`` with SGD(momentum); per step: (weights before, gradient, report,
    passes), and the optimizer."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    record = []
    for batch in batches:
        w = weights(model)
        closure = closure_for(model, batch)
        report = method.step(closure)
        record.append((w, grads(model), report, (closure.forward_passes, closure.backward_passes)))
        optimizer.step()
    return record, optimizer


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
@pytest.mark.parametrize("mu", [0.9, 0.0])
def test_steps_follow_algorithm_1(batchnorm, mu):
    radius = 0.5
    model = make_model(batchnorm)
    method = regularizers.create("msam", perturbation_radius=radius, momentum=mu)
    record, _ = train(method, model, BATCHES[:4], momentum=mu)
    v = None
    for index, ((w, actual, report, passes), batch) in enumerate(zip(record, BATCHES, strict=False)):
        # Negative momentum: the gradient is taken at w − ρ·v/‖v‖ (at w while v = 0).
        point = w if v is None else add(w, scale(v, -radius / norm(v)))
        expected = grad_at(model, point, batch)
        # One gradient evaluation at a point that differs from the method's by the 1e-12 guard (relative
        # 1e-12/‖v‖) and a few roundings of the normalization.
        assert_all_close(actual, expected, rtol=1e-9, atol=1e-12, what=f"gradient at step {index}")
        perturbed_loss = objective_at(model, point, batch)
        torch.testing.assert_close(report.metrics["perturbed_loss"], perturbed_loss, rtol=1e-12, atol=0)
        # The reported loss: clean (a forward at w) with BatchNorm, the perturbed one without.
        clean_loss = objective_at(model, w, batch)
        torch.testing.assert_close(report.loss, clean_loss if batchnorm else perturbed_loss, rtol=1e-12, atol=0)
        assert passes == ((2, 1) if batchnorm else (1, 1))  # the first step too
        if v is not None:  # not the clean gradient: the test can fail
            clean = grad_at(model, w, batch)
            assert max((a - c).abs().max().item() for a, c in zip(actual, clean, strict=True)) > 1e-4
        v = [g.clone() for g in expected] if v is None else add(scale(v, mu), expected)


@pytest.mark.parametrize("nesterov", [False, True])
def test_buffer_equals_the_sgd_momentum_buffer(nesterov):
    """SGD with momentum μ, no dampening, no weight decay: the same v (Nesterov changes the step only)."""
    model = make_model(batchnorm=True)
    method = regularizers.create("msam", perturbation_radius=0.3, momentum=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov)
    for batch in BATCHES[:4]:
        method.step(closure_for(model, batch))
        optimizer.step()
        sgd_buffers = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
        # Exact: v = g on the first step, then v·μ + g, the very ops of torch.optim.SGD's buffer.
        assert_all_equal(method.momentum_buffer, sgd_buffers, what="momentum buffer")


def test_coupled_weight_decay_is_not_in_the_buffer():
    model = make_model()
    method = regularizers.create("msam", momentum=0.9)
    _, optimizer = train(method, model, BATCHES[:3], weight_decay=0.1)
    sgd_buffers = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(method.momentum_buffer, sgd_buffers, strict=True)) > 1e-3


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_zero_radius_is_erm_bit_for_bit(batchnorm):
    erm_model, msam_model = make_model(batchnorm), make_model(batchnorm)
    erm, _ = train(regularizers.create("erm"), erm_model, BATCHES[:3])
    msam, _ = train(regularizers.create("msam", perturbation_radius=0.0), msam_model, BATCHES[:3])
    # Exact: ρ = 0 scales v to exact zeros, so the gradient pass runs ERM's ops at w.
    for (_, erm_grads, erm_report, _), (_, msam_grads, msam_report, _) in zip(erm, msam, strict=True):
        assert_all_equal(msam_grads, erm_grads)
        assert torch.equal(msam_report.loss, erm_report.loss)


def test_batchnorm_statistics_move_once_at_the_clean_weights():
    model, batch = make_model(batchnorm=True), make_batch()
    method = regularizers.create("msam", perturbation_radius=0.5)
    train(method, model, BATCHES[:1])  # v ≠ 0 from here on
    reference = make_model(batchnorm=True)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference(batch[0])  # one clean forward at w
    method.step(closure_for(model, batch))
    # Exact by contract: the clean forward ran the reference's ops; the perturbed pass's updates are undone.
    assert_all_equal(batchnorm_buffers(model), batchnorm_buffers(reference), what="BatchNorm buffer")


@pytest.mark.parametrize("batchnorm", BATCHNORM_IDS)
def test_state_round_trip_continues_identically(batchnorm):
    model = make_model(batchnorm)
    method = regularizers.create("msam", perturbation_radius=0.5)
    train(method, model, BATCHES[:2])
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    twin = dataclasses.replace(method)
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    twin_model = make_model(batchnorm)
    twin_model.load_state_dict(model.state_dict())
    original, _ = train(method, model, BATCHES[2:5])
    resumed, _ = train(twin, twin_model, BATCHES[2:5])
    for (_, a, report_a, _), (_, b, report_b, _) in zip(original, resumed, strict=True):
        assert_all_equal(b, a)  # exact: the same v and weights run the same ops
        assert torch.equal(report_a.loss, report_b.loss)
    # Without the state the first step would be the plain gradient: the round trip carries v.
    fresh_model = make_model(batchnorm)
    fresh_model.load_state_dict(twin_model.state_dict())
    fresh, _ = train(dataclasses.replace(method), fresh_model, BATCHES[5:6])
    w = fresh[0][0]
    assert_all_close(fresh[0][1], grad_at(fresh_model, w, BATCHES[5]), rtol=1e-12, atol=1e-14)


def test_loss_without_batchnorm_is_the_perturbed_one():
    model = make_model()
    method = regularizers.create("msam", perturbation_radius=2.0)
    record, _ = train(method, model, BATCHES[:2])
    w, _, report, _ = record[1]
    clean_loss = objective_at(model, w, BATCHES[1])
    assert abs(float(report.loss) - float(clean_loss)) > 1e-3  # ρ = 2 moves the loss visibly
    assert torch.equal(report.loss, report.metrics["perturbed_loss"])


def test_official_defaults():
    msam = regularizers.create("msam")
    # MarlonBecker/MSAM README run commands (--rho 3) and optimizer/msam.py; μ = 0.9 as its configs' SGD
    # momentum (configs/*.ini: momentum = 0.9).
    assert msam.perturbation_radius == 3.0
    assert msam.momentum == 0.9
    assert msam.cost(has_batchnorm=False) == regularizers.PassCost(1, 1)
    assert msam.cost(has_batchnorm=True) == regularizers.PassCost(2, 1)
    assert msam.state == ("momentum_buffer",) and msam.momentum_buffer is None


@pytest.mark.parametrize("hparams", [{"momentum": 0.0}, {"perturbation_radius": 0.0}, {"perturbation_radius": 0.3}])
def test_variants_conform(hparams):
    check_regularizer(regularizers.create("msam", **hparams))


def test_validation():
    msam = regularizers.get("msam")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="momentum"):
            msam(momentum=bad)
    with pytest.raises(ValueError, match="perturbation_radius"):
        msam(perturbation_radius=-1.0)
