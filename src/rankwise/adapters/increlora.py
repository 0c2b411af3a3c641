"""IncreLoRA (Zhang et al. 2023): start at a small rank and add triplets during training to the layers
with the highest importance, up to a budget; the optimizer gains state for the new parameters."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rankwise.adapters._common import per_layer
from rankwise.adapters.adalora import ranked_deltas
from rankwise.adapters.config import AdapterConfig, register
from rankwise.adapters.layer import AdapterLinear
from rankwise.adapters.ranked import RankedDelta, initial_triplets
from rankwise.adapters.variant import Variant


class IncreLoRA(AdapterConfig):
    """IncreLoRA, "Incremental Parameter Allocation Method for Parameter-Efficient Fine-tuning" (Zhang et al., 2023).

    Layers start at ``rank`` triplets of ΔW = s·P·diag(λ)·Q (λ = 0). After the first ``warmup`` fraction of
    the steps, every ``interval`` steps the ``grow_layers`` layers of highest mean smoothed importance
    (AdaLoRA's score) gain one triplet each (λ = 0, so the output does not jump), until the total reaches
    ``target_rank`` per layer on average or the last ``final`` fraction of the steps starts. The loop adds
    ``orth_weight`` · (‖PᵀP − I‖²_F + ‖QQᵀ − I‖²_F) to the loss. s = alpha / rank (the initial rank).
    """

    method: Literal["increlora"] = "increlora"
    rank: int = Field(default=2, gt=0, description="initial triplets per layer")
    target_rank: int | None = Field(default=None, gt=0, description="average triplets per layer the budget "
                                    "allows; None = 4 × rank")
    grow_layers: int = Field(default=4, gt=0, description="layers that gain a triplet at each growth")
    warmup: float = Field(default=0.1, ge=0, lt=1, description="fraction of the steps before the first growth")
    final: float = Field(default=0.2, ge=0, lt=1, description="fraction of the steps without growth at the end")
    interval: int = Field(default=5, gt=0, description="steps between two growths")
    beta1: float = Field(default=0.85, ge=0, lt=1, description="smoothing of the sensitivity")
    beta2: float = Field(default=0.85, ge=0, lt=1, description="smoothing of its uncertainty")
    orth_weight: float = Field(default=0.1, ge=0, description="weight of the orthogonality regulariser")

    @model_validator(mode="after")
    def _budget(self) -> IncreLoRA:
        if self.final_rank < self.rank:
            raise ValueError(f"target_rank {self.final_rank} is below the initial rank {self.rank}; IncreLoRA's "
                             "budget only grows: choose target_rank >= rank")
        return self

    @property
    def final_rank(self) -> int:
        return 4 * self.rank if self.target_rank is None else self.target_rank


def schedule_increlora(layers: dict[str, AdapterLinear], step: int, total: int, optimizer: Any, config: Any) -> None:
    deltas = ranked_deltas(layers)
    for delta in deltas.values():
        delta.update_importance(config.beta1, config.beta2)
    warmup, stop = round(config.warmup * total), total - round(config.final * total)
    if step < warmup or step >= stop or (step - warmup) % config.interval != 0:
        return
    room = config.final_rank * len(deltas) - sum(d.rank for d in deltas.values())
    names = list(deltas)
    capacity = [layers[n].rank + 1 < min(layers[n].out_features, layers[n].in_features) for n in names]
    scores = torch.stack([d.triplet_scores().mean() if d.rank else torch.tensor(0.0) for d in deltas.values()])
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    chosen = [i for i in order if capacity[i]][: max(0, min(room, config.grow_layers))]
    for i in chosen:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step * 1009 + i)
        deltas[names[i]].grow(1, generator, optimizer)


@register("increlora", IncreLoRA, variant=RankedDelta, schedule=schedule_increlora)
def init_increlora(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor],
                   config: Any) -> dict[str, Variant]:
    def one(_name: str, i: int, W: torch.Tensor) -> Variant:
        generator = torch.Generator().manual_seed(config.seed + i)
        P, lam, Q = initial_triplets(W.shape[0], W.shape[1], config.rank, generator)
        return RankedDelta(P, lam, Q, config.scaling(), config.orth_weight)

    return per_layer(weights, config.rank, one)
