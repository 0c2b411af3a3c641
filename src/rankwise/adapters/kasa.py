"""KaSA (Wang et al. 2024): truncate W's minor singular components and learn ΔW = ΔU·diag(Δσ)·ΔVᵀ in SVD form."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from rankwise.adapters._common import per_layer
from rankwise.adapters.config import AdapterConfig, register
from rankwise.adapters.triplets import TripletDelta
from rankwise.adapters.variant import Variant
from rankwise.linalg import svd


class KaSA(AdapterConfig):
    """KaSA, "Knowledge-Aware Singular-Value Adaptation of Large Language Models" (Wang et al., 2024).

    The r minor singular components of W are truncated from the frozen weight (W_world = W − U_min Σ_min
    V_minᵀ) and the update ΔW = ΔU·diag(Δσ)·ΔVᵀ trains with the regulariser ``orth_weight`` ·
    (‖ΔUᵀΔU − I‖²_F + ‖ΔVᵀΔV − I‖²_F) + ``sigma_weight`` · ‖Δσ‖². The paper starts ΔW at zero, which
    changes the outputs by the truncated part; here ΔU, Δσ, ΔV start as the truncated triplets, so the
    outputs are the base model's at init and the factors start orthonormal. Needs the smallest singular
    triplets, so the SVD is exact. ``alpha``/``rslora`` do not apply.
    """

    method: Literal["kasa"] = "kasa"
    orth_weight: float = Field(default=1e-3, ge=0, description="weight of the orthogonality regulariser")
    sigma_weight: float = Field(default=0.0, ge=0, description="weight of the L2 penalty on Δσ")
    changes_base: ClassVar[bool] = True


@register("kasa", KaSA, variant=TripletDelta)
def init_kasa(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any) -> dict[str, Variant]:
    def one(_name: str, _i: int, W: torch.Tensor) -> Variant:
        full = svd(W, method="exact")
        return TripletDelta.from_factors(full.tail(full.rank - config.rank), train_vectors=True,
                                         orth_weight=config.orth_weight, sigma_weight=config.sigma_weight)

    return per_layer(weights, config.rank, one)
