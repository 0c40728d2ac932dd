"""Flatness of a trained model: top Hessian eigenvalue, Hessian trace, ε-sharpness and adaptive sharpness.

Every quantity is measured on a fixed set of training batches and refers to the *mean loss over
that subset*, ``L(w) = Σ_b (n_b / N) · loss_fn(model(x_b), y_b)``, where ``loss_fn`` returns the
mean loss of one batch, ``n_b`` is the batch's size and ``N`` the subset's. Batches of unequal
size are therefore weighted correctly.

Measurement conventions (all public functions follow them, through :func:`measurement_mode`):

* the model runs in eval mode (BatchNorm uses its running statistics and does not update them,
  dropout is off), so the metrics describe the deterministic function the model computes at test
  time; every module's previous train/eval flag is restored afterwards;
* autocast is disabled: the Hessian is taken in the parameters' own dtype (float32 or float64);
* only parameters with ``requires_grad`` are measured, in ``model.parameters()`` order;
* ``p.grad`` is never touched (gradients come from :func:`torch.autograd.grad`) and the weights are
  restored bit-exactly after ε-sharpness (from a copy, :func:`regularizers.base.perturbed_weights`);
* random vectors come from the caller's :class:`torch.Generator`, drawn on the generator's device
  and moved to each parameter's device and dtype, so a seeded CPU generator gives the same probes
  on CPU and CUDA.

Methods:

* Hessian-vector products by double backpropagation (Pearlmutter 1994): ``H·v = ∇_w(∇_w L · v)``.
* Top eigenvalue by the Lanczos iteration, stopped on its residual bound (a relative accuracy).
* Trace by Hutchinson's estimator (Hutchinson 1989) with Rademacher probes: ``tr H = E[zᵀHz]``,
  stopped on a relative standard error; or by Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021),
  which takes the trace of a low-rank sketch of H exactly and runs Hutchinson on the rest, with
  the same stop (``FlatnessConfig.trace_estimator``).
* ε-sharpness in the spirit of Keskar et al. (ICLR 2017), measured as the largest loss increase in
  an L2 ball of radius ε around ``w`` (global over all trainable parameters), found by projected
  gradient ascent.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from bench.config import FlatnessConfig
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    >>> batches = [(torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,)))]
    >>> result = measure_flatness(model, batches, nn.functional.cross_entropy,
    ...                           FlatnessConfig(), torch.Generator().manual_seed(0))
    >>> result.eigen_converged, result.trace_probes >= 10
    (True, True)
    >>> sorted(result.to_metrics())  # doctest: +NORMALIZE_WHITESPACE
    ['epsilon_sharpness', 'hessian_eigen_converged', 'hessian_eigen_iterations', 'hessian_top_eigenvalue',
     'hessian_trace', 'hessian_trace_probes', 'hessian_trace_stderr']
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import regularizers.base as regularizers_base
from bench import metrics
from bench.config import FlatnessConfig
from regularizers.base import global_norm, perturbed_weights

#: The stopping rules' defaults, declared once on :class:`~bench.config.FlatnessConfig`.
DEFAULTS = FlatnessConfig()

__all__ = [
    "Batches",
    "EigenResult",
    "FlatnessResult",
    "LossFn",
    "TraceResult",
    "epsilon_sharpness",
    "adaptive_sharpness",
    "hessian_vector_product",
    "hutchinson_trace",
    "hutchpp_trace",
    "measure_flatness",
    "measurement_mode",
    "should_measure",
    "top_eigenvalue",
    "trainable_parameters",
]

#: ``loss_fn(outputs, targets) -> scalar``: the *mean* loss of one batch.
LossFn = Callable[[Tensor, Tensor], Tensor]
#: The fixed measurement subset, as ``(inputs, targets)`` batches already on the model's device.
Batches = Sequence[tuple[Tensor, Tensor]]
#: One tensor per trainable parameter: a vector in parameter space.
ParamVector = list[Tensor]


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EigenResult:
    """Outcome of :func:`top_eigenvalue`.

    ``iterations`` counts Hessian-vector products; ``converged`` says the tolerance was met
    before the cap; ``relative_error`` is the last residual bound: some eigenvalue lies within
    ``relative_error·|eigenvalue|`` of ``eigenvalue``.
    """

    eigenvalue: float
    iterations: int
    converged: bool
    relative_error: float


@dataclass(frozen=True)
class TraceResult:
    """Outcome of :func:`hutchinson_trace` or :func:`hutchpp_trace`.

    ``trace`` is the estimate and ``stderr`` its standard error s/√n over the ``residual_probes``
    Hutchinson samples (for Hutch++ the samples of the deflated matrix; its low-rank part
    ``low_rank`` = tr(QᵀHQ) is exact given Q and adds no error). ``probes`` counts every
    Hessian-vector product the estimate used, the paper's matrix-vector queries: ``residual_probes``
    for Hutchinson, 2·``sketch_size`` + ``residual_probes`` for Hutch++; it is the cost to compare
    between the two.
    """

    trace: float
    stderr: float
    probes: int
    residual_probes: int
    sketch_size: int = 0
    low_rank: float = 0.0

    @property
    def relative_stderr(self) -> float:
        """``stderr / |trace|`` (inf for a zero trace with a nonzero error, 0 for no error)."""
        if self.trace != 0.0:
            return self.stderr / abs(self.trace)
        return 0.0 if self.stderr == 0.0 else math.inf


@dataclass(frozen=True)
class FlatnessResult:
    """Flatness metrics of one model on one measurement subset (see :func:`measure_flatness`)."""

    top_eigenvalue: float
    eigen_iterations: int
    eigen_converged: bool
    trace: float
    trace_stderr: float
    #: Hessian-vector products the trace used (:attr:`TraceResult.probes`).
    trace_probes: int
    epsilon_sharpness: float
    adaptive_sharpness: float

    def to_metrics(self) -> dict[str, float]:
        """The values logged with a trial's results, keyed by the :mod:`bench.metrics` names.

        All are floats (Ray Tune and MLflow take numbers): ``converged`` is 1.0 or 0.0.
        """
        return {
            metrics.HESSIAN_TOP_EIGENVALUE: self.top_eigenvalue,
            metrics.HESSIAN_EIGEN_ITERATIONS: float(self.eigen_iterations),
            metrics.HESSIAN_EIGEN_CONVERGED: float(self.eigen_converged),
            metrics.HESSIAN_TRACE: self.trace,
            metrics.HESSIAN_TRACE_STDERR: self.trace_stderr,
            metrics.HESSIAN_TRACE_PROBES: float(self.trace_probes),
            metrics.EPSILON_SHARPNESS: self.epsilon_sharpness,
            metrics.ADAPTIVE_SHARPNESS: self.adaptive_sharpness,
        }


# --- scheduling ---------------------------------------------------------------------------------


def should_measure(config: FlatnessConfig, epoch: int, total_epochs: int) -> bool:
    """Whether to measure flatness after ``epoch`` (0-based) of a ``total_epochs``-epoch run.

    ``"off"``: never. ``"final"``: after the last epoch only. ``"every"``: after every
    ``every_epochs``-th epoch (epochs ``k-1, 2k-1, ...`` counted from 0) and always after the last.
    """
    if total_epochs <= 0:
        raise ValueError(f"total_epochs must be > 0, got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"epoch must be in [0, {total_epochs}), got {epoch}")
    last = epoch == total_epochs - 1
    if config.when == "off":
        return False
    if config.when == "final":
        return last
    return last or (epoch + 1) % config.every_epochs == 0


# --- the measurement context and vector helpers ------------------------------------------------


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the metrics are taken with respect to (``requires_grad``), in model order;
    an error when there are none (a Hessian of nothing is a bug upstream)."""
    parameters = regularizers_base.trainable_parameters(model)
    if not parameters:
        raise ValueError("the model has no trainable parameters")
    return parameters


