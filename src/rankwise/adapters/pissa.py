"""PiSSA (Meng et al. 2024): the principal r singular triplets train, the residual stays frozen."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from rankwise.adapters._common import SVDInitConfig, per_layer
from rankwise.adapters.config import AdapterInit, register
from rankwise.linalg import adapter_factors, svd


class PiSSA(SVDInitConfig):
    """PiSSA, "Principal Singular values and Singular vectors Adaptation of LLMs" (Meng et al., 2024).

    B·A starts as the rank-r principal part of W (singular values split evenly) and
    W_res = W − s·B·A is frozen, so the output equals the base model's at init.
    """

    method: Literal["pissa"] = "pissa"
    changes_base: ClassVar[bool] = True


@register("pissa", PiSSA)
def init_pissa(
    weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any
) -> dict[str, AdapterInit]:
    def one(_name: str, i: int, W: torch.Tensor) -> AdapterInit:
        parts = svd(W, config.rank, config.svd, oversample=config.oversample, niter=config.niter,
                    seed=config.seed + i)
        B, A = adapter_factors(parts, config.scaling())
        return AdapterInit(A=A, B=B)

    return per_layer(weights, config.rank, one)
