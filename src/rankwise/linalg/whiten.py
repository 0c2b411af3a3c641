"""Whitening by Cholesky factorization of the ridged Gram; the whitened truncated SVD of SVD-LLM."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from rankwise.linalg.factors import Factors

#: The ridge added to a Gram before it is factorized, as a fraction of its largest eigenvalue: a
#: rank-deficient Gram (fewer tokens than channels, dead channels) then still has a finite,
#: well-conditioned inverse (condition number at most 1 / DEFAULT_CLAMP).
DEFAULT_CLAMP = 1e-6


@dataclass(frozen=True)
class Whitener:
    """A factor S [n, n] of the (ridged) Gram, G + floor·I = S Sᵀ (fp64).

    ``floor`` = clamp · λ_max(G) is the ridge. Any factor gives the same whitened truncation: for
    S' = S Q (Q orthogonal) the SVD of W S' is that of W S with V rotated by Q. ``triangular``: S is
    lower triangular (Cholesky), so products with S⁻¹ are triangular solves and S⁻¹ itself, an n³
    computation that spectra never need, is only formed when asked for.
    """

    S: torch.Tensor
    floor: float
    triangular: bool = False
    inverse: torch.Tensor | None = None

    @cached_property
    def S_inv(self) -> torch.Tensor:
        """S⁻¹ [n, n] fp64."""
        if self.inverse is not None:
            return self.inverse
        eye = torch.eye(self.S.shape[0], dtype=self.S.dtype, device=self.S.device)
        inverse: torch.Tensor = (torch.linalg.solve_triangular(self.S, eye, upper=False) if self.triangular
                                 else torch.linalg.inv(self.S))
        return inverse

    def times_inverse(self, A: torch.Tensor) -> torch.Tensor:
        """A S⁻¹ for A [k, n] fp64: a triangular solve (k n² flops) when S is triangular."""
        if self.triangular:
            solved: torch.Tensor = torch.linalg.solve_triangular(self.S, A, upper=False, left=False)
            return solved
        return A @ self.S_inv


def largest_eigenvalue(gram: torch.Tensor, iterations: int = 30) -> float:
    """λ_max of a symmetric PSD ``gram`` [n, n] to within a few per cent: power iteration, never
    below its largest diagonal entry (a lower bound of λ_max too). Costs ``iterations`` mat-vecs
    instead of an O(n³) eigendecomposition; the ridge only needs its order of magnitude."""
    v = torch.ones(gram.shape[0], dtype=gram.dtype, device=gram.device)
    estimate = 0.0
    for _ in range(iterations):
        w = gram @ v
        norm = float(w.norm())
        if norm == 0.0 or not math.isfinite(norm):
            break
        estimate = norm / float(v.norm())
        v = w / norm
    return max(estimate, float(gram.diagonal().max()))


def whitening(gram: torch.Tensor, clamp: float = DEFAULT_CLAMP) -> Whitener:
    """Factor ``gram`` [n, n] + clamp·λ_max·I by Cholesky (S lower triangular, S⁻¹ by a triangular solve).

    The ridge keeps a singular or slightly indefinite Gram factorizable; should rounding still make
    the Cholesky fail, the eigendecomposition (negative eigenvalues set to 0, then the ridge) is used.
    Cholesky is ~10× cheaper than the eigendecomposition whitening used to take, and any square
    root of the Gram gives the same whitened SVD.
    """
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {tuple(gram.shape)}")
    G = gram.to(torch.float64)
    if not torch.isfinite(G).all():
        raise ValueError("Gram matrix contains NaN or inf values")
    G = 0.5 * (G + G.mT)
    eye = torch.eye(G.shape[0], dtype=torch.float64, device=G.device)
    top = largest_eigenvalue(G)
    if top <= 0.0:
        # All-zero statistics: fall back to the identity (plain SVD).
        return Whitener(eye, 0.0, inverse=eye.clone())
    floor = clamp * top
    L, info = torch.linalg.cholesky_ex(G + floor * eye)
    if int(info) == 0:
        return Whitener(L, floor, triangular=True)
    evals, Q = torch.linalg.eigh(G)
    root = (evals.clamp_min(0.0) + floor).sqrt()
    return Whitener(Q * root, floor, inverse=(Q / root).mT)


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
    Vh_back = wh.times_inverse(Vh.to(torch.float64)).to(torch.float32)
    return Factors(U, S, Vh_back)
