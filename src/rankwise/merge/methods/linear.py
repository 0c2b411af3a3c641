"""Linear: the weighted average of the models' tensors (model soups; Wortsman et al. 2022)."""

from __future__ import annotations

from typing import Any

import torch

from rankwise.errors import RankwiseError
from rankwise.merge.methods.base import MergeMethod, Param, register


def linear(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
           shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Σ wᵢ Xᵢ (divided by Σ wᵢ when ``normalize``); may reuse the storage of ``tensors``."""
    weights = [float(m["weight"]) for m in models]
    total = sum(weights)
    if shared["normalize"] and total == 0.0:
        raise RankwiseError("linear: the weights sum to 0; give at least one positive weight")
    out = tensors[0].mul_(weights[0])
    for t, w in zip(tensors[1:], weights[1:], strict=True):
        out.add_(t, alpha=w)
    return out.div_(total) if shared["normalize"] else out


register(MergeMethod(
    "linear", linear,
    (Param("weight", "model", required=True, check="nonneg"), Param("normalize", "shared", bool, True)),
    base="none", summary="weighted average of the models",
))
