"""SWA and EMA on top of a method (``<method>+swa``, ``<method>+ema``): what the loop averages,
which weights it evaluates and measures, its learning rate, and its checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F

from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.measure.flatness import measure_flatness
from bench.training import Trainer, TrialSpec, run_trial
from regularizers import batchnorm_modules

EPOCHS, BATCH, SAMPLES = 4, 50, 300
STEPS_PER_EPOCH = SAMPLES // BATCH


def _spec(regularizer: str, **hparams) -> TrialSpec:
    return TrialSpec(
        benchmark="unit",
        dataset=DataConfig(name="digits", max_train_samples=SAMPLES),
        model=ModelConfig(name="cnn", options={"width": 4}),  # with BatchNorm: SWA must recompute it
        training=TrainingConfig(epochs=EPOCHS, batch_size=BATCH, learning_rate=0.1),
        regularizer=regularizer,
        regularizer_hparams=hparams,
        flatness=FlatnessConfig(when="off"),
        seed=3,
    )


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_ema_with_decay_zero_is_the_trained_weights_exactly():
    plain, averaged = run_trial(_spec("sam")), run_trial(_spec("sam+ema", ema_decay=0.0))
    # Exact: the same trajectory (averaging draws no random numbers), and β = 0 copies the weights
    # and the BatchNorm buffers after every step.
    assert [e.val_loss for e in averaged.epochs] == [e.val_loss for e in plain.epochs]
    assert averaged.test == plain.test
    assert {e.evaluated_weights for e in averaged.epochs} == {"ema"}
    assert {e.evaluated_weights for e in plain.epochs} == {"trained"}


def test_ema_follows_its_recursion_over_the_trained_weights():
    decay = 0.8
    trainer = Trainer(_spec("erm+ema", ema_decay=decay))
    expected = None
    for inputs, targets, ids in trainer.batches():
        trainer.train_step(inputs, targets, ids)
        now = _weights(trainer.model) + [b.detach().clone().double() for b in trainer.model.buffers()]
        # The first update copies; then w_ema ← β·w_ema + (1 − β)·w (in float64 here).
        expected = (
            [w.double() for w in now]
            if expected is None
            else [decay * e + (1 - decay) * w.double() for e, w in zip(expected, now, strict=True)]
        )
    got = list(trainer.averager.module.parameters()) + list(trainer.averager.module.buffers())
    floats = [(g, e) for g, e in zip(got, expected, strict=True) if g.dtype.is_floating_point]
    assert len(floats) == len(list(trainer.model.parameters())) + 2 * len(batchnorm_modules(trainer.model))
    for g, e in floats:
        # float32 lerp over 6 steps against float64: a few float32 roundings of values of order 1.
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-6)
    # The averaged weights are not the trained ones (else the comparison above proves nothing).
    pairs = zip(trainer.averager.module.parameters(), trainer.model.parameters(), strict=True)
    assert any(not torch.allclose(a, b) for a, b in pairs)


def _recomputed_batchnorm(model: torch.nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """BatchNorm statistics of ``model`` over ``inputs`` in batches of BATCH, by hand: the
    cumulative average of each batch's mean and unbiased variance (momentum None)."""
    twin = copy.deepcopy(model).train()
    layers = batchnorm_modules(twin)
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        for start in range(0, len(inputs), BATCH):
            twin(inputs[start : start + BATCH])
    return [t.clone() for bn in layers for t in (bn.running_mean, bn.running_var)]


