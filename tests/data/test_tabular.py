"""The breast-cancer table is scikit-learn's, split and standardized per feature."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

from bench.config import DataConfig
from bench.data import load_dataset
from bench.data.tabular import breast_cancer_arrays
from bench.models import create_model


def test_the_arrays_are_scikit_learns_load_breast_cancer():
    features, labels = breast_cancer_arrays()
    bunch = load_breast_cancer()
    assert features.shape == (569, 30) and labels.shape == (569,)
    np.testing.assert_array_equal(features, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)


def test_split_is_stratified_and_every_feature_is_standardized_on_the_training_split():
    config = DataConfig(name="breast_cancer", val_fraction=0.2, test_fraction=0.2, split_seed=3)
    dataset = load_dataset(config)
    sizes = [len(dataset.train), len(dataset.val), len(dataset.test)]
    assert sum(sizes) == 569 and dataset.num_classes == 2 and dataset.input_shape == (30, 1, 1)
    assert abs(len(dataset.val) - 0.2 * 569) <= 1 and abs(len(dataset.test) - 0.2 * 569) <= 1
    benign = 357 / 569
    for split in (dataset.train, dataset.val, dataset.test):
        assert abs(split.targets.float().mean().item() - benign) < 0.02  # stratified
    train = dataset.train.inputs.double().squeeze()
    torch.testing.assert_close(train.mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.std(0), torch.ones(30, dtype=torch.float64), atol=1e-5, rtol=0)
    # the same seed, the same split; another seed, another
    again = load_dataset(config)
    assert torch.equal(again.test.inputs, dataset.test.inputs)
    other = load_dataset(config.model_copy(update={"split_seed": 4}))
    assert not torch.equal(other.test.inputs, dataset.test.inputs)


def test_label_noise_and_a_reduced_train_set_apply_to_the_table():
    clean = load_dataset(DataConfig(name="breast_cancer"))
    noisy = load_dataset(DataConfig(name="breast_cancer", label_noise=0.2))
    flipped = (clean.train.targets != noisy.train.targets).float().mean().item()
    assert abs(flipped - 0.2) < 0.01 and torch.equal(clean.test.targets, noisy.test.targets)
    quarter = load_dataset(DataConfig(name="breast_cancer", train_fraction=0.25))
    assert abs(len(quarter.train) - 0.25 * len(clean.train)) <= 1


def test_the_mlp_takes_a_row_of_features():
    dataset = load_dataset(DataConfig(name="breast_cancer"))
    model = create_model("mlp", dataset.input_shape, dataset.num_classes, hidden=16, depth=2)
    assert model(dataset.train.inputs[:5]).shape == (5, 2)
