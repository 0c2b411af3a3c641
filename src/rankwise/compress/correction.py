"""Output-matching correction: the rank-r Ŵ minimising ‖W X − Ŵ X̃‖_F (X: the dense model's inputs to
the layer, X̃: the inputs once earlier layers are compressed), so each layer also undoes upstream error.

The unconstrained optimum is Ŵ* = W C G̃⁻¹ (C = X X̃ᵀ, G̃ = X̃ X̃ᵀ), and for any Ŵ
‖W X − Ŵ X̃‖² = ‖W X − Ŵ* X̃‖² + ‖(Ŵ* − Ŵ) S‖² with G̃ = S Sᵀ; the rank-r optimum is therefore the
truncated SVD of Ŵ* S = W C S⁻ᵀ mapped back by S⁻¹: SVD-LLM's whitened SVD (Wang et al. 2024)
applied to Ŵ* instead of W. With X̃ = X it reduces to SVD-LLM exactly.
"""

from __future__ import annotations

import torch

from rankwise.calib.matching import MatchingStats
from rankwise.linalg.factors import Factors


def is_singular(stats: MatchingStats) -> bool:
    """Fewer tokens than input channels: G̃ has a null space, and Ŵ* is not determined there."""
    return stats.gram.count < stats.gram.dim


def corrected_factors(W: torch.Tensor, stats: MatchingStats, clamp: float, ridge: float = 0.0) -> Factors:
    """All min(m, n) triplets of the whitened Ŵ*, W [m, n]; Σ_{i>r} S_i² is the error above the optimum.

    ``ridge`` = δ estimates the target with the penalty δ Σ_j G̃_jj ‖(Ŵ − W)_{:, j}‖², each input channel
    pulled towards the dense weight in proportion to its own energy: Ŵ*_δ = W (C + δD)(G̃ + δD)⁻¹ with
    D = diag(G̃), pseudo-tokens x = x̃ along every axis. Without it, W C G̃⁻¹ fits the calibration noise
    once the tokens per input channel are few (down_proj: n = 1536). The truncation still measures error
    on the compressed model's own inputs (whitening with G̃), so δ → ∞ gives sequential mode's factors
    (SVD-LLM with X̃) and δ = 0 the exact correction.

    With δ = 0, the whitening ridge ``clamp``·λ_max·I added to G̃ (as in plain whitening) is added to C
    as well, for the same reason: along directions the calibration barely saw, Ŵ* stays W instead of
    being pulled towards zero.
    """
    wh = stats.gram.whitener(clamp)  # cached: q/k/v share it
    Wd = W.detach().to(torch.float64)
    if ridge > 0.0:
        gram = stats.gram.gram
        diag = gram.diagonal()
        D = torch.diag(ridge * diag.clamp_min(clamp * float(diag.max().clamp_min(1e-300))))
        # Ŵ*_δ = W (C + D)(G̃ + D)⁻¹, i.e. solve (G̃ + D) Ŵ*ᵀ = (C + D)ᵀ Wᵀ (G̃ + D is symmetric)
        target = torch.linalg.solve(gram + D, (stats.cross + D).mT @ Wd.mT).mT
        M = target @ wh.S
    else:
        raised = wh.S @ wh.S.mT - stats.gram.gram
        M = Wd @ (stats.cross + raised) @ wh.S_inv.mT
    U, S, Vh = torch.linalg.svd(M.to(torch.float32), full_matrices=False)
    return Factors(U, S, (Vh.to(torch.float64) @ wh.S_inv).to(torch.float32))


def matching_error(W: torch.Tensor, W_hat: torch.Tensor, stats: MatchingStats, energy: float) -> float:
    """‖W X − Ŵ X̃‖² / ‖W X‖² from the statistics; ``energy`` = ‖W X‖² measured on the dense outputs."""
    Wd, Hd = W.double(), W_hat.double()
    cross = float(((Wd @ stats.cross) * Hd).sum())
    tilde = float(((Hd @ stats.gram.gram) * Hd).sum())
    return max(energy - 2.0 * cross + tilde, 0.0) / max(energy, 1e-300)
