"""The edge of stability of an optimizer: the curvature a model's top Hessian eigenvalue is read
against. Plain arithmetic, apart from :mod:`bench.measure.flatness` (torch): the leaderboard divides
each row's recorded λ_max by it and needs no torch import for that (about 3 s of its start-up)."""

from __future__ import annotations


def edge_of_stability(learning_rate: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    """The curvature above which this optimizer's iteration diverges on a quadratic: 2/η for
    gradient descent (Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the
    Edge of Stability", ICLR 2021: λ_max rises to it and hovers there), 2(1 + β)/η with heavy-ball
    momentum β, and 2(1 + β)/(η(1 + 2β)) with Nesterov's (their Appendix, the maximal stable step
    sizes of momentum on a quadratic). A trained model's λ_max divided by this value is ≈ 1 at
    the edge of stability, well below 1 where the minimum is flatter than the step size forces."""
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if nesterov:
        return 2.0 * (1.0 + momentum) / (learning_rate * (1.0 + 2.0 * momentum))
    return 2.0 * (1.0 + momentum) / learning_rate
