"""Output-matching correction: the rank-r Ŵ minimising ‖W X − Ŵ X̃‖_F (X: the dense model's inputs to
the layer, X̃: the inputs once earlier layers are compressed), so each layer also undoes upstream error.

The unconstrained optimum is Ŵ* = W C G̃⁻¹ (C = X X̃ᵀ, G̃ = X̃ X̃ᵀ), and for any Ŵ
‖W X − Ŵ X̃‖² = ‖W X − Ŵ* X̃‖² + ‖(Ŵ* − Ŵ) S‖² with G̃ = S Sᵀ; the rank-r optimum is therefore the
truncated SVD of Ŵ* S = W C S⁻ᵀ mapped back by S⁻¹: SVD-LLM's whitened SVD (Wang et al. 2024)
applied to Ŵ* instead of W. With X̃ = X it reduces to SVD-LLM exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankwise.calib.matching import MatchingStats
from rankwise.linalg.factors import Factors
from rankwise.linalg.whiten import Whitener


def is_singular(stats: MatchingStats) -> bool:
    """Fewer tokens than input channels: G̃ has a null space, and Ŵ* is not determined there."""
    return stats.gram.count < stats.gram.dim


@dataclass(frozen=True)
class CorrectionSystem:
    """What the layers of one input group (q/k/v, gate/up) share, computed once per group: the
    whitening of G̃, the right-hand side R [n, n] and, with a ridge, the Cholesky factor [n, n] of
    G̃ + D. Then Ŵ*_δ = W R (G̃ + D)⁻¹, or Ŵ* S = W R S⁻ᵀ without a ridge."""

    whitener: Whitener
    rhs: torch.Tensor
    chol: torch.Tensor | None


def correction_system(stats: MatchingStats, clamp: float, ridge: float = 0.0) -> CorrectionSystem:
    """The shared part of `corrected_factors` for every layer fed the input ``stats`` describe."""
    wh = stats.gram.whitener(clamp)  # cached: q/k/v share it
    gram = stats.gram.gram
    if ridge <= 0.0:
        return CorrectionSystem(wh, stats.cross + (wh.S @ wh.S.mT - gram), None)
    diag = gram.diagonal()
    D = torch.diag(ridge * diag.clamp_min(clamp * float(diag.max().clamp_min(1e-300))))
    L, info = torch.linalg.cholesky_ex(gram + D)
    if int(info) != 0:  # G̃ + D is positive definite in exact arithmetic; rounding aside
        L = torch.linalg.cholesky(gram + D + wh.floor * torch.eye(gram.shape[0], dtype=gram.dtype))
    return CorrectionSystem(wh, stats.cross + D, L)


def corrected_factors(W: torch.Tensor, stats: MatchingStats, clamp: float, ridge: float = 0.0,
                      system: CorrectionSystem | None = None) -> Factors:
    """All min(m, n) triplets of the whitened Ŵ*, W [m, n]; Σ_{i>r} S_i² is the error above the optimum.

    ``ridge`` = δ estimates the target with the penalty δ Σ_j G̃_jj ‖(Ŵ − W)_{:, j}‖², each input channel
    pulled towards the dense weight in proportion to its own energy: Ŵ*_δ = W (C + δD)(G̃ + δD)⁻¹ with
    D = diag(G̃), pseudo-tokens x = x̃ along every axis. Without it, W C G̃⁻¹ fits the calibration noise
    once the tokens per input channel are few (down_proj: n = 1536). The truncation still measures error
    on the compressed model's own inputs (whitening with G̃), so δ → ∞ gives sequential mode's factors
    (SVD-LLM with X̃) and δ = 0 the exact correction.

    With δ = 0, the whitening ridge ``clamp``·λ_max·I added to G̃ (as in plain whitening) is added to C
    as well, for the same reason: along directions the calibration barely saw, Ŵ* stays W instead of
    being pulled towards zero. ``system``: `correction_system` of the same stats, clamp and ridge, when
    several layers share it.
    """
    sys_ = system if system is not None else correction_system(stats, clamp, ridge)
    wh = sys_.whitener
    Wd = W.detach().to(torch.float64)
    if sys_.chol is not None:
        # Ŵ*_δ = W R (G̃ + D)⁻¹, i.e. solve (G̃ + D) Ŵ*ᵀ = Rᵀ Wᵀ (G̃ + D is symmetric)
        target = torch.cholesky_solve(sys_.rhs.mT @ Wd.mT, sys_.chol).mT
        M = target @ wh.S
    else:
        M = Wd @ sys_.rhs @ wh.S_inv.mT
    U, S, Vh = torch.linalg.svd(M.to(torch.float32), full_matrices=False)
    return Factors(U, S, wh.times_inverse(Vh.to(torch.float64)).to(torch.float32))


def matching_error(W: torch.Tensor, W_hat: torch.Tensor, stats: MatchingStats, dense_gram: torch.Tensor) -> float:
    """‖W X − Ŵ X̃‖² / ‖W X‖² from the statistics; ``dense_gram`` [n, n] = X Xᵀ on the same windows.

    fp32 products: the error is a few per cent of the energy or more, far above fp32's resolution.
    """
    W32, H32 = W.float(), W_hat.float()
    energy = float(((W32 @ dense_gram.float()) * W32).sum(dtype=torch.float64))
    cross = float(((W32 @ stats.cross.float()) * H32).sum(dtype=torch.float64))
    tilde = float(((H32 @ stats.gram.gram.float()) * H32).sum(dtype=torch.float64))
    return max(energy - 2.0 * cross + tilde, 0.0) / max(energy, 1e-300)