@contextlib.contextmanager
def measurement_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, gradients enabled, autocast off; restores every module's train/eval flag.

    Flags are restored per module, so a model that was partly in eval mode (e.g. frozen
    BatchNorm layers) comes back exactly as it was.
    """
    flags = [(module, module.training) for module in model.modules()]
    device_types = {p.device.type for p in model.parameters()} or {"cpu"}
    try:
        model.eval()
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.enable_grad())
            for device_type in sorted(device_types):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            yield
    finally:
        for module, training in flags:
            module.training = training


def _check_batches(batches: Batches) -> list[float]:
    """Each batch's weight n_b / N in the subset's mean loss."""
    if len(batches) == 0:
        raise ValueError("flatness needs at least one batch")
    sizes = [int(inputs.shape[0]) for inputs, _ in batches]
    if min(sizes) <= 0:
        raise ValueError(f"empty batch in the measurement subset (sizes {sizes})")
    total = sum(sizes)
    return [size / total for size in sizes]


def _check_vector(parameters: Sequence[Tensor], vector: Sequence[Tensor]) -> None:
    if len(vector) != len(parameters):
        raise ValueError(f"vector has {len(vector)} tensors, the model has {len(parameters)} trainable parameters")
    for index, (p, v) in enumerate(zip(parameters, vector, strict=True)):
        if v.shape != p.shape:
            raise ValueError(f"vector tensor {index} has shape {tuple(v.shape)}, parameter has {tuple(p.shape)}")


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Inner product of two parameter-space vectors, as a 0-dim tensor on the first one's device."""
    return torch.stack([torch.sum(x * y) for x, y in zip(a, b, strict=True)]).sum()


