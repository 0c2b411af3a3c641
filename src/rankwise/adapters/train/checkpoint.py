"""Resumable checkpoints: adapter + AdamW state + RNG state as safetensors, progress as JSON (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rankwise.adapters.run_io import write_adapter
from rankwise.io.atomic import atomic_folder

CHECKPOINT = "checkpoint"
_OPT_FILE = "optimizer.safetensors"
_STATE_FILE = "state.json"


def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    params: dict[str, nn.Parameter], state: dict[str, Any]) -> None:
    """Atomically replace ``folder/checkpoint`` with the current training state."""
    tensors: dict[str, torch.Tensor] = {"rng": torch.get_rng_state()}
    for name, p in params.items():
        for key, value in optimizer.state.get(p, {}).items():
            tensors[f"{name}::{key}"] = value.detach().reshape(value.shape).contiguous().clone()
    with atomic_folder(folder / CHECKPOINT, overwrite=True) as tmp:
        write_adapter(model, tmp)
        save_file(tensors, str(tmp / _OPT_FILE))
        (tmp / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def read_state(folder: Path) -> dict[str, Any] | None:
    path = folder / CHECKPOINT / _STATE_FILE
    if not path.is_file():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def restore_optimizer(folder: Path, optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter]) -> None:
    """Put the saved AdamW moments back and restore the global torch RNG (dropout)."""
    tensors = load_file(str(folder / CHECKPOINT / _OPT_FILE))
    torch.set_rng_state(tensors.pop("rng"))
    for key, value in tensors.items():
        name, _, field = key.rpartition("::")
        optimizer.state[params[name]][field] = value
