"""LoRA (Hu et al. 2021): A ~ Kaiming-uniform, B = 0, so the adapted model starts equal to the base."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from rankwise.adapters._common import per_layer
from rankwise.adapters.config import AdapterConfig, AdapterInit, register


class LoRA(AdapterConfig):
    """LoRA, "LoRA: Low-Rank Adaptation of Large Language Models" (Hu et al., 2021).

    ``rslora=True`` gives rsLoRA scaling alpha/√r (Kalajdzievski, 2023).
    """

    method: Literal["lora"] = "lora"


def kaiming_a(rank: int, n: int, seed: int) -> torch.Tensor:
    """A [rank, n] ~ U(−1/√n, 1/√n): PEFT's ``kaiming_uniform_(a=√5)``, drawn from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(n)
    return (torch.rand(rank, n, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound


@register("lora", LoRA)
def init_lora(
    weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any
) -> dict[str, AdapterInit]:
    r = config.rank

    def one(_name: str, i: int, W: torch.Tensor) -> AdapterInit:
        m, n = W.shape
        return AdapterInit(A=kaiming_a(r, n, config.seed + i), B=torch.zeros(m, r))

    return per_layer(weights, r, one)
