"""Cost of one optimizer step per method, and training throughput per model.

Timings go through the real training step (:meth:`bench.training.Trainer.train_step`: the
regularizer, autocast, channels_last, the optimizer), after warm-up, as the median of repeats
taken round-robin over the methods.
On CUDA every repeat is bracketed by CUDA events, so asynchronous launches are not mistaken for
speed. Figures are printed, never asserted: speed targets live here, not in timed tests.

*Pass-equivalents* weigh a forward-only pass as 1/3 of a forward+backward pair (the backward
costs about twice the forward), so NSO's extra clean forward on BatchNorm models counts fairly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

import regularizers
from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.data import Dataset, TensorSplit, load_dataset
from bench.training import Trainer, TrialSpec
from regularizers import StepReport

#: (model, input shape) pairs timed by default: the digits CNN and a ResNet-sized CNN on 32×32.
DEFAULT_MODELS = (("cnn", (1, 8, 8)), ("resnet18", (3, 32, 32)))
TARGET_OVERHEAD = 1.05


@dataclass
class StepTiming:
    model: str
    method: str
    device: str
    batch_size: int
    median_step_seconds: float
    forward_passes: int
    backward_passes: int
    pass_equivalents: float
    samples_per_second: float
    ratio_to_erm: float | None = None  # step time / ERM's step time
    overhead: float | None = None  # ratio_to_erm / (pass-equivalents relative to ERM): 1.0 = no cost beyond passes
    epoch_seconds: float | None = None  # training-set size / samples per second (real datasets only)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _synthetic(input_shape: tuple[int, int, int], num_classes: int, samples: int, seed: int) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((samples, *input_shape), generator=generator)
    targets = torch.randint(0, num_classes, (samples,), generator=generator)
    split = TensorSplit(inputs, targets)
    return Dataset("synthetic", split, split.head(min(samples, 64)), split.head(min(samples, 64)), num_classes)


def _pass_equivalents(forward: int, backward: int) -> float:
    return backward + (forward - backward) / 3


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _MethodClock:
    """One method's trainer on one model, timing single training steps."""

    def __init__(self, model: str, method: str, *, dataset: Dataset, data_config: DataConfig, batch_size: int, training: TrainingConfig) -> None:
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
        self.durations: list[float] = []
        self.report: StepReport | None = None

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self._batches)
        except StopIteration:  # a new epoch of the same seeded loader
            self._batches = self.trainer.batches()
            return next(self._batches)

    def step(self, *, timed: bool) -> None:
        inputs, targets = self._next_batch()
        device = self.trainer.device
        _synchronize(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.report = self.trainer.train_step(inputs, targets)
            end.record()
            torch.cuda.synchronize(device)
            seconds = start.elapsed_time(end) / 1000
        else:
            started = time.perf_counter()
            self.report = self.trainer.train_step(inputs, targets)
            seconds = time.perf_counter() - started
        if timed:
            self.durations.append(seconds)

    def timing(self) -> StepTiming:
        assert self.report is not None and self.durations
        median = statistics.median(self.durations)
        return StepTiming(
            model=self.model,
            method=self.method,
            device=str(self.trainer.device),
            batch_size=self.batch_size,
            median_step_seconds=median,
            forward_passes=self.report.forward_passes,
            backward_passes=self.report.backward_passes,
            pass_equivalents=_pass_equivalents(self.report.forward_passes, self.report.backward_passes),
            samples_per_second=self.batch_size / median,
        )


def benchmark_steps(
    models: list[str] | None = None,
    methods: list[str] | None = None,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    batch_size: int = 32,
    warmup: int = 2,
    repeats: int = 10,
    device: str = "auto",
    compile: bool = False,
    epoch_samples: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[StepTiming]:
    """Time every (model, method); ratios are relative to ``erm`` on the same model.

    Without ``dataset`` the batches are random tensors of the model's default input shape (the
    cost of a step does not depend on pixel values); with it, real batches through the real
    loader and augmentation, and the epoch time follows from the training-set size (or from
    ``epoch_samples``, e.g. 45,000 for CIFAR's training split less validation).
    """
    # ERM first: it is the reference every ratio divides by.
    methods = ["erm", *[m for m in (methods or regularizers.available()) if m != "erm"]]
    training = TrainingConfig(device=device, compile=compile)
    shapes = dict(DEFAULT_MODELS)
    models = models or [name for name, _ in DEFAULT_MODELS]
    timings = []
    for model in models:
        if dataset is not None:
            data_config = DataConfig(name=dataset, data_dir=data_dir, crop_padding=4 if dataset != "digits" else 0, horizontal_flip=dataset != "digits")
            data = load_dataset(data_config)
        else:
            data_config = DataConfig()
            shape = shapes.get(model, (3, 32, 32))
            data = _synthetic(shape, 10, batch_size * (warmup + repeats), seed=0)
        clocks = [
            _MethodClock(model, method, dataset=data, data_config=data_config, batch_size=batch_size, training=training)
            for method in methods
        ]
        for clock in clocks:
            for _ in range(warmup):
                clock.step(timed=False)
        # Round-robin over the methods, so slow drifts of the machine (other load, clock speed)
        # hit every method alike instead of whichever happened to run during them.
        for repeat in range(repeats):
            for clock in clocks:
                clock.step(timed=True)
            if progress is not None:
                progress(f"{model}: round {repeat + 1}/{repeats} of {len(clocks)} methods")
        per_model = [clock.timing() for clock in clocks]
        samples = len(data.train) if dataset is not None else epoch_samples
        for timing in per_model:
            if samples is not None:
                timing.epoch_seconds = samples / timing.samples_per_second
        erm = next(t for t in per_model if t.method == "erm")
        for timing in per_model:
            timing.ratio_to_erm = timing.median_step_seconds / erm.median_step_seconds
            timing.overhead = timing.ratio_to_erm / (timing.pass_equivalents / erm.pass_equivalents)
        timings.extend(per_model)
    return timings
