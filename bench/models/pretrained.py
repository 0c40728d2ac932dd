"""Fine-tuning from a local checkpoint (``model.pretrained``): a state dict read safely and loaded
into a registered model before its first step.

The file is a ``.pt``/``.pth`` of ``torch.save(model.state_dict())`` (torchvision's and timm's
published weights), or a training checkpoint holding the state dict under ``state_dict`` or
``model``; the prefixes that wrappers add to every key (``module.`` of DataParallel/DDP,
``_orig_mod.`` of ``torch.compile``) are dropped. It is read with ``torch.load(weights_only=True)``:
a checkpoint is data, and a pickle that would run code is refused. Nothing is ever downloaded.

As in fine-tuning, a classifier head of another shape (another number of classes), or one the
checkpoint lacks (a backbone saved without it), is left out and keeps its fresh initialization;
the head is the model's last module with parameters of its own (the output layer of every model
here). Any other difference (a missing or unknown key, another shape) is an error naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.errors import first_line, printable
from bench.models import ModelError, create_model

#: Where training scripts nest the state dict in a checkpoint (timm: ``state_dict``; torchvision's
#: reference scripts and many others: ``model``).
NESTED_KEYS = ("state_dict", "model")
#: Prefixes a wrapper puts before every key: DataParallel/DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Keys shown in an error before "...".
_SHOWN_KEYS = 3


class PretrainedError(ModelError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line."""


def _keys(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def read_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict in the file ``path`` (on the CPU); :class:`PretrainedError` when there is none."""
    file = Path(path).expanduser()
    where = f"model.pretrained {printable(file)}"
    if not file.exists():
        raise PretrainedError(f"{where}: no such file")
    if not file.is_file():
        raise PretrainedError(f"{where}: not a file")
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # a file from anywhere fails in any way (torch 2.14 even raises KeyError)
        # weights_only refuses a pickle of objects other than tensors and containers: its long
        # message says why; its first line is enough here.
        raise PretrainedError(f"{where}: not a torch checkpoint readable as weights ({first_line(error)})") from None
    state = raw
    if isinstance(raw, Mapping):
        nested = [raw[key] for key in NESTED_KEYS if isinstance(raw.get(key), Mapping)]
        if nested and not all(isinstance(value, Tensor) for value in raw.values()):
            state = nested[0]
    if not (
        isinstance(state, Mapping)
        and state
        and all(isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items())
    ):
        raise PretrainedError(
            f"{where}: holds no state dict (parameter names → tensors, or one under "
            f"{' or '.join(map(repr, NESTED_KEYS))})"
        )
    weights = dict(state)
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in weights):
            weights = {key.removeprefix(prefix): value for key, value in weights.items()}
    return weights


def head_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of the classifier head: the last module with parameters of its own."""
    head = ""
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is not None:
            head = name
    module = model.get_submodule(head)
    own = [name for name, _ in module.named_parameters(recurse=False)]
    own += [name for name, _ in module.named_buffers(recurse=False)]
    return [f"{head}.{name}" if head else name for name in own]


@dataclass(frozen=True)
class Fitted:
    """A checkpoint matched against a model: what to load, and what was left out of it."""

    weights: dict[str, Tensor]
    #: The head's keys left out (another shape, or not in the checkpoint): they keep their init.
    left_out: tuple[str, ...]
    #: One line saying so; None when the whole model is loaded.
    notice: str | None


def fit(model: nn.Module, weights: Mapping[str, Tensor], path: str) -> Fitted:
    """Match ``weights`` to ``model``'s state dict; :class:`PretrainedError` unless only the
    head differs (or ``num_batches_tracked`` counters are missing: older checkpoints lack them)."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    head = set(head_keys(model))
    missing = [key for key in expected if key not in weights and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in weights if key not in expected]
    reshaped = [key for key in expected if key in weights and tuple(weights[key].shape) != expected[key]]
    left_out = [key for key in expected if key in head and (key in missing or key in reshaped)]
    wrong = [key for key in reshaped if key not in head]
    missing = [key for key in missing if key not in head]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            key = wrong[0]
            parts.append(
                f"{key} is {tuple(weights[key].shape)} there but {expected[key]} here"
                + (f" ({len(wrong) - 1} more shapes differ)" if len(wrong) > 1 else "")
            )
        if missing:
            parts.append(f"missing {_keys(missing)}")
        if unexpected:
            parts.append(f"unknown to the model: {_keys(unexpected)}")
        raise PretrainedError(f"model.pretrained {printable(path)} does not fit the model: {'; '.join(parts)}")
    notice = None
    if left_out:
        shapes = [tuple(weights[key].shape) for key in left_out if key in weights]
        classes = f" ({shapes[0][0]} classes there, {expected[left_out[0]][0]} here)" if shapes and shapes[0] else ""
        why = "has another shape" + classes if shapes else "is not in the checkpoint"
        notice = (
            f"model.pretrained {printable(path)}: the classifier head ({', '.join(left_out)}) {why}: "
            "it is left out and trained from its fresh initialization"
        )
    return Fitted({key: value for key, value in weights.items() if key not in left_out}, tuple(left_out), notice)


def load_pretrained(model: nn.Module, path: str) -> Fitted:
    """Load the checkpoint at ``path`` into ``model`` (all but a head that does not fit)."""
    fitted = fit(model, read_checkpoint(path), path)
    # Not strict: the head left out and missing num_batches_tracked keep the model's own values;
    # everything else was matched key by key above.
    model.load_state_dict(fitted.weights, strict=False)
    return fitted


def check_pretrained(
    name: str, options: Mapping[str, object], path: str, input_shape: tuple[int, int, int], num_classes: int
) -> str | None:
    """Whether the checkpoint at ``path`` fits model ``name`` built for this data, before a run:
    the model is built on the meta device (no memory, no init). Returns the head's notice (or
    None); raises :class:`PretrainedError`."""
    weights = read_checkpoint(path)
    with torch.device("meta"):
        model = create_model(name, input_shape, num_classes, **options)
    return fit(model, weights, path).notice
