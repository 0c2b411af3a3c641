"""Rank allocation: shared types, the registry, and the parameter arithmetic every allocator uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rankwise.errors import RankwiseError


@dataclass(frozen=True)
class MatrixSpectrum:
    """One targeted matrix as an allocator sees it.

    ``error_sq`` [k]: descending; truncating at rank r costs Σ_{i>r} error_sq_i (the method's
    error metric). ``weight_sv`` [k]: the raw weight's singular values (data-free allocators).
    """

    name: str
    out_features: int
    in_features: int
    error_sq: torch.Tensor
    weight_sv: torch.Tensor
    sensitivity: float | None = None  # loss per unit of squared output error (see stats.output_sensitivity)

    @property
    def dense_params(self) -> int:
        return self.out_features * self.in_features

    def lowrank_params(self, rank: int) -> int:
        return rank * (self.out_features + self.in_features)

    def max_lowrank(self, multiple: int) -> int:
        """Largest multiple of ``multiple`` whose factorization is strictly smaller than the dense matrix."""
        breakeven = (self.dense_params - 1) // (self.out_features + self.in_features)
        return (breakeven // multiple) * multiple


#: ``allocate(spectra, ratio, multiple) -> {name: rank or None (stays dense)}``
Allocator = Callable[[list[MatrixSpectrum], float, int], dict[str, int | None]]
ALLOCATORS: dict[str, Allocator] = {}


def register(name: str) -> Callable[[Allocator], Allocator]:
    def deco(fn: Allocator) -> Allocator:
        ALLOCATORS[name] = fn
        return fn

    return deco


def check_feasible(spectra: list[MatrixSpectrum], ratio: float, multiple: int) -> None:
    """Fail clearly when even the smallest allowed rank everywhere keeps more than the budget."""
    floor = sum(min(s.dense_params, s.lowrank_params(multiple)) for s in spectra)
    if floor > budget(spectra, ratio):
        most = 1.0 - floor / sum(s.dense_params for s in spectra)
        raise RankwiseError(f"ratio {ratio} cannot be reached with ranks that are multiples of {multiple}: at most "
                            f"{most:.3f} of the targeted parameters can be removed; lower the ratio or the rank "
                            "multiple")


def get_allocator(name: str) -> Allocator:
    import rankwise.compress.allocators  # noqa: F401  (fills the registry)

    if name not in ALLOCATORS:
        raise RankwiseError(f"unknown rank allocator '{name}'; choose one of: {', '.join(sorted(ALLOCATORS))}")
    return ALLOCATORS[name]


def round_rank(spectrum: MatrixSpectrum, rank: float, multiple: int) -> int | None:
    """Round to a multiple (at least one multiple); None when the result would not save parameters."""
    r = max(multiple, round(rank / multiple) * multiple)
    r = min(r, min(spectrum.out_features, spectrum.in_features))
    return r if spectrum.lowrank_params(r) < spectrum.dense_params else None


def stored_params(spectra: list[MatrixSpectrum], ranks: dict[str, int | None]) -> int:
    return sum(s.dense_params if ranks[s.name] is None else s.lowrank_params(int(ranks[s.name] or 0))
               for s in spectra)


def budget(spectra: list[MatrixSpectrum], ratio: float) -> int:
    """Parameters the targeted matrices may keep: (1 − ratio) of their dense count."""
    return int((1.0 - ratio) * sum(s.dense_params for s in spectra))


def bisect_threshold(spectra: list[MatrixSpectrum], ratio: float, ranks_at: Callable[[float], dict[str, int | None]],
                     lo: float, hi: float, steps: int = 60) -> dict[str, int | None]:
    """Find the threshold t in [lo, hi] whose ranks keep the most parameters within the budget.

    ``ranks_at(t)`` must keep fewer parameters as t grows.
    """
    limit = budget(spectra, ratio)
    best = ranks_at(hi)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        ranks = ranks_at(mid)
        if stored_params(spectra, ranks) <= limit:
            best, hi = ranks, mid
        else:
            lo = mid
    return best
