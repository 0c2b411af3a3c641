"""The compressor registry: snake_case name → (config class, pure decomposition function)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rankwise.errors import RankwiseError
from rankwise.linalg.factors import Factors

if TYPE_CHECKING:
    from rankwise.calib.stats import LayerStats
    from rankwise.compress.config import CompressConfig

#: ``decompose(W [m, n], stats, config) -> Factors`` with all min(m, n) triplets, descending S, and
#: S² the method's error curve: truncating at r costs Σ_{i>r} S_i² (in the method's own metric).
DecomposeFn = Callable[[torch.Tensor, "LayerStats", "CompressConfig"], Factors]
#: ``spectrum(W [m, n], stats, config) -> S [min(m, n)]``: ``decompose(...).S`` without the singular vectors.
SpectrumFn = Callable[[torch.Tensor, "LayerStats", "CompressConfig"], torch.Tensor]


@dataclass(frozen=True)
class Compressor:
    name: str
    config_class: type[CompressConfig]
    decompose: DecomposeFn
    needs_gram: bool
    needs_fisher: bool
    #: faster path for allocation alone (the blockwise pipeline recomputes every factorization anyway)
    spectrum_fn: SpectrumFn | None = None

    def spectrum(self, W: torch.Tensor, stats: LayerStats, config: CompressConfig) -> torch.Tensor:
        """The method's singular values S [min(m, n)] of W [m, n], descending."""
        if self.spectrum_fn is not None:
            return self.spectrum_fn(W, stats, config)
        return self.decompose(W, stats, config).S


COMPRESSORS: dict[str, Compressor] = {}


def register(compressor: Compressor) -> Compressor:
    COMPRESSORS[compressor.name] = compressor
    return compressor


def get_compressor(name: str) -> Compressor:
    import rankwise.compress.methods  # noqa: F401  (fills the registry)

    if name not in COMPRESSORS:
        raise RankwiseError(f"unknown compression method '{name}'; choose one of: {', '.join(sorted(COMPRESSORS))}")
    return COMPRESSORS[name]
