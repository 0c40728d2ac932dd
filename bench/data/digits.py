"""scikit-learn's handwritten digits: 1,797 real 8×8 images shipped inside the package."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from bench.config import DataConfig
from bench.data import Dataset, register_dataset, split_dataset

#: The file ``sklearn.datasets.load_digits`` reads, inside the scikit-learn package.
DIGITS_FILE = Path("datasets", "data", "digits.csv.gz")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 8, 8) and labels of ``sklearn.datasets.load_digits``, read from the very
    file it reads, the way it reads it (``np.loadtxt`` of the gzipped CSV, label last), without
    importing scikit-learn: its import (SciPy, ...) took 1.7 s of every trial worker's first
    dataset load, and of the driver's start. Falls back to scikit-learn when the file is not
    where this scikit-learn keeps it."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.origin).parent / DIGITS_FILE if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        return np.asarray(bunch.images), np.asarray(bunch.target)
    with gzip.open(path, mode="rt", encoding="utf-8") as file:
        data = np.loadtxt(file, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


@register_dataset("digits")
def load_digits(config: DataConfig) -> Dataset:
    """Stratified train/val/test split fixed by ``config.split_seed``; pixels standardized."""
    raw_images, raw_labels = digits_arrays()
    images = torch.from_numpy(np.asarray(raw_images, dtype=np.float32)[:, None])  # (N, 1, 8, 8)
    return split_dataset("digits", images, torch.from_numpy(np.asarray(raw_labels, dtype=np.int64)), 10, config)
