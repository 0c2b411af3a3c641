"""SVFit (Sun et al. 2024): only the top-r singular values of W train; the singular vectors stay frozen."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from rankwise.adapters._common import SVDInitConfig, per_layer, principal_triplets
from rankwise.adapters.config import register
from rankwise.adapters.triplets import TripletDelta
from rankwise.adapters.variant import Variant


class SVFit(SVDInitConfig):
    """SVFit, "Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular Values" (Sun et al., 2024).

    W = W_res + U_r·diag(σ)·V_rᵀ with the top-r triplets; σ [r] trains, U_r, V_r and W_res stay frozen,
    so a layer trains r numbers. ``alpha``/``rslora`` do not apply (σ carries the scale).
    """

    method: Literal["svfit"] = "svfit"
    changes_base: ClassVar[bool] = True


@register("svfit", SVFit, variant=TripletDelta)
def init_svfit(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any) -> dict[str, Variant]:
    def one(_name: str, i: int, W: torch.Tensor) -> Variant:
        return TripletDelta.from_factors(principal_triplets(W, config, i), train_vectors=False)

    return per_layer(weights, config.rank, one)
