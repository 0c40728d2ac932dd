"""scikit-learn's handwritten digits: 1,797 real 8×8 images shipped inside the package."""

from __future__ import annotations

import numpy as np
import torch

from bench.config import DataConfig
from bench.data import Dataset, TensorSplit, normalize, register_dataset
from bench.data.splits import stratified_split


@register_dataset("digits")
def load_digits(config: DataConfig) -> Dataset:
    """Stratified train/val/test split fixed by ``config.split_seed``; pixels standardized."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (N, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    val_index, test_index, train_index = stratified_split(
        labels, [config.val_fraction, config.test_fraction], seed=config.split_seed
    )
    inputs = torch.from_numpy(images)
    targets = torch.from_numpy(labels)
    train, val, test = normalize(inputs[train_index], inputs[val_index], inputs[test_index])
    return Dataset(
        name="digits",
        train=TensorSplit(train, targets[train_index]),
        val=TensorSplit(val, targets[val_index]),
        test=TensorSplit(test, targets[test_index]),
        num_classes=10,
    )
