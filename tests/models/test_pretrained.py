"""model.pretrained: a local checkpoint loaded into the registered model before its first step.

Checkpoints are written by each test (a small ``cnn``); the loaded weights are compared with the
file's, tensor by tensor, in the Trainer the search runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from bench.config import DataConfig, ModelConfig, TrainingConfig
from bench.models import create_model
from bench.models.pretrained import PretrainedError, check_pretrained, head_keys, load_pretrained, read_checkpoint
from bench.training import Trainer, TrialSpec
from tests.image_folders import save_checkpoint
from tests.runner import sharpbench

DIGITS = DataConfig(name="digits", max_train_samples=64)
SHAPE = (1, 8, 8)  # digits


def _cnn(num_classes: int = 10, width: int = 8, seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("cnn", SHAPE, num_classes, width=width)


def _trainer(checkpoint: Path | None, seed: int = 0) -> Trainer:
    model = ModelConfig(name="cnn", options={"width": 8}, pretrained=None if checkpoint is None else str(checkpoint))
    training = TrainingConfig(epochs=1, batch_size=32, device="cpu")
    return Trainer(TrialSpec("t", DIGITS, model, training, "erm", seed=seed))


@pytest.mark.parametrize(("nest", "prefix"), [(None, ""), ("state_dict", ""), ("model", "module.")])
def test_the_checkpoint_is_the_model_before_its_first_step(tmp_path: Path, nest: str | None, prefix: str) -> None:
    source = _cnn()
    path = save_checkpoint(tmp_path / "cnn.pt", source, nest=nest, prefix=prefix)
    trainer = _trainer(path)
    expected = source.state_dict()
    loaded = trainer.model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    assert trainer.pretrained is not None and trainer.pretrained.notice is None
    untouched = _trainer(None).model.state_dict()
    assert not torch.equal(untouched["0.weight"], expected["0.weight"])  # the file changed something
    trainer.train_epoch()  # and training goes on from there
    assert not torch.equal(trainer.model.state_dict()["0.weight"], expected["0.weight"])


def test_a_head_of_another_class_count_is_left_out_and_said(tmp_path: Path) -> None:
    source = _cnn(num_classes=4)  # pretrained on 4 classes; digits has 10
    path = save_checkpoint(tmp_path / "four.pth", source)
    trainer = _trainer(path, seed=3)
    fresh = _trainer(None, seed=3).model.state_dict()  # the same init, nothing loaded
    head = head_keys(trainer.model)
    assert head == ["10.weight", "10.bias"]  # conv, norm, ReLU, pool twice; pool, flatten; the linear layer
    loaded = trainer.model.state_dict()
    for key, value in source.state_dict().items():
        if key in head:
            assert torch.equal(loaded[key], fresh[key]), key  # the head keeps its initialization
        else:
            assert torch.equal(loaded[key], value), key
    notice = trainer.pretrained.notice
    assert trainer.pretrained.left_out == ("10.weight", "10.bias")
    assert notice == (
        f"model.pretrained {path}: the classifier head (10.weight, 10.bias) has another shape "
        "(4 classes there, 10 here): it is left out and trained from its fresh initialization"
    )


def test_a_backbone_saved_without_its_head_loads_the_rest(tmp_path: Path) -> None:
    source = _cnn()
    state = {key: value for key, value in source.state_dict().items() if not key.startswith("10.")}
    torch.save(state, tmp_path / "backbone.pt")
    fitted = load_pretrained(_cnn(seed=2), str(tmp_path / "backbone.pt"))
    assert fitted.left_out == ("10.weight", "10.bias") and "is not in the checkpoint" in fitted.notice


def _refused(path: Path | str, model: torch.nn.Module | None = None) -> str:
    with pytest.raises(PretrainedError) as caught:
        load_pretrained(model if model is not None else _cnn(), str(path))
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_bad_checkpoints_are_one_line_each(tmp_path: Path) -> None:
    assert _refused(tmp_path / "missing.pt") == f"model.pretrained {tmp_path / 'missing.pt'}: no such file"
    assert _refused(tmp_path).endswith(": not a file")
    (tmp_path / "notes.pt").write_text("hello")
    assert "not a torch checkpoint readable as weights" in _refused(tmp_path / "notes.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "empty.pt")
    assert "holds no state dict" in _refused(tmp_path / "empty.pt")
    # a pickle that would build an arbitrary object (run code) is refused, not executed
    torch.save({"weights": torch.zeros(2), "config": Path("/x")}, tmp_path / "objects.pt")
    assert "not a torch checkpoint readable as weights" in _refused(tmp_path / "objects.pt")

    wider = save_checkpoint(tmp_path / "wide.pt", _cnn(width=16))
    assert _refused(wider) == (
        f"model.pretrained {wider} does not fit the model: 0.weight is (16, 1, 3, 3) there but (8, 1, 3, 3) here "
        "(9 more shapes differ)"
    )
    mlp = save_checkpoint(tmp_path / "mlp.pt", create_model("mlp", SHAPE, 10, hidden=8, depth=1))
    assert _refused(mlp) == (
        f"model.pretrained {mlp} does not fit the model: 1.weight is (8, 64) there but (8,) here; "
        "missing 0.weight, 1.running_mean, 1.running_var, ... (8 in all); unknown to the model: 3.weight, 3.bias"
    )


def test_a_head_missing_from_a_checkpoint_is_no_excuse_for_other_keys(tmp_path: Path) -> None:
    state = {key: value for key, value in _cnn().state_dict().items() if key != "0.weight"}
    torch.save(state, tmp_path / "partial.pt")
    assert _refused(tmp_path / "partial.pt").endswith("does not fit the model: missing 0.weight")


def test_the_check_before_a_run_builds_nothing(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "cnn.pt", _cnn(num_classes=4))
    notice = check_pretrained("cnn", {"width": 8}, str(path), SHAPE, 10)
    assert notice is not None and "(4 classes there, 10 here)" in notice
    assert check_pretrained("cnn", {"width": 8}, str(path), SHAPE, 4) is None
    with pytest.raises(PretrainedError, match="does not fit the model"):
        check_pretrained("cnn", {"width": 4}, str(path), SHAPE, 4)
    assert read_checkpoint(str(path)).keys() == _cnn().state_dict().keys()


def _run_config(tmp_path: Path, pretrained: Path) -> Path:
    config = {
        "benchmark": "ft",
        "dataset": {"name": "digits", "max_train_samples": 64},
        "model": {"name": "cnn", "options": {"width": 8}, "pretrained": str(pretrained)},
        "training": {"epochs": 1},
        "search": {"trials_per_method": 1},
        "regularizers": ["erm"],
    }
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("problem", ["missing", "wrong shape"])
def test_the_command_line_refuses_a_bad_checkpoint_before_the_run(tmp_path: Path, repo_root: Path, problem) -> None:
    checkpoint = tmp_path / "cnn.pt"
    if problem == "wrong shape":
        save_checkpoint(checkpoint, _cnn(width=16))
    results = tmp_path / "results"
    done = sharpbench("run", str(_run_config(tmp_path, checkpoint)), "--results", str(results), cwd=repo_root)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(checkpoint) in lines[0], done.stderr
    assert ("no such file" if problem == "missing" else "does not fit the model") in lines[0]
    assert not (results / "leaderboard").exists()  # nothing ran
