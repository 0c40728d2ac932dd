"""``synthetic_cifar10``: CIFAR-10's shape, sizes and split through the real CIFAR path, no files."""

from __future__ import annotations

import torch

from bench.config import DataConfig
from bench.data import available_datasets, load_dataset
from bench.data.vision import CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES


def test_synthetic_cifar10_has_cifar10s_shape_sizes_and_split(tmp_path) -> None:
    assert "synthetic_cifar10" in available_datasets()
    # An empty data folder: nothing is read from disk, nothing is downloaded.
    config = DataConfig(name="synthetic_cifar10", data_dir=str(tmp_path), val_fraction=0.1)
    dataset = load_dataset(config)
    assert dataset.name == "synthetic_cifar10" and dataset.num_classes == 10 and dataset.input_shape == (3, 32, 32)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (45_000, 5_000, CIFAR10_TEST_IMAGES)
    assert len(dataset.train) + len(dataset.val) == CIFAR10_TRAIN_IMAGES
    # Balanced classes, carved stratified as real CIFAR-10's validation split is.
    assert torch.bincount(dataset.val.targets, minlength=10).tolist() == [500] * 10
    assert torch.bincount(dataset.test.targets, minlength=10).tolist() == [1_000] * 10
    # Standardized with the training split's statistics, like every image dataset.
    means = dataset.train.inputs.double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-5)
    assert list(tmp_path.iterdir()) == []
    # Seeded: the same pixels on every load (and every machine).
    again = load_dataset(config.model_copy(update={"max_train_samples": 16}))
    assert torch.equal(again.train.inputs, dataset.train.inputs[:16])
    assert torch.equal(again.test.inputs, dataset.test.inputs)