def _random_vector(parameters: Sequence[Tensor], generator: torch.Generator, kind: str) -> ParamVector:
    """Rademacher (±1) or standard-normal entries, drawn on the generator's device, in model order."""
    vector = []
    for p in parameters:
        if kind == "rademacher":
            draw = torch.randint(0, 2, p.shape, generator=generator, device=generator.device)
            draw = draw.to(dtype=p.dtype).mul_(2).sub_(1)
        else:
            # Drawn in float64 whatever the parameters' dtype, so float32 and float64 runs
            # consume the generator identically and see the same probes afterwards.
            draw = torch.randn(p.shape, generator=generator, device=generator.device, dtype=torch.float64)
        vector.append(draw.to(device=p.device, dtype=p.dtype))
    return vector


def _weighted_losses(model: nn.Module, batches: Batches, loss_fn: LossFn) -> Iterator[tuple[float, Tensor]]:
    """``(weight, batch mean loss)`` per batch; the caller differentiates each as it comes."""
    for weight, (inputs, targets) in zip(_check_batches(batches), batches, strict=True):
        loss = loss_fn(model(inputs), targets)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar (the batch mean), got shape {tuple(loss.shape)}")
        yield weight, loss


# --- Hessian-vector products --------------------------------------------------------------------


def _hessian_vector_products(
    model: nn.Module, batches: Batches, loss_fn: LossFn, parameters: Sequence[Tensor], vectors: Sequence[ParamVector]
) -> list[ParamVector]:
    """H·v for several v, sharing each batch's forward pass and first backward pass.

    Per batch: g = ∇L_b with ``create_graph=True``, then for each v one more backward of g·v
    (double backpropagation, Pearlmutter 1994), weighted by n_b/N and summed over batches.
    """
    products = [[torch.zeros_like(p) for p in parameters] for _ in vectors]
    for weight, loss in _weighted_losses(model, batches, loss_fn):
        grads = torch.autograd.grad(loss, parameters, create_graph=True, allow_unused=True)
        reached = [(g, index) for index, g in enumerate(grads) if g is not None and g.requires_grad]
        if not reached:  # the loss is at most linear in the parameters: H = 0 on this batch
            continue
        for number, (vector, product) in enumerate(zip(vectors, products, strict=True)):
            dot = torch.stack([torch.sum(g * vector[index]) for g, index in reached]).sum()
            last = number == len(vectors) - 1
            hv = torch.autograd.grad(dot, parameters, retain_graph=not last, allow_unused=True)
            with torch.no_grad():
                for accumulator, part in zip(product, hv, strict=True):
                    if part is not None:
                        accumulator.add_(part, alpha=weight)
        del grads, reached
    return products


def hessian_vector_product(
    model: nn.Module, batches: Batches, loss_fn: LossFn, vector: Sequence[Tensor]
) -> list[Tensor]:
    """H·v, with H the Hessian of the subset's mean loss w.r.t. the trainable parameters.

    ``vector`` holds one tensor per trainable parameter (see :func:`trainable_parameters`), same
    shapes; the result has the same layout. Computed by double backpropagation over each batch,
    weighted by batch size, in eval mode (:func:`measurement_mode`).
    """
    parameters = trainable_parameters(model)
    _check_vector(parameters, vector)
    with measurement_mode(model):
        return _hessian_vector_products(model, batches, loss_fn, parameters, [list(vector)])[0]


# --- top eigenvalue -----------------------------------------------------------------------------


