"""Splitting a matrix into a frozen residual plus trainable low-rank factors (SVD-initialised adapters)."""

from __future__ import annotations

import torch

from rankwise.linalg.factors import Factors
from rankwise.linalg.svd import all_finite
from rankwise.linalg.whiten import DEFAULT_CLAMP


def adapter_factors(part: Factors, scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B [m, r], A [r, n])`` in fp32 with s·B·A = part.reconstruct() (s = ``scaling``).

    The singular values are split evenly between B and A, as in PiSSA.
    """
    if scaling <= 0:
        raise ValueError(f"scaling must be positive, got {scaling}")
    B, A = part.to_ab(scaling)
    B, A = B.contiguous(), A.contiguous()
    if not (all_finite(A) and all_finite(B)):  # then the residual is finite if W is
        raise ValueError("adapter split produced NaN or inf values")
    return B, A


def subtract_lowrank(W: torch.Tensor, B: torch.Tensor, A: torch.Tensor, scaling: float) -> torch.Tensor:
    """W − s·B·A in fp32 (``W`` [m, n], ``B`` [m, r], ``A`` [r, n]); the one formula for residuals, so that
    rebuilding a residual from saved factors gives the same bits as the init did."""
    return torch.addmm(W.detach().to(torch.float32), B, A, alpha=-scaling)


def covariance_factors(W: torch.Tensor, cov: torch.Tensor, clamp: float = DEFAULT_CLAMP) -> Factors:
    """Full SVD of W·C mapped back by C⁻¹ (CorDA, Yang et al. 2024): W = U diag(S) (Vh C⁻¹).

    ``W`` [m, n], ``cov`` [n, n] the (mean) input covariance E[x xᵀ]. C⁻¹ comes from an eigendecomposition
    with eigenvalues clamped at ``clamp · λ_max`` (never a bare inverse), so the factors always reconstruct
    W·C·C⁻¹ ≈ W. The triplets are ordered by their importance to the layer's outputs on that context.
    """
    m, n = W.shape
    if cov.shape != (n, n):
        raise ValueError(f"covariance of shape {tuple(cov.shape)} does not match a {m}x{n} weight")
    C = cov.to(torch.float64)
    C = 0.5 * (C + C.mT)
    evals, Q = torch.linalg.eigh(C)
    top = float(evals.max().clamp_min(0.0))
    if top == 0.0:
        C = torch.eye(n, dtype=torch.float64)
        evals, Q = torch.ones(n, dtype=torch.float64), C
    floor = clamp * float(evals.max())
    lam = evals.clamp_min(floor)
    C = (Q * lam) @ Q.mT
    C_inv = (Q / lam) @ Q.mT
    M = (W.detach().to(torch.float64) @ C).to(torch.float32)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    Vh_back = (Vh.to(torch.float64) @ C_inv).to(torch.float32)
    return Factors(U, S, Vh_back)


def eigen_directions(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of an input Gram [n, n], largest first.

    Returns ``(explained_variance [n] (fp64, sums to 1), directions [n, n] (fp32, rows = right singular
    vectors of the activation matrix))`` — the activation SVD that EVA initialises A from.
    """
    G = gram.to(torch.float64)
    evals, Q = torch.linalg.eigh(0.5 * (G + G.mT))
    evals, Q = evals.flip(0).clamp_min(0.0), Q.flip(1)
    total = float(evals.sum())
    ratio = evals / total if total > 0 else torch.full_like(evals, 1.0 / evals.numel())
    return ratio, Q.mT.to(torch.float32).contiguous()
