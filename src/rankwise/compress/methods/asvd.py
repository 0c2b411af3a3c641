"""ASVD: scale input channels by activation magnitude before the SVD, undo the scaling after."""

from __future__ import annotations

import torch

from rankwise.calib.stats import LayerStats
from rankwise.compress.config import ASVD, CompressConfig
from rankwise.compress.registry import Compressor, register
from rankwise.linalg.factors import Factors
from rankwise.linalg.svd import svd


def decompose_asvd(W: torch.Tensor, stats: LayerStats, config: CompressConfig) -> Factors:
    """SVD of W·diag(s) with s_j = mean|x_j|^alpha, mapped back: Vh ← Vh·diag(1/s).

    Shapes: W [m, n]; s [n]. Channels that never fire get the smallest positive scale, so the
    inverse stays finite.
    """
    assert isinstance(config, ASVD) and stats.gram is not None
    scale = stats.gram.mean_abs().pow(config.alpha)
    positive = scale[scale > 0]
    floor = float(positive.min()) if positive.numel() else 1.0
    scale = scale.clamp_min(floor).to(torch.float32)
    f = svd(W.to(torch.float32) * scale)
    return Factors(f.U, f.S, f.Vh / scale)


register(Compressor("asvd", ASVD, decompose_asvd, needs_gram=True, needs_fisher=False))
