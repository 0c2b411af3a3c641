"""Spectral metrics of a singular-value vector (descending, non-negative, shape [k])."""

from __future__ import annotations

import math

import torch


def _as_f64(s: torch.Tensor) -> torch.Tensor:
    if s.ndim != 1:
        raise ValueError(f"expected a vector of singular values, got shape {tuple(s.shape)}")
    return s.detach().to(torch.float64).clamp_min(0.0)


def singular_values(W: torch.Tensor) -> torch.Tensor:
    """All singular values of ``W`` [m, n], descending, fp32 [min(m, n)]."""
    values: torch.Tensor = torch.linalg.svdvals(W.detach().to(torch.float32))
    return values


def frobenius_norm(s: torch.Tensor) -> float:
    return float(_as_f64(s).square().sum().sqrt())


def spectral_norm(s: torch.Tensor) -> float:
    return float(_as_f64(s).max()) if s.numel() else 0.0


def nuclear_norm(s: torch.Tensor) -> float:
    return float(_as_f64(s).sum())


def stable_rank(s: torch.Tensor) -> float:
    """‖W‖²_F / ‖W‖²₂."""
    top = spectral_norm(s)
    return 0.0 if top == 0.0 else frobenius_norm(s) ** 2 / top**2


def effective_rank(s: torch.Tensor) -> float:
    """exp of the Shannon entropy of p_i = σ_i / Σσ (Roy & Vetterli 2007)."""
    x = _as_f64(s)
    total = float(x.sum())
    if total == 0.0:
        return 0.0
    p = x / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def energy_curve(s: torch.Tensor) -> torch.Tensor:
    """Fraction of ‖W‖²_F kept by the best rank-r approximation, for r = 1..k ([k] fp64)."""
    sq = _as_f64(s).square()
    total = sq.sum()
    if float(total) == 0.0:
        return torch.ones_like(sq)
    return sq.cumsum(0) / total


def rank_for_energy(s: torch.Tensor, fraction: float) -> int:
    """Smallest r whose rank-r approximation keeps at least ``fraction`` of the energy."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"energy fraction must be in (0, 1], got {fraction}")
    curve = energy_curve(s)
    # Tolerance so that fraction=1.0 is met despite round-off in the cumulative sum.
    hit = torch.nonzero(curve >= fraction - 1e-12)
    return int(hit[0]) + 1 if hit.numel() else int(curve.numel())


def truncation_error(s: torch.Tensor, rank: int) -> float:
    """Eckart–Young: ‖W − W_r‖²_F = Σ_{i>r} σ_i²."""
    return float(_as_f64(s)[rank:].square().sum())
