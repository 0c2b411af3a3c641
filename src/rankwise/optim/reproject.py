"""Carrying Adam's moments from one projection basis into the next when the subspace is refreshed.

The moments live in the coordinates R = P_oldᵀ g of the old basis P_old [d, r]. The full-size vector
they stand for is recovered by least squares, g = P_old (P_oldᵀ P_old)⁻¹ R, and its new coordinates are
P_newᵀ g, so M_new = C M_old with C = P_newᵀ P_old (P_oldᵀ P_old)⁻¹ [r_new, r_old]; for orthonormal
bases that is the rotation C = P_newᵀ P_old. Then P_new M_new = P_new P_newᵀ P_old M_old, which is exactly
the old momentum P_old M_old whenever span(P_new) ⊇ span(P_old), and otherwise the part of it the new
subspace can represent.

The second moment V holds E[R²] element-wise: Adam tracks no covariances between coordinates. A new
coordinate is R'_i = Σ_l C_il R_l, so E[R'_i²] = Σ_l C_il² E[R_l²] + Σ_{l≠l'} C_il C_il' E[R_l R_l'].
The cross terms are exactly what Adam does not keep; taking them as zero (the coordinates treated as
uncorrelated, which Adam's diagonal preconditioner already assumes) gives V_new = (C ∘ C) V_old: non-
negative by construction, exact when C is a signed permutation or selection (a DCT re-selection, an
SVD basis that kept its directions), and equal to V_old when the subspace did not move.
"""

from __future__ import annotations

import torch


def change_of_basis(P_old: torch.Tensor, P_new: torch.Tensor, orthonormal: bool = True) -> torch.Tensor:
    """C [r_new, r_old] mapping coordinates Pᵀ g in ``P_old`` [d, r_old] to those in ``P_new`` [d, r_new]:
    C = P_newᵀ P_old (P_oldᵀ P_old)⁻¹ (= P_newᵀ P_old for orthonormal bases)."""
    C = P_new.mT @ P_old
    if not orthonormal:
        # A solve, not an inverse: a Gaussian P's Gram is well conditioned but not the identity.
        C = torch.linalg.solve(P_old.mT @ P_old, C.mT).mT
    return C


def reproject_moments(exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, C: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(C M, (C∘C) V) for moments ``exp_avg``, ``exp_avg_sq`` [r_old, k] and C [r_new, r_old]."""
    return C @ exp_avg, (C * C) @ exp_avg_sq
