"""bench.measure.flatness against exact answers: the dense Hessian of a small float64 model, and the
trust-region maximum of a quadratic loss solved in closed form (eigendecomposition + secular
equation)."""

from __future__ import annotations

import copy
import math

import pytest
import scipy.stats
import torch
from torch import Tensor, nn
from torch.func import functional_call

from bench import metrics
from bench.config import FlatnessConfig
from bench.measure.flatness import (
    FlatnessResult,
    adaptive_sharpness,
    epsilon_sharpness,
    hessian_vector_product,
    hutchinson_trace,
    measure_flatness,
    should_measure,
    top_eigenvalue,
    trainable_parameters,
)
from bench.measure.stability import edge_of_stability

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
cross_entropy = nn.functional.cross_entropy


# --- fixtures: a small network with its exact Hessian, and quadratic losses ---------------------


class SmallNet(nn.Module):
    """Linear → BatchNorm → tanh → dropout → linear, plus a frozen and an unused parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 3))
        self.frozen_scale = nn.Parameter(torch.tensor(1.5), requires_grad=False)
        self.unused = nn.Parameter(torch.zeros(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) * self.frozen_scale


def small_problem(dtype: torch.dtype = F64) -> tuple[SmallNet, list[tuple[Tensor, Tensor]]]:
    """A model in *train* mode with non-trivial BN statistics, and three batches of unequal size.

    Seed and input scaling are chosen so the top Hessian eigenvalue dominates (|λ₂/λ₁| ≈ 0.34),
    which lets power iteration reach 1e-6 relative accuracy in a few dozen iterations.
    """
    torch.manual_seed(3)
    model = SmallNet().to(F64)
    x = torch.randn(15, 4, dtype=F64)
    x[:, 0] *= 4.0
    y = torch.randint(0, 3, (15,))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 4, dtype=F64))
    model = model.to(dtype)
    x = x.to(dtype)
    return model, [(x[:7], y[:7]), (x[7:12], y[7:12]), (x[12:], y[12:])]


def exact_hessian(model: nn.Module, batches, loss_fn) -> Tensor:
    """Dense Hessian of the subset's mean loss (eval mode) w.r.t. the flattened trainable parameters."""
    named = [(name, p.detach()) for name, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.reshape(-1) for _, p in named])
    total = sum(x.shape[0] for x, _ in batches)
    was_training = model.training
    model.eval()

    def mean_loss(vector: Tensor) -> Tensor:
        chunks = torch.split(vector, [p.numel() for _, p in named])
        params = {name: chunk.view_as(p) for (name, p), chunk in zip(named, chunks, strict=True)}
        return sum(x.shape[0] / total * loss_fn(functional_call(model, params, (x,)), y) for x, y in batches)

    hessian = torch.autograd.functional.hessian(mean_loss, flat)
    model.train(was_training)
    return hessian


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def problem():
    model, batches = small_problem()
    return model, batches, exact_hessian(model, batches, cross_entropy)


def flatten(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like) -> list[Tensor]:
    return [chunk.view_as(p) for chunk, p in zip(torch.split(vector, [p.numel() for p in like]), like, strict=True)]


class Quadratic(nn.Module):
    """L(w) = ½ wᵀAw + bᵀw, with w split over two parameter tensors (the input is ignored)."""

    def __init__(self, a: Tensor, b: Tensor, w: Tensor, split: int = 3) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.head = nn.Parameter(w[:split].clone())
        self.tail = nn.Parameter(w[split:].reshape(-1, 1).clone())

    def weights(self) -> Tensor:
        return torch.cat([self.head, self.tail.reshape(-1)])

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights()
        return (0.5 * w @ self.a @ w + self.b @ w).expand(x.shape[0])


def mean_output(outputs: Tensor, targets: Tensor) -> Tensor:
    return outputs.mean()


QUADRATIC_BATCHES = [(torch.zeros(4, 1, dtype=F64), torch.zeros(4)), (torch.zeros(2, 1, dtype=F64), torch.zeros(2))]


