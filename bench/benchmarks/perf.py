"""Cost of one optimizer step per method, and training throughput per model, with their spread.

Timings go through the real training step (:meth:`bench.training.Trainer.train_step`: the
regularizer, autocast, channels_last, the optimizer), after warm-up. The methods are
*interleaved*: each round times one block of steps of every method in turn (starting one method
later each round), so a slow drift of the machine (other load, clock speed) hits every method alike.
Each figure is reported as the median and the interquartile range (IQR) over rounds:

* step time: over the per-round block times (divided by the steps in a block);
* ratio to ERM: over the per-round ratios (the method's block time / ERM's block time *in the same
  round*), so a round disturbed for everyone cancels out instead of widening two spreads;
* overhead: the per-round ratio divided by the ratio of pass-equivalents.

The clock, the spreads and the reliability rule are :mod:`bench.measure.timing`'s.
``torch.utils.benchmark`` itself is not imported: its import loads the C++ extension builder,
which logs a "No CUDA runtime is found" warning on machines without one, and ``Timer.timeit`` runs
extra untimed calls before every measurement and times one statement at a time, which defeats the
interleaving.

A figure is marked *unreliable* by :func:`judge` (rule in :data:`RELIABILITY_RULE`). Figures are
printed, never asserted: speed targets live here, not in timed tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

import regularizers
from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.data import Dataset, TensorSplit, load_dataset
from bench.measure.timing import TARGET_OVERHEAD, Reliability, Spread, judge, pass_equivalents, wall_clock
from bench.training import Trainer, TrialSpec
from regularizers import StepReport

#: (model, input shape) pairs timed by default: the digits CNN and a ResNet-sized CNN on 32×32.
DEFAULT_MODELS = (("cnn", (1, 8, 8)), ("resnet18", (3, 32, 32)))


@dataclass
class StepTiming:
    """One (model, method): seconds per optimizer step, and its cost relative to ERM's."""

    model: str
    method: str
    device: str
    batch_size: int
    rounds: int
    steps_per_block: int
    step_seconds: Spread  # seconds per step, over rounds
    forward_passes: float  # per step, the mean over the timed steps (LookSAM's 1 + 1/k)
    backward_passes: float
    pass_equivalents: float
    samples_per_second: float  # batch size / median step time
    ratio_to_erm: Spread  # per-round step time / ERM's in the same round (exactly 1 for erm)
    overhead: Spread  # per-round ratio / (pass-equivalents relative to ERM): 1.0 = no cost beyond passes
    reliability: Reliability
    epoch_seconds: float | None = None  # training-set size / samples per second

    @property
    def reliable(self) -> bool:
        return self.reliability.reliable

    @property
    def misses_target(self) -> bool:
        return self.overhead.median > TARGET_OVERHEAD

    def to_dict(self) -> dict[str, object]:
        record = asdict(self)
        for name in ("step_seconds", "ratio_to_erm", "overhead"):
            record[name] = getattr(self, name).to_dict()
        del record["reliability"]
        record["reliable"] = self.reliable
        record["reason"] = self.reliability.reason
        record["step_seconds_reliable"] = self.reliability.step_time is None
        record["ratio_reliable"] = self.reliability.ratio is None
        return record


def _synthetic(input_shape: tuple[int, int, int], num_classes: int, samples: int, seed: int) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((samples, *input_shape), generator=generator)
    targets = torch.randint(0, num_classes, (samples,), generator=generator)
    split = TensorSplit(inputs, targets)
    return Dataset("synthetic", split, split.head(min(samples, 64)), split.head(min(samples, 64)), num_classes)


class _MethodClock:
    """One method's trainer on one model, timing blocks of training steps."""

    def __init__(
        self,
        model: str,
        method: str,
        *,
        dataset: Dataset,
        data_config: DataConfig,
        batch_size: int,
        training: TrainingConfig,
    ) -> None:
        self.model = model
        self.method = method
        self.batch_size = batch_size
        spec = TrialSpec(
            benchmark="perf",
            dataset=data_config,
            model=ModelConfig(name=model),
            training=training.model_copy(update={"batch_size": batch_size, "epochs": 1}),
            regularizer=method,
            flatness=FlatnessConfig(when="off"),
            seed=0,
        )
        self.trainer = Trainer(spec, dataset=dataset)
        self._batches = self.trainer.batches()
        self.seconds_per_step: list[float] = []  # one entry per timed block
        self.report: StepReport | None = None
        # A method whose passes repeat every k steps (LookSAM) times whole periods, so that every
        # block holds the same mix of its cheap and full steps.
        self.period = self.trainer.regularizer.cost(bool(self.trainer._batchnorms)).period
        self.passes_timed = [0.0, 0.0]  # forward, backward over the timed steps
        self.steps_timed = 0

    @property
    def mean_passes(self) -> tuple[float, float]:
        """Forward and backward passes per step over the timed blocks (the last step's before any)."""
        if self.steps_timed == 0:
            assert self.report is not None
            return float(self.report.forward_passes), float(self.report.backward_passes)
        return self.passes_timed[0] / self.steps_timed, self.passes_timed[1] / self.steps_timed

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        try:
            return next(self._batches)
        except StopIteration:  # a new epoch of the same seeded loader
            self._batches = self.trainer.batches()
            return next(self._batches)

    def run_block(self, steps: int, *, timed: bool = True) -> float:
        """Run ``steps`` periods of training steps (``steps`` steps for most methods); the seconds
        per step (batches are drawn before the clock)."""
        steps *= self.period
        batches = [self._next_batch() for _ in range(steps)]
        reports = []
        started = wall_clock(self.trainer.device)
        for inputs, targets, sample_ids in batches:
            reports.append(self.trainer.train_step(inputs, targets, sample_ids))
        seconds = (wall_clock(self.trainer.device) - started) / steps
        self.report = reports[-1]
        if timed:
            self.passes_timed[0] += sum(r.forward_passes for r in reports)
            self.passes_timed[1] += sum(r.backward_passes for r in reports)
            self.steps_timed += steps
        return seconds


