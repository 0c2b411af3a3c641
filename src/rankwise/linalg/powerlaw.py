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


def _ks_distances(logs: np.ndarray, alphas: np.ndarray, counts: np.ndarray, rows: np.ndarray, block: int
                  ) -> np.ndarray:
    """Exact KS distances D [len(rows)] of the candidates ``rows`` (sorted x_min indices), ``block`` at a time.

    D_i = max_{j ≥ i} |F_fit − F_emp| with F_emp = (j − i) / n_i and F_fit = 1 − (x_j / x_i)^(1 − α_i).
    """
    N = logs.size
    out = np.empty(rows.size)
    for start in range(0, rows.size, block):
        part = rows[start : start + block]  # [b]
        a = alphas[part][:, None]  # [b, 1]
        # Only columns j >= part[0] can be in a tail of these candidates: [b, N - part[0]].
        offset = np.arange(part[0], N)[None, :] - part[:, None]  # position within the tail
        in_tail = offset >= 0
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            ratio = np.where(in_tail, logs[None, part[0] :] - logs[part][:, None], 0.0)  # ln(x_j / x_min)
            gap = np.abs(1.0 - np.exp((1.0 - a) * ratio) - offset / counts[part][:, None])
        out[start : start + block] = np.where(in_tail, gap, 0.0).max(axis=1)
    return out


def _ks_lower_bounds(logs: np.ndarray, alphas: np.ndarray, counts: np.ndarray, rows: np.ndarray, points: int
                     ) -> np.ndarray:
    """Lower bounds [len(rows)] of the KS distances: the same maximum over ``points`` evenly spaced tail points.

    Candidate i samples j = i + ⌊t (n_i − 1)⌋ for ``points`` values t in [0, 1]; a tail of at most
    ``points`` eigenvalues is sampled whole, so its bound is its exact D. Cost O(len(rows) · points).
    """
    n = counts[rows][:, None]  # [b, 1]
    offset = np.floor(np.linspace(0.0, 1.0, points)[None, :] * (n - 1)).astype(np.int64)  # [b, points]
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = logs[rows[:, None] + offset] - logs[rows][:, None]
        gap = np.abs(1.0 - np.exp((1.0 - alphas[rows][:, None]) * ratio) - offset / n)
    out: np.ndarray = gap.max(axis=1)
    return out


def fit_power_law(
    evals: torch.Tensor | np.ndarray, threshold: float = EVALS_THRESHOLD, block: int = 256, points: int = 64
) -> PowerLawFit | None:
    """Fit the tail of ``evals`` [N] (eigenvalues of WᵀW, any order) as a power law.

    Returns ``None`` when fewer than ``MIN_EVALS`` eigenvalues exceed ``threshold``.

    Exact, without computing every KS distance in full (that is O(N²) exponentials, nearly all of
    the fit's cost): the maximum over ``points`` evenly spaced tail points is a lower bound of a
    candidate's D. The few candidates with the smallest bounds get their exact D; the best of those,
    D*, rules out every candidate whose bound exceeds it, and only the rest are computed exactly.
    The result is the candidate the full O(N²) search picks (same ties: the smallest x_min). Exact
    distances are computed ``block`` candidates at a time, so memory is O(block · N), never N².
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
    valid = np.isfinite(alphas) & (alphas > 1)
    Ds = np.where(valid, np.inf, 1.0)  # invalid fits score D = 1; inf: not computed (yet)
    candidates = idx[valid]
    if candidates.size:
        # In chunks of rows, so the [rows, points] temporaries stay a few MB for any N.
        chunk = max(1, 2**19 // max(points, 1))
        bound = np.concatenate([_ks_lower_bounds(logs, alphas, counts, candidates[i : i + chunk], points)
                                for i in range(0, candidates.size, chunk)])
        seeds = np.sort(candidates[np.argsort(bound, kind="stable")[:4]])
        Ds[seeds] = _ks_distances(logs, alphas, counts, seeds, block)
        # A bound above the best exact D so far rules its candidate out; the relative margin keeps a
        # candidate whose bound and exact D differ by rounding only (different vector code paths).
        rest = candidates[(bound <= Ds.min() * (1 + 1e-9)) & np.isinf(Ds[candidates])]
        Ds[rest] = _ks_distances(logs, alphas, counts, rest, block)
    best = int(np.argmin(Ds))
    alpha = float(alphas[best])
    n_tail = N - best
    return PowerLawFit(alpha, float(x[best]), float(Ds[best]), (alpha - 1.0) / math.sqrt(n_tail), n_tail, N)


def esd(s: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of WᵀW from the singular values ``s`` [k] of W: λ = σ², fp64 [k]."""
    return s.detach().to(torch.float64).square()
