"""Plain truncated SVD (LoRD): data-free; the error curve is the weight's own spectrum."""

from __future__ import annotations

import torch

from rankwise.calib.stats import LayerStats
from rankwise.compress.config import SVD, CompressConfig
from rankwise.compress.registry import Compressor, register
from rankwise.linalg.factors import Factors
from rankwise.linalg.svd import svd


def decompose_svd(W: torch.Tensor, stats: LayerStats, config: CompressConfig) -> Factors:
    """Full exact SVD of W [m, n]."""
    return svd(W)


register(Compressor("svd", SVD, decompose_svd, needs_gram=False, needs_fisher=False))
