"""The per-process dataset cache that reused Ray Tune workers train from: it returns exactly what
a fresh load returns, loads once per config, and training never writes into what it shares."""

from __future__ import annotations

import pytest
import torch

import regularizers
from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.data import DatasetError, clear_dataset_cache, dataset_loads, load_dataset, load_dataset_cached
from bench.training import Trainer, TrialSpec

# Subset and label noise included: every step of load_dataset that draws random numbers.
NOISY = DataConfig(name="digits", train_fraction=0.5, label_noise=0.4, split_seed=3)


def _splits(dataset):
    return {"train": dataset.train, "val": dataset.val, "test": dataset.test}


def _assert_identical(a, b) -> None:
    # Bit-for-bit: pure data movement from the same seeded load, in one process.
    assert a.name == b.name and a.num_classes == b.num_classes
    for name, split in _splits(a).items():
        other = _splits(b)[name]
        assert split.inputs.dtype == other.inputs.dtype and split.targets.dtype == other.targets.dtype, name
        assert torch.equal(split.inputs, other.inputs), name
        assert torch.equal(split.targets, other.targets), name


@pytest.fixture(autouse=True)
def empty_cache():
    clear_dataset_cache()
    yield
    clear_dataset_cache()


def test_the_cached_dataset_is_a_fresh_load_and_is_loaded_once_per_config():
    before = dataset_loads()
    first = load_dataset_cached(NOISY)
    second = load_dataset_cached(NOISY.model_copy())  # an equal config, another object
    assert dataset_loads() == before + 1
    _assert_identical(first, load_dataset(NOISY))
    # The same tensors, in wrappers of their own: rebinding a split in one caller (as Trainer
    # does to change the dtype) leaves the other's untouched.
    assert second.train.inputs.data_ptr() == first.train.inputs.data_ptr()
    second.train.inputs = second.train.inputs.double()
    assert first.train.inputs.dtype == torch.float32
    assert load_dataset_cached(NOISY).train.inputs.dtype == torch.float32


def test_another_config_loads_anew_and_gets_its_own_data():
    load_dataset_cached(NOISY)
    before = dataset_loads()
    other_config = NOISY.model_copy(update={"label_noise_seed": 4})
    other = load_dataset_cached(other_config)
    assert dataset_loads() == before + 1
    _assert_identical(other, load_dataset(other_config))
    # A different noise seed flips other labels: the cache did not hand back the first dataset.
    assert not torch.equal(other.train.targets, load_dataset(NOISY).train.targets)
    load_dataset_cached(NOISY)  # one entry: going back loads again
    assert dataset_loads() == before + 2


def test_a_failed_load_caches_nothing(tmp_path):
    missing = DataConfig(name="cifar10", data_dir=str(tmp_path / "nowhere"))
    before = dataset_loads()
    for _ in range(2):  # raised both times: nothing half-loaded was kept
        with pytest.raises(DatasetError):
            load_dataset_cached(missing)
    assert dataset_loads() == before
    _assert_identical(load_dataset_cached(NOISY), load_dataset(NOISY))


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("method", regularizers.available())
def test_training_leaves_the_shared_tensors_bit_identical(method, precision):
    data = DataConfig(name="digits", max_train_samples=96)
    shared = load_dataset_cached(data)
    before = {name: (split.inputs.clone(), split.targets.clone()) for name, split in _splits(shared).items()}
    spec = TrialSpec(
        benchmark="cache",
        dataset=data,
        model=ModelConfig(name="cnn", options={"width": 4}),
        training=TrainingConfig(epochs=1, batch_size=32, precision=precision),
        regularizer=method,
        # Flatness reads the training split too (its Hessian-vector products run on a subset).
        flatness=FlatnessConfig(
            when="every",
            subset_size=32,
            batch_size=32,
            eigen_max_iterations=2,
            trace_min_probes=2,
            trace_max_probes=2,
            sharpness_steps=1,
        ),
    )
    trainer = Trainer(spec, dataset=load_dataset_cached(data))
    trainer.train_epoch()
    trainer.test()
    for name, split in _splits(load_dataset_cached(data)).items():
        assert split.inputs.data_ptr() == _splits(shared)[name].inputs.data_ptr()
        assert torch.equal(split.inputs, before[name][0]), (method, name)
        assert torch.equal(split.targets, before[name][1]), (method, name)