def _lanczos(
    apply: Callable[[ParamVector], ParamVector],
    start: ParamVector,
    max_iterations: int,
    tolerance: float,
    largest_magnitude: bool,
) -> EigenResult:
    """One extreme eigenvalue of a symmetric operator by the Lanczos iteration (Lanczos 1950).

    After k products the tridiagonal T_k = Q_kᵀ A Q_k (Q_k an orthonormal basis of the Krylov
    space span{v, Av, …, A^{k−1}v}) has eigenvalues, the Ritz values, whose extremes approach
    A's extreme eigenvalues from inside. The largest Ritz value is the largest Rayleigh quotient
    over that space, so it is never worse than power iteration's estimate after as many
    products (power iteration's vector lies in the same space). For a Ritz pair (θ, y = Q_k s)
    the residual is ‖Ay − θy‖ = β_k·|s_k| and some eigenvalue of A lies within it of θ
    (Parlett, *The Symmetric Eigenvalue Problem*, 1998, ch. 4 and 13). The iteration
    stops when that bound is at most ``tolerance·|θ|`` on two iterations in a row: a start vector
    nearly orthogonal to the top eigenvector can make a lower Ritz value look converged for one
    step before the top one emerges (seen in 1 of 40 starts on a 64-parameter network).

    No reorthogonalization: the three-term recurrence keeps two vectors. Lost orthogonality
    only adds copies of converged Ritz values, it does not move them (Paige 1980), and the
    iteration stops at convergence anyway.
    """
    norm = global_norm(start)
    vector = [v / norm for v in start]
    previous: ParamVector | None = None
    alphas: list[float] = []
    betas: list[float] = []
    met_in_a_row = 0
    for iteration in range(1, max_iterations + 1):
        image = apply(vector)
        alpha = float(_dot(vector, image))
        alphas.append(alpha)
        with torch.no_grad():
            torch._foreach_add_(image, vector, alpha=-alpha)
            if previous is not None:
                torch._foreach_add_(image, previous, alpha=-betas[-1])
        beta = float(global_norm(image))
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)
        index = int(ritz_values.abs().argmax()) if largest_magnitude else len(alphas) - 1
        estimate = float(ritz_values[index])
        residual = beta * abs(float(ritz_vectors[-1, index]))
        relative = residual / abs(estimate) if estimate != 0.0 else (0.0 if residual == 0.0 else math.inf)
        if beta == 0.0:  # the Krylov space is invariant: θ is an exact eigenvalue
            return EigenResult(estimate, iteration, True, 0.0)
        met_in_a_row = met_in_a_row + 1 if relative <= tolerance else 0
        if met_in_a_row == 2:
            return EigenResult(estimate, iteration, True, relative)
        previous = vector
        vector = [v / beta for v in image]
        betas.append(beta)
    return EigenResult(estimate, max_iterations, False, relative)


