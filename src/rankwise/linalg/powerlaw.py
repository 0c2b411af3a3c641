"""Heavy-tail power-law fit of an empirical spectral density (ESD), as WeightWatcher defines it.

The ESD of a weight matrix W [m, n] is the set of eigenvalues λ_i = σ_i² of WᵀW. Its tail is fitted
by a continuous power law p(λ) ∝ λ^(−α) on [x_min, max λ] (Clauset, Shalizi & Newman 2009):

- for each candidate x_min (every eigenvalue but the largest), the maximum-likelihood exponent is
  α = 1 + n / Σ_{λ_i ≥ x_min} ln(λ_i / x_min), with n the number of eigenvalues ≥ x_min;
- the Kolmogorov–Smirnov distance D = max |F_emp − F_fit| between the empirical CDF of the tail and
  the fitted CDF F_fit(λ) = 1 − (λ / x_min)^(1−α) scores each candidate;
- the candidate with the smallest D wins (fits with α ≤ 1 get D = 1).

This is WeightWatcher's default ("ww" power-law package, ``fix_fingers`` off): eigenvalues at or below
``threshold`` = 1e-5 are dropped first, exactly as it does, so α values are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: WeightWatcher's EVALS_THRESH: eigenvalues at or below this are numerical zeros, not part of the ESD.
EVALS_THRESHOLD = 1e-5
#: Below this many eigenvalues a tail fit is meaningless (WeightWatcher switches to another estimator).
MIN_EVALS = 20


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`: exponent, chosen x_min, KS distance, standard error, tail size."""

    alpha: float
    xmin: float
    D: float
    sigma: float  # (α − 1) / √n_tail, the MLE's asymptotic standard error
    n_tail: int  # eigenvalues ≥ x_min
    n: int  # eigenvalues fitted (after the threshold)


def _as_sorted_evals(evals: torch.Tensor | np.ndarray, threshold: float) -> np.ndarray:
    x = evals.detach().double().cpu().numpy() if isinstance(evals, torch.Tensor) else np.asarray(evals, np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a vector of eigenvalues, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("eigenvalues contain NaN or inf")
    return np.sort(x[x > threshold])


def fit_power_law(
    evals: torch.Tensor | np.ndarray, threshold: float = EVALS_THRESHOLD, block: int = 256
) -> PowerLawFit | None:
    """Fit the tail of ``evals`` [N] (eigenvalues of WᵀW, any order) as a power law.

    Returns ``None`` when fewer than ``MIN_EVALS`` eigenvalues exceed ``threshold``. The KS
    distances of all candidates are computed in row blocks of ``block`` candidates, so memory is
    O(block · N), never N².
    """
    x = _as_sorted_evals(evals, threshold)
    N = x.size
    if N < MIN_EVALS:
        return None
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = Σ_{j ≥ i} ln x_j
    idx = np.arange(N - 1)
    counts = (N - idx).astype(np.float64)
    denom = suffix[:-1] - counts * logs[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = np.where(denom > 0, 1.0 + counts / denom, np.inf)
    Ds = np.ones(N - 1)
    for start in range(0, N - 1, block):
        rows = idx[start : start + block]  # candidate x_min indices [b]
        a = alphas[rows][:, None]  # [b, 1]
        valid = np.isfinite(a[:, 0]) & (a[:, 0] > 1)
        # Only columns j >= start can be in a tail of these candidates: [b, N - start].
        offset = np.arange(start, N)[None, :] - rows[:, None]  # position within the tail
        in_tail = offset >= 0
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            ratio = np.where(in_tail, logs[None, start:] - logs[rows][:, None], 0.0)  # ln(x_j / x_min)
            gap = np.abs(1.0 - np.exp((1.0 - a) * ratio) - offset / counts[rows][:, None])
        Ds[rows] = np.where(valid, np.where(in_tail, gap, 0.0).max(axis=1), 1.0)
    best = int(np.argmin(Ds))
    alpha = float(alphas[best])
    n_tail = N - best
    return PowerLawFit(alpha, float(x[best]), float(Ds[best]), (alpha - 1.0) / math.sqrt(n_tail), n_tail, N)


def esd(s: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of WᵀW from the singular values ``s`` [k] of W: λ = σ², fp64 [k]."""
    return s.detach().to(torch.float64).square()
