"""Pure tensor maths: SVDs, Gram statistics, whitening, spectral metrics. No nn.Module, no I/O."""

from rankwise.linalg.factors import Factors
from rankwise.linalg.gram import GramAccumulator
from rankwise.linalg.metrics import (
    effective_rank,
    energy_curve,
    frobenius_norm,
    nuclear_norm,
    rank_for_energy,
    singular_values,
    spectral_norm,
    stable_rank,
    truncation_error,
)
from rankwise.linalg.split import adapter_factors, covariance_factors, eigen_directions, subtract_lowrank
from rankwise.linalg.svd import svd
from rankwise.linalg.whiten import Whitener, whitened_factors, whitened_svd, whitening

__all__ = [
    "Factors",
    "GramAccumulator",
    "Whitener",
    "adapter_factors",
    "covariance_factors",
    "effective_rank",
    "eigen_directions",
    "energy_curve",
    "frobenius_norm",
    "nuclear_norm",
    "rank_for_energy",
    "singular_values",
    "spectral_norm",
    "stable_rank",
    "subtract_lowrank",
    "svd",
    "truncation_error",
    "whitened_factors",
    "whitened_svd",
    "whitening",
]
