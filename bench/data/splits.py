"""Seeded, stratified splits of labelled data."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split indices into ``len(fractions) + 1`` disjoint parts, each with the class balance of ``labels``.

    ``fractions`` are the sizes of the leading parts (e.g. ``[0.2, 0.2]`` → val, test); the last
    part gets the rest. Per class, indices are shuffled with a generator seeded by ``seed`` and
    cut by rounding, so the same labels and seed always give the same indices.
    """
    if any(f <= 0 for f in fractions) or sum(fractions) >= 1:
        raise ValueError(f"split fractions must be positive and sum below 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        start = 0
        for part, fraction in enumerate(fractions):
            count = int(round(fraction * len(members)))
            parts[part].append(members[start : start + count])
            start += count
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(chunks)) for chunks in parts]
