"""WeLore-style rank recommendation: one global threshold on normalised singular values.

Jaiswal et al. 2024, "From GaLore to WeLore: How Low-Rank Weights Non-uniformly Emerge from Low-Rank
Gradients": matrices whose singular values decay fast (heavy tail) can lose more rank. One global
threshold τ on σ_i / σ_1 is shared by every matrix; matrix j keeps r_j = #{i : σ_i / σ_1 > τ}, and τ is
found by bisection so that the parameters removed from all matrices together reach ``ratio``.
A rank-r factor pair of an m×n matrix stores r(m + n) numbers; a matrix whose r_j is at or above
mn/(m + n) stays dense (saves nothing).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _params(rank: int, m: int, n: int) -> int:
    return min(rank * (m + n), m * n)


def _ranks(normed: Mapping[str, torch.Tensor], tau: float) -> dict[str, int]:
    return {name: max(1, int((s > tau).sum())) for name, s in normed.items()}


def welore_ranks(
    spectra: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, int]], ratio: float = 0.5, iters: int = 60
) -> tuple[dict[str, int], float]:
    """Per-matrix recommended ranks and the global threshold τ.

    ``spectra[name]``: singular values [k] (descending) of the matrix of shape ``shapes[name]`` (m, n).
    ``ratio``: fraction of the matrices' parameters to remove, in [0, 1).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    normed = {}
    for name, s in spectra.items():
        top = float(s.max()) if s.numel() else 0.0
        normed[name] = s.double() / top if top > 0 else torch.zeros_like(s, dtype=torch.float64)
    dense = sum(m * n for m, n in shapes.values())
    budget = (1.0 - ratio) * dense

    def cost(tau: float) -> int:
        return sum(_params(r, *shapes[name]) for name, r in _ranks(normed, tau).items())

    lo, hi = 0.0, 1.0  # cost(lo) is the largest, cost(hi) the smallest
    if cost(lo) <= budget:
        return _ranks(normed, -1.0), 0.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if cost(mid) > budget:
            lo = mid
        else:
            hi = mid
    return _ranks(normed, hi), hi
