"""The digits data, the seeded split and one trial without Ray."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import regularizers
from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.data import load_dataset
from bench.data.splits import stratified_split
from bench.training import Trainer, TrialSpec, _lr_factor, run_trial


def test_digits_split_is_stratified_disjoint_and_deterministic():
    labels = np.repeat(np.arange(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    val, test, train = stratified_split(labels, [0.2, 0.2], seed=5)
    assert len(set(val) | set(test) | set(train)) == len(labels) == len(val) + len(test) + len(train)
    overall = np.bincount(labels) / len(labels)
    for part in (val, test, train):
        share = np.bincount(labels[part], minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.01  # class balance kept in every part
    again = stratified_split(labels, [0.2, 0.2], seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((val, test, train), again, strict=True))
    other = stratified_split(labels, [0.2, 0.2], seed=6)
    assert not np.array_equal(val, other[0])


def test_digits_dataset_is_the_real_sklearn_data_normalized_on_train():
    from sklearn.datasets import load_digits

    data = load_dataset(DataConfig(name="digits", split_seed=0))
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == len(load_digits().target) == 1797
    # float32 statistics of 69k values: a reduction of n terms errs by ~log2(n)·eps32·mean|x|
    # ≈ 17 · 1.2e-7 ≈ 2e-6, so 1e-5 holds on any CPU while a missed normalization is off by O(1).
    inputs = data.train.inputs
    assert abs(inputs.mean().item()) < 1e-5 and abs(inputs.std().item() - 1) < 1e-5
    for split in (data.val, data.test):
        assert sorted(set(split.targets.tolist())) == list(range(10))


def _spec(**training) -> TrialSpec:
    return TrialSpec(
        benchmark="unit",
        dataset=DataConfig(name="digits", max_train_samples=300),
        model=ModelConfig(name="mlp", options={"hidden": 16, "depth": 1}),
        training=TrainingConfig(**{"epochs": 3, "batch_size": 50, "learning_rate": 0.1, **training}),
        regularizer="sam",
        regularizer_hparams={"perturbation_radius": 0.05},
        flatness=FlatnessConfig(when="off"),
        seed=3,
    )


def test_same_seed_same_trial_and_another_seed_differs():
    first, second = run_trial(_spec()), run_trial(_spec())
    # Exact by contract: the same seed in the same process gives the same trial, bit for bit.
    assert [e.train_loss for e in first.epochs] == [e.train_loss for e in second.epochs]
    assert first.test == second.test
    other = run_trial(dataclasses.replace(_spec(), seed=4))
    assert [e.train_loss for e in other.epochs] != [e.train_loss for e in first.epochs]


def test_passes_are_counted_from_the_regularizer_reports():
    result = run_trial(_spec())
    steps_per_epoch = 300 // 50
    assert result.epochs[-1].forward_passes == 3 * steps_per_epoch * 2  # SAM: 2 passes per step
    assert result.epochs[0].forward_passes == steps_per_epoch * 2


def test_checkpoint_round_trip_continues_bit_identically():
    straight = Trainer(_spec())
    losses = [straight.train_epoch().train_loss for _ in range(3)]
    interrupted = Trainer(_spec())
    interrupted.train_epoch()
    state = interrupted.state_dict()
    resumed = Trainer(_spec())
    resumed.load_state_dict(state)
    # Exact by contract: weights, optimizer and RNG state restored from a copy.
    assert [resumed.train_epoch().train_loss for _ in range(2)] == losses[1:]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@dataclass
class MomentumAscent(regularizers.Regularizer):
    """A stateful toy: the ascent follows a running sum of past gradients, with ρ ∝ the learning
    rate's factor (as GSAM ties its radius), and it logs the schedules it was handed."""

    state = ("direction",)

    def __post_init__(self):
        super().__post_init__()
        self.direction = None
        self.schedules = []

    def start_step(self, schedule):
        self.schedules.append(schedule)
        self.radius = 0.05 * schedule.lr_factor

    def step(self, closure):
        clean = closure(update_bn=True)
        g = regularizers.gradients(closure.parameters)
        self.direction = g if self.direction is None else torch._foreach_add(self.direction, g)
        ascent = torch._foreach_mul(self.direction, self.radius / regularizers.global_norm(self.direction))
        with regularizers.perturbed_weights(closure.parameters):
            with torch.no_grad():
                torch._foreach_add_(closure.parameters, ascent)
            regularizers.zero_grads(closure.parameters)
            closure()
        return self.report(closure, clean.loss)

    def cost(self, has_batchnorm):
        return regularizers.PassCost(2, 2)


@pytest.fixture
def stateful_method():
    regularizers.register("test_momentum_ascent")(MomentumAscent)
    yield "test_momentum_ascent"
    regularizers.unregister("test_momentum_ascent")


def test_a_stateful_methods_state_travels_in_the_checkpoint(stateful_method):
    spec = dataclasses.replace(_spec(), regularizer=stateful_method, regularizer_hparams={})
    straight = Trainer(spec)
    losses = [straight.train_epoch().train_loss for _ in range(3)]
    state = Trainer(spec).state_dict()  # before any step: the state is empty
    assert state["regularizer"] == {"direction": None}
    interrupted = Trainer(spec)
    interrupted.train_epoch()
    state = interrupted.state_dict()
    resumed, forgetful = Trainer(spec), Trainer(spec)
    resumed.load_state_dict(state)
    forgetful.load_state_dict({**state, "regularizer": {"direction": None}})
    # Exact by contract; and without the method's state the same checkpoint continues differently.
    assert [resumed.train_epoch().train_loss for _ in range(2)] == losses[1:]
    assert [forgetful.train_epoch().train_loss for _ in range(2)] != losses[1:]
    # The schedule each step was handed: its index and the cosine factor of that step's rate.
    schedules = straight.regularizer.schedules
    assert [s.step for s in schedules] == list(range(straight.total_steps)) == list(range(3 * 6))
    for s in schedules:
        assert s.lr_factor == pytest.approx(_lr_factor(s.step, 18, 0, "cosine"), rel=1e-12)
        assert s.learning_rate == pytest.approx(0.1 * s.lr_factor, rel=1e-12)


