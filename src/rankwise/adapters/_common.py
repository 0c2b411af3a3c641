"""Pieces shared by the init functions of several adapter methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from rankwise.adapters.config import AdapterConfig, AdapterInit

SVDChoice = Literal["randomized", "exact"]


class SVDInitConfig(AdapterConfig):
    """An adapter initialised from a truncated SVD of the weight (seeded randomized by default)."""

    svd: SVDChoice = Field(default="randomized", description="'randomized' (seeded block-Krylov) or 'exact'")
    oversample: int | None = Field(default=None, ge=0, description="extra sketch columns; None = linalg default")
    niter: int = Field(default=5, ge=0, description="extra Krylov blocks of the randomized SVD")


def check_rank(name: str, W: torch.Tensor, rank: int) -> None:
    """A rank must leave something frozen: r < min(m, n)."""
    from rankwise.errors import RankwiseError

    m, n = W.shape
    if rank >= min(m, n):
        raise RankwiseError(f"rank {rank} is not below min(m, n) = {min(m, n)} for {name} ({m}x{n}); "
                            f"choose a rank below {min(m, n)}")


def per_layer(
    weights: dict[str, torch.Tensor], rank: int, fn: Callable[[str, int, torch.Tensor], AdapterInit]
) -> dict[str, AdapterInit]:
    """Apply ``fn(name, index, W)`` to every layer after checking the rank fits it."""
    out = {}
    for i, (name, W) in enumerate(weights.items()):
        check_rank(name, W, rank)
        out[name] = fn(name, i, W)
    return out
