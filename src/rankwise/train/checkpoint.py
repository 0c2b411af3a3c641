"""Resumable checkpoints, never pickled: the trainable's payload, the optimizer state as safetensors +
JSON (any `torch.optim.Optimizer`, projectors included), the RNG state, and progress as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rankwise.io.atomic import atomic_folder
from rankwise.optim.state_io import load_optimizer_state, optimizer_state_to_tensors
from rankwise.train.trainable import Trainable

CHECKPOINT = "checkpoint"
_OPT_TENSORS = "optimizer.safetensors"
_OPT_META = "optimizer.json"
_RNG_FILE = "rng.safetensors"
_STATE_FILE = "state.json"


def save_checkpoint(folder: Path, trainable: Trainable, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> None:
    """Atomically replace ``folder/checkpoint`` with the current training state."""
    tensors, meta = optimizer_state_to_tensors(optimizer)
    with atomic_folder(folder / CHECKPOINT, overwrite=True) as tmp:
        trainable.write_checkpoint(model, tmp)
        save_file(tensors, str(tmp / _OPT_TENSORS))
        (tmp / _OPT_META).write_text(json.dumps(meta, indent=1) + "\n")
        save_file({"torch": torch.get_rng_state()}, str(tmp / _RNG_FILE))
        (tmp / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def read_state(folder: Path) -> dict[str, Any] | None:
    """The progress of the last checkpoint under the work ``folder``, or None if there is none."""
    path = folder / CHECKPOINT / _STATE_FILE
    if not path.is_file():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def restore_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Put the saved optimizer state back and restore the global torch RNG (dropout draws)."""
    checkpoint = folder / CHECKPOINT
    meta = json.loads((checkpoint / _OPT_META).read_text())
    load_optimizer_state(optimizer, load_file(str(checkpoint / _OPT_TENSORS)), meta)
    torch.set_rng_state(load_file(str(checkpoint / _RNG_FILE))["torch"])
