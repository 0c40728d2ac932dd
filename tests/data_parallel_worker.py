"""One data-parallel worker for tests/training/test_data_parallel.py, run as a script:

    python tests/data_parallel_worker.py RANK WORLD_SIZE STORE_FILE OUT_DIR METHOD [METHOD ...]

Joins a gloo process group through ``STORE_FILE`` (WORLD_SIZE 1: none), trains each METHOD with
the spec of :func:`spec`, and saves its weights, running statistics and epoch figures to
``OUT_DIR/<method>.<rank>.pt``. A METHOD may carry a model after a colon: ``sam:cnn``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from bench.config import DataConfig, FlatnessConfig, ModelConfig, TrainingConfig
from bench.training import Trainer, TrialSpec
from bench.training.parallel import DataParallel

EPOCHS = 2
#: m-sharpness with slices that split each worker's shard evenly (global batch 48, 2 workers)
MICRO_BATCH = 8
MODELS = {
    "mlp": ModelConfig(name="mlp", options={"hidden": 12, "depth": 1}),
    "cnn": ModelConfig(name="cnn", options={"width": 4}),  # BatchNorm
}


def spec(method: str, model: str = "mlp") -> TrialSpec:
    """The trial every worker count runs: float64, 2 epochs of a 192-sample digits split."""
    name, _, options = method.partition("@")
    hparams = {"micro_batch_size": MICRO_BATCH} if options == "m" else {}
    return TrialSpec(
        benchmark="parallel",
        dataset=DataConfig(name="digits", max_train_samples=192),
        model=MODELS[model],
        training=TrainingConfig(
            epochs=EPOCHS, batch_size=48, learning_rate=0.1, momentum=0.9, precision="float64", device="cpu"
        ),
        regularizer=name,
        regularizer_hparams=hparams,
        flatness=FlatnessConfig(when="off"),
        seed=11,
    )


def main(rank: int, world: int, store: str, out: Path, methods: list[str]) -> None:
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    parallel = DataParallel.current()
    for entry in methods:
        method, _, model = entry.partition(":")
        try:
            trainer = Trainer(spec(method, model or "mlp"), parallel=parallel)
            epochs = [trainer.train_epoch() for _ in range(EPOCHS)]
            result = {
                "state": trainer.model.state_dict(),
                "train_loss": [e.train_loss for e in epochs],
                "val_loss": [e.val_loss for e in epochs],
                "metrics": [e.regularizer_metrics for e in epochs],
                "passes": trainer.forward_passes + trainer.backward_passes,
            }
        except ValueError as error:
            result = {"error": str(error)}
        torch.save(result, out / f"{entry.replace(':', '-')}.{rank}.pt")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5:])