def symmetric(eigenvalues: list[float], seed: int) -> Tensor:
    size = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(size, size, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ q.T


def trust_region_max(a: Tensor, g: Tensor, radius: float) -> float:
    """max_{‖δ‖ ≤ ε} ½δᵀAδ + gᵀδ for A with a positive eigenvalue (the maximum is on the sphere).

    With A = QΛQᵀ and g̃ = Qᵀg the maximizer is δ(ν) = (νI − A)⁻¹g with ν > λ_max solving the
    secular equation ‖δ(ν)‖ = ε; ‖δ(ν)‖ decreases on (λ_max, ∞), so bisection finds ν.
    """
    lam, q = torch.linalg.eigh(a)
    g_tilde = q.T @ g
    assert lam[-1] > 0 and abs(g_tilde[-1]) > 1e-8, "not the easy case of the trust-region problem"

    def norm(nu: float) -> float:
        return float(torch.linalg.vector_norm(g_tilde / (nu - lam)))

    low = float(lam[-1])
    high = low + 1.0
    while norm(high) > radius:
        high = low + 2 * (high - low)
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if norm(middle) > radius else (low, middle)
    delta = q @ (g_tilde / (high - lam))
    return float(0.5 * delta @ a @ delta + g @ delta)


def trained_tanh_mlp(
    seed: int, widths: tuple[int, int, int], samples: int, steps: int
) -> tuple[nn.Module, Tensor, Tensor]:
    """A float64 tanh MLP (``widths``: inputs, hidden, classes) after ``steps`` full-batch SGD
    steps (lr 0.5) on ``samples`` random points with random labels, all drawn from ``seed``."""
    torch.manual_seed(seed)
    inputs, hidden, classes = widths
    model = nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, classes)).to(F64)
    x = torch.randn(samples, inputs, dtype=F64)
    y = torch.randint(0, classes, (samples,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, x, y


def gap_problem(seed: int) -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    """A 64-parameter tanh MLP, 4 classes, after 200 full-batch SGD steps: a trained model whose
    top eigenvalues are close, λ₂/λ₁ ≈ 0.91–0.92 for seeds 3 and 4 (the gap of the outliers of
    real networks; the :func:`small_problem` gap of 0.34 is an easy case)."""
    model, x, y = trained_tanh_mlp(seed, (5, 6, 4), samples=40, steps=200)
    return model, [(x[:25], y[:25]), (x[25:], y[25:])]


def fixed_trace(model, batches, loss_fn, generator, probes: int, **kwargs):
    """Hutchinson with exactly ``probes`` probes (the stopping rule switched off by min = max)."""
    return hutchinson_trace(model, batches, loss_fn, generator, min_probes=probes, max_probes=probes, **kwargs)


def rounding(*magnitudes: float, operations: int = 64) -> float:
    """An absolute tolerance for float64 results built from terms of these magnitudes.

    Each of ``operations`` roundings contributes at most eps·|term|; the default 64 is generous
    for the few-dozen-operation sums here, and still ~1e-13 relative: far below any effect the
    tests look for, far above the last-bit differences between CPUs (MKL on AMD vs Intel).
    """
    return operations * EPS64 * sum(abs(m) for m in magnitudes)


def snapshot(model: nn.Module):
    return (
        [p.detach().clone() for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [b.clone() for b in model.buffers()],
        [m.training for m in model.modules()],
    )


# --- Hessian-vector products --------------------------------------------------------------------


def test_hvp_equals_exact_hessian_times_vector(problem):
    model, batches, hessian = problem
    parameters = trainable_parameters(model)
    assert all(p is not model.frozen_scale for p in parameters)
    assert hessian.shape[0] == sum(p.numel() for p in parameters)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        vector = torch.randn(hessian.shape[0], dtype=F64, generator=generator)
        product = hessian_vector_product(model, batches, cross_entropy, unflatten(vector, parameters))
        # Two float64 evaluation orders of the same ~60×60 product (autograd vs a dense matmul):
        # they differ by a few hundred eps at most; 1e-10 leaves a wide margin yet catches any
        # error in the math (a missing batch weight is off by tens of percent).
        torch.testing.assert_close(flatten(product), hessian @ vector, rtol=1e-10, atol=1e-12)
    # The unused parameter has a zero Hessian block, returned as zeros (not dropped). Exactly zero
    # is the contract here: no arithmetic ever touches that block, so no rounding can enter it.
    (unused,) = [part for p, part in zip(parameters, product, strict=True) if p is model.unused]
    assert torch.equal(unused, torch.zeros(2, dtype=F64))


def test_hvp_uses_eval_mode_and_batch_size_weights(problem):
    model, batches, hessian = problem
    parameters = trainable_parameters(model)
    vector = torch.randn(hessian.shape[0], dtype=F64, generator=torch.Generator().manual_seed(1))
    expected = hessian @ vector
    # Equal weights per batch (the mean of the batch means) is a different, wrong Hessian.
    equal_weights = sum(exact_hessian(model, [batch], cross_entropy) for batch in batches) / len(batches)
    assert not torch.allclose(equal_weights @ vector, expected, rtol=1e-3)
    # So is the train-mode Hessian (batch statistics in BatchNorm, dropout on).
    model.train()
    product = flatten(hessian_vector_product(model, batches, cross_entropy, unflatten(vector, parameters)))
    torch.testing.assert_close(product, expected, rtol=1e-10, atol=1e-12)
    assert model.training


def test_hvp_rejects_mismatched_vectors_and_bad_inputs(problem):
    model, batches, _ = problem
    parameters = trainable_parameters(model)
    with pytest.raises(ValueError, match="tensors"):
        hessian_vector_product(model, batches, cross_entropy, [torch.zeros_like(parameters[0])])
    with pytest.raises(ValueError, match="shape"):
        hessian_vector_product(model, batches, cross_entropy, [torch.zeros(1, dtype=F64) for _ in parameters])
    with pytest.raises(ValueError, match="at least one batch"):
        hessian_vector_product(model, [], cross_entropy, [torch.zeros_like(p) for p in parameters])
    per_sample = lambda out, y: cross_entropy(out, y, reduction="none")  # noqa: E731
    with pytest.raises(ValueError, match="scalar"):
        hessian_vector_product(model, batches, per_sample, [torch.zeros_like(p) for p in parameters])


# --- top eigenvalue -----------------------------------------------------------------------------


def test_top_eigenvalue_matches_exact_to_1e_6(problem):
    model, batches, hessian = problem
    eigenvalues = torch.linalg.eigvalsh(hessian)
    config = FlatnessConfig(
        eigen_max_iterations=200, eigen_tolerance=1e-8, trace_min_probes=2, trace_max_probes=2, sharpness_steps=1
    )
    result = measure_flatness(model, batches, cross_entropy, config, torch.Generator().manual_seed(0))
    assert result.eigen_converged and result.eigen_iterations < 200
    assert abs(result.top_eigenvalue - eigenvalues[-1].item()) <= 1e-6 * eigenvalues[-1].item()


@pytest.mark.parametrize("seed", [3, 4])
def test_top_eigenvalue_defaults_are_within_1_percent_on_a_small_eigen_gap(seed):
    """The promise of the defaults (FlatnessConfig: tolerance 1e-3, cap 100), from 20 starts."""
    model, batches = gap_problem(seed)
    eigenvalues = torch.linalg.eigvalsh(exact_hessian(model, batches, cross_entropy))
    top = eigenvalues[-1].item()
    ratio = eigenvalues[-2].item() / top
    assert 0.9 < ratio < 0.95 and eigenvalues[0] > -0.1 * top  # the premise: a small gap, a minimum
    defaults = FlatnessConfig()
    for start in range(20):
        result = top_eigenvalue(model, batches, cross_entropy, torch.Generator().manual_seed(start))
        assert result.converged and result.iterations < defaults.eigen_max_iterations
        assert abs(result.eigenvalue - top) <= 0.01 * top
        # The residual bound it reports holds: an exact eigenvalue lies within it (the exact
        # spectrum is itself computed in float64: allow its rounding on top).
        nearest = (eigenvalues - result.eigenvalue).abs().min().item()
        assert nearest <= result.relative_error * abs(result.eigenvalue) + rounding(
            top, operations=10 * len(eigenvalues)
        )


def test_top_eigenvalue_reports_the_iteration_cap():
    a = symmetric([1.0, 0.99, 0.98, 0.5, 0.1], seed=0)  # tiny gap: cannot converge in 3 iterations
    model = Quadratic(a, torch.zeros(5, dtype=F64), torch.zeros(5, dtype=F64))
    result = top_eigenvalue(
        model, QUADRATIC_BATCHES, mean_output, torch.Generator().manual_seed(0), max_iterations=3, tolerance=1e-12
    )
    assert (result.iterations, result.converged) == (3, False)
    assert result.relative_error > 1e-12  # why it did not stop
    # A Ritz value lies inside the spectrum [0.1, 1]; up to the rounding of eigenvalues of size 1.
    assert 0.1 - rounding(1.0) <= result.eigenvalue <= 1.0 + rounding(1.0)


@pytest.mark.parametrize(
    ("spectrum", "dominant", "largest"),
    [
        ([-5.0, 2.0, 1.0, 0.5, -0.3], -5.0, 2.0),
        ([-4.0, -2.0, -1.0, -0.5, -0.2], -4.0, -0.2),
        ([3.0, -1.0, 0.5, 0.2, 0.1], 3.0, 3.0),
    ],
)
def test_top_eigenvalue_is_algebraic_unless_asked_for_magnitude(spectrum, dominant, largest):
    """algebraic=False gives the largest-|λ| eigenvalue (power iteration's answer); the default λ_max."""
    model = Quadratic(symmetric(spectrum, seed=1), torch.ones(5, dtype=F64), torch.zeros(5, dtype=F64))
    kwargs = dict(max_iterations=500, tolerance=1e-13)
    magnitude = top_eigenvalue(
        model, QUADRATIC_BATCHES, mean_output, torch.Generator().manual_seed(0), algebraic=False, **kwargs
    )
    algebraic = top_eigenvalue(model, QUADRATIC_BATCHES, mean_output, torch.Generator().manual_seed(0), **kwargs)
    assert magnitude.converged and algebraic.converged
    assert magnitude.eigenvalue == pytest.approx(dominant, rel=1e-8)
    assert algebraic.eigenvalue == pytest.approx(largest, rel=1e-7)


# --- trace --------------------------------------------------------------------------------------


def single_probe_std(hessian: Tensor) -> float:
    """√Var[zᵀHz] = √(2·Σ_{i≠j} H_ij²) for Rademacher z (Avron & Toledo 2011, JACM 58(2))."""
    off_diagonal = hessian - torch.diag(hessian.diag())
    return math.sqrt(2 * (off_diagonal**2).sum().item())


def test_trace_within_its_reported_error_and_the_error_is_plausible(problem):
    model, batches, hessian = problem
    result = fixed_trace(model, batches, cross_entropy, torch.Generator().manual_seed(0), probes=400)
    exact = hessian.trace().item()
    assert result.probes == 400
    assert abs(result.trace - exact) < 4 * result.stderr
    # And the estimate is not trivially exact: one probe's error is a sizeable fraction of the trace.
    assert single_probe_std(hessian) > 0.2 * abs(exact)


def test_trace_stderr_matches_the_spread_of_repeated_estimates(problem):
    """Over 60 independent estimates of 40 probes each, the reported standard error describes the
    actual errors: as a z-score, as the spread of the estimates, and as an unbiased variance."""
    model, batches, hessian = problem
    exact = hessian.trace().item()
    probes, repeats = 40, 60
    runs = [
        fixed_trace(
            model, batches, cross_entropy, torch.Generator().manual_seed(100 + r), probes=probes, probes_per_pass=8
        )
        for r in range(repeats)
    ]
    estimates = torch.tensor([run.trace for run in runs], dtype=F64)
    stderrs = torch.tensor([run.stderr for run in runs], dtype=F64)
    true_variance = single_probe_std(hessian) ** 2 / probes  # of one estimate
    # |error| ≤ 3·stderr for most: with 40 probes z is close to Student's t(39), P(|t| > 3) ≈ 0.5%;
    # allow a heavier-tailed 2% per run and fail only on a count that has probability < 1e-4.
    outside = int(((estimates - exact).abs() > 3 * stderrs).sum())
    assert outside <= scipy.stats.binom.isf(1e-4, repeats, 0.02), outside
    # The estimates' spread matches the true variance: (n−1)s²/σ² ~ χ²(n−1) for normal estimates
    # (a mean of 40 probes is close to normal). Two-sided test at level 1e-4.
    statistic = (repeats - 1) * estimates.var(correction=1).item() / true_variance
    chi2 = scipy.stats.chi2(repeats - 1)
    assert min(chi2.cdf(statistic), chi2.sf(statistic)) > 0.5e-4, statistic / (repeats - 1)
    # The reported stderr² is an unbiased estimate of that variance: its mean over the runs agrees
    # with the truth (t-test on the 60 values, two-sided, level 1e-4).
    test = scipy.stats.ttest_1samp((stderrs**2).numpy(), true_variance)
    assert test.pvalue > 1e-4, (stderrs**2).mean().item() / true_variance


def test_trace_stops_at_the_first_probe_count_that_meets_the_target(problem):
    model, batches, hessian = problem
    target, cap = 0.15, 400
    # The premise: one probe's relative spread is well above the target, so the rule must work.
    assert single_probe_std(hessian) / abs(hessian.trace().item()) > 3 * target
    result = hutchinson_trace(
        model, batches, cross_entropy, torch.Generator().manual_seed(3), rel_stderr=target, min_probes=2, max_probes=cap
    )
    assert 2 < result.probes < cap and result.stderr <= target * abs(result.trace)
    # The same probes, one fewer, under a cap: the target is not met yet (the rule stopped at the first).
    shorter = hutchinson_trace(
        model,
        batches,
        cross_entropy,
        torch.Generator().manual_seed(3),
        rel_stderr=target,
        min_probes=2,
        max_probes=result.probes - 1,
    )
    assert shorter.probes == result.probes - 1 and shorter.stderr > target * abs(shorter.trace)
    # And it is the plain estimate over those probes: a fixed count gives the same numbers (the same
    # float64 operations in another grouping of probes per pass: equal to rounding).
    fixed = fixed_trace(model, batches, cross_entropy, torch.Generator().manual_seed(3), probes=result.probes)
    assert fixed.trace == pytest.approx(result.trace, rel=1e-12)
    assert fixed.stderr == pytest.approx(result.stderr, rel=1e-12)


def test_trace_respects_its_minimum_and_its_cap(problem):
    model, batches, _ = problem
    generator = torch.Generator().manual_seed(0)
    # Out of reach: runs to the cap and reports the standard error it reached.
    capped = hutchinson_trace(model, batches, cross_entropy, generator, rel_stderr=1e-4, min_probes=5, max_probes=13)
    assert capped.probes == 13 and capped.stderr > 1e-4 * abs(capped.trace)
    # Met from the start (a huge target): the minimum still applies.
    early = hutchinson_trace(model, batches, cross_entropy, generator, rel_stderr=100.0, min_probes=7, max_probes=50)
    assert early.probes == 7


def test_trace_of_a_diagonal_hessian_is_exact_with_zero_stderr():
    spectrum = [3.0, -1.0, 0.5, 2.0, 0.25]
    model = Quadratic(torch.diag(torch.tensor(spectrum, dtype=F64)), torch.ones(5, dtype=F64), torch.ones(5, dtype=F64))
    result = hutchinson_trace(
        model,
        QUADRATIC_BATCHES,
        mean_output,
        torch.Generator().manual_seed(0),
        rel_stderr=0.0,
        min_probes=5,
        max_probes=50,
    )
    # Every probe gives Σ H_ii z_i² = tr H: the sample has no spread, the target (0) is met at the
    # minimum. Each zᵀHz sums 5 terms of size ≤ 3, so allow float64 rounding of that size.
    assert result.probes == 5
    assert result.trace == pytest.approx(sum(spectrum), abs=rounding(*spectrum))
    assert result.stderr <= rounding(*spectrum)


def test_trace_does_not_depend_on_probes_per_pass(problem):
    model, batches, _ = problem
    runs = [
        hutchinson_trace(
            model,
            batches,
            cross_entropy,
            torch.Generator().manual_seed(5),
            rel_stderr=0.2,
            min_probes=3,
            max_probes=60,
            probes_per_pass=k,
        )
        for k in (1, 3, 7)
    ]
    assert 3 < runs[0].probes < 60  # the rule stopped it, not the cap
    for run in runs[1:]:
        assert run.probes == runs[0].probes
        # The same probes, grouped differently per pass: equal up to float64 rounding.
        assert run.trace == pytest.approx(runs[0].trace, rel=1e-12)
        assert run.stderr == pytest.approx(runs[0].stderr, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_probes": 1}, "min_probes"),
        ({"min_probes": 5, "max_probes": 4}, "max_probes"),
        ({"rel_stderr": -0.1}, "rel_stderr"),
        ({"probes_per_pass": 0}, "probes_per_pass"),
    ],
)
def test_trace_rejects_bad_stopping_rules(problem, kwargs, match):
    model, batches, _ = problem
    with pytest.raises(ValueError, match=match):
        hutchinson_trace(model, batches, cross_entropy, torch.Generator().manual_seed(0), **kwargs)


# --- ε-sharpness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spectrum", [[4.0, 1.0, 0.5, 0.1, 0.0], [2.0, -3.0, 1.0, -0.5, 0.2]], ids=["psd", "indefinite"]
)
@pytest.mark.parametrize("radius", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("step_size", [1.0, 0.5])
def test_epsilon_sharpness_matches_the_trust_region_maximum(spectrum, radius, step_size):
    generator = torch.Generator().manual_seed(2)
    a = symmetric(spectrum, seed=2)
    b = torch.randn(5, dtype=F64, generator=generator)
    w = torch.randn(5, dtype=F64, generator=generator)
    exact = trust_region_max(a, a @ w + b, radius)  # L(w+δ) − L(w) = ½δᵀAδ + (Aw + b)ᵀδ
    model = Quadratic(a, b, w)
    found = epsilon_sharpness(model, QUADRATIC_BATCHES, mean_output, radius, steps=100, step_size=step_size)
    base = float(0.5 * w @ a @ w + b @ w)
    # Every evaluated point is inside the ball, so found ≤ exact; both are differences of losses of
    # size |L(w)| + |exact|, rounded in float64 (and the secular equation is solved to eps).
    assert found <= exact + rounding(base, exact)
    # 100 ascent steps converge to well within 1e-9 (a tolerance of the algorithm, not of rounding).
    assert found >= exact - 1e-9 * abs(exact)


def test_epsilon_sharpness_closed_form_and_convergence_with_steps():
    # A = a·I: the maximizer is δ = ε·g/‖g‖, found by the first point: a/2·ε² + ε‖g‖.
    a, radius = 3.0, 0.1
    b = torch.tensor([1.0, -2.0, 0.5, 0.0, 2.0], dtype=F64)
    w = torch.tensor([0.1, 0.2, -0.3, 0.4, 0.0], dtype=F64)
    model = Quadratic(a * torch.eye(5, dtype=F64), b, w)
    expected = a / 2 * radius**2 + radius * torch.linalg.vector_norm(a * w + b).item()
    found = epsilon_sharpness(model, QUADRATIC_BATCHES, mean_output, radius, steps=1)
    base = float(0.5 * a * w @ w + b @ w)
    assert found == pytest.approx(expected, abs=rounding(base, expected))  # a difference of two losses
    # Otherwise the first point (the SAM perturbation) falls short and the ascent closes the gap.
    curved = Quadratic(symmetric([5.0, -2.0, 1.0, 0.3, 0.1], seed=3), b, w)
    exact = trust_region_max(curved.a, curved.a @ w + b, 1.0)
    gaps = [exact - epsilon_sharpness(curved, QUADRATIC_BATCHES, mean_output, 1.0, steps=k) for k in (1, 5, 40)]
    assert gaps[0] > 1e-2 * exact and gaps[1] < 0.5 * gaps[0]
    # The gap is ≥ 0 mathematically (every point is in the ball), but once the ascent has converged
    # it is a difference of equal numbers: on AMD EPYC/MKL it came out as −4.4e-15 (issue 8).
    # Allow float64 rounding of the losses involved (|L(w)| + exact); the upper bound is the
    # ascent's convergence, not rounding.
    base = float(0.5 * w @ curved.a @ w + b @ w)
    assert -rounding(base, exact) <= gaps[2] < 1e-8 * exact


def test_epsilon_sharpness_at_a_stationary_point_uses_a_random_start():
    # At the minimizer of a convex quadratic ∇L = 0 and the answer is ½·λ_max·ε².
    a = symmetric([2.0, 1.0, 0.5, 0.2, 0.1], seed=4)
    b = torch.tensor([1.0, -1.0, 0.5, 0.3, -0.2], dtype=F64)
    model = Quadratic(a, b, -torch.linalg.solve(a, b))
    generator = torch.Generator().manual_seed(0)
    found = epsilon_sharpness(model, QUADRATIC_BATCHES, mean_output, 0.5, steps=80, generator=generator)
    assert found == pytest.approx(0.5 * 2.0 * 0.5**2, rel=1e-8)  # 80 steps converge to 1e-8: the algorithm's accuracy


@pytest.mark.parametrize(
    "spectrum", [[4.0, 1.0, 0.5, 0.1, 0.0], [2.0, -3.0, 1.0, -0.5, 0.2]], ids=["psd", "indefinite"]
)
@pytest.mark.parametrize("radius", [0.05, 0.5])
def test_adaptive_sharpness_is_the_trust_region_maximum_in_weight_relative_coordinates(spectrum, radius):
    # δ = |w| ⊙ u with ‖u‖ ≤ ρ: L(w+δ) − L(w) = ½uᵀ(CAC)u + (C(Aw + b))ᵀu, C = diag(|w|), a
    # trust-region problem in u, solved exactly; one weight is exactly 0 and must not move.
    generator = torch.Generator().manual_seed(5)
    a = symmetric(spectrum, seed=5)
    b = torch.randn(5, dtype=F64, generator=generator)
    w = torch.randn(5, dtype=F64, generator=generator)
    w[2] = 0.0
    c = torch.diag(w.abs())
    exact = trust_region_max(c @ a @ c, c @ (a @ w + b), radius)
    found = adaptive_sharpness(Quadratic(a, b, w), QUADRATIC_BATCHES, mean_output, radius, steps=100)
    base = float(0.5 * w @ a @ w + b @ w)
    assert found <= exact + rounding(base, exact)
    assert found >= exact - 1e-9 * abs(exact)
    # the plain ε-ball of the same radius is another problem with another answer
    plain = epsilon_sharpness(Quadratic(a, b, w), QUADRATIC_BATCHES, mean_output, radius, steps=100)
    assert abs(plain - found) > 1e-3 * found


def test_adaptive_sharpness_is_epsilon_sharpness_when_every_weight_has_size_one():
    a = symmetric([3.0, -1.0, 0.5, 0.2, 0.1], seed=6)
    b = torch.tensor([0.5, -1.0, 0.25, 1.0, -0.5], dtype=F64)
    w = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0], dtype=F64)
    adaptive = adaptive_sharpness(Quadratic(a, b, w), QUADRATIC_BATCHES, mean_output, 0.3, steps=7)
    plain = epsilon_sharpness(Quadratic(a, b, w), QUADRATIC_BATCHES, mean_output, 0.3, steps=7)
    assert adaptive == plain  # |w| = 1: every step multiplies by exactly 1.0


