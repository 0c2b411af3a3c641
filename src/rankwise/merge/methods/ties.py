"""TIES (Yadav et al. 2023): trim each task vector to its largest ``density`` fraction by magnitude,
elect a sign per entry, and average the entries that agree with it."""

from __future__ import annotations

from typing import Any

import torch

from rankwise.merge.methods.base import MergeMethod, Param, register
from rankwise.merge.methods.task_arithmetic import combine_deltas, delta_params


def trim_magnitude(delta: torch.Tensor, density: float, generator: torch.Generator, rescale: bool) -> torch.Tensor:
    """Keep the k = max(1, ⌊density·n⌋) entries of largest magnitude, zero the rest (in place).

    Equal magnitudes at the cut are broken as mergekit breaks them (its descending argsort), so both
    tools keep the same k entries; elsewhere a selection (kthvalue) replaces the full sort.
    """
    n = delta.numel()
    if density >= 1.0 or n == 0:
        return delta
    k = max(1, int(density * n))
    if int(torch.count_nonzero(delta)) <= k:
        return delta  # every nonzero entry survives: trimming zeros changes nothing
    magnitude = delta.abs().reshape(-1)
    # The k-th largest magnitude is the (n − k + 1)-th smallest.
    threshold = torch.kthvalue(magnitude, n - k + 1).values
    keep = magnitude >= threshold
    if int(keep.sum()) != k:  # ties at the cut
        keep = torch.zeros_like(keep)
        keep[torch.argsort(magnitude, descending=True)[:k]] = True
    del magnitude
    keep = keep.view_as(delta)
    if rescale:
        before = float(delta.abs().sum())
        delta.mul_(keep)
        after = float(delta.abs().sum())
        return delta.mul_(before / after) if before > 1e-7 and after > 1e-7 else delta
    return delta.mul_(keep)


def ties(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
         shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    assert base is not None
    return combine_deltas(base, tensors, models, shared, generator, trim_magnitude, elect=True)


register(MergeMethod(
    "ties", ties,
    delta_params(True, Param("density", "model", float, 1.0, check="density"), Param("rescale", "shared", bool, False),
                 weight_check="nonneg"),
    summary="trim by magnitude, elect signs, disjoint mean",
))
