"""KnOTS (Stoica et al., ICLR 2025): merge task updates in one shared basis, then TIES on the coefficients.

The task updates of a matrix are aligned first: the SVD of their side-by-side concatenation
[Δ₁ … Δ_T] = U S [V₁ᵀ … V_Tᵀ] gives one basis U S shared by all tasks, in which task i is the
coefficient block Vᵢᵀ. TIES (trim each Vᵢ to ``density`` by magnitude, elect signs, disjoint mean)
runs on those blocks, and the merged update is U S V_mergedᵀ. Adapters gain most: their updates are
low-rank, so U S has at most Σ rᵢ columns. Tensors that are not matrices go through plain TIES.
"""

from __future__ import annotations

from typing import Any

import torch

from rankwise.merge.methods.base import MergeMethod, Param, register
from rankwise.merge.methods.task_arithmetic import Sparsifier, combine_deltas, delta_params
from rankwise.merge.methods.ties import ties, trim_magnitude


def shared_basis(B_list: list[torch.Tensor], A_list: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """For updates Δᵢ = Bᵢ Aᵢ (Bᵢ [m, rᵢ], Aᵢ [rᵢ, n]): (U S [m, k], [Vᵢᵀ [k, n]]) with Δᵢ = U S Vᵢᵀ.

    Computed without forming the m × Tn concatenation: QR of [B₁ … B_T], then the SVD of the small
    core R · blockdiag(A₁ … A_T).
    """
    Q, R = torch.linalg.qr(torch.cat(B_list, dim=1))
    blocks, at = [], 0
    for B, A in zip(B_list, A_list, strict=True):
        blocks.append(R[:, at : at + B.shape[1]] @ A)
        at += B.shape[1]
    u, s, vh = torch.linalg.svd(torch.cat(blocks, dim=1), full_matrices=False)
    keep = s > s[0] * 1e-6 if s.numel() and float(s[0]) > 0 else s > 0  # drop numerically null directions
    US = Q @ (u[:, keep] * s[keep])
    n = A_list[0].shape[1]
    return US, [vh[keep, i * n : (i + 1) * n] for i in range(len(A_list))]


def knots_factors(B_list: list[torch.Tensor], A_list: list[torch.Tensor], models: list[dict[str, Any]],
                  shared: dict[str, Any], generator: torch.Generator,
                  sparsify: Sparsifier = trim_magnitude) -> tuple[torch.Tensor, torch.Tensor]:
    """(B [m, k], A [k, n]) of the TIES merge (``sparsify`` each block, elect signs, disjoint mean, λ) of
    the updates Bᵢ Aᵢ in their shared basis."""
    US, coefficients = shared_basis(B_list, A_list)
    zero = torch.zeros_like(coefficients[0])
    merged = combine_deltas(zero, coefficients, models, shared, generator, sparsify, elect=True)
    return US, merged


def knots(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
          shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    assert base is not None
    if base.ndim != 2:
        return ties(base, tensors, models, shared, generator)
    eye = torch.eye(base.shape[1])
    deltas = [t.sub_(base) for t in tensors]
    B, A = knots_factors(deltas, [eye] * len(deltas), models, shared, generator)
    return base.add_(B @ A)


register(MergeMethod(
    "knots", knots,
    delta_params(True, Param("density", "model", float, 1.0, check="density"), weight_check="nonneg"),
    elementwise=False, summary="TIES in the shared SVD basis of the task updates (KnOTS); suited to LoRA adapters",
))
