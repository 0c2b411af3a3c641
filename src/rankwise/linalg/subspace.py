"""Comparing the singular subspaces of a fine-tuned matrix and its base.

- overlap: ‖U_aᵀ U_b‖²_F / k for the top-k left singular vectors U_a, U_b [m, k]; the mean squared
  cosine of the principal angles, 1 for identical subspaces, ≈ k/m for random ones.
- intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of
  Equivalence"): among the top-k left singular vectors of W_ft, those whose largest |cosine| with
  any left singular vector of W_base is below ``threshold``.
"""

from __future__ import annotations

import torch


def subspace_overlap(U_a: torch.Tensor, U_b: torch.Tensor, k: int) -> float:
    """Overlap in [0, 1] of the spans of the first ``k`` columns of U_a [m, ≥k] and U_b [m, ≥k]."""
    if U_a.shape[0] != U_b.shape[0]:
        raise ValueError(f"bases live in different spaces: {tuple(U_a.shape)} vs {tuple(U_b.shape)}")
    k = min(k, U_a.shape[1], U_b.shape[1])
    if k <= 0:
        return 0.0
    C = U_a[:, :k].double().mT @ U_b[:, :k].double()  # [k, k]
    return min(1.0, float(C.square().sum()) / k)  # round-off of fp32 bases can reach 1 + 1e-7


def intruder_dimensions(U_ft: torch.Tensor, U_base: torch.Tensor, k: int = 10, threshold: float = 0.5) -> int:
    """Number of the top-``k`` columns of U_ft [m, r] with max_j |⟨u_i, U_base[:, j]⟩| < ``threshold``."""
    if U_ft.shape[0] != U_base.shape[0]:
        raise ValueError(f"bases live in different spaces: {tuple(U_ft.shape)} vs {tuple(U_base.shape)}")
    k = min(k, U_ft.shape[1])
    best = (U_ft[:, :k].double().mT @ U_base.double()).abs().amax(dim=1)  # [k]
    return int((best < threshold).sum())
