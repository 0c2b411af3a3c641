"""DARE (Yu et al. 2024): drop each task-vector entry with probability 1 − density (seeded) and rescale
the survivors by 1/density; ``dare_linear`` then adds them, ``dare_ties`` elects signs as TIES does."""

from __future__ import annotations

from typing import Any

import torch

from rankwise.merge.methods.base import MergeMethod, Param, register
from rankwise.merge.methods.task_arithmetic import combine_deltas, delta_params


def drop_random(delta: torch.Tensor, density: float, generator: torch.Generator, rescale: bool) -> torch.Tensor:
    """Zero each entry with probability 1 − density (in place); survivors × 1/density when ``rescale``."""
    if density >= 1.0:
        return delta
    keep = torch.rand(delta.shape, generator=generator) < density
    delta.mul_(keep)
    return delta.div_(density) if rescale else delta


def dare_linear(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
                shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    assert base is not None
    return combine_deltas(base, tensors, models, shared, generator, drop_random, elect=False)


def dare_ties(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
              shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    assert base is not None
    return combine_deltas(base, tensors, models, shared, generator, drop_random, elect=True)


def _params(weight_check: str) -> tuple[Param, ...]:
    return delta_params(False, Param("density", "model", float, 1.0, check="density"),
                        Param("rescale", "shared", bool, True), weight_check=weight_check)


register(MergeMethod("dare_linear", dare_linear, _params("finite"),
                     summary="random drop + rescale, then task arithmetic"))
register(MergeMethod("dare_ties", dare_ties, _params("nonneg"), summary="random drop + rescale, then TIES"))
