"""Training-label noise and training subsets on the real digits data (scikit-learn's load_digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from bench.config import ConfigError, DataConfig, parse_config
from bench.data import load_dataset
from bench.data.noise import flip_labels, stratified_subset


def _changed(clean: torch.Tensor, noisy: torch.Tensor) -> np.ndarray:
    return np.flatnonzero((clean != noisy).numpy())


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.73])
def test_exactly_the_stated_fraction_of_training_labels_is_flipped(rate):
    clean = load_dataset(DataConfig(name="digits", split_seed=3))
    noisy = load_dataset(DataConfig(name="digits", split_seed=3, label_noise=rate))
    n = len(clean.train)
    assert len(_changed(clean.train.targets, noisy.train.targets)) == round(rate * n)  # exact, not Bernoulli
    # Inputs, and every validation and test tensor, are the clean ones (pure data movement: exact).
    assert torch.equal(noisy.train.inputs, clean.train.inputs)
    for name in ("val", "test"):
        assert torch.equal(getattr(noisy, name).targets, getattr(clean, name).targets), name
        assert torch.equal(getattr(noisy, name).inputs, getattr(clean, name).inputs), name
    assert int(noisy.train.targets.min()) >= 0 and int(noisy.train.targets.max()) < clean.num_classes


def test_the_same_seed_flips_the_same_samples_to_the_same_labels():
    config = DataConfig(name="digits", label_noise=0.4, label_noise_seed=11)
    first, second = load_dataset(config), load_dataset(config)
    assert torch.equal(first.train.targets, second.train.targets)
    clean = load_dataset(DataConfig(name="digits")).train.targets
    other = load_dataset(DataConfig(name="digits", label_noise=0.4, label_noise_seed=12)).train.targets
    flipped, flipped_other = set(_changed(clean, first.train.targets)), set(_changed(clean, other))
    assert len(flipped) == len(flipped_other) and flipped != flipped_other
    # label_noise_seed defaults to split_seed
    default = load_dataset(DataConfig(name="digits", split_seed=11, label_noise=0.4)).train.targets
    explicit = load_dataset(
        DataConfig(name="digits", split_seed=11, label_noise=0.4, label_noise_seed=11)
    ).train.targets
    assert torch.equal(default, explicit)


def test_flipped_labels_are_uniform_over_the_other_classes():
    """Symmetric noise: a flipped label is never its old class and each of the K−1 others is equally
    likely. A χ² goodness-of-fit test of the shift (new − old) mod K on 50,000 flips; the seed is
    fixed, so the outcome is too, and p is far from any threshold when the shift is uniform."""
    k = 10
    targets = torch.arange(100_000) % k
    result = flip_labels(targets, k, 0.5, seed=0)
    assert len(result.flipped) == 50_000
    old, new = targets[result.flipped], result.targets[result.flipped]
    shift = ((new - old) % k).numpy()
    assert shift.min() >= 1  # never the same class
    counts = np.bincount(shift, minlength=k)[1:]
    assert stats.chisquare(counts).pvalue > 1e-3
    untouched = np.setdiff1d(np.arange(len(targets)), result.flipped.numpy())
    assert torch.equal(result.targets[untouched], targets[untouched])


def test_flip_labels_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        flip_labels(torch.zeros(4, dtype=torch.int64), 10, 1.0, seed=0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        flip_labels(torch.zeros(4, dtype=torch.int64), 1, 0.5, seed=0)
    with pytest.raises(ValueError, match="labels must lie"):
        flip_labels(torch.tensor([0, 10]), 10, 0.5, seed=0)


def test_train_fraction_is_a_stratified_seeded_subset_of_the_training_split():
    full = load_dataset(DataConfig(name="digits"))
    half = load_dataset(DataConfig(name="digits", train_fraction=0.5))
    per_class = torch.bincount(full.train.targets, minlength=10)
    expected = torch.tensor([round(0.5 * int(c)) for c in per_class])
    assert torch.equal(torch.bincount(half.train.targets, minlength=10), expected)
    # every kept sample is a training sample (same normalized inputs), and val/test are untouched
    index = stratified_subset(full.train.targets, 0.5, seed=0)
    assert torch.equal(half.train.inputs, full.train.inputs[index])
    assert torch.equal(half.val.targets, full.val.targets) and torch.equal(half.test.inputs, full.test.inputs)
    assert torch.equal(load_dataset(DataConfig(name="digits", train_fraction=0.5)).train.targets, half.train.targets)


def test_subset_cap_and_noise_compose_in_order():
    """train_fraction, then max_train_samples, then noise on exactly the samples trained on."""
    config = DataConfig(name="digits", train_fraction=0.5, max_train_samples=300, label_noise=0.25)
    noisy = load_dataset(config)
    clean = load_dataset(config.model_copy(update={"label_noise": 0.0}))
    assert len(noisy.train) == len(clean.train) == 300
    assert len(_changed(clean.train.targets, noisy.train.targets)) == 75
    small = load_dataset(DataConfig(name="digits", train_fraction=0.1, max_train_samples=1000))
    assert len(small.train) == int(
        torch.bincount(load_dataset(DataConfig(name="digits", train_fraction=0.1)).train.targets).sum()
    )


@pytest.mark.parametrize(
    ("dataset", "fragment"),
    [
        ({"label_noise": 1.0}, "dataset.label_noise: Input should be less than 1"),
        ({"label_noise": -0.1}, "dataset.label_noise: Input should be greater than or equal to 0"),
        ({"train_fraction": 0}, "dataset.train_fraction: Input should be greater than 0"),
        ({"train_fraction": 1.5}, "dataset.train_fraction: Input should be less than or equal to 1"),
    ],
)
def test_bad_noise_and_fraction_are_one_line_config_errors(dataset, fragment):
    with pytest.raises(ConfigError) as error:
        parse_config({"benchmark": "t", "regularizers": ["erm"], "dataset": {"name": "digits", **dataset}})
    assert fragment in str(error.value) and "\n" not in str(error.value)
