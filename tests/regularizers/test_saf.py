"""SAF and MESA (Du et al., NeurIPS 2022) in float64 against the trajectory loss written out by hand.

The expected gradients differentiate CE + λτ²·KL(softmax(ŷ/τ) ‖ softmax(f_w/τ)) with plain autograd on
a copy of the model, the reference outputs ŷ computed independently (another copy of the model at the
past or averaged weights). Tolerance 1e-10 relative: a few hundred float64 operations per entry in
another order (~1e-13), far below the size of the penalty's contribution (> 1e-4, asserted).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from reg_helpers import (
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

import regularizers
from regularizers import BatchClosure
from regularizers.saf import REFERENCE_FRACTION, TRAJECTORY_KL
from regularizers.testing import check_regularizer

BATCHNORM = [pytest.param(False, id="plain"), pytest.param(True, id="batchnorm")]
RTOL, ATOL = 1e-10, 1e-13
LAMBDA, TAU = 0.7, 3.0


def kl_by_hand(reference: torch.Tensor, logits: torch.Tensor, tau: float, mask=None) -> torch.Tensor:
    """mean_x Σ_c p_c (log p_c − log q_c), p = softmax(ŷ/τ) (constant), q = softmax(f/τ); masked samples add 0."""
    p = torch.softmax(reference / tau, dim=-1)
    per_sample = (p * (torch.log(p) - torch.log_softmax(logits / tau, dim=-1))).sum(dim=-1)
    if mask is not None:
        per_sample = per_sample * mask
    return per_sample.sum() / logits.shape[0]


def penalized(reference, weight=LAMBDA, tau=TAU, mask=None):
    return lambda logits, targets: (
        F.cross_entropy(logits, targets) + weight * tau * tau * kl_by_hand(reference, logits, tau, mask)
    )


def logits_at(model, point, batch) -> torch.Tensor:
    return objective_at(model, point, batch, objective=lambda logits, _: logits)


def closure_with_ids(model, batch, ids) -> BatchClosure:
    return BatchClosure(model, batch[0], batch[1], F.cross_entropy, sample_ids=torch.as_tensor(ids))


def sgd_move(model, seed: int, size: float = 0.05) -> None:
    """Move the weights as an optimizer step would (a fixed random direction)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * size)