def _time_model(
    clocks: list[_MethodClock],
    *,
    warmup: int,
    repeats: int,
    steps_per_block: int,
    progress: Callable[[str], None] | None,
) -> None:
    for _ in range(warmup):
        for clock in clocks:
            clock.run_block(1, timed=False)
    # Round-robin: every round times one block of each method, back to back. Each round starts
    # one method later, so no method always runs first or right after the same neighbour.
    for repeat in range(repeats):
        start = repeat % len(clocks)
        for clock in clocks[start:] + clocks[:start]:
            clock.seconds_per_step.append(clock.run_block(steps_per_block))
        if progress is not None:
            progress(f"{clocks[0].model}: round {repeat + 1}/{repeats} of {len(clocks)} methods")


def _timings(clocks: list[_MethodClock], *, steps_per_block: int, epoch_samples: int | None) -> list[StepTiming]:
    erm = clocks[0]
    assert erm.method == "erm" and erm.report is not None
    erm_passes = pass_equivalents(*erm.mean_passes)
    timings = []
    for clock in clocks:
        forward, backward = clock.mean_passes
        passes = pass_equivalents(forward, backward)
        # Per round: x / x is exactly 1.0 in IEEE arithmetic, so erm's ratio is exactly 1.
        ratios = [
            mine / reference for mine, reference in zip(clock.seconds_per_step, erm.seconds_per_step, strict=True)
        ]
        step = Spread.of(clock.seconds_per_step)
        overhead = Spread.of([ratio / (passes / erm_passes) for ratio in ratios])
        samples_per_second = clock.batch_size / step.median
        timings.append(
            StepTiming(
                model=clock.model,
                method=clock.method,
                device=str(clock.trainer.device),
                batch_size=clock.batch_size,
                rounds=len(clock.seconds_per_step),
                steps_per_block=steps_per_block,
                step_seconds=step,
                forward_passes=forward,
                backward_passes=backward,
                pass_equivalents=passes,
                samples_per_second=samples_per_second,
                ratio_to_erm=Spread.of(ratios),
                overhead=overhead,
                reliability=judge(step, overhead),
                epoch_seconds=None if epoch_samples is None else epoch_samples / samples_per_second,
            )
        )
    return timings


def benchmark_steps(
    models: list[str] | None = None,
    methods: list[str] | None = None,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    batch_size: int = 32,
    warmup: int = 2,
    repeats: int = 10,
    steps_per_block: int = 1,
    device: str = "auto",
    compile: bool = False,
    epoch_samples: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[StepTiming]:
    """Time every (model, method) over ``repeats`` interleaved rounds; ratios are to ``erm`` on
    the same model, which is always timed (first).

    Without ``dataset`` the batches are random tensors of the model's default input shape (the
    cost of a step does not depend on pixel values); with it, real batches through the real
    loader and augmentation (drawn before the clock starts), and the epoch time follows from the
    training-set size (or from ``epoch_samples``, e.g. 45,000 for CIFAR's training split less
    validation). Raises ValueError when ``repeats`` or ``steps_per_block`` is below 1 or
    ``warmup`` below 0, and what the dataset, model and trainer raise for bad names or devices.
    """
    if repeats < 1 or steps_per_block < 1 or warmup < 0:
        raise ValueError(
            f"need repeats >= 1, steps_per_block >= 1, warmup >= 0; got {repeats}, {steps_per_block}, {warmup}"
        )
    methods = ["erm", *[m for m in (methods or regularizers.available()) if m != "erm"]]
    training = TrainingConfig(device=device, compile=compile)
    shapes = dict(DEFAULT_MODELS)
    models = models or [name for name, _ in DEFAULT_MODELS]
    timings = []
    for model in models:
        if dataset is not None:
            data_config = DataConfig(
                name=dataset,
                data_dir=data_dir,
                crop_padding=4 if dataset != "digits" else 0,
                horizontal_flip=dataset != "digits",
            )
            data = load_dataset(data_config)
            samples = len(data.train)
        else:
            data_config = DataConfig()
            # A few distinct batches suffice: the cost of a step does not depend on the values.
            data = _synthetic(shapes.get(model, (3, 32, 32)), 10, batch_size * 4, seed=0)
            samples = epoch_samples
        clocks = [
            _MethodClock(model, method, dataset=data, data_config=data_config, batch_size=batch_size, training=training)
            for method in methods
        ]
        _time_model(clocks, warmup=warmup, repeats=repeats, steps_per_block=steps_per_block, progress=progress)
        timings.extend(_timings(clocks, steps_per_block=steps_per_block, epoch_samples=samples))
    return timings
