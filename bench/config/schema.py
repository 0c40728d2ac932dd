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

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

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
    name: str = "digits"
    #: Folder holding the dataset files (CIFAR/SVHN); ``None`` uses ``~/.cache/sharpbench/data``.
    data_dir: str | None = None
    download: bool = False
    #: Fraction of the training set held out for validation (seeded, stratified).
    val_fraction: float = Field(0.2, gt=0, lt=1)
    #: Datasets without an official test split (digits) carve one out of the data.
    test_fraction: float = Field(0.2, gt=0, lt=1)
    #: Seed of the train/val(/test) split; fixed across trials so every method sees the same data.
    split_seed: Seed = 0
    #: Random crop with this padding (0: off) and horizontal flip, done batched on the device.
    crop_padding: int = Field(0, ge=0)
    horizontal_flip: bool = False
    #: Cutout square side in pixels (0: off).
    cutout: int = Field(0, ge=0)
    #: Keep this fraction of the training split (after the val/test split): a subset stratified
    #: by class and fixed by ``split_seed``, the same for every trial. 1.0 keeps all.
    train_fraction: float = Field(1.0, gt=0, le=1)
    #: Then keep at most this many training samples, the first ones (quick runs and tests);
    #: ``None`` keeps all.
    max_train_samples: int | None = Field(None, gt=0)
    #: Symmetric label noise on the training split only (validation and test stay clean), applied
    #: last, to the samples actually trained on: exactly round(label_noise × n_train) labels, chosen
    #: by a seeded permutation, each replaced by a uniformly drawn *other* class. As in the
    #: noisy-label experiments of SAM (Foret et al. 2021, ICLR), which follow the synthetic noise
    #: of Zhang et al. 2017 and Jiang et al. 2018 (:func:`bench.data.noise.flip_labels`).
    label_noise: float = Field(0.0, ge=0, lt=1)
    #: Seed of the flipped samples and their new labels; ``None`` uses ``split_seed``.
    label_noise_seed: Seed | None = None

    @model_validator(mode="after")
    def _split_leaves_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction ({self.val_fraction:g}) + test_fraction ({self.test_fraction:g}) must stay below 1: "
                "the rest is the training split"
            )
        return self


class ModelConfig(_Strict):
    name: str = "cnn"
    options: dict[str, Any] = Field(default_factory=dict)


