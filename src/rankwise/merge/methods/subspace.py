"""Shared maths of the SVD-based merges: the nearest matrix with orthonormal columns, and the
fallback for tensors that are not matrices."""

from __future__ import annotations

from typing import Any

import torch


def orthonormalize(M: torch.Tensor) -> torch.Tensor:
    """The matrix with orthonormal columns nearest to ``M`` [m, k] in Frobenius norm (k ≤ m): P Qᵀ from
    M = P Σ Qᵀ (orthogonal Procrustes). It keeps the span and rotates the columns apart as little as possible."""
    P, _, Qh = torch.linalg.svd(M, full_matrices=False)
    nearest: torch.Tensor = P @ Qh
    return nearest


def mean_task_vector(base: torch.Tensor, tensors: list[torch.Tensor], models: list[dict[str, Any]],
                     scale: float) -> torch.Tensor:
    """base + scale · mean of wᵢ τᵢ: how the SVD-based merges treat vectors and other non-matrix tensors."""
    total = tensors[0].sub_(base).mul_(float(models[0]["weight"]))
    for t, m in zip(tensors[1:], models[1:], strict=True):
        total.add_(t.sub_(base), alpha=float(m["weight"]))
    return base.add_(total, alpha=scale / len(tensors))


def numerical_rank(S: torch.Tensor, shape: tuple[int, ...]) -> int:
    """How many of the descending singular values ``S`` of an [m, n] matrix stand above rounding noise:
    S_i > S_0 · max(m, n) · ε of the dtype (numpy's ``matrix_rank`` rule), at least 1.

    Task vectors of LoRA fine-tunes have rank ≤ r (8 or 16) out of min(m, n) = 576; their other
    singular values are the rounding noise of W' − W, not directions the task moved.
    """
    if S.numel() == 0 or float(S[0]) == 0.0:
        return max(1, S.numel())
    tolerance = float(S[0]) * max(shape) * torch.finfo(S.dtype).eps
    return max(1, int((tolerance < S).sum()))
