"""SORSA (Cao 2024): the principal U_r, Σ_r, V_r train with an orthonormality regulariser; the residual is frozen."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from rankwise.adapters._common import SVDInitConfig, per_layer, principal_triplets
from rankwise.adapters.config import register
from rankwise.adapters.triplets import TripletDelta
from rankwise.adapters.variant import Variant


class SORSA(SVDInitConfig):
    """SORSA, "Singular Values and Orthonormal Regularized Singular Vectors Adaptation of Large Language
    Models" (Cao, 2024).

    W = W_res + U_r·diag(Σ_r)·V_rᵀ from the top-r triplets; U_r, Σ_r, V_r train and the training loop adds
    ``orth_weight`` · (‖U_rᵀU_r − I‖²_F + ‖V_rᵀV_r − I‖²_F) to the loss. ``alpha``/``rslora`` do not apply.
    """

    method: Literal["sorsa"] = "sorsa"
    orth_weight: float = Field(default=4e-4, ge=0, description="weight γ of the orthonormality regulariser")
    changes_base: ClassVar[bool] = True


@register("sorsa", SORSA, variant=TripletDelta)
def init_sorsa(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any) -> dict[str, Variant]:
    def one(_name: str, i: int, W: torch.Tensor) -> Variant:
        return TripletDelta.from_factors(principal_triplets(W, config, i), train_vectors=True,
                                         orth_weight=config.orth_weight)

    return per_layer(weights, config.rank, one)