def max_difference(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def round_trip(method):
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    twin = type(method)(**{name: getattr(method, name) for name in method.__dataclass_fields__})
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    return twin


# --- SAF ------------------------------------------------------------------------------------------


def test_saf_official_defaults():
    saf = regularizers.create("saf")
    # AngusDujw/SAF README "--reinforce (0.3/0.8)": 0.3 for SAF (run.sh too; SAF_train.py's argparse says 0.16).
    assert saf.penalty_weight == 0.3
    assert saf.temperature == 5.0  # README and SAF_train.py: --temperature 5
    assert saf.past_epochs == 3  # SAF_train.py --minus_epoch default 3 (README "2/3", run.sh 2)
    # SAF_train.py: `if epoch > args.kl_start_epoch` with kl_start_epoch 5 and 0-based epochs: 6 epochs without.
    assert saf.delay_epochs == 6
    saf.start_epoch(5, 90)
    assert not saf.penalty_active
    saf.start_epoch(6, 90)
    assert saf.penalty_active
    assert saf.cost(True) == regularizers.PassCost(1, 1)


@pytest.mark.parametrize("batchnorm", BATCHNORM)
def test_saf_penalizes_the_kl_to_the_outputs_of_past_epochs_per_sample(batchnorm):
    """Ẽ = 2: at epoch 2 the reference is each sample's epoch-0 output, found by its id whatever
    the batch order; epoch 1's outputs (other weights) are not it."""
    model, batch = make_model(batchnorm), make_batch(8)
    saf = regularizers.create("saf", penalty_weight=LAMBDA, temperature=TAU, past_epochs=2, delay_epochs=0)
    order = [torch.arange(8), torch.randperm(8, generator=torch.Generator().manual_seed(4)), torch.arange(8).flip(0)]
    epoch0_logits = None
    for epoch, ids in enumerate(order):
        saf.start_epoch(epoch, 3)
        shuffled = (batch[0][ids], batch[1][ids])
        point = weights(model)
        if epoch == 0:
            epoch0_logits = logits_at(model, point, batch)  # in sample order (the BatchNorm statistics do not care)
        if epoch < 2:
            saf.step(closure_with_ids(model, shuffled, ids))
            sgd_move(model, seed=epoch)
            continue
        expected = grad_at(model, point, shuffled, penalized(epoch0_logits[ids]))
        report = saf.step(closure_with_ids(model, shuffled, ids))
        assert_all_close(grads(model), expected, rtol=RTOL, atol=ATOL)
        assert max_difference(grads(model), grad_at(model, point, shuffled)) > 1e-4  # the penalty counts
        kl = kl_by_hand(epoch0_logits[ids], logits_at(model, point, shuffled), TAU)
        torch.testing.assert_close(report.metrics[TRAJECTORY_KL], kl, rtol=1e-12, atol=0)
        assert report.metrics[REFERENCE_FRACTION].item() == 1.0
        assert (report.forward_passes, report.backward_passes) == (1, 1)


def test_saf_kl_runs_from_the_past_outputs_to_the_current_ones():
    """KL(p_past ‖ p_now), as the official F.kl_div(log q_now, p_past): not the reverse direction."""
    model, batch = make_model(), make_batch(8)
    saf = regularizers.create("saf", penalty_weight=LAMBDA, temperature=TAU, past_epochs=1, delay_epochs=0)
    past = logits_at(model, weights(model), batch)
    saf.step(closure_for(model, batch))
    sgd_move(model, seed=1, size=0.5)
    saf.start_epoch(1, 2)
    report = saf.step(closure_for(model, batch))
    now = logits_at(model, weights(model), batch)
    assert report.metrics[TRAJECTORY_KL].item() == pytest.approx(kl_by_hand(past, now, TAU).item(), rel=1e-12)
    assert abs(kl_by_hand(now, past, TAU).item() / report.metrics[TRAJECTORY_KL].item() - 1.0) > 1e-3


def test_saf_is_erm_during_the_delay():
    batch = make_batch(8)
    model, erm_model = make_model(), make_model()
    saf = regularizers.create("saf", penalty_weight=LAMBDA, temperature=TAU, past_epochs=1, delay_epochs=2)
    saf.step(closure_for(model, batch))  # epoch 0: recorded
    sgd_move(model, seed=0)
    saf.start_epoch(1, 3)  # epoch-0 outputs are there, but the delay lasts two epochs
    erm_model.load_state_dict(model.state_dict())
    report = saf.step(closure_for(model, batch))
    regularizers.create("erm").step(closure_for(erm_model, batch))
    assert_all_equal(grads(model), grads(erm_model))
    assert report.metrics[TRAJECTORY_KL].item() == 0.0 and report.metrics[REFERENCE_FRACTION].item() == 0.0
    sgd_move(model, seed=1)
    saf.start_epoch(2, 3)
    saf.step(closure_for(model, batch))
    assert max_difference(grads(model), grad_at(model, weights(model), batch)) > 1e-4  # from epoch 2 on it is not


def test_saf_skips_samples_without_an_output_from_exactly_past_epochs_ago():
    """Sample 5 missed epoch 2 (the loader dropped it): at epoch 3 its slot still holds epoch 0's
    output, which the official code would use; here it adds nothing, and the mean divides by 8."""
    batch = make_batch(8)
    model = make_model()  # no BatchNorm: a sample's logits do not depend on its batch
    saf = regularizers.create("saf", penalty_weight=LAMBDA, temperature=TAU, past_epochs=1, delay_epochs=0)
    epoch0 = logits_at(model, weights(model), batch)
    saf.step(closure_for(model, batch))
    sgd_move(model, seed=1)
    saf.start_epoch(1, 4)
    saf.step(closure_for(model, batch))
    sgd_move(model, seed=2)
    saf.start_epoch(2, 4)
    kept = [0, 1, 2, 3, 4, 6, 7]
    epoch2 = logits_at(model, weights(model), batch)
    saf.step(closure_with_ids(model, (batch[0][kept], batch[1][kept]), kept))
    sgd_move(model, seed=3)
    saf.start_epoch(3, 4)
    point = weights(model)
    mask = torch.ones(8, dtype=torch.float64)
    mask[5] = 0.0
    expected = grad_at(model, point, batch, penalized(epoch2, mask=mask))  # epoch2[5] is masked out
    report = saf.step(closure_for(model, batch))
    assert_all_close(grads(model), expected, rtol=RTOL, atol=ATOL)
    assert report.metrics[REFERENCE_FRACTION].item() == 7 / 8
    stale = epoch2.clone()
    stale[5] = epoch0[5]
    assert max_difference(grads(model), grad_at(model, point, batch, penalized(stale))) > 1e-6


def test_saf_table_grows_with_the_training_split_and_is_the_state():
    model, batch = make_model(), make_batch(8)
    saf = regularizers.create("saf", past_epochs=2)
    assert saf.state == ("outputs", "recorded_epoch") and saf.outputs is None
    saf.step(closure_with_ids(model, batch, range(8)))
    assert saf.outputs.shape == (8, 3, 3) and saf.outputs.dtype == torch.float64  # [sample, Ẽ + 1 epochs, class]
    saf.step(closure_with_ids(model, batch, [20, 1, 2, 3, 4, 5, 6, 7]))
    assert saf.outputs.shape == (21, 3, 3) and saf.recorded_epoch.shape == (21, 3)
    assert torch.equal(saf.outputs[20, 0], logits_at(model, weights(model), batch)[0])
    float32 = make_model().float()
    small = regularizers.create("saf")
    small.step(closure_with_ids(float32, (batch[0].float(), batch[1]), range(8)))
    assert small.outputs.dtype == torch.float32


def test_saf_state_round_trip_continues_identically():
    batch = make_batch(8)
    model = make_model(batchnorm=True)
    saf = regularizers.create("saf", penalty_weight=LAMBDA, temperature=TAU, past_epochs=1, delay_epochs=0)
    saf.step(closure_for(model, batch))
    sgd_move(model, seed=5)
    twin, twin_model = round_trip(saf), copy.deepcopy(model)
    for method, net in ((saf, model), (twin, twin_model)):
        method.start_epoch(1, 2)
        method.step(closure_for(net, batch))
    assert_all_equal(grads(twin_model), grads(model))
    assert max_difference(grads(model), grad_at(model, weights(model), batch)) > 1e-4  # the state mattered


def test_saf_with_zero_weight_is_erm_exactly_and_needs_no_ids():
    batch = make_batch(8)
    model, erm_model = make_model(batchnorm=True), make_model(batchnorm=True)
    saf = regularizers.create("saf", penalty_weight=0.0, delay_epochs=0)
    report = saf.step(BatchClosure(model, *batch, F.cross_entropy))  # no sample_ids
    erm_report = regularizers.create("erm").step(closure_for(erm_model, batch))
    assert_all_equal(grads(model), grads(erm_model))
    assert torch.equal(report.loss, erm_report.loss)
    assert_all_equal(batchnorm_buffers(model), batchnorm_buffers(erm_model), what="BatchNorm buffer")
    assert saf.outputs is None and (report.forward_passes, report.backward_passes) == (1, 1)


def test_saf_without_sample_ids_says_so():
    model, batch = make_model(), make_batch(8)
    with pytest.raises(ValueError, match="SAF needs closure.sample_ids"):
        regularizers.create("saf").step(BatchClosure(model, *batch, F.cross_entropy))


def test_saf_penalty_path_conforms():
    """The kit calls start_epoch(0, ·) only: a table loaded with outputs stamped epoch −1 (random
    logits for the kit's six samples, three classes) makes the penalty act from its first step."""
    saf = regularizers.create("saf", past_epochs=1, delay_epochs=0)
    generator = torch.Generator().manual_seed(0)
    recorded = torch.full((6, 2), torch.iinfo(torch.int32).min, dtype=torch.int32)
    recorded[:, 1] = -1  # slot (0 − Ẽ) mod (Ẽ + 1) = 1
    saf.load_state_dict(
        {"outputs": torch.randn(6, 2, 3, generator=generator, dtype=torch.float64), "recorded_epoch": recorded}
    )
    check_regularizer(saf)
    check_regularizer(regularizers.create("saf", delay_epochs=0))
    check_regularizer(regularizers.create("saf", penalty_weight=0.0))


# --- MESA -----------------------------------------------------------------------------------------


def test_mesa_official_defaults():
    mesa = regularizers.create("mesa")
    assert mesa.penalty_weight == 0.8  # README "--reinforce (0.3/0.8)" and run.sh: 0.8 for MESA (argparse: 0.3)
    assert mesa.temperature == 5.0  # MESA_train.py --temperature 5
    assert mesa.ema_decay == 0.9998  # MESA_train.py --model-ema-decay default, not overridden by run.sh
    assert mesa.delay_epochs == 6  # `epoch > kl_start_epoch` with kl_start_epoch 5, 0-based epochs
    assert mesa.state == ("ema_parameters", "ema_buffers")
    assert mesa.cost(False) == regularizers.PassCost(2, 1)


def teacher_logits(model, parameters, buffers, batch) -> torch.Tensor:
    """The averaged model by hand: a copy holding the averages, in evaluation mode."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, value in zip(twin.parameters(), parameters, strict=True):
            p.copy_(value)
        floating = [b for b in twin.buffers() if b.is_floating_point()]
        for b, value in zip(floating, buffers, strict=True):
            b.copy_(value)
    twin.eval()
    with torch.no_grad():
        return twin(batch[0])


@pytest.mark.parametrize("batchnorm", BATCHNORM)
def test_mesa_penalizes_the_kl_to_the_weight_average(batchnorm):
    """Step 0: w̄ = w₀. Step 1: w̄ = β·w₀ + (1 − β)·w₁ (and the same for the running statistics), the
    teacher in evaluation mode; the gradient is that of CE + λτ²·KL(teacher ‖ model) at w₁."""
    beta = 0.6
    model, batch = make_model(batchnorm), make_batch(8)
    mesa = regularizers.create("mesa", penalty_weight=LAMBDA, temperature=TAU, ema_decay=beta, delay_epochs=0)
    w0, b0 = weights(model), [b.clone() for b in model.buffers() if b.is_floating_point()]
    expected0 = grad_at(model, w0, batch, penalized(teacher_logits(model, w0, b0, batch)))
    report = mesa.step(closure_for(model, batch))
    assert_all_close(grads(model), expected0, rtol=RTOL, atol=ATOL)
    assert (report.forward_passes, report.backward_passes) == (2, 1)
    sgd_move(model, seed=7, size=0.3)
    w1, b1 = weights(model), [b.clone() for b in model.buffers() if b.is_floating_point()]
    average = [beta * a + (1 - beta) * b for a, b in zip(w0, w1, strict=True)]
    average_buffers = [beta * a + (1 - beta) * b for a, b in zip(b0, b1, strict=True)]
    teacher = teacher_logits(model, average, average_buffers, batch)
    expected = grad_at(model, w1, batch, penalized(teacher))
    one_clean_forward, weights_before = copy.deepcopy(model), weights(model)
    with torch.no_grad():
        one_clean_forward(batch[0])
    report = mesa.step(closure_for(model, batch))
    assert_all_close(grads(model), expected, rtol=RTOL, atol=ATOL)
    assert max_difference(grads(model), grad_at(model, w1, batch)) > 1e-4  # the penalty counts
    assert model.training
    assert_all_equal(weights(model), weights_before, what="weight")
    # The teacher's pass in evaluation mode with the averaged statistics left them as one clean forward does.
    assert_all_equal(batchnorm_buffers(model), batchnorm_buffers(one_clean_forward), what="BatchNorm buffer")
    kl = kl_by_hand(teacher, logits_at(model, w1, batch), TAU)
    torch.testing.assert_close(report.metrics[TRAJECTORY_KL], kl, rtol=1e-12, atol=0)


def test_mesa_during_the_delay_keeps_averaging_without_the_penalty():
    batch = make_batch(8)
    model, erm_model = make_model(), make_model()
    mesa = regularizers.create("mesa", ema_decay=0.5, delay_epochs=1)
    w0 = weights(model)
    report = mesa.step(closure_for(model, batch))
    regularizers.create("erm").step(closure_for(erm_model, batch))
    assert_all_equal(grads(model), grads(erm_model))
    assert (report.forward_passes, report.backward_passes) == (2, 1)  # the teacher runs every step (official)
    sgd_move(model, seed=1)
    mesa.step(closure_for(model, batch))
    expected = [0.5 * a + 0.5 * b for a, b in zip(w0, weights(model), strict=True)]
    assert_all_close(mesa.ema_parameters, expected, rtol=1e-15, atol=0, what="average")


def test_mesa_with_zero_weight_is_erm_exactly():
    batch = make_batch(8)
    model, erm_model = make_model(batchnorm=True), make_model(batchnorm=True)
    mesa = regularizers.create("mesa", penalty_weight=0.0, delay_epochs=0)
    report = mesa.step(closure_for(model, batch))
    erm_report = regularizers.create("erm").step(closure_for(erm_model, batch))
    assert_all_equal(grads(model), grads(erm_model))
    assert torch.equal(report.loss, erm_report.loss)
    assert mesa.ema_parameters is None and mesa.cost(True) == regularizers.PassCost(1, 1)
    assert (report.forward_passes, report.backward_passes) == (1, 1)


def test_mesa_state_round_trip_continues_identically():
    batch = make_batch(8)
    model = make_model(batchnorm=True)
    mesa = regularizers.create("mesa", penalty_weight=LAMBDA, ema_decay=0.5, delay_epochs=0)
    mesa.step(closure_for(model, batch))
    sgd_move(model, seed=9, size=0.3)
    twin, twin_model, fresh_model = round_trip(mesa), copy.deepcopy(model), copy.deepcopy(model)
    mesa.step(closure_for(model, batch))
    twin.step(closure_for(twin_model, batch))
    assert_all_equal(grads(twin_model), grads(model))
    fresh = regularizers.create("mesa", penalty_weight=LAMBDA, ema_decay=0.5, delay_epochs=0)
    fresh.step(closure_for(fresh_model, batch))  # without the state: the average restarts at w₁
    assert max_difference(grads(fresh_model), grads(model)) > 1e-6


@pytest.mark.parametrize("hparams", [{}, {"delay_epochs": 0}, {"penalty_weight": 0.0}], ids=str)
def test_mesa_conforms(hparams):
    check_regularizer(regularizers.create("mesa", **hparams))


def test_default_methods_conform_under_bf16_autocast_with_the_penalty_on():
    for name in ("saf", "mesa"):
        check_regularizer(regularizers.create(name, delay_epochs=0), dtype=torch.float32, autocast_dtype=torch.bfloat16)
