"""One trial without Ray: build data, model and regularizer, train, evaluate, measure.

``Trainer`` is driven epoch by epoch (so the search can report, checkpoint and be stopped after
each epoch); :func:`run_trial` drives it to the end for callers that need no orchestration.
Metrics are accumulated on the device and read once per epoch: no host-device sync per step.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import regularizers
from bench import metrics
from bench.config import BenchmarkConfig, DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.data import Dataset, Split, load_dataset
from bench.data.augment import build_augmentation
from bench.data.loader import drops_last
from bench.measure.flatness import measure_flatness, should_measure
from bench.models import create_model
from bench.models.pretrained import Fitted, load_pretrained
from bench.provenance import hardware
from bench.training.averaging import WeightAverager
from bench.training.parallel import DataParallel
from regularizers.averaging import TRAINED

EVAL_BATCH_SIZE = 1024


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines one training run."""

    benchmark: str
    dataset: DataConfig
    model: ModelConfig
    training: TrainingConfig
    regularizer: str
    regularizer_hparams: dict[str, Any] = field(default_factory=dict)
    flatness: FlatnessConfig = FlatnessConfig()
    #: Fixes init, data order and the regularizer's noise (the split has its own seed).
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the config sections as their validated key/value mappings.

        ``training`` equals the Parquet row's ``training_hparams`` and ``regularizer_hparams``
        its ``regularizer_hparams`` (both as requested: ``precision: auto`` stays ``auto``)."""
        return {
            "benchmark": self.benchmark,
            "dataset": self.dataset.model_dump(mode="json"),
            "model": self.model.model_dump(mode="json"),
            "training": self.training.model_dump(mode="json"),
            "regularizer": self.regularizer,
            "regularizer_hparams": dict(self.regularizer_hparams),
            "flatness": self.flatness.model_dump(mode="json"),
            "seed": self.seed,
        }

    @classmethod
    def from_row(cls, config: BenchmarkConfig, row: Mapping[str, Any]) -> TrialSpec:
        """The trial a Parquet row records, under ``config`` (its benchmark, dataset, model and
        flatness settings): to run it again in another process, e.g. to compare against Tune."""
        return cls(
            benchmark=config.benchmark,
            dataset=config.dataset,
            model=config.model,
            training=TrainingConfig.model_validate_json(row["training_hparams"]),
            regularizer=row["regularizer"],
            regularizer_hparams=json.loads(row["regularizer_hparams"]),
            flatness=config.flatness,
            seed=int(row["seed"]),
        )


@dataclass
class EpochResult:
    epoch: int  # 1-based: epochs completed so far
    train_loss: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    epoch_seconds: float
    forward_passes: int  # cumulative over the trial
    backward_passes: int
    regularizer_metrics: dict[str, float] = field(default_factory=dict)
    flatness: dict[str, float] = field(default_factory=dict)
    #: The weights validation (and flatness) saw: ``trained``, or ``swa``/``ema`` (the average).
    evaluated_weights: str = TRAINED

    def to_metrics(self) -> dict[str, float]:
        values: dict[str, float] = {
            metrics.EPOCH: self.epoch,
            metrics.TRAIN_LOSS: self.train_loss,
            metrics.VAL_LOSS: self.val_loss,
            metrics.VAL_ACCURACY: self.val_accuracy,
            metrics.LEARNING_RATE: self.learning_rate,
            metrics.EPOCH_SECONDS: self.epoch_seconds,
            metrics.FORWARD_PASSES: self.forward_passes,
            metrics.BACKWARD_PASSES: self.backward_passes,
        }
        values.update({metrics.REGULARIZER_PREFIX + k: v for k, v in self.regularizer_metrics.items()})
        values.update(self.flatness)
        return values


@dataclass
class TestResult:
    test_loss: float
    test_accuracy: float


def select_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible to this process")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``training.precision`` as used on ``device``: ``auto`` is bf16 autocast on CUDA, float32 elsewhere."""
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return precision


def _dtype_and_autocast(
    precision: str, device: torch.device
) -> tuple[torch.dtype, Callable[[], contextlib.AbstractContextManager[Any]]]:
    precision = resolve_precision(precision, device)
    if precision == "float64":
        return torch.float64, contextlib.nullcontext
    if precision == "bfloat16":
        return torch.float32, functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return torch.float32, contextlib.nullcontext


def _lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class Diverged(FloatingPointError):
    """The training loss became non-finite: the method's result with this config, not a fault.

    A FloatingPointError (what callers caught before); ``epoch`` is the 1-based epoch whose mean
    loss was non-finite (checked once per epoch: one device sync), ``step`` the optimizer steps
    taken by then."""

    def __init__(self, loss: float, epoch: int, step: int) -> None:
        super().__init__(f"diverged: training loss {loss} at epoch {epoch} (step {step})")
        self.loss, self.epoch, self.step = loss, epoch, step

    def __reduce__(self) -> tuple[type, tuple[float, int, int]]:
        # Ray pickles a trial's exception; the default would call __init__ with the message only.
        return Diverged, (self.loss, self.epoch, self.step)