def top_eigenvalue(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    generator: torch.Generator,
    *,
    max_iterations: int = DEFAULTS.eigen_max_iterations,
    tolerance: float = DEFAULTS.eigen_tolerance,
    algebraic: bool = True,
) -> EigenResult:
    """Largest eigenvalue of the Hessian of the subset's mean loss, with a stated accuracy.

    The Lanczos iteration from a Gaussian start vector drawn from ``generator`` (see
    :func:`_lanczos`) runs until some eigenvalue is known to lie within ``tolerance`` (relative)
    of the estimate — the residual bound ``relative_error`` — or until ``max_iterations``
    Hessian-vector products, with ``converged=False``. That bound says *an* eigenvalue is close;
    it is the top one unless the start vector was nearly orthogonal to its eigenvector, which
    Lanczos overcomes within a few products for realistic eigen-gaps (a plain power iteration
    can sit for tens of iterations at λ₂ and stop there). The estimate never exceeds λ_max.

    With ``algebraic=True`` (the default) this is the algebraically largest eigenvalue λ_max,
    whatever the signs in the spectrum; with ``algebraic=False`` it is the eigenvalue of
    largest magnitude, signed — what power iteration converges to, and what PyHessian-style
    reports call "the top eigenvalue". Near a minimum the two agree.

    Raises ``ValueError`` for ``max_iterations <= 0`` or ``tolerance`` outside (0, 1).
    """
    if max_iterations <= 0:
        raise ValueError(f"max_iterations must be > 0, got {max_iterations}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    parameters = trainable_parameters(model)

    with measurement_mode(model):

        def hessian(vector: ParamVector) -> ParamVector:
            return _hessian_vector_products(model, batches, loss_fn, parameters, [vector])[0]

        start = _random_vector(parameters, generator, "normal")
        return _lanczos(hessian, start, max_iterations, tolerance, largest_magnitude=not algebraic)


# --- trace --------------------------------------------------------------------------------------


def _stopping_point(samples: Sequence[float], start: int, rel_stderr: float, offset: float = 0.0) -> int | None:
    """The first n ≥ ``start`` with stderr_n ≤ rel_stderr·|offset + mean_n| over ``samples[:n]``, if any.

    ``offset`` is a part of the estimate known without error (Hutch++'s low-rank trace), so the
    target is relative to the whole estimate, not to the sampled part alone.
    """
    for n in range(max(start, 2), len(samples) + 1):
        mean, stderr = _mean_and_stderr(samples[:n])
        if stderr <= rel_stderr * abs(offset + mean):
            return n
    return None


def _mean_and_stderr(samples: Sequence[float]) -> tuple[float, float]:
    """Sample mean and its standard error s/√n (s with the n − 1 denominator), in float64."""
    values = torch.tensor(samples, dtype=torch.float64)
    return float(values.mean()), float(values.std(correction=1)) / math.sqrt(len(samples))


def _check_stopping_rule(rel_stderr: float, min_probes: int, max_probes: int, probes_per_pass: int) -> None:
    if min_probes < 2:
        raise ValueError(f"min_probes must be >= 2 (a standard error needs two samples), got {min_probes}")
    if max_probes < min_probes:
        raise ValueError(f"max_probes must be >= min_probes ({min_probes}), got {max_probes}")
    if rel_stderr < 0:
        raise ValueError(f"rel_stderr must be >= 0, got {rel_stderr}")
    if probes_per_pass <= 0:
        raise ValueError(f"probes_per_pass must be > 0, got {probes_per_pass}")


def _sampled_until_stop(
    draw: Callable[[int], list[float]],
    rel_stderr: float,
    min_probes: int,
    max_probes: int,
    probes_per_pass: int,
    offset: float = 0.0,
) -> list[float]:
    """Hutchinson samples, ``probes_per_pass`` at a time from ``draw(count)``, until the stopping
    rule of :func:`_stopping_point` holds (checked after every sample) or ``max_probes``; the
    samples up to that point (those past it, computed in the same pass, are dropped)."""
    samples: list[float] = []
    stop: int | None = None
    while stop is None and len(samples) < max_probes:
        checked = len(samples) + 1
        samples.extend(draw(min(probes_per_pass, max_probes - len(samples))))
        stop = _stopping_point(samples, max(checked, min_probes), rel_stderr, offset)
    return samples[: stop if stop is not None else max_probes]


def hutchinson_trace(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    generator: torch.Generator,
    *,
    rel_stderr: float = DEFAULTS.trace_rel_stderr,
    min_probes: int = DEFAULTS.trace_min_probes,
    max_probes: int = DEFAULTS.trace_max_probes,
    probes_per_pass: int = 4,
) -> TraceResult:
    """Trace of the Hessian of the subset's mean loss, by Hutchinson's estimator (Hutchinson 1989).

    For Rademacher probes z (independent ±1 entries drawn from ``generator``), E[zᵀHz] = tr H
    and Var[zᵀHz] = 2·Σ_{i≠j} H_ij² (Avron & Toledo 2011, JACM 58(2), Lemma 1 and §4). Probes
    are added until the standard error of the mean, s/√n (sample standard deviation s with the
    n − 1 denominator), is at most ``rel_stderr`` times |mean|, but never fewer than
    ``min_probes`` and never more than ``max_probes``; the result says how many were used. The
    rule is checked after every probe, so the result does not depend on ``probes_per_pass``, the
    number of probes that share each batch's forward and first backward pass (memory grows with
    it; up to ``probes_per_pass − 1`` probes past the stopping point are computed and dropped).

    Stopping on the sample's own standard error biases that error low a little when few probes
    are used: ``min_probes`` (default 10) keeps that small. When the trace is near 0 the target
    cannot be met and the estimator runs to ``max_probes``.

    Raises ``ValueError`` unless 2 ≤ ``min_probes`` ≤ ``max_probes``, ``rel_stderr`` ≥ 0 and
    ``probes_per_pass`` > 0.
    """
    _check_stopping_rule(rel_stderr, min_probes, max_probes, probes_per_pass)
    parameters = trainable_parameters(model)
    with measurement_mode(model):

        def draw(count: int) -> list[float]:
            vectors = [_random_vector(parameters, generator, "rademacher") for _ in range(count)]
            products = _hessian_vector_products(model, batches, loss_fn, parameters, vectors)
            return [float(_dot(z, hz)) for z, hz in zip(vectors, products, strict=True)]

        used = _sampled_until_stop(draw, rel_stderr, min_probes, max_probes, probes_per_pass)
    mean, stderr = _mean_and_stderr(used)
    return TraceResult(trace=mean, stderr=stderr, probes=len(used), residual_probes=len(used))


def _flattened(vector: Sequence[Tensor], device: torch.device) -> Tensor:
    return torch.cat([v.reshape(-1).to(device) for v in vector])


def _unflattened(flat: Tensor, parameters: Sequence[Tensor]) -> ParamVector:
    chunks = torch.split(flat, [p.numel() for p in parameters])
    return [chunk.reshape(p.shape).to(device=p.device) for chunk, p in zip(chunks, parameters, strict=True)]


def _products_in_passes(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    parameters: Sequence[Tensor],
    vectors: Sequence[ParamVector],
    probes_per_pass: int,
) -> list[ParamVector]:
    products: list[ParamVector] = []
    for start in range(0, len(vectors), probes_per_pass):
        chunk = vectors[start : start + probes_per_pass]
        products.extend(_hessian_vector_products(model, batches, loss_fn, parameters, chunk))
    return products


def hutchpp_trace(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    generator: torch.Generator,
    *,
    sketch_size: int = DEFAULTS.trace_sketch_size,
    rel_stderr: float = DEFAULTS.trace_rel_stderr,
    min_probes: int = DEFAULTS.trace_min_probes,
    max_probes: int = DEFAULTS.trace_max_probes,
    probes_per_pass: int = 4,
) -> TraceResult:
    """Trace of the Hessian of the subset's mean loss by Hutch++ (Meyer, Musco, Musco & Woodruff,
    "Hutch++: Optimal Stochastic Trace Estimation", SOSA 2021, Algorithm 1), with Hutchinson's
    variance-based stop on its residual part.

    Algorithm 1 draws a sketch S with k = ``sketch_size`` Rademacher columns, takes an orthonormal
    basis Q of the range of H·S (k HVPs; a Householder QR), computes tr(QᵀHQ) exactly (k more
    HVPs) and adds Hutchinson's estimate of the trace of the deflated matrix
    (I − QQᵀ)H(I − QQᵀ) from Rademacher probes g projected off Q: samples (Pg)ᵀH(Pg) with
    P = I − QQᵀ, one HVP each. Algorithm 1 fixes the residual probes at k; here they follow the
    stopping rule of :func:`hutchinson_trace` (the residual variant of Persson, Cortinovis &
    Kressner's adaptive Hutch++, SIMAX 2022, with a stop on the sample's own error): at least
    ``min_probes``, at most ``max_probes``, stopping once their standard error is at most
    ``rel_stderr`` times |tr(QᵀHQ) + their mean|. The result's ``stderr`` is that of the residual
    samples: given Q the low-rank part is exact, and since E[estimate | Q] = tr(QᵀHQ) + tr(PHP) =
    tr H for every Q (tr(PHP) = tr(HP) = tr H − tr(QᵀHQ)), the variance of the estimate is the
    mean over Q of the residual's variance and nothing more. ``probes`` = 2k + residual probes.

    Why it helps: the residual samples have variance 2·Σ_{i≠j} (PHP)_ij² ≤ 2‖PHP‖_F², and H·S
    lies mostly in the span of the eigenvectors of the largest |λ|, so P removes the few outlier
    eigenvalues that dominate ‖H‖_F in trained networks (9 on the 10-class digits CNN) and the residual
    needs far fewer probes. H is indefinite away from a minimum: the estimate stays unbiased
    (the identity above holds for any square H), and the sketch deflates the eigenvalues of
    largest magnitude of either sign, so ‖PHP‖_F ≤ ‖H‖_F still holds. Two limits: the paper's
    (1 ± ε) guarantee in O(1/ε) products is for positive semidefinite H, where |tr H| = ‖H‖_*;
    when negative eigenvalues cancel much of the trace, a relative target on |tr H| can be out of
    reach of any estimator. And for Rademacher probes the diagonal of H costs plain Hutchinson
    nothing while P mixes it into off-diagonal entries, so on a nearly diagonal H deflation can
    raise the variance (never on the flat spectra with outliers of trained networks measured
    in docs/measurements.md).

    With k ≥ rank H, Q spans the range of H and the residual is 0 (to rounding). With k ≥ the
    number of parameters d, the sketch is capped at d columns, Q spans everything, the low-rank
    part is the exact trace (2d HVPs) and no residual probes are drawn. Memory: two d × k
    matrices in the parameters' dtype beside the HVPs' own. The same ``probes_per_pass`` groups
    every HVP (sketch, exact part and residual), so the result does not depend on it.

    Raises ``ValueError`` for ``sketch_size`` ≤ 0 and for the stopping rules
    :func:`hutchinson_trace` rejects.
    """
    if sketch_size <= 0:
        raise ValueError(f"sketch_size must be > 0, got {sketch_size}")
    _check_stopping_rule(rel_stderr, min_probes, max_probes, probes_per_pass)
    parameters = trainable_parameters(model)
    dimension = sum(p.numel() for p in parameters)
    device = parameters[0].device
    with measurement_mode(model):
        columns = min(sketch_size, dimension)
        sketch = [_random_vector(parameters, generator, "rademacher") for _ in range(columns)]
        images = _products_in_passes(model, batches, loss_fn, parameters, sketch, probes_per_pass)
        with torch.no_grad():
            basis, _ = torch.linalg.qr(torch.stack([_flattened(y, device) for y in images], dim=1))
        del sketch, images
        directions = [_unflattened(basis[:, i], parameters) for i in range(basis.shape[1])]
        products = _products_in_passes(model, batches, loss_fn, parameters, directions, probes_per_pass)
        low_rank = math.fsum(float(_dot(q, hq)) for q, hq in zip(directions, products, strict=True))
        del directions, products
        if basis.shape[1] == dimension:  # Q is a basis of the whole space: P = 0, nothing left to sample
            return TraceResult(
                trace=low_rank,
                stderr=0.0,
                probes=2 * columns,
                residual_probes=0,
                sketch_size=columns,
                low_rank=low_rank,
            )

        def draw(count: int) -> list[float]:
            vectors = []
            for _ in range(count):
                with torch.no_grad():
                    g = _flattened(_random_vector(parameters, generator, "rademacher"), device)
                    vectors.append(_unflattened(g - basis @ (basis.T @ g), parameters))
            products = _hessian_vector_products(model, batches, loss_fn, parameters, vectors)
            return [float(_dot(v, hv)) for v, hv in zip(vectors, products, strict=True)]

        used = _sampled_until_stop(draw, rel_stderr, min_probes, max_probes, probes_per_pass, offset=low_rank)
    mean, stderr = _mean_and_stderr(used)
    return TraceResult(
        trace=low_rank + mean,
        stderr=stderr,
        probes=2 * columns + len(used),
        residual_probes=len(used),
        sketch_size=columns,
        low_rank=low_rank,
    )


# --- ε-sharpness --------------------------------------------------------------------------------


def _loss_and_gradient(
    model: nn.Module, batches: Batches, loss_fn: LossFn, parameters: Sequence[Tensor], *, with_gradient: bool
) -> tuple[float, ParamVector | None]:
    """The subset's mean loss (summed in float64) and, optionally, its gradient."""
    total = 0.0
    gradient = [torch.zeros_like(p) for p in parameters] if with_gradient else None
    with contextlib.nullcontext() if with_gradient else torch.no_grad():
        for weight, loss in _weighted_losses(model, batches, loss_fn):
            total += weight * float(loss.detach().double())
            if gradient is not None:
                parts = torch.autograd.grad(loss, parameters, allow_unused=True)
                with torch.no_grad():
                    for accumulator, part in zip(gradient, parts, strict=True):
                        if part is not None:
                            accumulator.add_(part, alpha=weight)
    return total, gradient


def _scaled_to(vector: ParamVector, radius: float) -> ParamVector:
    norm = global_norm(vector)
    return [v * (radius / norm) for v in vector]


def epsilon_sharpness(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    radius: float,
    steps: int,
    *,
    step_size: float = 1.0,
    generator: torch.Generator | None = None,
) -> float:
    """Largest increase max_{‖δ‖₂ ≤ ε} L(w + δ) − L(w) found by projected gradient ascent.

    ε-sharpness after Keskar et al. (ICLR 2017), here with a global L2 ball of radius ``radius``
    over all trainable parameters (rather than their box scaled by |w|). The ascent starts at
    δ₀ = ε·g/‖g‖ with g = ∇L(w) (the SAM perturbation, Foret et al. 2021), then repeats the
    normalized ascent step δ ← Π_ε(δ + step_size·ε·ĝ), ĝ = ∇L(w+δ)/‖∇L(w+δ)‖, Π_ε being the
    projection onto the ball. The default step length ε was the most robust choice on
    trust-region test problems with indefinite curvature: much longer steps (the limit is
    δ ← ε·ĝ) converge faster on convex losses but can cycle or stall at a non-global
    stationary point otherwise.

    ``steps`` perturbed points δ₀ … δ_{steps−1} are evaluated (steps + 1 forward passes and
    ``steps`` backward passes in all) and the best increase is returned; δ = 0 counts as a
    candidate, so the result is ≥ 0. Every evaluated point lies in the ball, so the result never
    exceeds the true maximum (up to rounding). If ∇L(w) vanishes, δ₀ is a random direction from
    ``generator`` (a fixed seed when none is given).

    The weights are restored bit-exactly from a copy afterwards.
    """
    return _worst_case_increase(model, batches, loss_fn, radius, steps, step_size, generator, adaptive=False)


def adaptive_sharpness(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    radius: float,
    steps: int,
    *,
    step_size: float = 1.0,
    generator: torch.Generator | None = None,
) -> float:
    """Worst-case adaptive sharpness max_{‖δ ⊘ |w|‖₂ ≤ ρ} L(w + δ) − L(w).

    Adaptive sharpness (Kwon et al., "ASAM", ICML 2021, Definition 1 with T_w = |w|;
    Andriushchenko et al., "A Modern Look at the Relationship between Sharpness and
    Generalization", ICML 2023, eq. (1): the worst-case ℓ2 variant; official code
    github.com/tml-epfl/sharpness-vs-generalization, ``eval_sharpness.py --adaptive``): each
    weight's perturbation is measured relative to the weight, so the ball is an ellipsoid with
    semi-axes ρ|wᵢ|. Unlike ε-sharpness it does not change when a ReLU network's layers are
    rescaled against each other (w₁ → αw₁, w₂ → w₂/α), the reparametrization that makes plain
    sharpness arbitrary (Dinh et al. 2017). A weight that is exactly 0 is not perturbed.

    Computed as :func:`epsilon_sharpness` in the coordinates u = δ ⊘ |w| (‖u‖₂ ≤ ρ, a ball): the
    same start, steps, projection, cost and guarantees (≥ 0, never above the true maximum), with
    the gradient in u, |w| ⊙ ∇L(w + δ), in place of ∇L.
    """
    return _worst_case_increase(model, batches, loss_fn, radius, steps, step_size, generator, adaptive=True)


def _worst_case_increase(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    radius: float,
    steps: int,
    step_size: float,
    generator: torch.Generator | None,
    *,
    adaptive: bool,
) -> float:
    """Projected gradient ascent on u in the ball ‖u‖₂ ≤ ``radius``, where δ = c ⊙ u perturbs the
    weights: c = 1 for ε-sharpness, c = |w| for adaptive sharpness (∇_u L = c ⊙ ∇_δ L)."""
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    parameters = trainable_parameters(model)
    with measurement_mode(model), perturbed_weights(parameters) as backup:
        scale = [w.abs() for w in backup.saved] if adaptive else None

        def in_u(vector: ParamVector) -> ParamVector:
            return vector if scale is None else torch._foreach_mul(vector, scale)

        base_loss, gradient = _loss_and_gradient(model, batches, loss_fn, parameters, with_gradient=True)
        assert gradient is not None
        direction = in_u(gradient)
        if float(global_norm(direction)) == 0.0:
            direction = _random_vector(parameters, generator or torch.Generator().manual_seed(0), "normal")
        u = _scaled_to(direction, radius)
        best = 0.0
        for step in range(steps):
            with torch.no_grad():
                torch._foreach_copy_(parameters, torch._foreach_add(backup.saved, in_u(u)))
            last = step == steps - 1
            loss, gradient = _loss_and_gradient(model, batches, loss_fn, parameters, with_gradient=not last)
            best = max(best, loss - base_loss)
            if last:
                break
            assert gradient is not None
            direction = in_u(gradient)
            if float(global_norm(direction)) == 0.0:  # a stationary point: further steps stay put
                break
            with torch.no_grad():
                u = torch._foreach_add(u, _scaled_to(direction, step_size * radius))
                if float(global_norm(u)) > radius:
                    u = _scaled_to(u, radius)
    return best


# --- everything at once -------------------------------------------------------------------------


def measure_flatness(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    config: FlatnessConfig,
    generator: torch.Generator,
) -> FlatnessResult:
    """Top eigenvalue, Hessian trace, ε-sharpness and adaptive sharpness of ``model`` on the fixed ``batches``.

    ``batches`` is the measurement subset (``config.subset_size`` samples in batches of
    ``config.batch_size``, built by the caller on the model's device); ``loss_fn`` returns each
    batch's mean loss. Randomness (the Lanczos start vector, the trace probes) comes from
    ``generator`` in a fixed order, so a generator seeded the same way gives the same result.
    The trace comes from :func:`hutchinson_trace` or :func:`hutchpp_trace`
    (``config.trace_estimator``); ``trace_probes`` counts its Hessian-vector products.
    The model is measured in eval mode and left as it was: train/eval flags, BatchNorm running
    statistics, weights (bit-exact) and ``p.grad``.
    """
    with measurement_mode(model):
        eigen = top_eigenvalue(
            model,
            batches,
            loss_fn,
            generator,
            max_iterations=config.eigen_max_iterations,
            tolerance=config.eigen_tolerance,
        )
        stopping = dict(
            rel_stderr=config.trace_rel_stderr,
            min_probes=config.trace_min_probes,
            max_probes=config.trace_max_probes,
        )
        if config.trace_estimator == "hutchpp":
            trace = hutchpp_trace(model, batches, loss_fn, generator, sketch_size=config.trace_sketch_size, **stopping)
        else:
            trace = hutchinson_trace(model, batches, loss_fn, generator, **stopping)
        sharpness = epsilon_sharpness(
            model,
            batches,
            loss_fn,
            radius=config.sharpness_radius,
            steps=config.sharpness_steps,
            generator=generator,
        )
        adaptive = adaptive_sharpness(
            model,
            batches,
            loss_fn,
            radius=config.adaptive_sharpness_radius,
            steps=config.sharpness_steps,
            generator=generator,
        )
    return FlatnessResult(
        top_eigenvalue=eigen.eigenvalue,
        eigen_iterations=eigen.iterations,
        eigen_converged=eigen.converged,
        trace=trace.trace,
        trace_stderr=trace.stderr,
        trace_probes=trace.probes,
        epsilon_sharpness=sharpness,
        adaptive_sharpness=adaptive,
    )
