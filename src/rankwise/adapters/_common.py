"""Pieces shared by the init functions of several adapter methods."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Literal, TypeVar

import torch
from pydantic import Field

from rankwise.adapters.config import AdapterConfig, AdapterInit
from rankwise.adapters.variant import Variant
from rankwise.linalg import Factors, svd
from rankwise.linalg.threads import parallel_map

SVDChoice = Literal["randomized", "exact"]
InitT = TypeVar("InitT", AdapterInit, Variant)

#: Set by `adapt` while a method's init runs: called once per finished layer (a progress bar's update).
layer_done: ContextVar[Callable[[], object] | None] = ContextVar("layer_done", default=None)


class SVDInitConfig(AdapterConfig):
    """An adapter initialised from a truncated SVD of the weight (seeded randomized by default)."""

    svd: SVDChoice = Field(default="randomized", description="'randomized' (seeded block-Krylov) or 'exact'")
    oversample: int | None = Field(default=None, ge=0, description="extra sketch columns; None = linalg default")
    niter: int | None = Field(default=None, ge=0, description="extra Krylov blocks; None = linalg default")


def check_rank(name: str, W: torch.Tensor, rank: int) -> None:
    """A rank must leave something frozen: r < min(m, n)."""
    from rankwise.errors import RankwiseError

    m, n = W.shape
    if rank >= min(m, n):
        raise RankwiseError(f"rank {rank} is not below min(m, n) = {min(m, n)} for {name} ({m}x{n}); "
                            f"choose a rank below {min(m, n)}")


def per_layer(
    weights: dict[str, torch.Tensor], rank: int, fn: Callable[[str, int, torch.Tensor], InitT]
) -> dict[str, InitT]:
    """Apply ``fn(name, index, W)`` to every layer after checking the rank fits it.

    Layers run on single-threaded workers, one per core (`parallel_map`): each init is a chain of
    small products and factorizations that multi-threaded BLAS cannot keep busy. Results are the
    same bits as a serial loop, so an init is reproducible whatever the core count.
    """
    for name, W in weights.items():
        check_rank(name, W, rank)
    jobs = list(enumerate(weights.items()))
    results = parallel_map(lambda job: fn(job[1][0], job[0], job[1][1]), jobs, on_done=layer_done.get())
    return {name: result for (_, (name, _)), result in zip(jobs, results, strict=True)}


def principal_triplets(W: torch.Tensor, config: SVDInitConfig, index: int) -> Factors:
    """The top ``config.rank`` singular triplets of W (fp32), by the config's SVD, seeded per layer."""
    return svd(W, config.rank, config.svd, oversample=config.oversample, niter=config.niter, seed=config.seed + index)
