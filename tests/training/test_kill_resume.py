"""kill -9 in the middle of a trial of stateful methods (LookSAM's cached component, VaSSO's
gradient average, SWA's average and scheduler, EMA): the trial resumed from its last checkpoint
file ends bit for bit where the uninterrupted trial ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.training import Trainer, TrialSpec

EPOCHS = 4

#: Runs in a child process: trains, and after each epoch writes the checkpoint as the search's
#: trainable does (torch.save of Trainer.state_dict), atomically, then says so.
CHILD = textwrap.dedent(
    """
    import os, sys, torch
    torch.set_num_threads(1)
    from tests.training.test_kill_resume import spec
    from bench.training import Trainer
    trainer, path = Trainer(spec(sys.argv[1])), sys.argv[2]
    while not trainer.finished:
        trainer.train_epoch()
        torch.save(trainer.state_dict(), path + ".tmp")
        os.replace(path + ".tmp", path)
        print("saved", trainer.epochs_done, flush=True)
    """
)


def spec(method: str) -> TrialSpec:
    return TrialSpec(
        benchmark="unit",
        dataset=DataConfig(name="digits", max_train_samples=300),
        model=ModelConfig(name="cnn", options={"width": 4}),
        training=TrainingConfig(epochs=EPOCHS, batch_size=50, learning_rate=0.1),
        regularizer=method,
        regularizer_hparams={"swa_start": 0.5} if method.endswith("+swa") else {},
        flatness=FlatnessConfig(when="off"),
        seed=3,
    )


@pytest.fixture
def one_thread():
    # Bit-exactness across processes needs the same reduction order: one thread on both sides.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["looksam+swa", "vasso+ema"])
def test_a_trial_killed_mid_epoch_resumes_bit_for_bit(method, tmp_path: Path, repo_root: Path, one_thread):
    checkpoint = tmp_path / "trainer.pt"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, method, str(checkpoint)],
        cwd=repo_root,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in child.stdout:
            if line.split() == ["saved", "2"]:
                break  # epoch 3 is training now
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL and checkpoint.exists()

    resumed = Trainer(spec(method))
    resumed.load_state_dict(torch.load(checkpoint, weights_only=False))
    assert resumed.epochs_done == 2
    tail = [resumed.train_epoch() for _ in range(EPOCHS - 2)]
    straight = Trainer(spec(method))
    expected = [straight.train_epoch() for _ in range(EPOCHS)][2:]
    assert [(e.val_loss, e.learning_rate, e.forward_passes, e.evaluated_weights) for e in tail] == [
        (e.val_loss, e.learning_rate, e.forward_passes, e.evaluated_weights) for e in expected
    ]
    for a, b in zip(resumed.evaluated_model.parameters(), straight.evaluated_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.test() == straight.test()