def _relu_net(scale: float) -> nn.Module:
    torch.manual_seed(11)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(F64)
    with torch.no_grad():  # the same function: ReLU(αz) = αReLU(z) for α > 0
        net[0].weight.mul_(scale)
        net[0].bias.mul_(scale)
        net[2].weight.div_(scale)
    return net


def test_adaptive_sharpness_ignores_the_rescaling_that_changes_epsilon_sharpness():
    torch.manual_seed(12)
    x, y = torch.randn(20, 4, dtype=F64), torch.randint(0, 3, (20,))
    batches = [(x, y)]
    one, rescaled = _relu_net(1.0), _relu_net(5.0)
    torch.testing.assert_close(one(x), rescaled(x), rtol=1e-12, atol=1e-12)  # one function, two parametrizations
    adaptive = [adaptive_sharpness(net, batches, cross_entropy, 0.2, steps=5) for net in (one, rescaled)]
    plain = [epsilon_sharpness(net, batches, cross_entropy, 0.2, steps=5) for net in (one, rescaled)]
    assert adaptive[0] > 1e-4 and adaptive[1] == pytest.approx(adaptive[0], rel=1e-9)
    assert abs(plain[1] - plain[0]) > 0.1 * plain[0]


# --- measure_flatness: side effects, determinism, dtypes ------------------------------------------


