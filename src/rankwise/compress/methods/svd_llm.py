"""SVD-LLM: truncation-aware whitening; the error curve is the exact output error on calibration data."""

from __future__ import annotations

import torch

from rankwise.calib.stats import LayerStats
from rankwise.compress.config import SVDLLM, CompressConfig
from rankwise.compress.registry import Compressor, register
from rankwise.linalg.factors import Factors
from rankwise.linalg.metrics import singular_values
from rankwise.linalg.whiten import whitened_factors


def decompose_svd_llm(W: torch.Tensor, stats: LayerStats, config: CompressConfig) -> Factors:
    """Whitened SVD of W [m, n] with the input Gram [n, n]: Σ_{i>r} S_i² = ‖(W − W_r) X‖²_F."""
    assert isinstance(config, SVDLLM) and stats.gram is not None
    return whitened_factors(W, stats.gram.whitener(config.clamp))


def spectrum_svd_llm(W: torch.Tensor, stats: LayerStats, config: CompressConfig) -> torch.Tensor:
    """The whitened singular values alone, [min(m, n)]: what allocation needs, several times cheaper."""
    assert isinstance(config, SVDLLM) and stats.gram is not None
    return singular_values(W.detach().to(torch.float64) @ stats.gram.whitener(config.clamp).S)


register(Compressor("svd_llm", SVDLLM, decompose_svd_llm, needs_gram=True, needs_fisher=False,
                    spectrum_fn=spectrum_svd_llm))
