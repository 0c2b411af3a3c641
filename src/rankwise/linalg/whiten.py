"""Whitening by eigendecomposition, and the whitened (activation-aware) truncated SVD of SVD-LLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rankwise.linalg.factors import Factors

#: Eigenvalues below this fraction of the largest are clamped up to it: a rank-deficient Gram
#: (fewer tokens than channels, dead channels) then still has a finite, well-conditioned inverse.
DEFAULT_CLAMP = 1e-6


@dataclass(frozen=True)
class Whitener:
    """A factor S [n, n] of the Gram, G ≈ S Sᵀ, and its inverse S_inv [n, n] (fp64).

    ``clamped`` counts the eigenvalues that were raised to the floor.
    """

    S: torch.Tensor
    S_inv: torch.Tensor
    clamped: int


def whitening(gram: torch.Tensor, clamp: float = DEFAULT_CLAMP) -> Whitener:
    """Symmetric factor of ``gram`` [n, n] from its eigendecomposition G = Q Λ Qᵀ.

    S = Q Λ^{1/2} and S⁻¹ = Λ^{-1/2} Qᵀ with Λ clamped below at ``clamp · max(Λ)``. Unlike a bare
    Cholesky this never fails on a singular or slightly indefinite Gram.
    """
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {tuple(gram.shape)}")
    G = gram.to(torch.float64)
    if not torch.isfinite(G).all():
        raise ValueError("Gram matrix contains NaN or inf values")
    G = 0.5 * (G + G.mT)
    evals, Q = torch.linalg.eigh(G)
    top = float(evals.max().clamp_min(0.0))
    if top == 0.0:
        # All-zero statistics: fall back to the identity (plain SVD).
        eye = torch.eye(G.shape[0], dtype=torch.float64, device=G.device)
        return Whitener(eye, eye.clone(), G.shape[0])
    floor = clamp * top
    clamped = int((evals < floor).sum())
    root = evals.clamp_min(floor).sqrt()
    return Whitener(Q * root, (Q / root).mT, clamped)


def whitened_svd(W: torch.Tensor, gram: torch.Tensor, rank: int, clamp: float = DEFAULT_CLAMP) -> Factors:
    """Rank-``rank`` Ŵ minimising ‖(W − Ŵ) Xᵀ‖_F for inputs X with XᵀX = ``gram`` (SVD-LLM).

    ``W`` [m, n] maps inputs x ∈ R^n to W x; ``gram`` [n, n]. With G = S Sᵀ the output error is
    ‖(W − Ŵ) S‖_F, so the optimum is the truncated SVD of W S mapped back by S⁻¹. Returns factors
    whose ``S`` are the whitened singular values (Σ_{i>r} S_i² is the output error at rank r) and
    whose ``Vh`` [r, n] includes S⁻¹.
    """
    m, n = W.shape
    if gram.shape != (n, n):
        raise ValueError(f"Gram of shape {tuple(gram.shape)} does not match a {m}x{n} weight")
    full = min(m, n)
    if not 0 < rank <= full:
        raise ValueError(f"rank {rank} is outside [1, {full}] for a {m}x{n} matrix")
    wh = whitening(gram, clamp)
    return whitened_factors(W, wh).truncate(rank)


def whitened_factors(W: torch.Tensor, wh: Whitener) -> Factors:
    """Full whitened SVD of ``W`` [m, n] for a precomputed ``Whitener`` (shared by q/k/v etc.)."""
    if not torch.isfinite(W).all():
        raise ValueError("matrix contains NaN or inf values")
    M = W.detach().to(torch.float64) @ wh.S
    # SVD in fp32 per the numerics rule; the whitening product is formed in fp64 for accuracy.
    U, S, Vh = torch.linalg.svd(M.to(torch.float32), full_matrices=False)
    Vh_back = (Vh.to(torch.float64) @ wh.S_inv).to(torch.float32)
    return Factors(U, S, Vh_back)
