"""Flatness of a trained model: top Hessian eigenvalue, Hessian trace and ε-sharpness.

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
* Top eigenvalue by power iteration (von Mises), with the Rayleigh quotient as the estimate.
* Trace by Hutchinson's estimator (Hutchinson 1989) with Rademacher probes: ``tr H = E[zᵀHz]``.
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
    ...                           FlatnessConfig(trace_probes=4), torch.Generator().manual_seed(0))
    >>> sorted(result.to_metrics())
    ['epsilon_sharpness', 'hessian_top_eigenvalue', 'hessian_trace', 'hessian_trace_stderr']
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench import metrics
from bench.config import FlatnessConfig
import regularizers.base as regularizers_base
from regularizers.base import global_norm, perturbed_weights

__all__ = [
    "Batches",
    "EigenResult",
    "FlatnessResult",
    "LossFn",
    "TraceResult",
    "epsilon_sharpness",
    "hessian_vector_product",
    "hutchinson_trace",
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
    """Outcome of :func:`top_eigenvalue`. ``iterations`` counts Hessian-vector products."""

    eigenvalue: float
    iterations: int
    converged: bool


@dataclass(frozen=True)
class TraceResult:
    """Outcome of :func:`hutchinson_trace`: the sample mean and its standard error std/√n."""

    trace: float
    stderr: float
    probes: int


@dataclass(frozen=True)
class FlatnessResult:
    """Flatness metrics of one model on one measurement subset (see :func:`measure_flatness`)."""

    top_eigenvalue: float
    eigen_iterations: int
    eigen_converged: bool
    trace: float
    trace_stderr: float
    epsilon_sharpness: float

    def to_metrics(self) -> dict[str, float]:
        """The values logged with a trial's results, keyed by the :mod:`bench.metrics` names."""
        return {
            metrics.HESSIAN_TOP_EIGENVALUE: self.top_eigenvalue,
            metrics.HESSIAN_TRACE: self.trace,
            metrics.HESSIAN_TRACE_STDERR: self.trace_stderr,
            metrics.EPSILON_SHARPNESS: self.epsilon_sharpness,
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
    for index, (p, v) in enumerate(zip(parameters, vector)):
        if v.shape != p.shape:
            raise ValueError(f"vector tensor {index} has shape {tuple(v.shape)}, parameter has {tuple(p.shape)}")


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Inner product of two parameter-space vectors, as a 0-dim tensor on the first one's device."""
    return torch.stack([torch.sum(x * y) for x, y in zip(a, b)]).sum()


def _random_vector(
    parameters: Sequence[Tensor], generator: torch.Generator, kind: str
) -> ParamVector:
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
    for weight, (inputs, targets) in zip(_check_batches(batches), batches):
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
        for number, (vector, product) in enumerate(zip(vectors, products)):
            dot = torch.stack([torch.sum(g * vector[index]) for g, index in reached]).sum()
            last = number == len(vectors) - 1
            hv = torch.autograd.grad(dot, parameters, retain_graph=not last, allow_unused=True)
            with torch.no_grad():
                for accumulator, part in zip(product, hv):
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


def _power_iteration(
    apply: Callable[[ParamVector], ParamVector],
    start: ParamVector,
    max_iterations: int,
    tolerance: float,
) -> EigenResult:
    """Power iteration on a symmetric operator: the eigenvalue of largest magnitude, signed.

    The estimate is the Rayleigh quotient vᵀAv of the current unit vector; it has converged
    when it changes by at most ``tolerance`` relative to its magnitude between two iterations.
    """
    norm = global_norm(start)
    vector = [v / norm for v in start]
    previous: float | None = None
    for iteration in range(1, max_iterations + 1):
        image = apply(vector)
        estimate = float(_dot(vector, image))
        image_norm = float(global_norm(image))
        if image_norm == 0.0:  # v lies in the null space; for a random start this means A = 0
            return EigenResult(0.0, iteration, True)
        if previous is not None and abs(estimate - previous) <= tolerance * abs(estimate):
            return EigenResult(estimate, iteration, True)
        previous = estimate
        vector = [v / image_norm for v in image]
    return EigenResult(previous if previous is not None else 0.0, max_iterations, False)


def top_eigenvalue(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    generator: torch.Generator,
    *,
    max_iterations: int = 20,
    tolerance: float = 1e-3,
    algebraic: bool = True,
) -> EigenResult:
    """Largest eigenvalue of the Hessian of the subset's mean loss, by power iteration.

    Power iteration (von Mises) from a Gaussian start vector drawn from ``generator`` converges
    to the eigenvalue of largest *magnitude*; the estimate is the Rayleigh quotient, which is
    converged once it changes by at most ``tolerance`` (relative) between iterations. Each
    iteration is one Hessian-vector product over all batches; ``max_iterations`` caps them.

    That dominant eigenvalue is what PyHessian-style reports call "the top eigenvalue", and near
    a minimum it is the largest positive one. With ``algebraic=True`` (the default) the
    algebraically largest eigenvalue is returned in every case: if the dominant eigenvalue λ_d
    comes out negative, a second power iteration on the shifted operator H − λ_d·I (whose
    dominant eigenvalue is λ_max − λ_d ≥ 0) recovers λ_max. The second phase has its own cap of
    ``max_iterations``; the reported iterations are the total, and ``converged`` requires both.
    With ``algebraic=False`` the dominant (largest-|λ|) eigenvalue is returned, signed.
    """
    if max_iterations <= 0:
        raise ValueError(f"max_iterations must be > 0, got {max_iterations}")
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    parameters = trainable_parameters(model)

    with measurement_mode(model):

        def hessian(vector: ParamVector) -> ParamVector:
            return _hessian_vector_products(model, batches, loss_fn, parameters, [vector])[0]

        dominant = _power_iteration(hessian, _random_vector(parameters, generator, "normal"), max_iterations, tolerance)
        if not algebraic or dominant.eigenvalue >= 0:
            return dominant
        shift = dominant.eigenvalue

        def shifted(vector: ParamVector) -> ParamVector:
            return [hv - shift * v for hv, v in zip(hessian(vector), vector)]

        top = _power_iteration(shifted, _random_vector(parameters, generator, "normal"), max_iterations, tolerance)
    return EigenResult(
        eigenvalue=top.eigenvalue + shift,
        iterations=dominant.iterations + top.iterations,
        converged=dominant.converged and top.converged,
    )


# --- trace --------------------------------------------------------------------------------------


def hutchinson_trace(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    generator: torch.Generator,
    *,
    probes: int = 20,
    probes_per_pass: int = 4,
) -> TraceResult:
    """Trace of the Hessian of the subset's mean loss, by Hutchinson's estimator (Hutchinson 1989).

    For Rademacher probes z (independent ±1 entries drawn from ``generator``), E[zᵀHz] = tr H
    and Var[zᵀHz] = 2·Σ_{i≠j} H_ij². Returns the mean of ``probes`` samples and its standard
    error, the sample standard deviation (n − 1 denominator) over √n; with one probe the
    standard error is undefined and reported as NaN. ``probes_per_pass`` probes share each
    batch's forward and first backward pass (memory grows with it; results do not depend on it).
    """
    if probes <= 0:
        raise ValueError(f"probes must be > 0, got {probes}")
    if probes_per_pass <= 0:
        raise ValueError(f"probes_per_pass must be > 0, got {probes_per_pass}")
    parameters = trainable_parameters(model)
    samples: list[float] = []
    with measurement_mode(model):
        while len(samples) < probes:
            count = min(probes_per_pass, probes - len(samples))
            vectors = [_random_vector(parameters, generator, "rademacher") for _ in range(count)]
            products = _hessian_vector_products(model, batches, loss_fn, parameters, vectors)
            samples.extend(float(_dot(z, hz)) for z, hz in zip(vectors, products))
    values = torch.tensor(samples, dtype=torch.float64)
    mean = float(values.mean())
    stderr = float(values.std(correction=1)) / math.sqrt(probes) if probes > 1 else math.nan
    return TraceResult(trace=mean, stderr=stderr, probes=probes)


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
                    for accumulator, part in zip(gradient, parts):
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
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    parameters = trainable_parameters(model)
    with measurement_mode(model), perturbed_weights(parameters) as backup:
        base_loss, gradient = _loss_and_gradient(model, batches, loss_fn, parameters, with_gradient=True)
        assert gradient is not None
        if float(global_norm(gradient)) == 0.0:
            gradient = _random_vector(parameters, generator or torch.Generator().manual_seed(0), "normal")
        delta = _scaled_to(gradient, radius)
        best = 0.0
        for step in range(steps):
            with torch.no_grad():
                torch._foreach_copy_(parameters, torch._foreach_add(backup.saved, delta))
            last = step == steps - 1
            loss, gradient = _loss_and_gradient(model, batches, loss_fn, parameters, with_gradient=not last)
            best = max(best, loss - base_loss)
            if last:
                break
            assert gradient is not None
            if float(global_norm(gradient)) == 0.0:  # a stationary point: further steps stay put
                break
            with torch.no_grad():
                delta = torch._foreach_add(delta, _scaled_to(gradient, step_size * radius))
                if float(global_norm(delta)) > radius:
                    delta = _scaled_to(delta, radius)
    return best


# --- everything at once -------------------------------------------------------------------------


def measure_flatness(
    model: nn.Module,
    batches: Batches,
    loss_fn: LossFn,
    config: FlatnessConfig,
    generator: torch.Generator,
) -> FlatnessResult:
    """Top eigenvalue, Hutchinson trace and ε-sharpness of ``model`` on the fixed ``batches``.

    ``batches`` is the measurement subset (``config.subset_size`` samples in batches of
    ``config.batch_size``, built by the caller on the model's device); ``loss_fn`` returns each
    batch's mean loss. Randomness (the power-iteration start, the trace probes) comes from
    ``generator`` in a fixed order, so a generator seeded the same way gives the same result.
    The model is measured in eval mode and left as it was: train/eval flags, BatchNorm running
    statistics, weights (bit-exact) and ``p.grad``.
    """
    with measurement_mode(model):
        eigen = top_eigenvalue(
            model,
            batches,
            loss_fn,
            generator,
            max_iterations=config.eigen_iterations,
            tolerance=config.eigen_tolerance,
        )
        trace = hutchinson_trace(model, batches, loss_fn, generator, probes=config.trace_probes)
        sharpness = epsilon_sharpness(
            model,
            batches,
            loss_fn,
            radius=config.sharpness_radius,
            steps=config.sharpness_steps,
            generator=generator,
        )
    return FlatnessResult(
        top_eigenvalue=eigen.eigenvalue,
        eigen_iterations=eigen.iterations,
        eigen_converged=eigen.converged,
        trace=trace.trace,
        trace_stderr=trace.stderr,
        epsilon_sharpness=sharpness,
    )
