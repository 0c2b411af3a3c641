"""Task arithmetic (Ilharco et al. 2023): add weighted task vectors τᵢ = Xᵢ − X_base to the base.

`combine_deltas` is the shared core of the task-vector family (TIES, DARE): optional sparsification of
each τᵢ, weighting, optional sign election, and the (normalised, λ-scaled) sum, in mergekit's order of
operations so the results agree with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rankwise.merge.methods.base import MergeMethod, Param, register

#: ``sparsify(delta, density, generator, rescale) -> delta`` (may work in place).
Sparsifier = Callable[[torch.Tensor, float, torch.Generator, bool], torch.Tensor]


BLOCK = 2**20  # elements per block of the sign election: its scratch stays small whatever the tensor


def elect_into(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], normalize: bool,
               scale: float) -> torch.Tensor:
    """TIES sign election on weighted deltas, added to ``base`` in place, block by block.

    Per entry: the majority sign is that of Σ wᵢτᵢ (≥ 0 counts as +); the entries τᵢ that agree with
    it are summed and, when ``normalize``, divided by Σ wᵢ over them (1 where none agree); × ``scale``.
    """
    flat_base = base.view(-1)
    flat = [d.view(-1) for d in deltas]
    for start in range(0, flat_base.numel(), BLOCK):
        block = [d[start : start + BLOCK] for d in flat]
        positive = torch.stack(block).sum(0) >= 0
        mixed = torch.zeros_like(block[0])
        divisor = torch.zeros_like(block[0]) if normalize else None
        for d, w in zip(block, weights, strict=True):
            agree = torch.where(positive, d > 0, d < 0)
            mixed.add_(d * agree)
            if divisor is not None:
                divisor.add_(agree, alpha=w)
        if divisor is not None:
            divisor[divisor == 0] = 1.0
            mixed.div_(divisor)
        flat_base[start : start + BLOCK].add_(mixed, alpha=scale)
    return base


def combine_deltas(base: torch.Tensor, tensors: list[torch.Tensor], models: list[dict[str, Any]],
                   shared: dict[str, Any], generator: torch.Generator, sparsify: Sparsifier | None,
                   elect: bool) -> torch.Tensor:
    """base + λ · (Σ wᵢ · sparsify(τᵢ)) [/ Σ wᵢ] — the sum over agreeing entries when ``elect``.

    Reuses the storage of ``tensors`` and ``base``.
    """
    weights = [float(m["weight"]) for m in models]
    deltas = []
    for t, m, w in zip(tensors, models, weights, strict=True):
        d = t.sub_(base)
        if sparsify is not None:
            d = sparsify(d, float(m.get("density", 1.0)), generator, bool(shared.get("rescale", False)))
        deltas.append(d.mul_(w))
    scale = float(shared["lambda"])
    if elect:
        return elect_into(base, deltas, weights, bool(shared["normalize"]), scale)
    mixed = deltas[0]
    for d in deltas[1:]:
        mixed.add_(d)
    total = sum(weights)
    if shared["normalize"]:
        mixed.div_(1.0 if abs(total) < 1e-8 else total)
    if scale != 1.0:
        mixed.mul_(scale)
    return base.add_(mixed)


def task_arithmetic(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
                    shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """X_base + λ Σ wᵢ (Xᵢ − X_base) (divided by Σ wᵢ when ``normalize``)."""
    assert base is not None
    return combine_deltas(base, tensors, models, shared, generator, None, elect=False)


def delta_params(normalize: bool, *extra: Param, weight_check: str = "finite") -> tuple[Param, ...]:
    """The parameters of the task-vector family (mergekit's names and defaults)."""
    return (Param("weight", "model", required=True, check=weight_check),  # type: ignore[arg-type]
            Param("normalize", "shared", bool, normalize), Param("lambda", "shared", float, 1.0),
            Param("int8_mask", "shared", bool, False), *extra)


register(MergeMethod("task_arithmetic", task_arithmetic, delta_params(False),
                     summary="base + weighted sum of task vectors"))
