"""Registry of per-matrix metrics: name → (definition, function of a matrix's spectrum).

A metric is one function ``fn(spec: Spectrum) -> dict[column, value]`` registered with
:func:`register_metric`; its definition is printed in every report. Adding a metric is one function
here (or in its own module) plus one test entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rankwise import linalg
from rankwise.analysis.config import AnalyzeConfig
from rankwise.linalg.farms import farms_eigenvalues
from rankwise.linalg.powerlaw import esd, fit_power_law

Value = float | int | None


@dataclass(frozen=True)
class Spectrum:
    """One matrix's spectrum: what every metric reads.

    ``s``: singular values, fp64 descending [k] (k = min(m, n), or the top ``fast_rank`` under fast);
    ``frob2``: ‖W‖²_F computed from W itself (exact even when ``s`` is partial);
    ``W``: the matrix fp32 [m, n] for metrics that need more than its singular values;
    ``farms_evals``: the FARMS pooled ESD fp64 [windows · k] when the driver computed it along with
    ``s`` (one pass over W serves both), else None and the FARMS metric computes it from ``W``.
    """

    name: str
    shape: tuple[int, int]
    s: torch.Tensor
    frob2: float
    W: torch.Tensor
    partial: bool
    config: AnalyzeConfig
    farms_evals: torch.Tensor | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    definition: str
    fn: Callable[[Spectrum], dict[str, Value]]


METRICS: dict[str, Metric] = {}


def register_metric(name: str, definition: str) -> Callable[[Callable[[Spectrum], dict[str, Value]]], Any]:
    def wrap(fn: Callable[[Spectrum], dict[str, Value]]) -> Callable[[Spectrum], dict[str, Value]]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, definition, fn)
        return fn

    return wrap


@register_metric("norms", "spectral_norm σ₁; frobenius_norm ‖W‖_F = √Σσ²; nuclear_norm Σσ "
                 "(under --fast: sum of the top-k only, a lower bound)")
def _norms(spec: Spectrum) -> dict[str, Value]:
    return {"spectral_norm": linalg.spectral_norm(spec.s), "frobenius_norm": spec.frob2**0.5,
            "nuclear_norm": linalg.nuclear_norm(spec.s)}


@register_metric("stable_rank", "‖W‖²_F / ‖W‖²₂: how many directions carry the energy, robust to noise")
def _stable_rank(spec: Spectrum) -> dict[str, Value]:
    top = linalg.spectral_norm(spec.s)
    return {"stable_rank": spec.frob2 / top**2 if top > 0 else 0.0}


@register_metric("effective_rank", "exp of the Shannon entropy of p_i = σ_i / Σσ (Roy & Vetterli 2007); "
                 "under --fast, of the top-k only")
def _effective_rank(spec: Spectrum) -> dict[str, Value]:
    return {"effective_rank": linalg.effective_rank(spec.s)}


@register_metric("energy_ranks", "rank_NN: smallest r whose best rank-r approximation keeps NN % of ‖W‖²_F "
                 "(Σ_{i≤r} σ_i² / ‖W‖²_F); empty under --fast when the top-k do not reach it")
def _energy_ranks(spec: Spectrum) -> dict[str, Value]:
    curve = spec.s.double().square().cumsum(0) / spec.frob2 if spec.frob2 > 0 else torch.ones_like(spec.s)
    out: dict[str, Value] = {}
    for f in spec.config.energies:
        hit = torch.nonzero(curve >= f - 1e-12)
        out[f"rank_{round(f * 100)}"] = int(hit[0]) + 1 if hit.numel() else None
    return out


@register_metric("alpha", "heavy-tail exponent α of the ESD of WᵀW (eigenvalues σ²): continuous power-law "
                 "maximum-likelihood fit, x_min chosen by the smallest Kolmogorov–Smirnov distance "
                 "(WeightWatcher's definition; 2 ≤ α ≤ 6 is the usual well-trained band); alpha_D is the "
                 "KS distance, alpha_tail the eigenvalues in the fitted tail")
def _alpha(spec: Spectrum) -> dict[str, Value]:
    fit = fit_power_law(esd(spec.s))
    if fit is None:
        return {"alpha": None, "alpha_D": None, "alpha_tail": None}
    return {"alpha": fit.alpha, "alpha_D": fit.D, "alpha_tail": fit.n_tail}


@register_metric("farms_alpha", "FARMS α (Hu et al. 2025): the same power-law fit on the pooled ESD of "
                 "fixed-aspect-ratio submatrices, removing the aspect-ratio bias of α")
def _farms_alpha(spec: Spectrum) -> dict[str, Value]:
    m, n = spec.shape
    cfg = spec.config
    if spec.partial:
        return {"farms_alpha": None}
    if spec.farms_evals is not None:
        evals = spec.farms_evals
    elif max(m, n) <= round(min(m, n) * cfg.farms_aspect_ratio):
        evals = esd(spec.s)  # already of the target aspect ratio: one window, the full ESD
    else:
        dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
        evals = farms_eigenvalues(spec.W, cfg.farms_aspect_ratio, cfg.farms_max_windows, dtype)
    fit = fit_power_law(evals)
    return {"farms_alpha": None if fit is None else fit.alpha}


#: Metrics computed over all matrices at once (they need every spectrum); documented like the others.
GLOBAL_DEFINITIONS = {
    "welore_rank": "WeLore recommended rank (Jaiswal et al. 2024): one global threshold τ on σ_i/σ₁ shared by "
                   "all block matrices (not embeddings or heads), chosen so that they together lose welore_ratio "
                   "of their parameters; rank = #{σ_i/σ₁ > τ}",
}


def definitions(names: list[str]) -> dict[str, str]:
    return {**{n: METRICS[n].definition for n in names}, **GLOBAL_DEFINITIONS}
