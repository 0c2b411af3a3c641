"""AdaLoRA (Zhang et al. 2023): ΔW = P·diag(λ)·Q whose triplets are pruned by smoothed importance under a
global budget that shrinks on a cubic schedule; pruned triplets leave the parameters and the optimizer."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rankwise.adapters._common import per_layer
from rankwise.adapters.config import AdapterConfig, register
from rankwise.adapters.layer import AdapterLinear
from rankwise.adapters.ranked import RankedDelta, cubic_budget, initial_triplets
from rankwise.adapters.variant import Variant


class AdaLoRA(AdapterConfig):
    """AdaLoRA, "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning" (Zhang et al., ICLR 2023).

    Every layer starts at ``rank`` triplets (λ = 0, so the output equals the base's). After the first
    ``warmup`` fraction of the steps, every ``interval`` steps the triplets with the lowest smoothed
    importance are removed until the total fits the budget, which falls on a cubic schedule from
    ``rank`` to ``target_rank`` triplets per layer on average, reached when the last ``final`` fraction of
    the steps starts. The loop adds ``orth_weight`` · (‖PᵀP − I‖²_F + ‖QQᵀ − I‖²_F) to the loss.
    s = alpha / rank (the initial rank) throughout.
    """

    method: Literal["adalora"] = "adalora"
    target_rank: int | None = Field(default=None, ge=0, description="average triplets per layer at the end (the "
                                    "final budget); None = rank // 2")
    warmup: float = Field(default=0.1, ge=0, lt=1, description="fraction of the steps before the first pruning")
    final: float = Field(default=0.2, ge=0, lt=1, description="fraction of the steps at the final budget")
    interval: int = Field(default=10, gt=0, description="steps between two prunings")
    beta1: float = Field(default=0.85, ge=0, lt=1, description="smoothing of the sensitivity")
    beta2: float = Field(default=0.85, ge=0, lt=1, description="smoothing of its uncertainty")
    orth_weight: float = Field(default=0.1, ge=0, description="weight of the orthogonality regulariser")

    @model_validator(mode="after")
    def _budget(self) -> AdaLoRA:
        if self.final_rank > self.rank:
            raise ValueError(f"target_rank {self.final_rank} is above the initial rank {self.rank}; AdaLoRA's "
                             "budget only shrinks: choose target_rank <= rank")
        if self.warmup + self.final >= 1:
            raise ValueError(f"warmup {self.warmup} + final {self.final} leave no steps to prune in; keep their "
                             "sum below 1")
        return self

    @property
    def final_rank(self) -> int:
        return self.rank // 2 if self.target_rank is None else self.target_rank


def ranked_deltas(layers: dict[str, AdapterLinear]) -> dict[str, RankedDelta]:
    return {name: layer.variant for name, layer in layers.items() if isinstance(layer.variant, RankedDelta)}


def schedule_adalora(layers: dict[str, AdapterLinear], step: int, total: int, optimizer: Any, config: Any) -> None:
    deltas = ranked_deltas(layers)
    for delta in deltas.values():
        delta.update_importance(config.beta1, config.beta2)
    warmup, final = round(config.warmup * total), round(config.final * total)
    due = step >= total - final or (step >= warmup and (step - warmup) % config.interval == 0)
    if not due or step < warmup:
        return
    budget = cubic_budget(step, total, config.rank * len(deltas), config.final_rank * len(deltas), warmup, final)
    if sum(d.rank for d in deltas.values()) <= budget:
        return
    scores = torch.cat([d.triplet_scores() for d in deltas.values()])
    owner = torch.cat([torch.full((d.rank,), i) for i, d in enumerate(deltas.values())])
    position = torch.cat([torch.arange(d.rank) for d in deltas.values()])
    kept = torch.sort(scores, descending=True, stable=True).indices[:budget]  # ties: the earlier triplet stays
    for i, delta in enumerate(deltas.values()):
        mine = position[kept[owner[kept] == i]]
        if mine.numel() < delta.rank:
            delta.keep(torch.sort(mine).values, optimizer)


@register("adalora", AdaLoRA, variant=RankedDelta, schedule=schedule_adalora)
def init_adalora(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any) -> dict[str, Variant]:
    def one(_name: str, i: int, W: torch.Tensor) -> Variant:
        generator = torch.Generator().manual_seed(config.seed + i)
        P, lam, Q = initial_triplets(W.shape[0], W.shape[1], config.rank, generator)
        return RankedDelta(P, lam, Q, config.scaling(), config.orth_weight)

    return per_layer(weights, config.rank, one)