def test_label_smoothing_is_pytorchs_epsilon_over_k_form():
    trainer = Trainer(_spec(label_smoothing=0.2))
    logits = torch.randn(7, 10, dtype=torch.float64)
    targets = torch.randint(0, 10, (7,))
    log_probs = logits.log_softmax(dim=1)
    smoothed = torch.full_like(log_probs, 0.2 / 10)
    smoothed[torch.arange(7), targets] += 0.8
    expected = -(smoothed * log_probs).sum(dim=1).mean()
    # Two float64 formulas summing 7 × 10 terms −q·log p, all ≥ 0 (no cancellation): each within
    # 70 eps relative. A wrong split (ε/(K−1) off the target) would move the loss by ~2e-5.
    torch.testing.assert_close(
        trainer.train_loss_fn(logits, targets), expected, rtol=2 * 70 * torch.finfo(torch.float64).eps, atol=0
    )


def test_cosine_schedule_with_warmup():
    assert _lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert _lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert _lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert _lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert _lr_factor(70, 100, 0, "constant") == 1.0


def test_float64_training_runs_in_float64():
    trainer = Trainer(_spec(precision="float64"))
    assert all(p.dtype == torch.float64 for p in trainer.model.parameters())
    assert trainer.data.train.inputs.dtype == torch.float64
    trainer.train_epoch()


def test_flatness_measured_at_the_end_reaches_the_row():
    from bench import metrics
    from bench.results.rows import TrialOutcome, build_row
    from bench.results.schema import Phase, TrialStatus

    spec = dataclasses.replace(
        _spec(),
        flatness=FlatnessConfig(
            when="final",
            subset_size=64,
            batch_size=32,
            eigen_max_iterations=5,
            trace_sketch_size=3,
            trace_min_probes=4,
            trace_max_probes=4,
            sharpness_steps=2,
        ),
    )
    result = run_trial(spec)
    assert all(not e.flatness for e in result.epochs[:-1])
    final = result.epochs[-1].to_metrics()
    assert final[metrics.HESSIAN_TOP_EIGENVALUE] > 0 and final[metrics.HESSIAN_TRACE_STDERR] >= 0  # a sqrt: ≥ 0 exactly
    # ≥ 0 by construction, not by arithmetic: δ = 0 is one of the candidates the maximum runs over.
    assert final[metrics.EPSILON_SHARPNESS] >= 0
    row = build_row(TrialOutcome("s", "t1", Phase.SEARCH.value, TrialStatus.COMPLETED, spec, 0, final))
    # The row copies the measured values: exact.
    assert row.hessian_top_eigenvalue == final[metrics.HESSIAN_TOP_EIGENVALUE]
    assert row.hessian_trace == final[metrics.HESSIAN_TRACE]
    # The stopping rules' figures: the caps above bind (5 products; Hutch++'s 2 × 3 sketch HVPs and 4 probes).
    assert (row.hessian_eigen_iterations, row.hessian_trace_probes) == (5, 2 * 3 + 4)
    assert row.hessian_eigen_converged == bool(final[metrics.HESSIAN_EIGEN_CONVERGED])
    assert row.epsilon_sharpness == final[metrics.EPSILON_SHARPNESS]


def test_a_trial_spec_comes_back_from_its_row():
    """What a Parquet row records of a trial, with its benchmark's config, is the trial itself."""
    from bench.config import parse_config
    from bench.results.rows import TrialOutcome, build_row
    from bench.results.schema import Phase, TrialStatus

    spec = _spec(label_smoothing=0.1)
    config = parse_config(
        {
            "benchmark": spec.benchmark,
            "dataset": spec.dataset.model_dump(),
            "model": spec.model.model_dump(),
            "flatness": spec.flatness.model_dump(),
            "regularizers": [{"name": "erm"}],
        }
    )
    row = build_row(TrialOutcome("s", "t1", Phase.SEARCH.value, TrialStatus.COMPLETED, spec, 0, {}))
    assert TrialSpec.from_row(config, dataclasses.asdict(row)) == spec
    assert TrialSpec.from_row(config, dataclasses.asdict(dataclasses.replace(row, seed=4))).seed == 4


def test_each_step_sees_the_positions_of_its_samples():
    """The closure's sample_ids index the training split: each epoch visits every position once
    (one dropped tail at most), and the inputs are those rows."""
    trainer = Trainer(_spec(epochs=1))
    seen = []
    for inputs, targets, sample_ids in trainer.batches():
        assert torch.equal(targets, trainer.data.train.targets[sample_ids])
        assert sample_ids.device.type == "cpu"  # read by SAF without a host-device sync
        assert torch.equal(inputs, trainer.data.train.inputs[sample_ids])  # the mlp's digits: no augmentation
        seen.append(sample_ids)
    ids = torch.cat(seen)
    assert len(set(ids.tolist())) == len(ids) == 300
