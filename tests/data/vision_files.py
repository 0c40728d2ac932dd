"""Small CIFAR-10, CIFAR-100 and SVHN folders in the real on-disk formats (helpers and fixtures).

About torchvision's integrity check. ``CIFAR10``/``CIFAR100`` (and ``SVHN``) refuse to load
unless the md5 of every file equals the digest hard-coded in the class attributes
(``train_list``, ``test_list``, ``meta``; ``split_list`` for SVHN), checked by
``torchvision.datasets.utils.check_integrity``. Synthetic files cannot have the official
digests (that would need an md5 preimage), so each fixture swaps, with ``monkeypatch`` and only
for that test, the *expected* digests on the real torchvision classes for the digests of the
files it has just written. The check itself still runs unchanged (it hashes the files on disk,
as in production), the loader code under test is the production path (``load_dataset`` →
torchvision class), and nothing in ``bench`` knows about tests.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

# ----------------------------------------------------------------------------------------------
# Synthetic images that can be traced through the loader.
#
# Every image has, in each channel, a black anchor pixel (0) at (0, 0) and a white one (255) at
# (0, 1). After standardization ``x' = (x - mean) / std`` the two anchors give back each split's
# mean and std, hence the raw pixels; pixels (0, 2) and (0, 3) of channel 0 hold the image's id.
# ----------------------------------------------------------------------------------------------


def traced_images(ids: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (N, 3, 32, 32) images with anchors and ``ids`` embedded."""
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 255, size=(len(ids), 3, 32, 32), dtype=np.uint8)
    images[:, :, 0, 0] = 0
    images[:, :, 0, 1] = 255
    images[:, 0, 0, 2] = ids % 256
    images[:, 0, 0, 3] = ids // 256
    return images


def decode(inputs: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Undo the standardization of a split: ``(ids, raw uint8 images, mean, std)``."""
    black, white = inputs[:, :, 0, 0], inputs[:, :, 0, 1]  # (N, C)
    std = 1.0 / (white - black)
    mean = -black * std
    assert torch.allclose(std, std[:1], rtol=1e-5) and torch.allclose(mean, mean[:1], atol=1e-5)
    unit = inputs * std[:1, :, None, None] + mean[:1, :, None, None]
    raw = unit * 255
    assert torch.allclose(raw, raw.round(), atol=1e-2), "not an affine image of uint8 pixels"
    raw = raw.round().to(torch.uint8)
    ids = raw[:, 0, 0, 2].long() + 256 * raw[:, 0, 0, 3].long()
    return ids.numpy(), raw, mean[0], std[0]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# CIFAR's python pickles: written by Python 2, so their keys and names are Python 2 ``str``.
# Loaded with ``encoding="bytes"`` they read as b"data", b"labels", ...; torchvision loads them
# with ``encoding="latin1"`` and sees "data", "labels". A Python 3 pickle of ``str`` keys would
# read as "data" either way, and one of ``bytes`` keys would break torchvision, so the fixture
# writes the Python 2 opcodes itself.
# ----------------------------------------------------------------------------------------------


class Py2Str(bytes):
    """A Python 2 ``str``."""


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: Py2Str) -> None:
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2_str


def py2(value):
    """Turn the ``str`` keys and names of a CIFAR record into Python 2 strings."""
    if isinstance(value, str):
        return Py2Str(value.encode("latin1"))
    if isinstance(value, dict):
        return {py2(key): py2(item) for key, item in value.items()}
    if isinstance(value, list):
        return [py2(item) for item in value]
    return value


def write_py2_pickle(path: Path, record: dict) -> None:
    with open(path, "wb") as file:
        Py2Pickler(file, protocol=2).dump(py2(record))


def cifar_record(images: np.ndarray, labels: np.ndarray, label_key: str, name: str) -> dict:
    record = {
        "batch_label": name,
        label_key: [int(label) for label in labels],
        "data": images.reshape(len(images), 3 * 32 * 32),  # R plane, G plane, B plane; row-major
        "filenames": [f"image_{index}.png" for index in range(len(images))],
    }
    if label_key == "fine_labels":
        record["coarse_labels"] = [int(label) // 5 for label in labels]
    return record


def trust_files(monkeypatch: pytest.MonkeyPatch, cls: type, folder: Path) -> None:
    """Make ``cls`` expect the md5 digests of the files just written into ``folder``."""
    monkeypatch.setattr(cls, "train_list", [[name, md5(folder / name)] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5(folder / name)] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / cls.meta["filename"])})


TRAIN_PER_CLASS_10, TEST_PER_CLASS_10 = 10, 3


@pytest.fixture
def cifar10_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """cifar-10-batches-py with 5 × 20 training images (10 per class) and 30 test images."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_labels = rng.permutation(np.repeat(np.arange(10), TRAIN_PER_CLASS_10))
    test_labels = rng.permutation(np.repeat(np.arange(10), TEST_PER_CLASS_10))
    train_images = traced_images(np.arange(100), seed=1)
    test_images = traced_images(np.arange(1000, 1030), seed=2)
    for batch in range(5):
        part = slice(20 * batch, 20 * (batch + 1))
        record = cifar_record(train_images[part], train_labels[part], "labels", f"training batch {batch + 1} of 5")
        write_py2_pickle(folder / f"data_batch_{batch + 1}", record)
    write_py2_pickle(folder / "test_batch", cifar_record(test_images, test_labels, "labels", "testing batch 1 of 1"))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_py2_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 20, "num_vis": 3072})
    trust_files(monkeypatch, CIFAR10, folder)
    raw = {"train": (train_images, train_labels), "test": (test_images, test_labels)}
    return tmp_path, raw


@pytest.fixture
def cifar100_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """cifar-100-python with 2 training and 1 test image per fine class."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(3)
    train_labels = rng.permutation(np.repeat(np.arange(100), 2))
    test_labels = rng.permutation(np.arange(100))
    train_images = traced_images(np.arange(200), seed=4)
    test_images = traced_images(np.arange(1000, 1100), seed=5)
    write_py2_pickle(folder / "train", cifar_record(train_images, train_labels, "fine_labels", "training batch 1 of 1"))
    write_py2_pickle(folder / "test", cifar_record(test_images, test_labels, "fine_labels", "testing batch 1 of 1"))
    fine = [f"fine_{index}" for index in range(100)]
    coarse = [f"coarse_{index}" for index in range(20)]
    write_py2_pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": coarse})
    trust_files(monkeypatch, CIFAR100, folder)
    raw = {"train": (train_images, train_labels), "test": (test_images, test_labels)}
    return tmp_path, raw


@pytest.fixture
def svhn_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """train_32x32.mat / test_32x32.mat: 'X' (32, 32, 3, N) uint8, 'y' (N, 1) with 10 for digit 0."""
    rng = np.random.default_rng(6)
    per_class = {"train": 10, "test": 2}
    digits = {split: rng.permutation(np.repeat(np.arange(10), count)) for split, count in per_class.items()}
    images = {"train": traced_images(np.arange(100), seed=7), "test": traced_images(np.arange(1000, 1020), seed=8)}
    split_list = {key: list(value) for key, value in SVHN.split_list.items()}
    for split in ("train", "test"):
        stored_labels = np.where(digits[split] == 0, 10, digits[split]).astype(np.uint8)[:, None]
        path = tmp_path / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": images[split].transpose(2, 3, 1, 0), "y": stored_labels})
        split_list[split][2] = md5(path)
    monkeypatch.setattr(SVHN, "split_list", split_list)
    return tmp_path, {split: (images[split], digits[split]) for split in ("train", "test")}
