"""MiLoRA (Wang et al. 2024): the minor r singular triplets train, the principal part stays frozen."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from rankwise.adapters._common import per_layer
from rankwise.adapters.config import AdapterConfig, AdapterInit, register
from rankwise.linalg import adapter_factors, svd


class MiLoRA(AdapterConfig):
    """MiLoRA, "Harnessing Minor Singular Components for Parameter-Efficient LLM Finetuning" (Wang et al., 2024).

    Needs the smallest singular triplets, which a randomized sketch cannot resolve, so the SVD is exact.
    """

    method: Literal["milora"] = "milora"
    changes_base: ClassVar[bool] = True


@register("milora", MiLoRA)
def init_milora(
    weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any
) -> dict[str, AdapterInit]:
    def one(_name: str, _i: int, W: torch.Tensor) -> AdapterInit:
        full = svd(W, method="exact")
        B, A = adapter_factors(full.tail(full.rank - config.rank), config.scaling())
        return AdapterInit(A=A, B=B)

    return per_layer(weights, config.rank, one)
