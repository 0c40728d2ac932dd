"""CIFAR-10, CIFAR-100 and SVHN loaders, on small files written in the real on-disk formats.

About torchvision's integrity check. ``CIFAR10``/``CIFAR100`` (and ``SVHN``) refuse to load
unless the md5 of every file equals the digest hard-coded in the class attributes
(``train_list``, ``test_list``, ``meta``; ``split_list`` for SVHN), checked by
``torchvision.datasets.utils.check_integrity``. Synthetic files cannot have the official
digests (that would need an md5 preimage), so each test swaps, with ``monkeypatch`` and only for
that test, the *expected* digests on the real torchvision classes for the digests of the files it
has just written. The check itself still runs unchanged (it hashes the files on disk, as in
production: ``test_corrupted_file_is_rejected`` shows a flipped byte is caught), the loader code
under test is the production path (``load_dataset`` → torchvision class), and nothing in
``bench`` knows about tests.
"""

from __future__ import annotations

import pickle
import urllib.error

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets.cifar
from vision_files import decode

from bench.config import DataConfig
from bench.data import DatasetError, available_datasets, load_dataset

# ----------------------------------------------------------------------------------------------


def test_datasets_are_registered():
    assert {"cifar10", "cifar100", "svhn"} <= set(available_datasets())


def test_fixture_files_have_the_real_cifar_layout(cifar10_dir):
    root, raw = cifar10_dir
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as file:
        record = pickle.load(file, encoding="bytes")
    assert set(record) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert record[b"data"].dtype == np.uint8 and record[b"data"].shape == (20, 3072)
    assert record[b"labels"] == raw["train"][1][:20].tolist()


CASES = [("cifar10", "cifar10_dir", 10), ("cifar100", "cifar100_dir", 100), ("svhn", "svhn_dir", 10)]


@pytest.mark.parametrize(("name", "fixture", "num_classes"), CASES)
def test_loaded_splits(name, fixture, num_classes, request):
    root, raw = request.getfixturevalue(fixture)
    val_fraction = 0.5 if name == "cifar100" else 0.2
    config = DataConfig(name=name, data_dir=str(root), val_fraction=val_fraction, split_seed=3)
    dataset = load_dataset(config)
    train_images, train_labels = raw["train"]
    test_images, test_labels = raw["test"]

    assert dataset.name == name and dataset.num_classes == num_classes
    assert dataset.input_shape == (3, 32, 32)
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.inputs.dtype == torch.float32 and split.inputs.is_contiguous()
        assert split.targets.dtype == torch.int64
        assert 0 <= int(split.targets.min()) and int(split.targets.max()) < num_classes

    train_ids, train_raw, train_mean, train_std = decode(dataset.train.inputs)
    val_ids, val_raw, val_mean, val_std = decode(dataset.val.inputs)
    test_ids, test_raw, test_mean, test_std = decode(dataset.test.inputs)

    # Pixels in the right layout, each image with its own label (uint8 after rounding: exact).
    assert torch.equal(train_raw, torch.from_numpy(train_images[train_ids]))
    assert torch.equal(val_raw, torch.from_numpy(train_images[val_ids]))
    assert np.array_equal(dataset.train.targets.numpy(), train_labels[train_ids])
    assert np.array_equal(dataset.val.targets.numpy(), train_labels[val_ids])
    # The official test split, whole and in order (ids 1000, 1001, ...).
    assert np.array_equal(test_ids, 1000 + np.arange(len(test_images)))
    assert torch.equal(test_raw, torch.from_numpy(test_images))
    assert np.array_equal(dataset.test.targets.numpy(), test_labels)

    # Validation carved from the training set: disjoint, complete, stratified.
    assert set(train_ids).isdisjoint(val_ids)
    assert sorted([*train_ids, *val_ids]) == list(range(len(train_images)))
    per_class = np.bincount(train_labels, minlength=num_classes)
    expected_val = np.round(val_fraction * per_class).astype(int)
    assert np.array_equal(np.bincount(dataset.val.targets.numpy(), minlength=num_classes), expected_val)

    # Every split standardized with the training split's per-channel statistics. They are decoded
    # from float32 pixels (a subtraction, a reciprocal, a product: a few eps32 ≈ 1e-7 relative,
    # times |x| ≤ ~3), so 1e-4/1e-5 leave a margin of ~100× on any CPU.
    unit_train = torch.from_numpy(train_images[train_ids]).double() / 255
    torch.testing.assert_close(train_mean.double(), unit_train.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(train_std.double(), unit_train.std(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    for mean, std in ((val_mean, val_std), (test_mean, test_std)):
        torch.testing.assert_close(mean, train_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(std, train_std, rtol=1e-4, atol=1e-5)
    channel_mean = dataset.train.inputs.double().mean(dim=(0, 2, 3))
    channel_std = dataset.train.inputs.double().std(dim=(0, 2, 3))
    torch.testing.assert_close(channel_mean, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(channel_std, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)


def test_cifar100_reads_fine_labels(cifar100_dir):
    root, raw = cifar100_dir
    dataset = load_dataset(DataConfig(name="cifar100", data_dir=str(root), val_fraction=0.5))
    assert set(dataset.test.targets.tolist()) == set(range(100))  # fine, not the 20 coarse labels


def test_svhn_label_10_is_digit_0(svhn_dir):
    root, _ = svhn_dir
    stored = scipy.io.loadmat(root / "test_32x32.mat")["y"].flatten()
    assert 10 in stored and 0 not in stored
    dataset = load_dataset(DataConfig(name="svhn", data_dir=str(root)))
    assert np.array_equal(dataset.test.targets.numpy(), np.where(stored == 10, 0, stored))


def test_split_is_deterministic_and_follows_the_seed(cifar10_dir):
    root, _ = cifar10_dir

    def val_ids(seed: int) -> list[int]:
        dataset = load_dataset(DataConfig(name="cifar10", data_dir=str(root), split_seed=seed))
        return sorted(decode(dataset.val.inputs)[0].tolist())

    assert val_ids(0) == val_ids(0)
    assert val_ids(0) != val_ids(1)


def test_max_train_samples(cifar10_dir):
    root, _ = cifar10_dir
    dataset = load_dataset(DataConfig(name="cifar10", data_dir=str(root), max_train_samples=7))
    assert len(dataset.train) == 7 and len(dataset.val) == 20 and len(dataset.test) == 30


# ----------------------------------------------------------------------------------------------
# Errors: one line, saying where the loader looked and what to do.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "what"),
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat")],
)
def test_missing_dataset_error(name, what, tmp_path):
    with pytest.raises(DatasetError) as error:
        load_dataset(DataConfig(name=name, data_dir=str(tmp_path)))
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert "dataset.download: true" in message
    assert f"copy {what}" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_default_data_dir_is_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="not found|missing") as error:
        load_dataset(DataConfig(name="cifar10"))
    assert str(tmp_path / ".cache" / "sharpbench" / "data") in str(error.value)


def test_corrupted_file_is_rejected(cifar10_dir):
    root, _ = cifar10_dir
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    content = bytearray(batch.read_bytes())
    content[-100] ^= 0xFF
    batch.write_bytes(bytes(content))
    with pytest.raises(DatasetError, match="corrupted") as error:
        load_dataset(DataConfig(name="cifar10", data_dir=str(root)))
    assert "\n" not in str(error.value)


def test_failed_download_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as error:
        load_dataset(DataConfig(name="cifar10", data_dir=str(tmp_path), download=True))
    message = str(error.value)
    assert "\n" not in message
    assert "could not download" in message and "name resolution" in message
    assert f"copy cifar-10-batches-py into {tmp_path}" in message
