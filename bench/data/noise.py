"""Synthetic label noise and training subsets: the training split only, seeded, reproducible.

Symmetric ("uniform") label noise is the synthetic noise of the noisy-label experiments of
Zhang et al. 2017 ("Understanding deep learning requires rethinking generalization", §2) and
Jiang et al. 2018 (MentorNet), which SAM's label-noise experiments follow (Foret et al. 2021,
"Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR: a fraction of the
training labels flipped at random, the test set kept clean). Here the count is exact rather than
Bernoulli: exactly ``round(rate × n)`` samples are flipped, and each flipped label becomes a
*different* class, so ``rate`` is the realized fraction of wrong training labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bench.data.splits import stratified_split


@dataclass(frozen=True)
class FlippedLabels:
    """The noisy labels and which samples were flipped."""

    targets: Tensor  # (n,) int64: the labels to train on
    flipped: Tensor  # (k,) int64, sorted: indices whose label was changed, k = round(rate × n)


def flip_labels(targets: Tensor, num_classes: int, rate: float, seed: int) -> FlippedLabels:
    """Symmetric label noise: ``round(rate × n)`` labels, each replaced by a uniformly drawn other class.

    ``targets``: (n,) integer labels in ``[0, num_classes)``. The flipped samples are the first
    ``k`` of a permutation drawn from ``numpy.random.default_rng(seed)``, and each gets
    ``(y + u) mod num_classes`` with ``u`` uniform on ``{1, …, num_classes − 1}``, i.e. every other
    class with probability ``1 / (num_classes − 1)``. The same ``targets``, ``rate`` and ``seed``
    flip the same samples to the same labels. ``targets`` is not modified.

    Raises ValueError for ``rate`` outside ``[0, 1)``, fewer than 2 classes, or labels out of range.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label noise rate must lie in [0, 1), got {rate}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    labels = targets.detach().cpu().numpy().astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    count = int(round(rate * len(labels)))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(labels))[:count])
    shift = rng.integers(1, num_classes, size=count)  # never 0: the new class differs
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + shift) % num_classes
    return FlippedLabels(
        targets=torch.from_numpy(noisy).to(targets.device, targets.dtype),
        flipped=torch.from_numpy(chosen),
    )


def stratified_subset(targets: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a class-stratified subset of about ``fraction`` of ``targets``.

    Per class, ``round(fraction × class size)`` samples (:func:`bench.data.splits.stratified_split`
    with ``seed``); ``fraction == 1`` keeps every index. Raises ValueError outside ``(0, 1]``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must lie in (0, 1], got {fraction}")
    if fraction == 1.0:
        return torch.arange(len(targets))
    subset, _rest = stratified_split(targets.detach().cpu().numpy(), [fraction], seed=seed)
    return torch.from_numpy(subset)
