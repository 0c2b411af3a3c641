"""CorDA (Yang et al. 2024): context-oriented SVD of W·C, with C the input covariance of calibration data."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from rankwise.adapters._common import per_layer
from rankwise.adapters.config import AdapterConfig, AdapterInit, CalibrationData, register
from rankwise.linalg import adapter_factors, covariance_factors


class CorDA(AdapterConfig):
    """CorDA, "Context-Oriented Decomposition Adaptation of Large Language Models" (Yang et al., 2024).

    ``mode="ipm"`` (instruction-previewed) trains the r triplets of W·C that matter most on the
    calibration context; ``mode="kpm"`` (knowledge-preserved) trains the r that matter least and
    freezes the rest. Either way W_res + s·B·A = W at init.
    """

    method: Literal["corda"] = "corda"
    mode: Literal["ipm", "kpm"] = Field(default="ipm", description="'ipm': train the largest r; 'kpm': the smallest r")
    calibration: CalibrationData = Field(default=CalibrationData())
    clamp: float = Field(default=1e-6, gt=0, lt=1, description="eigenvalue floor of C, relative to its largest")
    changes_base: ClassVar[bool] = True
    needs_calibration: ClassVar[bool] = True


@register("corda", CorDA)
def init_corda(
    weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any
) -> dict[str, AdapterInit]:
    def one(name: str, _i: int, W: torch.Tensor) -> AdapterInit:
        full = covariance_factors(W, grams[name], config.clamp)
        part = full.truncate(config.rank) if config.mode == "ipm" else full.tail(full.rank - config.rank)
        B, A = adapter_factors(part, config.scaling())
        return AdapterInit(A=A, B=B)

    return per_layer(weights, config.rank, one)
