"""FARMS: the ESD of fixed-aspect-ratio submatrices, removing the aspect-ratio bias of α.

Hu et al. 2025, "Eigenspectrum Analysis of Neural Networks without Aspect Ratio Bias" (FARMS):
the ESD of an m×n matrix depends on its aspect ratio, so α of a 1536×576 matrix and of a 576×576
one are not comparable. FARMS cuts W into submatrices of one fixed aspect ratio, pools (averages)
their ESDs, and fits the power law on the pooled ESD.

Here: with k = min(m, n) the short side and L the long side, each submatrix is k × w with
w = min(L, round(k · aspect_ratio)); ``ceil(L / w)`` windows (at most ``max_windows``) sit at evenly
spaced offsets along the long side, overlapping where needed so that together they cover it.
"""

from __future__ import annotations

import math

import torch


def farms_eigenvalues(
    W: torch.Tensor, aspect_ratio: float = 1.0, max_windows: int | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Pooled eigenvalues of S Sᵀ over the fixed-aspect-ratio submatrices S [k, w] of ``W`` [m, n].

    Grams and eigenvalues are computed in ``dtype``. Returns fp64 [windows · k], ascending within
    each window. A matrix already of the target
    aspect ratio is one window: its ordinary ESD.
    """
    if W.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(W.shape)}")
    if aspect_ratio < 1.0:
        raise ValueError(f"aspect_ratio is long side / short side and must be >= 1, got {aspect_ratio}")
    A = W if W.shape[0] <= W.shape[1] else W.mT  # [k, L], k <= L
    k, L = A.shape
    w = min(L, max(k, round(k * aspect_ratio)))
    count = math.ceil(L / w)
    if max_windows is not None:
        count = max(1, min(count, max_windows))
    starts = [round(i * (L - w) / (count - 1)) for i in range(count)] if count > 1 else [0]
    parts = []
    for start in starts:
        S = A[:, start : start + w].to(dtype)  # [k, w]
        parts.append(torch.linalg.eigvalsh(S @ S.mT).to(torch.float64).clamp_min(0.0))
    return torch.cat(parts)
