"""Failures are classified one way (bench.failures): real Ray and torch exception objects, with
the texts their libraries raise, become a class and a one-line error that keeps what matters."""

from __future__ import annotations

import pytest
import ray.exceptions
import torch

from bench.errors import first_line
from bench.failures import classify, classify_text, error_text
from bench.results.schema import FailureClass
from bench.training import Diverged

# Ray's OOM-kill text, as the raylet writes it (src/ray/raylet/node_manager.cc, Ray 2.x): a
# generic first line, then the node's memory figures, then advice and a process table.
RAY_OOM = (
    "Task was killed due to the node running low on memory.\n"
    "Memory on the node (IP: 172.17.0.2, ID: 90efe99b630d4b1f) where the task "
    "(task ID: a6755d17, name=allocate_memory, "
    "pid=91085, memory used=24.99GB) was running was 32.62GB / 33.28GB (0.980175), which exceeds the memory usage "
    "threshold of 0.96. Ray killed this worker (ID: a8101629) because it was the most recently scheduled task; to see "
    "more information about memory usage on this node, use `ray logs raylet.out -ip 172.17.0.2`.\n"
    "Top 10 memory users:\nPID\tMEM(GB)\tCOMMAND\n91085\t24.99\tray::allocate_memory\n"
    "Refer to the documentation on how to address the out of memory issue: "
    "https://docs.ray.io/en/latest/ray-core/scheduling/ray-oom-prevention.html."
)
# torch's CUDA caching allocator text (c10/cuda/CUDACachingAllocator.cpp): figures, then advice.
TORCH_OOM = (
    "CUDA out of memory. Tried to allocate 20.00 MiB. "
    "GPU 0 has a total capacity of 79.19 GiB of which 1.25 MiB is free. "
    "Including non-PyTorch memory, this process has 79.18 GiB memory in use. Of the allocated memory 78.50 GiB is "
    "allocated by PyTorch, and 12.34 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is "
    "large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
    "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


def _raised_in_a_task(error: BaseException) -> BaseException:
    """The exception as Tune holds it when a trial raised ``error``: Ray's RayTaskError wrapper."""
    try:
        raise error
    except BaseException as raised:
        return ray.exceptions.RayTaskError("run_trial", "Traceback ...", raised).as_instanceof_cause()


def test_ray_oom_kill_keeps_the_node_memory_figures_not_the_advice():
    error = ray.exceptions.OutOfMemoryError(RAY_OOM)
    assert classify(error) is FailureClass.OOM
    text = error_text(error)
    assert text.startswith("OutOfMemoryError: Memory on the node (IP: 172.17.0.2")
    assert "was running was 32.62GB / 33.28GB (0.980175), which exceeds the memory usage threshold of 0.96." in text
    assert "Refer to the documentation" not in text and "Top 10" not in text and "\n" not in text
    # An actor killed that way reaches Tune as an actor death carrying the same text: still oom.
    died = ray.exceptions.RayActorError(error_msg=f"The actor died unexpectedly before finishing this task.\n{RAY_OOM}")
    assert classify(died) is FailureClass.OOM
    assert "32.62GB / 33.28GB" in error_text(died)


def test_torch_cuda_oom_keeps_the_allocator_figures():
    error = _raised_in_a_task(torch.OutOfMemoryError(TORCH_OOM))
    assert classify(error) is FailureClass.OOM
    text = error_text(error)
    assert text.startswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.")
    assert "78.50 GiB is allocated by PyTorch" in text
    assert "PYTORCH_CUDA_ALLOC_CONF" not in text and "See documentation" not in text
    assert classify(MemoryError()) is FailureClass.OOM


@pytest.mark.parametrize(
    "error",
    [
        ray.exceptions.ActorDiedError(),
        ray.exceptions.WorkerCrashedError(),
        ray.exceptions.NodeDiedError("node 10.0.0.3 died"),
        ray.exceptions.RayActorError(),
        RuntimeError("Ray worker died while running the task"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_dead_workers_actors_and_nodes_are_infra(error):
    assert classify(error) is FailureClass.INFRA
    assert "\n" not in error_text(error) and error_text(error).startswith(type(error).__name__ + ": ")


def test_divergence_and_other_errors():
    diverged = Diverged(loss=float("nan"), epoch=3, step=41)
    assert str(diverged) == "diverged: training loss nan at epoch 3 (step 41)"
    assert classify(_raised_in_a_task(diverged)) is FailureClass.DIVERGED
    assert error_text(diverged) == "diverged: training loss nan at epoch 3 (step 41)"
    wrapped = _raised_in_a_task(ValueError("bad shape\nmore detail"))
    assert classify(wrapped) is FailureClass.ERROR
    assert error_text(wrapped) == "ValueError: bad shape"  # the cause's type and first line, not Ray's wrapper


def test_first_line_and_text_classes():
    assert first_line(ValueError("  one\ntwo")) == "one"
    assert first_line(KeyError()) == "KeyError"
    assert first_line("\n  a line \nb") == "a line"
    assert classify_text("ray.exceptions.ActorDiedError: The actor died unexpectedly") is FailureClass.INFRA
    assert classify_text(RAY_OOM) is FailureClass.OOM
    assert classify_text("diverged: training loss inf at epoch 1 (step 4)") is FailureClass.DIVERGED
    assert classify_text("ValueError: nope") is FailureClass.ERROR
