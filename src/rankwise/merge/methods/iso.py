"""Iso-C and Iso-CTS, isotropic merging (Marczak et al., ICML 2025).

Iso-C: the summed task matrix Δ = Σ wᵢ τᵢ = U S Vᵀ gets a flat (isotropic) spectrum, every singular
value replaced by their mean σ̄: λ σ̄ U Vᵀ, so no direction of the common subspace dominates.
Iso-CTS: the top k = ⌊common_fraction · r⌋ directions of Δ form the common subspace; each task
contributes its top (r − k)/T directions of the part of wᵢτᵢ orthogonal to it; the stacked bases are
decorrelated (nearest orthonormal columns) and reassembled with the isotropic σ̄ of all kept values.
Tensors that are not matrices take the mean task vector.

Both flatten over the numerical rank of the summed task matrix, not all min(m, n) values: a sum of
LoRA task vectors has rank ≤ Σ rᵢ, and averaging its spectrum with hundreds of zeros would shrink
every real direction to a few per cent of its size (the merge then barely leaves the base) while
spreading that σ̄ over directions that are only rounding noise.
"""

from __future__ import annotations

from typing import Any

import torch

from rankwise.linalg import svd
from rankwise.linalg.factors import Factors
from rankwise.merge.methods.base import MergeMethod, Param, register
from rankwise.merge.methods.subspace import mean_task_vector, numerical_rank, orthonormalize


def _weighted_deltas(base: torch.Tensor, tensors: list[torch.Tensor],
                     models: list[dict[str, Any]]) -> list[torch.Tensor]:
    return [t.sub_(base).mul_(float(m["weight"])) for t, m in zip(tensors, models, strict=True)]


def _summed_svd(deltas: list[torch.Tensor]) -> tuple[Factors, int]:
    """The full SVD of Σ deltas [m, n] (the deltas are left as they are) and its numerical rank."""
    total = deltas[0].clone()
    for d in deltas[1:]:
        total.add_(d)
    f = svd(total)
    return f, numerical_rank(f.S, tuple(total.shape))


def iso_c(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
          shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    assert base is not None
    scale = float(shared["lambda"])
    if base.ndim != 2:
        return mean_task_vector(base, tensors, models, scale)
    f, r = _summed_svd(_weighted_deltas(base, tensors, models))
    return base.add_(f.U[:, :r] @ f.Vh[:r], alpha=scale * float(f.S[:r].mean()))


def iso_cts(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
            shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    assert base is not None
    scale = float(shared["lambda"])
    if base.ndim != 2:
        return mean_task_vector(base, tensors, models, scale)
    deltas = _weighted_deltas(base, tensors, models)
    summed, full = _summed_svd(deltas)  # full = min(m, n) for full fine-tunes
    k = max(1, min(full, int(float(shared["common_fraction"]) * full)))
    common = summed.truncate(k)
    per_task = (full - k) // len(deltas)
    Us, Ss, Vs = [common.U], [common.S], [common.Vh]
    if per_task > 0:
        for d in deltas:
            residual = d - common.U @ (common.U.T @ d)  # the part outside the common subspace
            f = svd(residual, per_task)
            Us.append(f.U)
            Ss.append(f.S)
            Vs.append(f.Vh)
    U, V = orthonormalize(torch.cat(Us, dim=1)), orthonormalize(torch.cat(Vs, dim=0).T)
    return base.add_(U @ V.T, alpha=scale * float(torch.cat(Ss).mean()))


register(MergeMethod(
    "iso_c", iso_c, (Param("weight", "model", float, 1.0), Param("lambda", "shared", float, 1.0)),
    elementwise=False, summary="isotropic spectrum of the summed task matrix (Iso-C)",
))
register(MergeMethod(
    "iso_cts", iso_cts,
    (Param("weight", "model", float, 1.0), Param("lambda", "shared", float, 1.0),
     Param("common_fraction", "shared", float, 0.8, check="density")),
    elementwise=False, summary="isotropic merge of a common and task-specific subspaces (Iso-CTS)",
))
