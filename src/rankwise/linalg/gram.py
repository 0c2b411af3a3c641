"""Streaming input statistics: XᵀX in fp64, with the token count."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from rankwise.linalg.bf16 import outer_sum

if TYPE_CHECKING:
    from rankwise.linalg.whiten import Whitener


class GramAccumulator:
    """Accumulates G = Σ_t x_t x_tᵀ over tokens x_t ∈ R^n, plus Σ|x_t| and the token count.

    ``update`` takes activations of shape [..., n]; the leading dims are flattened into tokens.
    Statistics are kept in fp64 so that millions of tokens add up without cancellation.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim = dim
        self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.abs_sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.count = 0
        self._whiteners: dict[float, Whitener] = {}
        self._lock = threading.Lock()

    def whitener(self, clamp: float) -> Whitener:
        """Whitening of the accumulated Gram, computed once per clamp (q/k/v share one Gram)."""
        from rankwise.linalg.whiten import whitening

        with self._lock:  # layers sharing this Gram may ask from several worker threads at once
            if clamp not in self._whiteners:
                self._whiteners[clamp] = whitening(self.gram, clamp)
            return self._whiteners[clamp]

    def update(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected activations with last dim {self.dim}, got {tuple(x.shape)}")
        flat = x.detach().reshape(-1, self.dim)
        # fp32 products per batch (on bf16 units when x is bf16: exact), fp64 accumulation across batches
        self.gram += outer_sum(flat, flat).to(torch.float64)
        self.abs_sum += flat.abs().sum(0, dtype=torch.float64)
        self.count += flat.shape[0]
        self._whiteners.clear()

    def merge(self, other: GramAccumulator) -> None:
        self.gram += other.gram
        self.abs_sum += other.abs_sum
        self.count += other.count

    def mean_gram(self) -> torch.Tensor:
        """E[x xᵀ] as [n, n] fp64."""
        if self.count == 0:
            raise ValueError("no activations were accumulated")
        return self.gram / self.count

    def mean_abs(self) -> torch.Tensor:
        """E[|x|] per input channel, [n] fp64."""
        if self.count == 0:
            raise ValueError("no activations were accumulated")
        return self.abs_sum / self.count
