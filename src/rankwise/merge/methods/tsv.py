"""TSV-M, Task Singular Vectors merging (Gargiulo et al., CVPR 2025).

Per matrix: keep the top k = ⌊rank_fraction · min(m, n)⌋ singular triplets of each weighted task
matrix wᵢ τᵢ (rank_fraction defaults to 1/T for T tasks, so the kept parts fill the space), stack the
singular vectors side by side, decorrelate the stacked bases (replace each by its nearest matrix with
orthonormal columns), and reassemble with the kept singular values: U⊥ diag(σ) V⊥ᵀ, scaled by λ.
Tensors that are not matrices take the mean task vector.
"""

from __future__ import annotations

from typing import Any

import torch

from rankwise.linalg import svd
from rankwise.merge.methods.base import MergeMethod, Param, register
from rankwise.merge.methods.subspace import mean_task_vector, orthonormalize


def tsv(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
        shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    assert base is not None
    scale = float(shared["lambda"])
    if base.ndim != 2:
        return mean_task_vector(base, tensors, models, scale)
    fraction = shared["rank_fraction"] or 1.0 / len(tensors)
    k = max(1, int(fraction * min(base.shape)))
    Us, Ss, Vs = [], [], []
    for t, m in zip(tensors, models, strict=True):
        f = svd(t.sub_(base).mul_(float(m["weight"])), k)
        Us.append(f.U)
        Ss.append(f.S)
        Vs.append(f.Vh)
    U = orthonormalize(torch.cat(Us, dim=1)) if sum(u.shape[1] for u in Us) <= base.shape[0] else torch.cat(Us, 1)
    Vh = torch.cat(Vs, dim=0)
    V = orthonormalize(Vh.T) if Vh.shape[0] <= base.shape[1] else Vh.T
    merged = (U * torch.cat(Ss)) @ V.T
    return base.add_(merged, alpha=scale)


register(MergeMethod(
    "tsv", tsv,
    (Param("weight", "model", float, 1.0), Param("lambda", "shared", float, 1.0),
     Param("rank_fraction", "shared", float, None, check="density")),
    elementwise=False, summary="task singular vectors: truncate, decorrelate, reassemble (TSV-M)",
))
