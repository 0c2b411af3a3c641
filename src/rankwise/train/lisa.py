"""LISA (Pan et al. 2024, "Layerwise Importance Sampling for Memory-Efficient LLM Fine-Tuning").

Every ``interval`` steps a seeded random set of ``layers`` decoder blocks trains; the other blocks are
frozen and hold neither gradients nor optimizer state. Everything outside the blocks (embedding,
final norm, LM head) always trains, as in the paper. The sampled set is a pure function of
(seed, step // interval), so a resumed run samples the same blocks.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from rankwise.errors import RankwiseError
from rankwise.train.trainable import FullTrainable, floating_parameters

_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


class LisaConfig(BaseModel):
    """Layer sampling for full fine-tuning (LISA, Pan et al. 2024)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int = Field(default=2, gt=0, description="decoder blocks that train at a time (gamma)")
    interval: int = Field(default=20, gt=0, description="steps between two samplings (K)")


def block_parameters(model: nn.Module) -> tuple[dict[int, list[nn.Parameter]], list[nn.Parameter]]:
    """(parameters of each decoder block by block index, every other floating parameter)."""
    blocks: dict[int, list[nn.Parameter]] = {}
    always: list[nn.Parameter] = []
    for name, p in floating_parameters(model).items():
        match = _BLOCK.search(name)
        if match is None:
            always.append(p)
        else:
            blocks.setdefault(int(match.group(1)), []).append(p)
    return blocks, always


def sampled_blocks(n_blocks: int, layers: int, seed: int, period: int) -> list[int]:
    """The sorted block indices that train during ``period`` (= step // interval)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + period)
    return sorted(int(i) for i in torch.randperm(n_blocks, generator=gen)[:layers])


class LisaTrainable(FullTrainable):
    """All weights, but only `LisaConfig.layers` sampled decoder blocks at a time."""

    kind = "lisa"

    def __init__(self, config: LisaConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.active: list[int] = []
        self.period = -1  # the sampling period the active blocks belong to; none yet
        self.history: list[list[int]] = []

    def check(self, model: nn.Module) -> None:
        blocks, _ = block_parameters(model)
        if not blocks:
            raise RankwiseError("LISA samples decoder blocks, but no parameter name has a block index "
                                "(layers.N.); train all weights with --full instead")
        if self.config.layers > len(blocks):
            raise RankwiseError(f"--lisa-layers {self.config.layers} is more than the model's {len(blocks)} decoder "
                                f"blocks; choose at most {len(blocks)}")

    def prepare(self, model: nn.Module, train_windows: torch.Tensor, progress: bool) -> None:
        blocks, always = block_parameters(model)
        for p in always:
            p.requires_grad_(True)
        for params in blocks.values():
            for p in params:
                p.requires_grad_(False)

    def parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        # The optimizer holds every weight; frozen ones get no gradient, so it keeps no state for them.
        return floating_parameters(model)

    def before_step(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        period = step // self.config.interval
        if period == self.period:  # the blocks change only at a period boundary (or after a resume)
            return
        self.period = period
        blocks, _ = block_parameters(model)
        wanted = sampled_blocks(len(blocks), self.config.layers, self.seed, period)
        if wanted == self.active:
            return
        order = sorted(blocks)
        chosen = {order[i] for i in wanted}
        for index, params in blocks.items():
            train = index in chosen
            for p in params:
                p.requires_grad_(train)
                if not train:
                    p.grad = None
                    optimizer.state.pop(p, None)  # a frozen block holds no optimizer state
        self.active = wanted
        self.history.append(wanted)

    def describe(self) -> dict[str, Any]:
        return {"lisa": self.config.model_dump(), "lisa_blocks_sampled": self.history}
