"""FWSVD: weight each output row by its Fisher importance before the SVD, undo it after."""

from __future__ import annotations

import torch

from rankwise.calib.stats import LayerStats
from rankwise.compress.config import FWSVD, CompressConfig
from rankwise.compress.registry import Compressor, register
from rankwise.linalg.factors import Factors
from rankwise.linalg.svd import svd


def decompose_fwsvd(W: torch.Tensor, stats: LayerStats, config: CompressConfig) -> Factors:
    """SVD of diag(√I)·W with I [m] the row-summed squared gradients; U ← diag(1/√I)·U."""
    assert stats.fisher_rows is not None
    weight = stats.fisher_rows.sqrt()
    positive = weight[weight > 0]
    floor = float(positive.min()) if positive.numel() else 1.0
    weight = weight.clamp_min(floor).to(torch.float32)
    weight = weight / weight.mean()  # scale-free: only the relative row importance matters
    f = svd(weight[:, None] * W.to(torch.float32))
    return Factors(f.U / weight[:, None], f.S, f.Vh)


register(Compressor("fwsvd", FWSVD, decompose_fwsvd, needs_gram=False, needs_fisher=True))
