"""What adapter methods need from a training loop, in one place for rankwise's loop (`AdapterTrainable`)
and Hugging Face's `Trainer` (`AdapterCallback`): regularisers added to the loss, rank schedules run
between steps, and the gradients a schedule still has to read when a checkpoint is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rankwise.adapters.apply import adapter_config, adapter_layers
from rankwise.adapters.config import get_method

#: Gradients of the last step, read by a rank schedule before the next one (a resumed run needs them).
PENDING_GRADS = "pending_grads.safetensors"


def regulariser(model: nn.Module) -> torch.Tensor | None:
    """The mean of the adapter layers' (weighted) regularisers, or None when no layer has one.

    A mean, as PEFT's AdaLoRA takes it, so that a method's weight means the same on any number of layers."""
    terms = [r for layer in adapter_layers(model).values() if layer.variant is not None
             for r in [layer.variant.regulariser()] if r is not None]
    return torch.stack(terms).mean() if terms else None


def has_schedule(model: nn.Module) -> bool:
    return get_method(adapter_config(model).method).schedule is not None


def schedule_step(model: nn.Module, step: int, total: int, optimizer: Any) -> None:
    """Run the method's rank schedule (if any) before the forward pass of 0-based ``step`` of ``total``.

    It reads the gradients of the previous step (still on the parameters) and may resize parameters,
    keeping ``optimizer`` in step with them."""
    config = adapter_config(model)
    schedule = get_method(config.method).schedule
    if schedule is not None:
        schedule(adapter_layers(model), step, total, optimizer, config)


def save_pending_grads(model: nn.Module, folder: Path) -> None:
    """Write the gradients a rank schedule will read at the next step (only for methods with one)."""
    if not has_schedule(model):
        return
    grads = {name: p.grad.detach().contiguous() for name, p in model.named_parameters() if p.grad is not None}
    if grads:
        save_file(grads, str(folder / PENDING_GRADS))


def load_pending_grads(model: nn.Module, folder: Path) -> None:
    """Put the gradients saved by `save_pending_grads` back, so a resumed schedule reads the same numbers."""
    path = folder / PENDING_GRADS
    if not path.is_file():
        return
    grads = load_file(str(path))
    for name, p in model.named_parameters():
        if name in grads:
            p.grad = grads[name].clone()


def current_ranks(model: nn.Module) -> dict[str, int]:
    return {name: layer.rank for name, layer in adapter_layers(model).items()}
