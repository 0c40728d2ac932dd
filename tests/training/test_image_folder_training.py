"""A trial on a streamed image folder: the Trainer trains, evaluates and measures flatness from
the stream, the same whatever the loader workers, resumes bit for bit, and fine-tunes from a
checkpoint (the tiny folder and checkpoint are written by the tests)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.models import create_model
from bench.training import Trainer, TrialSpec, run_trial
from tests.image_folders import save_checkpoint, write_image_folder

FLATNESS = FlatnessConfig(
    when="final",
    subset_size=20,
    batch_size=8,
    eigen_max_iterations=3,
    trace_min_probes=2,
    trace_max_probes=2,
    trace_sketch_size=1,
    sharpness_steps=1,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "folder")


def _spec(folder: Path, *, workers: int = 0, method: str = "sam", epochs: int = 2, pretrained: Path | None = None):
    data = DataConfig(
        name="image_folder",
        data_dir=str(folder),
        image_size=16,
        random_resized_crop=True,
        crop_padding=2,
        horizontal_flip=True,
        loader_workers=workers,
        label_noise=0.1,
    )
    model = ModelConfig(name="cnn", options={"width": 8}, pretrained=None if pretrained is None else str(pretrained))
    training = TrainingConfig(epochs=epochs, batch_size=8, learning_rate=0.05, device="cpu")
    return TrialSpec("folder", data, model, training, method, flatness=FLATNESS, seed=4)


def _figures(result) -> list:
    return [
        [epoch.train_loss, epoch.val_loss, epoch.val_accuracy, epoch.forward_passes, sorted(epoch.flatness.items())]
        for epoch in result.epochs
    ] + [result.test.test_loss, result.test.test_accuracy]


def test_a_trial_on_a_stream_is_the_same_with_and_without_loader_workers(folder: Path) -> None:
    results = {workers: run_trial(_spec(folder, workers=workers)) for workers in (0, 2)}
    assert _figures(results[0]) == _figures(results[2])
    last = results[0].epochs[-1]
    assert last.epoch == 2 and last.forward_passes == 2 * 2 * 3  # SAM: 2 passes × 3 steps of 8 (24 samples)
    assert {"hessian_top_eigenvalue", "hessian_trace", "epsilon_sharpness"} <= last.flatness.keys()
    assert 0.0 <= results[0].test.test_accuracy <= 1.0 and results[0].test.test_loss > 0


def test_flatness_reads_a_bounded_head_of_the_stream(folder: Path) -> None:
    trainer = Trainer(_spec(folder))
    batches = trainer.flatness_batches()
    assert [len(targets) for _, targets in batches] == [8, 8, 4]  # subset_size 20 of 24, batches of 8
    again = trainer.flatness_batches()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))  # unaugmented, fixed


def test_a_stream_trial_resumes_bit_for_bit_from_its_checkpoint(folder: Path) -> None:
    spec = _spec(folder, method="saf", epochs=2)  # SAF keys its memory by the samples' positions
    straight = Trainer(spec)
    straight.train_epoch()
    state = copy.deepcopy(straight.state_dict())
    expected = straight.train_epoch()

    resumed = Trainer(spec)
    resumed.load_state_dict(state)
    got = resumed.train_epoch()
    assert (got.train_loss, got.val_loss, got.flatness) == (expected.train_loss, expected.val_loss, expected.flatness)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_fine_tuning_on_an_image_folder_starts_from_the_checkpoint(folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(11)
    source = create_model("cnn", (3, 16, 16), 10, width=8)  # "pretrained" on 10 classes; the folder has 3
    path = save_checkpoint(tmp_path / "cnn10.pt", source)
    trainer = Trainer(_spec(folder, pretrained=path, epochs=1))
    assert trainer.pretrained.left_out == ("10.weight", "10.bias")
    loaded = trainer.model.state_dict()
    for key, value in source.state_dict().items():
        if key not in trainer.pretrained.left_out:
            assert torch.equal(loaded[key], value), key
    assert loaded["10.weight"].shape == (3, 16)
    result = trainer.train_epoch()
    assert result.epoch == 1 and result.train_loss > 0