def test_measure_flatness_leaves_the_model_exactly_as_found():
    model, batches = small_problem()
    model.body[1].eval()  # a mixed-mode model: frozen BN statistics in an otherwise training model
    model.body[0].weight.grad = torch.full_like(model.body[0].weight, 0.25)
    before = snapshot(model)
    config = FlatnessConfig(
        eigen_max_iterations=5, trace_min_probes=3, trace_max_probes=3, sharpness_steps=3, sharpness_radius=0.5
    )
    with torch.no_grad():  # callers inside no_grad still get Hessians
        result = measure_flatness(model, batches, cross_entropy, config, torch.Generator().manual_seed(0))
    after = snapshot(model)
    # The ascent ran: a radius of 0.5 raises this loss by ~0.1, far from 0 (and from rounding).
    assert result.epsilon_sharpness > 1e-3 and result.adaptive_sharpness > 1e-5
    assert all(torch.equal(x, y) for x, y in zip(before[0], after[0], strict=True))  # weights, bit for bit
    with_grad = [index for index, p in enumerate(model.parameters()) if p is model.body[0].weight]
    assert [index for index, g in enumerate(after[1]) if g is not None] == with_grad  # p.grad untouched
    assert torch.equal(before[1][with_grad[0]], after[1][with_grad[0]])
    assert all(torch.equal(x, y) for x, y in zip(before[2], after[2], strict=True))  # BN running stats and counter
    assert before[3] == after[3] and model.training and not model.body[1].training


