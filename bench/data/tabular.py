"""Tabular data that ships inside scikit-learn: the Wisconsin breast-cancer table (569 rows,
30 real-valued features, 2 classes; ``sklearn.datasets.load_breast_cancer``).

Rows become tensors of shape (30, 1, 1): one feature per channel, so :func:`bench.data.normalize`
standardizes each feature with the training split's mean and standard deviation, and the ``mlp``
model flattens them back to a vector.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from bench.config import DataConfig
from bench.data import Dataset, register_dataset, split_dataset

#: The file ``sklearn.datasets.load_breast_cancer`` reads, inside the scikit-learn package.
BREAST_CANCER_FILE = Path("datasets", "data", "breast_cancer.csv")


def breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Features (569, 30) and labels (0 malignant, 1 benign), read from scikit-learn's own CSV
    (first line: rows, features and class names; then the features and the label) without
    importing scikit-learn, as :func:`bench.data.digits.digits_arrays` does."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / BREAST_CANCER_FILE if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        return np.asarray(bunch.data), np.asarray(bunch.target)
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1].astype(int, copy=False)


@register_dataset("breast_cancer")
def load_breast_cancer(config: DataConfig) -> Dataset:
    """Stratified train/val/test split fixed by ``config.split_seed``; features standardized."""
    features, raw_labels = breast_cancer_arrays()
    inputs = torch.from_numpy(np.asarray(features, dtype=np.float32)[:, :, None, None])  # (N, 30, 1, 1)
    return split_dataset("breast_cancer", inputs, torch.from_numpy(np.asarray(raw_labels, dtype=np.int64)), 2, config)
