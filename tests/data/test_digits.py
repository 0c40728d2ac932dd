"""The digits dataset is scikit-learn's, read without importing scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from bench.data.digits import digits_arrays


def test_the_arrays_are_scikit_learns_load_digits():
    images, labels = digits_arrays()
    bunch = load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    np.testing.assert_array_equal(images, bunch.images)  # the same file, parsed the same way: exact
    np.testing.assert_array_equal(labels, bunch.target)
    assert images.dtype == bunch.images.dtype and labels.dtype == bunch.target.dtype
