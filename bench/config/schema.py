"""The benchmark config's schema: typed pydantic models, strict (an unknown key is an error).

A config names a dataset, a model, the shared training recipe, the search budget (the same for
every method) and the regularizers to compare. Field descriptions here are the configuration
reference (``docs/configuration.md`` is generated from them). Reading YAML is
:mod:`bench.config.load`'s job; checking names against what is installed, :mod:`bench.catalog`'s.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bench import metrics
from bench.errors import unknown_name


class ConfigError(ValueError):
    """Invalid benchmark config; the message is one printable line."""


class _Strict(BaseModel):
    # inf and NaN are no hyperparameter, range or fraction: refused here, not in every trial.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # Pydantic reads ``epochs: true`` as 1; a YAML boolean where a number belongs is a typo.
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if get_origin(annotation) in (list, tuple) and isinstance(value, list | tuple):
            wanted, items = bool(get_args(annotation)) and _number_type(get_args(annotation)[0]), list(value)
        else:
            wanted, items = _number_type(annotation), [value]
        booleans = [item for item in items if isinstance(item, bool)]
        if wanted and booleans:
            raise ValueError(f"expected a number, got the boolean {str(booleans[0]).lower()}")
        return value


def _number_type(annotation: Any) -> bool:
    """Whether a field of this type holds a number and no boolean: ``int``, ``float``, an
    ``Annotated`` one, or a union of them with ``None``."""
    if get_origin(annotation) is Annotated:
        return _number_type(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return bool(members) and all(_number_type(a) for a in members)
    return annotation in (int, float)


#: A seed: 0 to 2**63 - 1 (rows store it as a signed 64-bit integer).
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class RangeSpec(_Strict):
    """A search range opened by the config: ``{low, high, log}`` or ``{choices: [...]}``."""

    low: float | None = Field(None, description="Lower end of the range (needs ``high``; not with ``choices``).")
    high: float | None = Field(None, description="Upper end of the range, at least ``low``.")
    log: bool = Field(False, description="Sample on a log scale; needs ``low > 0``.")
    integer: bool = Field(False, description="Sample whole numbers (always so for an integer hyperparameter).")
    choices: list[Any] | None = Field(
        None, description="A list of values to choose from instead of ``low``/``high``; not empty, of the key's type."
    )

    @model_validator(mode="after")
    def _check(self) -> RangeSpec:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high (or choices)")
        if self.low > self.high:
            raise ValueError(f"bad range: low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"bad range: a log range needs low > 0, got {self.low}")
        return self


class DataConfig(_Strict):
    name: str = Field(
        "digits",
        description="Registered dataset: ``digits``, ``breast_cancer`` (tabular), ``cifar10``, ``cifar100``, "
        "``svhn``, ``image_folder`` (``data_dir/train/<class>/<image>``, streamed from disk); "
        "``synthetic_cifar10`` (random pixels of CIFAR-10's shape: a throughput stand-in, no files needed).",
    )
    data_dir: str | None = Field(
        None,
        description="Folder holding the dataset files (CIFAR/SVHN; ``None`` uses ``~/.cache/sharpbench/data``), or "
        "the image folder (``image_folder``: needed).",
    )
    download: bool = Field(
        False,
        description="Fetch CIFAR/SVHN into ``data_dir`` when missing (needs internet); otherwise a missing "
        "dataset is a one-line error.",
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Fraction of the training set held out for validation (seeded, stratified)."
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Fraction carved out as the test split by datasets without an official one "
        "(digits); ``val_fraction + test_fraction`` must stay below 1.",
    )
    split_seed: Seed = Field(
        0, description="Seed of the train/val(/test) split; fixed across trials so every method sees the same data."
    )
    crop_padding: int = Field(
        0, ge=0, description="Random crop with this padding in pixels (0: off), batched on the device."
    )
    horizontal_flip: bool = Field(False, description="Random horizontal flip of training images.")
    cutout: int = Field(0, ge=0, description="Cutout square side in pixels (0: off).")
    image_size: int | None = Field(
        None,
        gt=0,
        description="Image folders: the side of the square images the model sees (each image resized and "
        "centre-cropped to it); ``None``: 32. Tensor datasets keep their own size.",
    )
    random_resized_crop: bool = Field(
        False,
        description="Image folders: train on random resized crops (scale 8–100%, torchvision's "
        "``RandomResizedCrop``) instead of the centre crop; evaluation then resizes to ``image_size / 0.875``.",
    )
    loader_workers: int = Field(
        2,
        ge=0,
        description="Streamed datasets (image folders): DataLoader worker processes reading images (0: in the "
        "trial's process). Batches do not depend on it.",
    )
    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Keep this fraction of the training split (after the val/test split): a subset "
        "stratified by class and fixed by ``split_seed``, the same for every trial. 1.0 keeps all.",
    )
    max_train_samples: int | None = Field(
        None,
        gt=0,
        description="Then keep at most this many training samples, the first ones (quick runs and "
        "tests); ``None`` keeps all.",
    )
    #: Symmetric label noise on the training split only (validation and test stay clean), applied
    #: last, to the samples actually trained on: exactly round(label_noise × n_train) labels, chosen
    #: by a seeded permutation, each replaced by a uniformly drawn *other* class. As in the
    #: noisy-label experiments of SAM (Foret et al. 2021, ICLR), which follow the synthetic noise
    #: of Zhang et al. 2017 and Jiang et al. 2018 (:func:`bench.data.noise.flip_labels`).
    label_noise: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Symmetric label noise on the training split only: exactly "
        "round(label_noise × n_train) labels, each flipped to a uniformly drawn other class; validation and test "
        "stay clean.",
    )
    label_noise_seed: Seed | None = Field(
        None, description="Seed of the flipped samples and their new labels; ``None`` uses ``split_seed``."
    )

    @model_validator(mode="after")
    def _split_leaves_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction ({self.val_fraction:g}) + test_fraction ({self.test_fraction:g}) must stay below 1: "
                "the rest is the training split"
            )
        return self


class ModelConfig(_Strict):
    name: str = Field(
        "cnn",
        description="Registered model (``bench/models/``): ``mlp``, ``cnn``, ``resnet18``, "
        "``preact_resnet18``, ``wrn16_8``, ``wrn28_10``, ``vgg16_bn``, ``pyramidnet110`` or ``pyramidnet272``.",
    )
    pretrained: str | None = Field(
        None,
        description="A local checkpoint to fine-tune from: a ``.pt``/``.pth`` file holding the model's state "
        "dict (or a dict with it under ``state_dict`` or ``model``), read with ``torch.load(weights_only=True)``; "
        "a classifier head of another class count is left out. Never downloaded.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the model's factory (e.g. ``{hidden: 32, depth: 1}`` "
        "for ``mlp``), checked against its signature before the run.",
    )


class TrainingConfig(_Strict):
    epochs: int = Field(20, gt=0, description="Training epochs of every trial (the ASHA horizon).")
    batch_size: int = Field(64, gt=0, description="Training mini-batch size.")
    learning_rate: float = Field(0.05, gt=0, description="Peak learning rate of the SGD optimizer.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (0: plain SGD).")
    nesterov: bool = Field(False, description="Nesterov momentum (only when ``momentum`` > 0).")
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="Coupled weight decay inside the optimizer (the training recipe's, applied to every "
        "method); must be 0 when the ``weight_decay`` regularizer is compared.",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="Label smoothing ε of the training loss (PyTorch's ε/K form)."
    )
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning-rate schedule per step after the warm-up: cosine decay to 0, or constant."
    )
    warmup_epochs: int = Field(0, ge=0, description="Epochs of linear learning-rate warm-up; at most ``epochs``.")
    precision: Literal["auto", "float32", "bfloat16", "float64"] = Field(
        "auto", description="``auto``: bf16 autocast on CUDA, float32 on CPU."
    )
    channels_last: bool = Field(True, description="Use the channels-last memory format for 4-D inputs on CUDA.")
    compile: bool = Field(False, description="``torch.compile`` the model (compiled before the trial's clock starts).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where trials train; ``auto``: CUDA when available, else CPU."
    )

    @model_validator(mode="after")
    def _warmup_within_training(self) -> TrainingConfig:
        # A warm-up longer than training never reaches the planned learning rate: the search
        # would tune a schedule other than the one configured, silently.
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) is longer than epochs ({self.epochs})")
        return self


#: Flatness keys replaced by stopping rules, and what replaced them.
_RENAMED_FLATNESS_KEYS = {
    "eigen_iterations": "eigen_max_iterations (a cap; eigen_tolerance decides when to stop)",
    "trace_probes": "trace_rel_stderr with trace_min_probes/trace_max_probes",
}


class FlatnessConfig(_Strict):
    """When and how accurately flatness is measured (:mod:`bench.measure.flatness`).

    Cost, in Hessian-vector products (HVPs) over the subset (one HVP took about 5 forward+backward
    passes of a ResNet-18 on CPU here; trace probes share passes, 4 at a time): the eigenvalue
    takes ``eigen_max_iterations`` at most (10–22 on the 64-parameter test networks), the trace
    ``trace_min_probes`` to ``trace_max_probes`` probes, one HVP each, plus 2 × ``trace_sketch_size``
    with Hutch++; ε-sharpness takes ``sharpness_steps`` + 1 forward and ``sharpness_steps``
    backward passes. The defaults cost at most 100 + 120 HVPs.

    The trace's default, Hutch++ with a sketch of 10, met the 5% target on the digits CNN
    (9 outlier eigenvalues, one fewer than the classes) in 30 HVPs where Hutchinson took 44–76
    (docs/measurements.md). A Hessian with more outliers (a classifier of more classes, CIFAR-100) wants a larger
    sketch (not measured: the CIFAR configs keep the defaults).
    """

    when: Literal["off", "final", "every"] = Field(
        "off", description="When a trial measures flatness: never, after its last epoch, or every ``every_epochs``."
    )
    every_epochs: int = Field(
        1, gt=0, description="With ``when: every``: measure after every k-th epoch (and always after the last)."
    )
    subset_size: int = Field(
        512, gt=0, description="Training samples (fixed by the split seed) the Hessian metrics are computed on."
    )
    batch_size: int = Field(256, gt=0, description="Batch size of the passes over the flatness subset.")
    eigen_tolerance: float = Field(
        1e-3,
        gt=0,
        lt=1,
        description="The top eigenvalue (Lanczos) stops once its residual bound places an "
        "eigenvalue within this relative distance of the estimate.",
    )
    eigen_max_iterations: int = Field(
        100, gt=0, description="... or after this many HVPs, logged with ``hessian_eigen_converged = 0``."
    )
    trace_estimator: Literal["hutchinson", "hutchpp"] = Field(
        "hutchpp",
        description="Trace estimator: ``hutchinson`` (Rademacher probes) or ``hutchpp`` (Hutch++, Meyer et al. "
        "2021: the trace of a rank-``trace_sketch_size`` sketch exactly, Hutchinson probes on the rest).",
    )
    trace_sketch_size: int = Field(
        10,
        gt=0,
        description="Hutch++: columns of the sketch; it costs 2× this many HVPs before the first probe "
        "(ignored by ``hutchinson``).",
    )
    trace_rel_stderr: float = Field(
        0.05,
        ge=0,
        description="The trace stops once its standard error (Hutch++: of its probes) is at most this fraction "
        "of |trace| ...",
    )
    trace_min_probes: int = Field(
        10, ge=2, description="... and after at least this many probes (a standard error needs two) ..."
    )
    trace_max_probes: int = Field(
        100,
        gt=0,
        description="... or after this many (Hutch++: besides its sketch); the standard error reached is logged "
        "either way.",
    )
    sharpness_radius: float = Field(
        0.05, gt=0, description="Radius ε of the global L2 ball of ε-sharpness (Keskar et al. 2017)."
    )
    sharpness_steps: int = Field(5, gt=0, description="Projected-ascent steps of ε-sharpness and adaptive sharpness.")
    adaptive_sharpness_radius: float = Field(
        0.1,
        gt=0,
        description="Radius ρ of worst-case adaptive sharpness, max over ‖δ ⊘ |w|‖₂ ≤ ρ (Andriushchenko et al. 2023).",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for old, new in _RENAMED_FLATNESS_KEYS.items():
                if old in value:
                    raise ValueError(f"{old} was replaced by {new}")
        return value

    @model_validator(mode="after")
    def _probe_range(self) -> FlatnessConfig:
        if self.trace_max_probes < self.trace_min_probes:
            raise ValueError(
                f"trace_max_probes ({self.trace_max_probes}) must be >= trace_min_probes ({self.trace_min_probes})"
            )
        return self


class AshaConfig(_Strict):
    enabled: bool = Field(True, description="Stop weak search trials early with ASHA (one scheduler per method).")
    grace_period: int = Field(
        2, gt=0, description="Epochs before a trial can first be stopped (the first rung; capped at the horizon)."
    )
    reduction_factor: float = Field(
        2.0, gt=1, description="ASHA's η: rungs at grace × ηᵏ epochs, about 1/η of the trials promoted at each."
    )


SamplerName = Literal["tpe", "random", "gp", "cmaes", "qmc"]


def startup_trials(trials: int) -> int:
    """The default number of random trials before a model-based sampler models the space.

    About a third of the budget, at least 2: enough points to fit the first model, and most of
    the budget left to use it. (Optuna's own default, 10, exceeds the budget of most configs,
    which turns TPE into random search.) 6 trials → 2, 16 → 5, 48 → 16.
    """
    return max(2, round(trials / 3))


class SamplerConfig(_Strict):
    """Optuna's sampler for the search: ``search.sampler: tpe`` or ``{name: tpe, n_startup_trials: 3}``."""

    name: SamplerName = Field("tpe", description="Optuna sampler; ``qmc`` is scrambled Sobol.")
    n_startup_trials: int | None = Field(
        None,
        ge=0,
        description="Random trials before TPE, GP or CMA-ES model the space; ``None``: a third of the "
        "method's trials, at least 2.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class BudgetConfig(_Strict):
    """What "the same tuning budget" counts: ``search.budget: trials`` or ``{kind: passes, scale: epochs}``.

    ``trials``: every method gets ``trials_per_method`` trials of ``training.epochs`` epochs.
    ``passes``: every method gets the forward+backward passes ERM spends on that; a method whose
    step costs c times ERM's (SAM: 2) gives up ``scale``: trials (``trials_per_method / c``
    trials, rounded, at least 1) or epochs (``training.epochs / c`` per trial, at least 1).
    """

    kind: Literal["trials", "passes"] = Field(
        "trials",
        description="``trials``: the same trials per method; ``passes``: the forward+backward passes ERM "
        "spends on them.",
    )
    scale: Literal["trials", "epochs"] = Field(
        "trials", description="With ``kind: passes``, what a costlier method gives up: trials, or epochs per trial."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


class SearchConfig(_Strict):
    trials_per_method: int = Field(8, gt=0, description="Trials per regularizer: the equal tuning budget.")
    seed: Seed = Field(0, description="Seeds the sampler; separate from the training seeds.")
    metric: str = Field(
        metrics.VAL_ACCURACY,
        description="What the search optimizes and the selection rule ranks by: "
        "``val_accuracy`` (higher) or ``val_loss`` (lower).",
    )
    sampler: SamplerConfig = Field(SamplerConfig(), description="Optuna's sampler: a name or a mapping.")
    budget: BudgetConfig = Field(BudgetConfig(), description="What the same budget counts: a kind or a mapping.")
    asha: AshaConfig = Field(AshaConfig(), description="Early stopping of search trials on epoch rungs.")
    max_concurrent_trials: int | None = Field(
        None,
        gt=0,
        description="``None`` fills the machine: cluster CPUs (or GPUs) divided by the per-trial "
        "resources; a larger number is capped by that.",
    )
    max_failures: int = Field(1, ge=0, description="Retries of a crashed trial, continuing from its last checkpoint.")
    checkpoint_every: int = Field(
        5, gt=0, description="Epochs between trial checkpoints (what a retried or resumed trial continues from)."
    )
    space: dict[str, RangeSpec] = Field(
        default_factory=dict,
        description="Shared training hyperparameters opened to the search, e.g. "
        "``learning_rate: {low: 0.01, high: 0.5, log: true}``: a numeric or boolean ``training`` key → a range.",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in metrics.OBJECTIVES:
            raise ValueError(unknown_name("search metric", value, list(metrics.OBJECTIVES)))
        return value

    @field_validator("space")
    @classmethod
    def _known_training_keys(cls, value: dict[str, RangeSpec]) -> dict[str, RangeSpec]:
        searchable = sorted(
            name for name, info in TrainingConfig.model_fields.items() if info.annotation in (int, float, bool)
        )
        for key, spec in value.items():
            if key not in searchable:
                raise ValueError(unknown_name("search space key", key, searchable))
            if spec.choices is not None:
                _check_choices(key, spec.choices, TrainingConfig.model_fields[key].annotation)
        return value


def _check_choices(key: str, choices: list[Any], value_type: Any) -> None:
    """Choices of a training hyperparameter must have its type (YAML reads ``fast`` as text)."""
    is_bool = [isinstance(choice, bool) for choice in choices]
    if value_type is bool:
        ok, kind = all(is_bool), "true/false"
    elif value_type is int:
        ok, kind = all(isinstance(c, int) and not b for c, b in zip(choices, is_bool, strict=True)), "whole numbers"
    else:
        ok, kind = all(isinstance(c, (int, float)) and not b for c, b in zip(choices, is_bool, strict=True)), "numbers"
    if not ok:
        raise ValueError(f"choices for {key} must be {kind}, got {choices!r}")


class ResourcesConfig(_Strict):
    cpus_per_trial: float = Field(
        1.0, gt=0, description="CPUs Ray reserves for each trial (for each of its workers when it has several)."
    )
    gpus_per_trial: float = Field(
        0.0,
        ge=0,
        description="GPUs per trial (per worker when it has several); fractions pack several trials per GPU "
        "(0.25 → 4 per GPU), above 1 only whole numbers.",
    )
    workers_per_trial: int = Field(
        1,
        ge=1,
        le=1024,
        description="Data-parallel workers per trial: above 1 a trial runs as a Ray Train TorchTrainer inside "
        "Tune (gloo on CPU, nccl on GPU), each worker on its shard of every batch, gradients averaged after "
        "every backward pass (docs/methods.md, data parallelism).",
    )

    @model_validator(mode="after")
    def _one_gpu_per_worker(self) -> ResourcesConfig:
        if self.workers_per_trial > 1 and 0 < self.gpus_per_trial < 1:
            # NCCL refuses two ranks of one process group on one device.
            raise ValueError(
                f"gpus_per_trial {self.gpus_per_trial:g} with workers_per_trial {self.workers_per_trial}: "
                "a trial's workers cannot share a GPU; give each worker 1 or more"
            )
        return self

    def slots(self, cpus: float, gpus: float) -> int:
        """How many trials of this size ``cpus`` CPUs and ``gpus`` GPUs hold at once (at least 1):
        the CPUs, and the GPUs when trials use them, divided by one trial's share (all its workers)."""
        count = int(cpus // (self.cpus_per_trial * self.workers_per_trial))
        if self.gpus_per_trial > 0:
            count = min(count, int(gpus // (self.gpus_per_trial * self.workers_per_trial)))
        return max(1, count)


class RegularizerEntry(_Strict):
    """One method to compare: its registry name, hyperparameters held fixed, ranges overridden."""

    name: str = Field(description="Registered regularizer (``sharpbench list``), built-in or a plug-in.")
    fixed: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters held at a value (not searched), or options set."
    )
    space: dict[str, RangeSpec] = Field(
        default_factory=dict, description="Search ranges that replace the method's declared ones, by hyperparameter."
    )


class FinalConfig(_Strict):
    seeds: list[Seed] = Field(
        default_factory=list,
        description="Training seeds for re-running each method's best configs (distinct); empty skips the final phase.",
    )
    top_k: int = Field(
        1,
        gt=0,
        description="How many of each method's best search configs (``bench.selection``) are re-run with the seeds.",
    )

    @field_validator("seeds")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        repeated = sorted({seed for seed in value if value.count(seed) > 1})
        if repeated:
            raise ValueError(f"final seeds must be distinct; repeated: {', '.join(map(str, repeated))}")
        return value


class BenchmarkConfig(_Strict):
    benchmark: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name that groups the results (folders, MLflow experiment, leaderboard); not only dots.",
    )
    dataset: DataConfig = Field(DataConfig(), description="The data, its split, augmentation and label noise.")
    model: ModelConfig = Field(ModelConfig(), description="The network every trial trains.")
    training: TrainingConfig = Field(TrainingConfig(), description="The training recipe shared by every method.")
    search: SearchConfig = Field(SearchConfig(), description="The tuning budget and how each method's search runs.")
    resources: ResourcesConfig = Field(ResourcesConfig(), description="What each trial reserves from Ray.")
    flatness: FlatnessConfig = Field(FlatnessConfig(), description="When and how accurately flatness is measured.")
    final: FinalConfig = Field(FinalConfig(), description="The final phase: the best configs re-run with seeds.")
    regularizers: list[RegularizerEntry] = Field(
        min_length=1, description="The methods to compare, each once: a name, or a mapping with ``fixed``/``space``."
    )
    seed: Seed = Field(0, description="Training seed of the search trials (data order, init, noise).")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; ``None``: ``sqlite:///<results>/mlflow.db``. "
        "``--tracking-uri`` overrides it.",
    )
    optuna_storage: str | None = Field(
        None,
        description="Where the Optuna studies (one per method) live: a SQLAlchemy URL, e.g. "
        "``postgresql://host/db`` on a cluster, or the path of an Optuna journal file ending in ``.journal``; "
        "``None``: ``<results>/optuna.journal`` (``sqlite:///<results>/optuna.db`` in a folder whose runs "
        "began with that one). ``--optuna-storage`` overrides it.",
    )

    @field_validator("benchmark")
    @classmethod
    def _not_only_dots(cls, value: str) -> str:
        # "." and ".." are folder names of their own: rows and Tune state would land beside or
        # above the results folder's own (ray/.. is the results folder itself).
        if not value.strip("."):
            raise ValueError(f"benchmark name {value!r} is only dots: use a letter or a digit")
        return value

    @field_validator("regularizers", mode="before")
    @classmethod
    def _names_as_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _unique_methods(self) -> BenchmarkConfig:
        names = [entry.name for entry in self.regularizers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"regularizer listed twice: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _one_owner_of_epochs(self) -> BenchmarkConfig:
        budget = self.search.budget
        if budget.kind == "passes" and budget.scale == "epochs" and "epochs" in self.search.space:
            raise ValueError(
                "search.budget {kind: passes, scale: epochs} sets each method's epochs; "
                "it cannot be combined with epochs in search.space (use scale: trials)"
            )
        return self
