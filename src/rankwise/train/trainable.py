"""What trains in a run, and what its checkpoints and final folder hold: the loop's one extension point.

The loop knows nothing about adapters or layer sampling. A capability hands it a `Trainable`:
adapters (``rankwise.adapters.AdapterTrainable``), all weights (`FullTrainable`), sampled layers
(`rankwise.train.lisa.LisaTrainable`), the low-rank factors of a compressed model (healing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from rankwise.errors import RankwiseError

FULL_WEIGHTS = "model.safetensors"


class Trainable:
    """The default hooks do nothing; a strategy overrides what it needs.

    Order in a fresh run: `check` (before anything is written), `prepare` (after the "before"
    evaluation), then per step `before_step` → forward/backward (+ `extra_loss`) → optimizer step.
    A resumed run calls `restore` instead of `prepare`. `write_checkpoint` and `write_final` fill
    folders that the loop creates and renames atomically.
    """

    #: Recorded in the report ("adapter", "full", "lisa", ...).
    kind: str = "custom"

    def check(self, model: nn.Module) -> None:
        """Raise `RankwiseError` for settings that cannot work on ``model`` (nothing exists on disk yet)."""

    def prepare(self, model: nn.Module, train_windows: torch.Tensor, progress: bool) -> None:
        """Make the model trainable (wrap layers, unfreeze weights) at the start of a fresh run."""

    def restore(self, model: nn.Module, checkpoint: Path) -> None:
        """Rebuild the trainable state from a checkpoint folder written by `write_checkpoint`."""
        raise NotImplementedError

    def parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Every parameter the optimizer holds, by name (tied tensors once)."""
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def before_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called before the forward pass of 0-based optimizer step ``step`` (also the first after a resume)."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        """A regulariser added to the mean token loss of every micro-batch, or None."""
        return None

    def write_checkpoint(self, model: nn.Module, folder: Path) -> None:
        """Write what `restore` needs into the (existing, empty) ``folder``."""
        raise NotImplementedError

    def write_final(self, model: nn.Module, tokenizer: Any, folder: Path) -> None:
        """Write the run's result into the (existing) final ``folder``; defaults to the checkpoint payload."""
        self.write_checkpoint(model, folder)

    def describe(self) -> dict[str, Any]:
        """Extra fields for the run's report."""
        return {}


def floating_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every floating-point parameter by its first name (tied embedding and head once)."""
    return {name: p for name, p in model.named_parameters() if p.is_floating_point()}


class WholeModelCheckpoints(Trainable):
    """Checkpoints hold every weight of the model (safetensors; tied tensors once); `restore` loads
    them and marks the trainable set again with `prepare`. For strategies whose trainable tensors are
    spread over the whole model (all weights, sampled blocks, a compressed model's factors)."""

    def restore(self, model: nn.Module, checkpoint: Path) -> None:
        load_model(model, str(checkpoint / FULL_WEIGHTS))
        self.prepare(model, torch.empty(0), False)

    def write_checkpoint(self, model: nn.Module, folder: Path) -> None:
        save_model(model, str(folder / FULL_WEIGHTS))


class FullTrainable(WholeModelCheckpoints):
    """All weights train. The run folder is an ordinary Hugging Face model folder (config, weights,
    tokenizer) that `rw.load_model` and ``transformers`` load."""

    kind = "full"

    def check(self, model: nn.Module) -> None:
        if not floating_parameters(model):
            raise RankwiseError("the model has no floating-point parameters to train")

    def prepare(self, model: nn.Module, train_windows: torch.Tensor, progress: bool) -> None:
        for p in floating_parameters(model).values():
            p.requires_grad_(True)

    def write_final(self, model: nn.Module, tokenizer: Any, folder: Path) -> None:
        from rankwise.io.loading import MANIFEST_NAME
        from rankwise.io.saving import manifest_json

        save_pretrained = getattr(model, "save_pretrained", None)
        if save_pretrained is None:  # a plain nn.Module: its weights alone
            self.write_checkpoint(model, folder)
            return
        save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        (folder / MANIFEST_NAME).write_text(manifest_json("rankwise finetune --full"))