class TrainingConfig(_Strict):
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(64, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    #: Coupled weight decay inside the optimizer (the training recipe's, applied to every method).
    weight_decay: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    #: ``auto``: bf16 autocast on CUDA, float32 on CPU.
    precision: Literal["auto", "float32", "bfloat16", "float64"] = "auto"
    channels_last: bool = True
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"

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
    ``trace_min_probes`` to ``trace_max_probes``; ε-sharpness takes ``sharpness_steps`` + 1
    forward and ``sharpness_steps`` backward passes. The defaults cost at most 100 + 100 HVPs.
    """

    when: Literal["off", "final", "every"] = "off"
    every_epochs: int = Field(1, gt=0)
    #: Training samples (fixed by the split seed) the Hessian metrics are computed on.
    subset_size: int = Field(512, gt=0)
    batch_size: int = Field(256, gt=0)
    #: The top eigenvalue (Lanczos) stops once an eigenvalue is known to lie within this relative
    #: distance of the estimate (its residual bound); in practice the error is far smaller.
    eigen_tolerance: float = Field(1e-3, gt=0, lt=1)
    #: ... or after this many HVPs, logged with ``hessian_eigen_converged = 0``.
    eigen_max_iterations: int = Field(100, gt=0)
    #: The trace stops once its standard error is at most this fraction of |trace| ...
    trace_rel_stderr: float = Field(0.05, ge=0)
    #: ... and after at least this many probes (a standard error needs two) ...
    trace_min_probes: int = Field(10, ge=2)
    #: ... or after this many; the standard error reached is logged either way.
    trace_max_probes: int = Field(100, gt=0)
    sharpness_radius: float = Field(0.05, gt=0)
    sharpness_steps: int = Field(5, gt=0)

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
    enabled: bool = True
    grace_period: int = Field(2, gt=0)
    reduction_factor: float = Field(2.0, gt=1)


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

    name: SamplerName = "tpe"
    #: Random trials before TPE, GP or CMA-ES model the space; ``None``: :func:`startup_trials`.
    n_startup_trials: int | None = Field(None, ge=0)

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

    kind: Literal["trials", "passes"] = "trials"
    scale: Literal["trials", "epochs"] = "trials"

    @model_validator(mode="before")
    @classmethod
    def _from_kind(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


class SearchConfig(_Strict):
    #: Trials per regularizer: the equal tuning budget.
    trials_per_method: int = Field(8, gt=0)
    #: Seeds the sampler; separate from the training seeds.
    seed: Seed = 0
    metric: str = metrics.VAL_ACCURACY
    sampler: SamplerConfig = SamplerConfig()
    budget: BudgetConfig = BudgetConfig()
    asha: AshaConfig = AshaConfig()
    #: ``None`` fills the machine: cluster CPUs (or GPUs) divided by the per-trial resources; a
    #: larger number is capped by that (trials asked beyond it would wait, drawn without results).
    max_concurrent_trials: int | None = Field(None, gt=0)
    #: Retries of a crashed trial, continuing from its last checkpoint.
    max_failures: int = Field(1, ge=0)
    #: Epochs between trial checkpoints (what a retried or resumed trial continues from).
    checkpoint_every: int = Field(5, gt=0)
    #: Shared training hyperparameters opened to the search, e.g. ``learning_rate``.
    space: dict[str, RangeSpec] = Field(default_factory=dict)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in metrics.OBJECTIVES:
            raise ValueError(unknown_name("search metric", value, list(metrics.OBJECTIVES)))
        return value

    @field_validator("space")
    @classmethod
    def _known_training_keys(cls, value: dict[str, RangeSpec]) -> dict[str, RangeSpec]:
        searchable = sorted(name for name, info in TrainingConfig.model_fields.items() if info.annotation in (int, float, bool))
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
        ok, kind = all(isinstance(c, int) and not b for c, b in zip(choices, is_bool)), "whole numbers"
    else:
        ok, kind = all(isinstance(c, (int, float)) and not b for c, b in zip(choices, is_bool)), "numbers"
    if not ok:
        raise ValueError(f"choices for {key} must be {kind}, got {choices!r}")


class ResourcesConfig(_Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    #: Fractions pack several trials per GPU (0.25 → 4 per GPU).
    gpus_per_trial: float = Field(0.0, ge=0)


class RegularizerEntry(_Strict):
    """One method to compare: its registry name, hyperparameters held fixed, ranges overridden."""

    name: str
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, RangeSpec] = Field(default_factory=dict)


class FinalConfig(_Strict):
    #: Training seeds for re-running each method's best configs; empty skips the final phase.
    seeds: list[Seed] = Field(default_factory=list)
    #: How many of each method's best search configs (``bench.selection``) are re-run with the seeds.
    top_k: int = Field(1, gt=0)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        repeated = sorted({seed for seed in value if value.count(seed) > 1})
        if repeated:
            raise ValueError(f"final seeds must be distinct; repeated: {', '.join(map(str, repeated))}")
        return value


class BenchmarkConfig(_Strict):
    benchmark: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    flatness: FlatnessConfig = FlatnessConfig()
    final: FinalConfig = FinalConfig()
    regularizers: list[RegularizerEntry] = Field(min_length=1)
    #: Training seed of the search trials (data order, init, noise).
    seed: Seed = 0
    tracking_uri: str | None = None
    #: SQLAlchemy URL of the Optuna studies (one per method), e.g. ``postgresql://host/db`` on a
    #: cluster; ``None``: ``sqlite:///<results>/optuna.db``. ``sharpbench run --optuna-storage`` overrides it.
    optuna_storage: str | None = None

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
