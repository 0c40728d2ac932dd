"""ResNet-18 training throughput on CIFAR-10-shaped images resident on the device, in images/s,
over the grid bf16 autocast × channels_last × ``torch.compile`` (a part of
:mod:`bench.benchmarks.acceptance`; :mod:`bench.benchmarks.packing` reuses its training loop).

What is timed is what a trial's epoch does, minus validation: :meth:`Trainer.batches` (the seeded
shuffle and the batched crop/flip augmentation, on the device) and :meth:`Trainer.train_step`
(ERM: forward, backward, SGD). Each point is its own :class:`Trainer`, so it trains with exactly
the settings a config would give it (``training.precision``, ``channels_last``, ``compile``).
The clock and the spreads are :mod:`bench.measure.timing`'s: the device is synchronized before
each reading, the figure is the median and quartiles over ``repeats`` blocks of steps, the
warm-up steps are not timed, and the compilation (:meth:`Trainer.warm_up_compiled`) is reported
on its own.

The images are real CIFAR-10 when its files are found (:func:`find_cifar10`), otherwise random
tensors of its shape: a step costs the same whatever the pixel values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.data import Dataset, DatasetError, TensorSplit, load_dataset
from bench.data.vision import data_root
from bench.errors import first_line
from bench.measure.timing import MAX_RELATIVE_STEP_IQR, MIN_ROUNDS, Spread, wall_clock
from bench.training import Trainer, TrialSpec

MODEL = "resnet18"
#: CIFAR-10's images and classes.
INPUT_SHAPE, NUM_CLASSES = (3, 32, 32), 10
#: The folder torchvision's CIFAR10 reads under the data folder.
CIFAR10_FOLDER = "cifar-10-batches-py"
#: ``real`` or ``synthetic``: the two values of :attr:`DataSource.kind`.
REAL, SYNTHETIC = "real", "synthetic"


@dataclass(frozen=True)
class DataSource:
    """Where the timed images come from: real CIFAR-10 (``kind == "real"``), or random tensors
    of its shape, with the reason the real ones were not used."""

    kind: str
    data_dir: str  # the folder searched for CIFAR-10
    reason: str | None = None  # why synthetic

    @property
    def dataset(self) -> str:
        """The registered dataset a config names for these images."""
        return "cifar10" if self.kind == REAL else "synthetic_cifar10"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "dataset": self.dataset, "data_dir": self.data_dir, "reason": self.reason}


def find_cifar10(data_dir: str | None) -> DataSource:
    """Real CIFAR-10 when its files are under ``data_dir`` (the configs' default folder when
    ``None``) and pass torchvision's checks; otherwise the synthetic stand-in, with the reason.
    Never downloads: the GPU machines this runs on may have no internet."""
    config = DataConfig(name="cifar10", data_dir=data_dir)
    root = data_root(config)
    if not (root / CIFAR10_FOLDER).is_dir():
        return DataSource(SYNTHETIC, str(root), f"no {CIFAR10_FOLDER}/ under {root}")
    try:
        load_dataset(config)  # the md5 checks; the loaded set is read again where it is used
    except DatasetError as error:
        return DataSource(SYNTHETIC, str(root), first_line(error))
    return DataSource(REAL, str(root))


def training_images(source: DataSource, samples: int, device: torch.device) -> tuple[Dataset, DataConfig]:
    """The training images on ``device`` (real CIFAR-10's training split, or ``samples`` random
    ones drawn on the device itself) and the data config whose augmentation a trial would use
    (CIFAR's usual crop with 4 pixels of padding and horizontal flip)."""
    data_config = DataConfig(
        name=source.dataset, data_dir=source.data_dir, val_fraction=0.1, crop_padding=4, horizontal_flip=True
    )
    if source.kind == REAL:
        return load_dataset(data_config).to(device), data_config
    generator = torch.Generator(device=device).manual_seed(0)
    inputs = torch.randn((samples, *INPUT_SHAPE), generator=generator, device=device)
    targets = torch.randint(0, NUM_CLASSES, (samples,), generator=generator, device=device)
    split = TensorSplit(inputs, targets)
    # Validation and test are never evaluated here; a few images keep the Dataset well formed.
    return Dataset(source.dataset, split, split.head(64), split.head(64), NUM_CLASSES), data_config


@dataclass(frozen=True)
class GridPoint:
    """One point of the grid: bf16 autocast, channels-last memory format, ``torch.compile``."""

    bf16: bool
    channels_last: bool
    compile: bool

    @property
    def label(self) -> str:
        return "/".join(
            (
                "bf16" if self.bf16 else "fp32",
                "channels_last" if self.channels_last else "contiguous",
                "compiled" if self.compile else "eager",
            )
        )

    def training(self, device: torch.device, batch_size: int) -> TrainingConfig:
        return TrainingConfig(
            device=device.type,
            batch_size=batch_size,
            epochs=1,
            schedule="constant",  # the learning rate never reaches 0 however many steps are timed
            precision="bfloat16" if self.bf16 else "float32",
            channels_last=self.channels_last,
            compile=self.compile,
        )


#: fp32, contiguous, eager: what the speed-ups are relative to.
BASELINE = GridPoint(bf16=False, channels_last=False, compile=False)


def grid_points(compiled: bool) -> list[GridPoint]:
    """The 4 points of one half of the grid: bf16 × channels_last, eager or compiled."""
    flags = (True, False)
    return [GridPoint(bf16, layout, compiled) for bf16 in flags for layout in flags]


@dataclass(frozen=True)
class GridSizes:
    batch_size: int
    warmup_steps: int  # untimed steps after construction (and compilation)
    steps_per_block: int  # steps between two clock readings
    repeats: int  # timed blocks: the spread is over them


class TrainingLoop:
    """A :class:`Trainer` (ERM) stepping through its seeded batches, epoch after epoch."""

    def __init__(
        self, data: Dataset, data_config: DataConfig, training: TrainingConfig, *, device: torch.device
    ) -> None:
        spec = TrialSpec(
            benchmark="acceptance",
            dataset=data_config,
            model=ModelConfig(name=MODEL),
            training=training,
            regularizer="erm",
            flatness=FlatnessConfig(when="off"),
            seed=0,
        )
        self.trainer = Trainer(spec, device=device, dataset=data)
        self.batch_size = training.batch_size
        self._batches: Iterator[tuple[Tensor, Tensor, Tensor]] = self.trainer.batches()

    def _next_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        try:
            return next(self._batches)
        except StopIteration:  # the next epoch, in the same seeded order
            self._batches = self.trainer.batches()
            return next(self._batches)

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` training steps, the batches drawn inside the clock as in an epoch."""
        started = wall_clock(self.trainer.device)
        for _ in range(steps):
            self.trainer.train_step(*self._next_batch())
        return wall_clock(self.trainer.device) - started


@dataclass
class GridCell:
    """One grid point's figures, or why it has none (``status`` skipped or failed)."""

    point: GridPoint
    status: str  # ok, failed, skipped
    reason: str | None = None
    images_per_second: Spread | None = None
    compile_seconds: float | None = None  # Trainer.warm_up_compiled: tracing and compiling, once
    warmup_seconds: float | None = None  # the untimed steps after it (recompilations land here)
    peak_memory_mib: float | None = None  # CUDA only: the most allocated at once, resident data included
    noisy: str | None = None  # why the spread is too wide to read (the rule of bench.measure.timing)

    def to_dict(self) -> dict[str, object]:
        return {
            "bf16": self.point.bf16,
            "channels_last": self.point.channels_last,
            "compile": self.point.compile,
            "label": self.point.label,
            "status": self.status,
            "reason": self.reason,
            "images_per_second": None if self.images_per_second is None else self.images_per_second.to_dict(),
            "compile_seconds": self.compile_seconds,
            "warmup_seconds": self.warmup_seconds,
            "peak_memory_mib": self.peak_memory_mib,
            "noisy": self.noisy,
        }


def noise_of(spread: Spread) -> str | None:
    """The step-time rule of :mod:`bench.measure.timing`, for a throughput spread."""
    if spread.n < MIN_ROUNDS:
        return f"{spread.n} blocks < {MIN_ROUNDS}"
    relative = spread.iqr / spread.median
    if relative > MAX_RELATIVE_STEP_IQR:
        return f"IQR {relative:.0%} of the median > {MAX_RELATIVE_STEP_IQR:.0%}"
    return None


def _cuda_peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def measure_point(
    point: GridPoint, data: Dataset, data_config: DataConfig, sizes: GridSizes, device: torch.device
) -> GridCell:
    """Build, compile (when asked), warm up, then time ``sizes.repeats`` blocks of steps."""
    if point.compile:
        # A fresh start: compiled code of the previous point (other dtype, other layout) would
        # only fill Dynamo's cache towards its recompile limit.
        torch.compiler.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loop = TrainingLoop(data, data_config, point.training(device, sizes.batch_size), device=device)
    compile_seconds = loop.trainer.warm_up_compiled() if point.compile else None
    warmup_seconds = loop.run(sizes.warmup_steps) if sizes.warmup_steps else 0.0
    rates = [sizes.steps_per_block * sizes.batch_size / loop.run(sizes.steps_per_block) for _ in range(sizes.repeats)]
    spread = Spread.of(rates)
    return GridCell(
        point,
        "ok",
        images_per_second=spread,
        compile_seconds=compile_seconds,
        warmup_seconds=warmup_seconds,
        peak_memory_mib=_cuda_peak_mib(device),
        noisy=noise_of(spread),
    )


@dataclass
class GridResult:
    source: DataSource
    device: str
    sizes: GridSizes
    cells: list[GridCell] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": MODEL,
            "input_shape": list(INPUT_SHAPE),
            "device": self.device,
            "data": self.source.to_dict(),
            "batch_size": self.sizes.batch_size,
            "warmup_steps": self.sizes.warmup_steps,
            "steps_per_block": self.sizes.steps_per_block,
            "repeats": self.sizes.repeats,
            "cells": [cell.to_dict() for cell in self.cells],
        }


def skip_reason(point: GridPoint, device: torch.device, compile_allowed: bool) -> str | None:
    """Why a point is not measured on this device (``None``: it is)."""
    if point.channels_last and device.type != "cuda":
        return "channels_last applies on CUDA only (training.channels_last): the same as contiguous here"
    if point.compile and not compile_allowed:
        return "no torch.compile in the reduced CPU mode (Inductor builds ResNet-18 for ~40 s per point on 2 cores)"
    return None


def measure_grid(
    points: list[GridPoint],
    source: DataSource,
    sizes: GridSizes,
    device: torch.device,
    *,
    samples: int,
    compile_allowed: bool,
    out_of_time: Callable[[], str | None],
    progress: Callable[[str], None],
) -> GridResult:
    """``points`` in turn; a point that fails is recorded with its reason and the rest go on;
    once ``out_of_time()`` gives a reason, the points left are skipped with it."""
    result = GridResult(source, str(device), sizes)
    data: tuple[Dataset, DataConfig] | None = None
    for point in points:
        reason = skip_reason(point, device, compile_allowed) or out_of_time()
        if reason is not None:
            result.cells.append(GridCell(point, "skipped", reason))
            continue
        if data is None:  # loaded once, and only when some point is measured
            data = training_images(source, samples, device)
        progress(f"throughput: {point.label}")
        try:
            cell = measure_point(point, *data, sizes, device)
        except Exception as error:  # one point's failure (OOM, a compiler error) is its figure: go on
            cell = GridCell(point, "failed", f"{type(error).__name__}: {first_line(error)}")
        result.cells.append(cell)
    return result
