"""`finetune`: causal-LM fine-tuning of an adapter, of all weights (``full``) or of sampled layers
(``lisa``), through the one training loop of `rankwise.train`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator
from torch import nn

from rankwise.adapters.apply import adapt, trainable_parameters
from rankwise.adapters.config import AdapterConfig, config_from_dict
from rankwise.adapters.hooks import load_pending_grads, regulariser, save_pending_grads, schedule_step
from rankwise.adapters.run_io import load_adapter, write_adapter
from rankwise.errors import RankwiseError
from rankwise.modules import select_targets
from rankwise.modules.targets import linear_at
from rankwise.train import FullTrainable, LisaConfig, LisaTrainable, Trainable, TrainConfig, train


class FinetuneConfig(TrainConfig):
    """A fine-tuning run: an adapter on ``targets`` (the default), all weights (``full``), or LISA's
    sampled decoder blocks (``lisa``, which implies ``full``). See `TrainConfig` for the loop's knobs."""

    adapter: SerializeAsAny[AdapterConfig] | None = None
    targets: str | list[str] = Field(default="all-linear", description="the adapter's target layers")
    full: bool = Field(default=False, description="train every weight instead of an adapter")
    lisa: LisaConfig | None = Field(default=None, description="train sampled decoder blocks (LISA)")

    @field_validator("targets")
    @classmethod
    def _targets_regex(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value.startswith("re:"):
            try:
                re.compile(value[3:])
            except re.error as exc:
                raise ValueError(f"'{value[3:]}' is not a valid regex ({exc}); fix the pattern after 're:'") from None
        return value

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter(cls, value: Any) -> Any:
        return config_from_dict(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _one_trainable_set(self) -> FinetuneConfig:
        whole = self.full or self.lisa is not None
        if whole and self.adapter is not None:
            raise ValueError("an adapter and full fine-tuning exclude each other; drop the adapter settings "
                             "(--method, --rank, ...) or --full/--lisa")
        if not whole and self.adapter is None:
            raise ValueError("nothing to train: give an adapter (method: lora, ...) or full: true")
        return self


class AdapterTrainable(Trainable):
    """An adapter trains: checkpoints and the run folder hold the adapter files (`write_adapter`)."""

    kind = "adapter"

    def __init__(self, config: AdapterConfig, targets: Any = "all-linear", steps: int | None = None) -> None:
        self.config = config
        self.targets = targets
        self.steps = steps  # the run's length, for methods with a rank schedule (AdaLoRA, IncreLoRA)

    def check(self, model: nn.Module) -> None:
        names = select_targets(model, self.targets)
        check_rank_fits(model, names, self.config.rank)

    def prepare(self, model: nn.Module, train_windows: torch.Tensor, progress: bool) -> None:
        calibration = getattr(self.config, "calibration", None)
        calib = train_windows[: getattr(calibration, "windows", 0)] if self.config.needs_calibration else None
        adapt(model, self.config, self.targets, calibration=calib, progress=progress)

    def restore(self, model: nn.Module, checkpoint: Path) -> None:
        load_adapter(model, checkpoint)
        load_pending_grads(model, checkpoint)

    def parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return trainable_parameters(model)

    def before_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.steps is not None:
            schedule_step(model, step, self.steps, optimizer)

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return regulariser(model)

    def write_checkpoint(self, model: nn.Module, folder: Path) -> None:
        write_adapter(model, folder)
        save_pending_grads(model, folder)

    def write_final(self, model: nn.Module, tokenizer: Any, folder: Path) -> None:
        write_adapter(model, folder)

    def describe(self) -> dict[str, Any]:
        return {"method": self.config.method}


def check_rank_fits(model: nn.Module, names: list[str], rank: int) -> None:
    """A rank must leave something frozen in every target: r < min(m, n). The message names the
    smallest matrix, which is the one that limits the rank."""
    shapes = {name: tuple(linear_at(model, name).weight.shape) for name in names}
    smallest = min(shapes, key=lambda n: min(shapes[n]))
    bound = min(shapes[smallest])
    if rank >= bound:
        m, n = shapes[smallest]
        raise RankwiseError(f"rank {rank} is not below min(m, n) = {bound} of the smallest target, {smallest} "
                            f"({m}x{n}); choose a rank below {bound} or leave that layer out of --targets")


def trainable_for(config: FinetuneConfig) -> Trainable:
    """The `Trainable` the config asks for."""
    if config.lisa is not None:
        return LisaTrainable(config.lisa, seed=config.seed)
    if config.full:
        return FullTrainable()
    assert config.adapter is not None
    return AdapterTrainable(config.adapter, config.targets, steps=config.steps)


def finetune(
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    train_windows: torch.Tensor | None = None,
    eval_windows: torch.Tensor | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune as ``config`` says and write the run folder ``out``; returns the report.

    An adapter run folder holds ``adapter.safetensors`` + ``adapter.yaml`` (load with
    `rw.adapters.load_adapter`); a ``full``/``lisa`` run folder is a Hugging Face model folder
    (`rw.load_model`). Both add ``config.yaml`` and ``report.json``. See `rankwise.train.train`.
    """
    return train(config, trainable_for(config), out, model=model, tokenizer=tokenizer, train_windows=train_windows,
                 eval_windows=eval_windows, resume=resume, overwrite=overwrite, progress=progress)


__all__ = ["AdapterTrainable", "FinetuneConfig", "check_rank_fits", "finetune", "trainable_for"]