def test_measure_flatness_is_deterministic_for_a_seed(problem):
    model, batches, _ = problem
    config = FlatnessConfig(sharpness_steps=2)
    first = measure_flatness(model, batches, cross_entropy, config, torch.Generator().manual_seed(7))
    second = measure_flatness(model, batches, cross_entropy, config, torch.Generator().manual_seed(7))
    other = measure_flatness(model, batches, cross_entropy, config, torch.Generator().manual_seed(8))
    assert first == second  # bit-exact: same seed, same machine is the contract
    # Other probes give another estimate: different by far more than rounding (its stderr is ~5%).
    assert abs(other.trace - first.trace) > 1e-6 * abs(first.trace)


def test_measure_flatness_in_float32_agrees_with_float64():
    config = FlatnessConfig(eigen_tolerance=1e-5, trace_min_probes=8, trace_max_probes=8, sharpness_steps=3)
    results = {}
    for dtype in (torch.float32, F64):
        model, batches = small_problem(dtype)
        results[dtype] = measure_flatness(model, batches, cross_entropy, config, torch.Generator().manual_seed(0))
    single, double = results[torch.float32], results[F64]
    # float32 (eps 1.2e-7) through sums of ~60 parameters × 15 samples: ~1e-5 relative at worst,
    # so 1e-4; ε-sharpness is a difference of losses ~20× larger than it: 1e-3.
    assert single.eigen_converged and double.eigen_converged
    assert single.top_eigenvalue == pytest.approx(double.top_eigenvalue, rel=1e-4)
    assert single.trace == pytest.approx(double.trace, rel=1e-4)  # same Rademacher probes
    assert single.epsilon_sharpness == pytest.approx(double.epsilon_sharpness, rel=1e-3)
    assert single.adaptive_sharpness == pytest.approx(double.adaptive_sharpness, rel=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("generator_device", ["cpu", "cuda"])
def test_measure_flatness_on_cuda_matches_cpu(generator_device):
    config = FlatnessConfig(eigen_tolerance=1e-6, trace_min_probes=8, trace_max_probes=8, sharpness_steps=3)
    model, batches = small_problem()
    reference = measure_flatness(model, batches, cross_entropy, config, torch.Generator().manual_seed(0))
    for dtype in (torch.float32, F64):
        gpu_model = copy.deepcopy(model).to(device="cuda", dtype=dtype)
        gpu_batches = [(x.to("cuda", dtype), y.to("cuda")) for x, y in batches]
        generator = torch.Generator(device=generator_device).manual_seed(0)
        result = measure_flatness(gpu_model, gpu_batches, cross_entropy, config, generator)
        tolerance = 1e-3 if dtype == torch.float32 else 1e-8
        assert result.top_eigenvalue == pytest.approx(reference.top_eigenvalue, rel=tolerance)
        assert result.epsilon_sharpness == pytest.approx(reference.epsilon_sharpness, rel=tolerance)
        if generator_device == "cpu":  # the same probes as on the CPU
            assert result.trace == pytest.approx(reference.trace, rel=tolerance)
        else:
            assert abs(result.trace - reference.trace) < 5 * (result.trace_stderr + reference.trace_stderr)


# --- results and scheduling ---------------------------------------------------------------------


def test_to_metrics_uses_the_metric_constants():
    result = FlatnessResult(
        top_eigenvalue=2.0,
        eigen_iterations=7,
        eigen_converged=False,
        trace=10.0,
        trace_stderr=0.5,
        trace_probes=42,
        epsilon_sharpness=0.01,
        adaptive_sharpness=0.02,
    )
    # Values are passed through, not computed: exact equality is the contract.
    assert result.to_metrics() == {
        metrics.HESSIAN_TOP_EIGENVALUE: 2.0,
        metrics.HESSIAN_EIGEN_ITERATIONS: 7.0,
        metrics.HESSIAN_EIGEN_CONVERGED: 0.0,
        metrics.HESSIAN_TRACE: 10.0,
        metrics.HESSIAN_TRACE_STDERR: 0.5,
        metrics.HESSIAN_TRACE_PROBES: 42.0,
        metrics.EPSILON_SHARPNESS: 0.01,
        metrics.ADAPTIVE_SHARPNESS: 0.02,
    }
    assert all(type(value) is float for value in result.to_metrics().values())  # Tune/MLflow log numbers


@pytest.mark.parametrize(
    ("when", "every", "total", "measured"),
    [
        ("off", 1, 5, []),
        ("final", 1, 5, [4]),
        ("final", 3, 1, [0]),
        ("every", 1, 4, [0, 1, 2, 3]),
        ("every", 2, 5, [1, 3, 4]),  # every 2nd epoch, and always the last
        ("every", 3, 6, [2, 5]),
        ("every", 10, 4, [3]),
    ],
)
def test_should_measure(when, every, total, measured):
    config = FlatnessConfig(when=when, every_epochs=every)
    assert [epoch for epoch in range(total) if should_measure(config, epoch, total)] == measured


def test_should_measure_rejects_epochs_outside_the_run():
    config = FlatnessConfig(when="final")
    with pytest.raises(ValueError, match="epoch"):
        should_measure(config, 5, 5)
    with pytest.raises(ValueError, match="total_epochs"):
        should_measure(config, 0, 0)


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.5, False), (0.9, True), (0.5, True)])
def test_edge_of_stability_is_where_torchs_sgd_starts_to_diverge_on_a_quadratic(momentum, nesterov):
    # L(w) = ½λw²: torch's own SGD (heavy-ball or Nesterov) converges for λ just below the edge
    # and diverges just above it.
    eta = 0.1
    edge = edge_of_stability(eta, momentum, nesterov)

    def final_size(curvature: float) -> float:
        w = torch.tensor([1.0], dtype=F64, requires_grad=True)
        sgd = torch.optim.SGD([w], lr=eta, momentum=momentum, nesterov=nesterov)
        for _ in range(3000):
            sgd.zero_grad()
            (0.5 * curvature * w**2).sum().backward()
            sgd.step()
        return abs(w.item())

    assert final_size(0.98 * edge) < 1e-3
    assert final_size(1.02 * edge) > 1e3
    with pytest.raises(ValueError, match="learning_rate"):
        edge_of_stability(0.0)
