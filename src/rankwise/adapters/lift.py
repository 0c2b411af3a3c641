"""LIFT (principal weights): the largest-magnitude entries of W's rank-r approximation form a fixed
sparse mask, and only those entries of W train."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from rankwise.adapters._common import SVDChoice, per_layer
from rankwise.adapters.config import AdapterConfig, register
from rankwise.adapters.variant import Variant, trainable
from rankwise.errors import RankwiseError
from rankwise.linalg import svd


class LIFT(AdapterConfig):
    """LIFT, "LIFT the Veil for the Truth: Principal Weights Emerge after Rank Reduction for Reasoning-Focused
    Supervised Fine-Tuning" (Liu et al., ICML 2025).

    The mask of a m×n layer holds the ``rank`` · (m + n) entries (a rank-``rank`` LoRA's parameter count)
    of largest magnitude in the rank-``approx_rank`` approximation of W (None: ``rank``); only those
    entries train, so the optimizer keeps state for them alone. The update is sparse, not of B·A form:
    the PEFT export truncates its SVD at a rank you pick. ``alpha``/``rslora`` do not apply.
    """

    method: Literal["lift"] = "lift"
    approx_rank: int | None = Field(default=None, gt=0, description="rank of the approximation that picks the "
                                    "principal weights; None = rank")
    svd: SVDChoice = Field(default="randomized", description="SVD of the approximation: 'randomized' or 'exact'")


def principal_mask(W: torch.Tensor, approx_rank: int, entries: int, method: SVDChoice, seed: int) -> torch.Tensor:
    """Sorted flat indices [entries] of the largest |entries| of W's rank-``approx_rank`` approximation."""
    approx = svd(W, approx_rank, method, seed=seed).reconstruct()
    top = torch.topk(approx.abs().flatten(), entries, sorted=False).indices
    return torch.sort(top).values


class LIFTDelta(Variant):
    """``values`` [k] train at the fixed flat positions ``index`` [k] of an m×n update."""

    index: torch.Tensor

    def __init__(self, index: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.register_buffer("index", index.to(torch.int64).contiguous().clone())
        self.values = trainable(values)

    @property
    def rank(self) -> int:
        """Entries per (m + n): the rank of a LoRA with as many parameters."""
        return int(self.index.numel()) // (self.shape[0] + self.shape[1])

    def _dense(self) -> torch.Tensor:
        m, n = self.shape
        return torch.zeros(m * n, dtype=self.values.dtype, device=self.values.device).index_add(
            0, self.index, self.values).view(m, n)

    def add_delta(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # A dense ΔW per forward: a sparse matmul is slower on CPU at these densities, and the gradient
        # of the values is the dense gradient gathered at the mask either way.
        return y + F.linear(x, self._dense())

    def delta_weight(self) -> torch.Tensor:
        return self._dense().detach()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"index": self.index, "values": self.values.detach().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: Any, shape: tuple[int, int],
                     scaling: float) -> Variant:
        return cls(tensors["index"], tensors["values"], shape)


@register("lift", LIFT, variant=LIFTDelta)
def init_lift(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any) -> dict[str, Variant]:
    approx_rank = config.approx_rank or config.rank
    for name, W in weights.items():
        if approx_rank >= min(W.shape):
            raise RankwiseError(f"approx_rank {approx_rank} is not below min(m, n) = {min(W.shape)} for {name}; "
                                f"choose an approx_rank below {min(W.shape)}")

    def one(_name: str, i: int, W: torch.Tensor) -> Variant:
        m, n = W.shape
        index = principal_mask(W, approx_rank, min(config.rank * (m + n), m * n), config.svd, config.seed + i)
        return LIFTDelta(index, torch.zeros(index.numel()), (m, n))

    return per_layer(weights, config.rank, one)