def test_swa_over_one_snapshot_is_that_snapshot_with_recomputed_batchnorm():
    trainer = Trainer(_spec("sam+swa", swa_start=0.99))  # starts in the last epoch: one snapshot
    assert trainer.averager.start_epoch == EPOCHS - 1
    while not trainer.finished:
        result = trainer.train_epoch()
    assert result.evaluated_weights == "swa" and int(trainer.averager.average.n_averaged) == 1
    for a, b in zip(trainer.averager.module.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(a, b)
    averaged = [t for bn in batchnorm_modules(trainer.averager.module) for t in (bn.running_mean, bn.running_var)]
    trained = [t for bn in batchnorm_modules(trainer.model) for t in (bn.running_mean, bn.running_var)]
    expected = _recomputed_batchnorm(trainer.model, trainer.data.train.inputs)
    for got, want, old in zip(averaged, expected, trained, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # float32 sums in another order
        assert not torch.allclose(got, old, rtol=1e-3)  # recomputed, not the training's running values
    # Passes: one forward over the training split per snapshot, counted with the trial's.
    assert result.forward_passes == EPOCHS * STEPS_PER_EPOCH * 2 + STEPS_PER_EPOCH


def test_swa_averages_the_end_of_epoch_weights_and_anneals_to_its_rate():
    trainer = Trainer(_spec("erm+swa", swa_start=0.5, swa_lr=0.3))
    assert trainer.averager.start_epoch == 2
    snapshots, rates = [], []
    while not trainer.finished:
        trainer.train_epoch()
        snapshots.append(_weights(trainer.model))
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    expected = [torch.stack(ws).mean(dim=0) for ws in zip(*snapshots[2:], strict=True)]
    for got, want in zip(trainer.averager.module.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # The recipe's cosine until the start epoch; then SWALR reaches α_swa = 0.3 × 0.1 within an
    # epoch and holds it (the cosine would have decayed to 0 by the end).
    assert rates[1] == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 2 / EPOCHS)).item()))
    assert rates[2] == pytest.approx(0.03, rel=1e-12) and rates[3] == pytest.approx(0.03, rel=1e-12)


@pytest.mark.parametrize(("method", "hparams"), [("sam+swa", {"swa_start": 0.5}), ("sam+ema", {"ema_decay": 0.9})])
def test_a_resumed_averaging_trial_continues_bit_for_bit(method, hparams):
    straight = Trainer(_spec(method, **hparams))
    results = [straight.train_epoch() for _ in range(EPOCHS)]
    for stop in (2, 3):  # inside the SWA phase, its scheduler made; and at its first epoch
        interrupted = Trainer(_spec(method, **hparams))
        for _ in range(stop):
            interrupted.train_epoch()
        buffer = io.BytesIO()
        torch.save(interrupted.state_dict(), buffer)  # as the trial's checkpoint file holds it
        buffer.seek(0)
        resumed = Trainer(_spec(method, **hparams))
        resumed.load_state_dict(torch.load(buffer, weights_only=False))
        rest = [resumed.train_epoch() for _ in range(EPOCHS - stop)]
        # Exact by contract: the average, its scheduler and the passes restored from a copy.
        assert [(r.val_loss, r.learning_rate, r.forward_passes) for r in rest] == [
            (r.val_loss, r.learning_rate, r.forward_passes) for r in results[stop:]
        ]
        assert resumed.test() == straight.test()


def test_flatness_is_measured_on_the_evaluated_weights():
    spec = dataclasses.replace(
        _spec("erm+swa", swa_start=0.5),
        flatness=FlatnessConfig(
            when="final",
            subset_size=64,
            batch_size=64,
            eigen_max_iterations=5,
            trace_max_probes=4,
            trace_min_probes=4,
            sharpness_steps=1,
        ),
    )
    trainer = Trainer(spec)
    while not trainer.finished:
        result = trainer.train_epoch()
    subset = trainer.data.train.head(64)
    batches = [(subset.inputs, subset.targets)]

    def measured(model):
        generator = torch.Generator(device="cpu").manual_seed(spec.seed)
        return measure_flatness(model, batches, F.cross_entropy, spec.flatness, generator).to_metrics()

    averaged, trained = measured(trainer.averager.module), measured(trainer.model)
    key = next(k for k in averaged if "eigenvalue" in k)
    assert result.flatness[key] == pytest.approx(averaged[key], rel=1e-6)
    assert result.flatness[key] != pytest.approx(trained[key], rel=1e-3)