class Trainer:
    """Train one model with one regularizer, epoch by epoch, reproducibly from ``spec.seed``.

    With ``parallel`` (one of a trial's data-parallel workers, :mod:`bench.training.parallel`)
    every worker runs this same trainer on its shard of each global batch; the gradients, the
    epoch's figures and the running statistics are shared, so every worker holds the same weights
    and reports the same numbers."""

    def __init__(
        self,
        spec: TrialSpec,
        *,
        device: torch.device | None = None,
        dataset: Dataset | None = None,
        parallel: DataParallel | None = None,
    ) -> None:
        self.spec = spec
        self.parallel = parallel
        recipe = spec.training
        self.device = device or select_device(recipe.device)
        #: The precision as used (``auto`` resolved for this device), reported with every result.
        self.precision = resolve_precision(recipe.precision, self.device)
        self.dtype, self.autocast = _dtype_and_autocast(recipe.precision, self.device)

        torch.manual_seed(spec.seed)  # init and the regularizers' noise draw from the global RNG
        data = dataset if dataset is not None else load_dataset(spec.dataset)
        # Tensors move now; a streamed split's batches move as they come.
        self.data = data.to(self.device, None if self.dtype == torch.float32 else self.dtype)
        self.num_classes = data.num_classes

        model = create_model(spec.model.name, data.input_shape, data.num_classes, **spec.model.options)
        #: What ``model.pretrained`` loaded (None: trained from its initialization).
        self.pretrained: Fitted | None = None
        if spec.model.pretrained is not None:
            self.pretrained = load_pretrained(model, spec.model.pretrained)
        if parallel is not None and self.device.type == "cuda":
            # Batch statistics over the global batch, as on one worker (torch's SyncBatchNorm
            # runs on GPUs only: on CPU each worker normalizes by its shard's statistics).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device, self.dtype)
        self.channels_last = (
            recipe.channels_last and self.device.type == "cuda" and len(self.data.train.sample_shape) == 3
        )
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward_model: nn.Module = torch.compile(model) if recipe.compile else model

        self._parameters = regularizers.trainable_parameters(model)
        self._batchnorms = regularizers.batchnorm_modules(model)
        self.regularizer = regularizers.create(spec.regularizer, **spec.regularizer_hparams)
        if parallel is not None:
            _check_parallel(self.regularizer, parallel, min(recipe.batch_size, len(self.data.train)))
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=recipe.learning_rate,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov and recipe.momentum > 0,
            weight_decay=recipe.weight_decay,
        )
        self.data_order = torch.Generator().manual_seed(spec.seed)
        self.loader = self.data.train.batches(
            recipe.batch_size,
            train=True,
            generator=self.data_order,
            augment=build_augmentation(spec.dataset),
            drop_last=drops_last(len(self.data.train), recipe.batch_size),
        )
        self.total_steps = total_steps = recipe.epochs * len(self.loader)
        warmup_steps = recipe.warmup_epochs * len(self.loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, total_steps, warmup_steps, recipe.schedule)
        )
        self.train_loss_fn = functools.partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)
        self.epochs_done = 0
        self.steps_done = 0
        self.forward_passes = 0
        self.backward_passes = 0
        averaging = self.regularizer.averaging
        self.averager = (
            None
            if averaging is None
            else WeightAverager(
                averaging,
                model,
                self.optimizer,
                epochs=recipe.epochs,
                steps_per_epoch=len(self.loader),
                peak_learning_rate=recipe.learning_rate,
                bn_batches=self.data.train.batches(recipe.batch_size),
                autocast=self.autocast,
            )
        )

    def warm_up_compiled(self) -> float:
        """Trace and compile the compiled model's training graph on one batch, leaving no trace
        in the trial: weights, BatchNorm statistics, gradients and RNG states are restored, no
        optimizer step is taken and the data order is untouched. Returns the seconds it took
        (the trial's ``compile_s``, kept out of its wall time and passes)."""
        started = time.perf_counter()
        saved = copy.deepcopy(self.model.state_dict())
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        batch_size = self.spec.training.batch_size
        inputs, targets = next(iter(self.data.train.head(batch_size).batches(batch_size)))
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        self.model.train()
        with self.autocast():
            loss = self.train_loss_fn(self.forward_model(inputs), targets)
        loss.backward()  # the backward graph is compiled on its first call too
        self.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(saved)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    # --- training ---------------------------------------------------------------------------

    @property
    def epochs_planned(self) -> int:
        return self.spec.training.epochs

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.epochs_planned

    def batches(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """One epoch of augmented training batches, in the seeded order, with their samples'
        positions in the training split."""
        for inputs, targets, sample_ids in self.loader.indexed():
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            yield inputs, targets, sample_ids

    def train_step(self, inputs: Tensor, targets: Tensor, sample_ids: Tensor | None = None) -> regularizers.StepReport:
        """One optimizer step: the regularizer fills the gradients, the optimizer applies them.

        On several workers the batch is the global one; this worker steps on its shard."""
        sync = None
        if self.parallel is not None:
            batch_size, shard = len(targets), self.parallel.shard(len(targets))
            inputs, targets = inputs[shard], targets[shard]
            sample_ids = None if sample_ids is None else sample_ids[shard]
            sync = self.parallel.gradient_sync(len(targets), batch_size)
        closure = regularizers.BatchClosure(
            self.forward_model,
            inputs,
            targets,
            self.train_loss_fn,
            autocast=self.autocast,
            parameters=self._parameters,
            batchnorms=self._batchnorms,
            sample_ids=sample_ids,
            sync=sync,
        )
        self.optimizer.zero_grad(set_to_none=True)
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.regularizer.start_step(
            regularizers.StepSchedule(
                step=self.steps_done,
                total_steps=self.total_steps,
                learning_rate=learning_rate,
                lr_factor=learning_rate / self.spec.training.learning_rate,
            )
        )
        report = self.regularizer.step(closure)
        closure.sync_gradients()
        self.optimizer.step()
        averaging_scheduler = None if self.averager is None else self.averager.scheduler_for(self.epochs_done)
        (averaging_scheduler or self.scheduler).step()
        if self.averager is not None:
            self.averager.after_step(self.model)
        self.steps_done += 1
        return report

    def train_epoch(self) -> EpochResult:
        """One pass over the training split, then validation (and flatness when scheduled)."""
        if self.finished:
            raise RuntimeError(f"all {self.epochs_planned} epochs are already done")
        started = time.perf_counter()
        self.model.train()
        self.regularizer.start_epoch(self.epochs_done, self.epochs_planned)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        metric_sums: dict[str, Tensor] = {}
        samples = steps = 0
        learning_rate = self.optimizer.param_groups[0]["lr"]
        for inputs, targets, sample_ids in self.batches():
            report = self.train_step(inputs, targets, sample_ids)
            loss_sum += report.loss.to(torch.float64) * len(targets)
            for name, value in report.metrics.items():
                metric_sums[name] = metric_sums.get(name, 0) + value.to(torch.float64)
            self.forward_passes += report.forward_passes
            self.backward_passes += report.backward_passes
            samples += len(targets)
            steps += 1
        if self.averager is not None:
            self.forward_passes += self.averager.after_epoch(self.model, self.epochs_done)
        self.epochs_done += 1
        if self.parallel is not None:
            loss_sum, samples, metric_sums = self._shared_epoch(loss_sum, samples, metric_sums)
        train_loss = loss_sum.item() / max(samples, 1)  # the one sync of the epoch
        if not math.isfinite(train_loss):
            raise Diverged(loss=train_loss, epoch=self.epochs_done, step=int(self.scheduler.last_epoch))
        val = self.evaluate(self.data.val)
        flatness = self._maybe_flatness()
        return EpochResult(
            epoch=self.epochs_done,
            train_loss=train_loss,
            val_loss=val.test_loss,
            val_accuracy=val.test_accuracy,
            learning_rate=learning_rate,
            epoch_seconds=time.perf_counter() - started,
            forward_passes=self.forward_passes,
            backward_passes=self.backward_passes,
            regularizer_metrics={name: total.item() / max(steps, 1) for name, total in metric_sums.items()},
            flatness=flatness,
            evaluated_weights=self.evaluated_weights,
        )

    def _shared_epoch(
        self, loss_sum: Tensor, samples: int, metric_sums: dict[str, Tensor]
    ) -> tuple[Tensor, int, dict[str, Tensor]]:
        """The epoch's training figures over every worker's shards (one all-reduce): the loss
        summed over all samples, each method metric the mean of the workers' (a metric computed
        from synced gradients is the same on each). The running statistics are averaged too."""
        assert self.parallel is not None
        names = sorted(metric_sums)
        values = torch.stack(
            [loss_sum, torch.tensor(float(samples), device=self.device, dtype=torch.float64)]
            + [torch.as_tensor(metric_sums[name], device=self.device, dtype=torch.float64) for name in names]
        )
        total = self.parallel.sum(values)
        self.parallel.average_buffers(self._batchnorms)
        world = self.parallel.world_size
        return total[0], int(total[1].item()), {name: total[2 + i] / world for i, name in enumerate(names)}

    @property
    def averaged(self) -> bool:
        """Whether the weights evaluated and measured are an average (SWA/EMA) holding snapshots."""
        return self.averager is not None and self.averager.ready

    @property
    def evaluated_model(self) -> nn.Module:
        """What validation, test and flatness see: the average once it holds weights, else the
        trained model (compiled when the recipe compiles)."""
        return self.averager.module if self.averaged else self.forward_model

    @property
    def evaluated_weights(self) -> str:
        """What the rows record about the evaluated weights: ``trained``, ``swa`` or ``ema``."""
        return TRAINED if self.averager is None else self.averager.evaluated_weights

    @torch.no_grad()
    def evaluate(self, split: Split) -> TestResult:
        """Mean cross-entropy (no label smoothing) and accuracy, BatchNorm in eval mode."""
        model = self.evaluated_model
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for inputs, targets in split.batches(EVAL_BATCH_SIZE):
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                logits = model(inputs)
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").to(torch.float64)
            correct += (logits.argmax(dim=1) == targets).sum()
        model.train(was_training)
        count = max(len(split), 1)
        return TestResult(test_loss=loss_sum.item() / count, test_accuracy=correct.item() / count)

    def test(self) -> TestResult:
        """The held-out test split: call once, after training; the search never sees it."""
        return self.evaluate(self.data.test)

    def _maybe_flatness(self) -> dict[str, float]:
        config = self.spec.flatness
        if not should_measure(config, self.epochs_done - 1, self.epochs_planned):
            return {}
        generator = torch.Generator(device="cpu").manual_seed(self.spec.seed)
        # The weights that are evaluated are the ones measured: the average when there is one.
        model = self.averager.module if self.averaged else self.model
        result = measure_flatness(model, self.flatness_batches(), F.cross_entropy, config, generator)
        return result.to_metrics()

    def flatness_batches(self) -> list[tuple[Tensor, Tensor]]:
        """The measurement subset: the first ``flatness.subset_size`` training samples (fixed by
        the split seed), unaugmented, in batches of ``flatness.batch_size``, held on the device
        (the measures pass over them many times). A streamed split reads just these samples: a
        bounded number of batches, whatever the dataset's size."""
        config = self.spec.flatness
        return list(self.data.train.head(config.subset_size).batches(config.batch_size))

    # --- checkpoints (for Ray Tune retries and resume) ---------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "regularizer": self.regularizer.state_dict(),
            "averaging": None if self.averager is None else self.averager.state_dict(),
            "epochs_done": self.epochs_done,
            "steps_done": self.steps_done,
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
            "data_order": self.data_order.get_state(),
            "cpu_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.regularizer.load_state_dict(state.get("regularizer", {}))  # checkpoints from before stateful methods
        self.epochs_done = state["epochs_done"]
        # Checkpoints from before averaging: the recipe's scheduler counted every step.
        self.steps_done = state.get("steps_done", self.scheduler.last_epoch)
        if self.averager is not None:
            self.averager.load_state_dict(state["averaging"], self.epochs_done)
        self.forward_passes = state["forward_passes"]
        self.backward_passes = state["backward_passes"]
        self.data_order.set_state(state["data_order"])
        torch.set_rng_state(state["cpu_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)


def _check_parallel(regularizer: regularizers.Regularizer, parallel: DataParallel, smallest_batch: int) -> None:
    if regularizer.data_parallel_refusal:
        raise ValueError(
            f"{regularizer.name} cannot train on several workers (resources.workers_per_trial): "
            f"{regularizer.data_parallel_refusal}"
        )
    if smallest_batch < parallel.world_size:
        raise ValueError(
            f"a batch of {smallest_batch} samples cannot be shared by {parallel.world_size} workers "
            "(resources.workers_per_trial): raise training.batch_size"
        )


@dataclass
class TrialResult:
    epochs: list[EpochResult]
    test: TestResult
    wall_seconds: float
    device: str
    hardware: str
    precision: str  # as used: float32, bfloat16 or float64


def run_trial(spec: TrialSpec, on_epoch: Callable[[EpochResult], None] | None = None) -> TrialResult:
    """Train ``spec`` to the end and evaluate the test split once."""
    started = time.perf_counter()
    trainer = Trainer(spec)
    epochs = []
    while not trainer.finished:
        result = trainer.train_epoch()
        epochs.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return TrialResult(
        epochs=epochs,
        test=trainer.test(),
        wall_seconds=time.perf_counter() - started,
        device=str(trainer.device),
        hardware=hardware(trainer.device),
        precision=trainer.precision,
    )
