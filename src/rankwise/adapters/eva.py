"""EVA (Paischer et al. 2024): A from the top right-singular vectors of each layer's inputs, B = 0,
ranks redistributed across layers by explained variance."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from rankwise.adapters._common import check_rank
from rankwise.adapters.config import AdapterConfig, AdapterInit, CalibrationData, register
from rankwise.linalg import eigen_directions


class EVA(AdapterConfig):
    """EVA, "One Initialization to Rule them All: Fine-tuning via Explained Variance Adaptation"
    (Paischer et al., 2024).

    The total budget is ``rank`` × (number of layers); each layer may take up to ``rho`` × ``rank``
    components, and the budget goes to the components with the largest explained-variance ratio.
    Layers that get no component are left unwrapped. B = 0, so the output equals the base's at init.
    The scaling stays alpha/rank for every layer whatever its final rank.
    """

    method: Literal["eva"] = "eva"
    rho: float = Field(default=2.0, ge=1.0, description="a layer may get at most rho × rank components")
    calibration: CalibrationData = Field(default=CalibrationData())
    needs_calibration: ClassVar[bool] = True


def allocate_by_variance(ratios: dict[str, torch.Tensor], budget: int, cap: dict[str, int]) -> dict[str, int]:
    """Give ``budget`` components to the largest explained-variance ratios, at most ``cap[name]`` per layer."""
    candidates = [(float(v), name, j) for name, r in ratios.items() for j, v in enumerate(r[: cap[name]].tolist())]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))  # deterministic tie-break
    ranks = dict.fromkeys(ratios, 0)
    for _, name, _ in candidates[:budget]:
        ranks[name] += 1
    return ranks


@register("eva", EVA)
def init_eva(
    weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any
) -> dict[str, AdapterInit]:
    ratios, directions, cap = {}, {}, {}
    for name, W in weights.items():
        check_rank(name, W, config.rank)
        ratios[name], directions[name] = eigen_directions(grams[name])
        cap[name] = min(int(config.rho * config.rank), min(W.shape) - 1)
    ranks = allocate_by_variance(ratios, config.rank * len(weights), cap)
    return {name: AdapterInit(A=directions[name][:k].clone(), B=torch.zeros(weights[name].shape[0], k))
            for name, k in ranks.items() if k > 0}
