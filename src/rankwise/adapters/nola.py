"""NOLA (Koohpayegani et al. 2024): A and B are linear combinations of k seeded random bases; only the
2k coefficients per layer train and are saved, with the seed."""

from __future__ import annotations

import math
import weakref
from typing import Any, Literal

import torch
from pydantic import Field

from rankwise.adapters._common import per_layer
from rankwise.adapters.config import AdapterConfig, register
from rankwise.adapters.variant import Variant, trainable

#: Bases by (seed, k, rows, cols, kind): layers of one shape share them (they are regenerated, never
#: stored, so sharing costs nothing in the saved adapter and saves their memory once per shape).
_BASES: weakref.WeakValueDictionary[tuple[int, int, int, int, str], torch.Tensor] = weakref.WeakValueDictionary()


class NOLA(AdapterConfig):
    """NOLA, "Compressing LoRA using Linear Combination of Random Basis" (Koohpayegani et al., ICLR 2024).

    ΔW = s·B·A with A = Σᵢ αᵢ·Aᵢ [r, n] and B = Σⱼ βⱼ·Bⱼ [m, r] over ``k`` random bases each, drawn from
    ``seed`` (Aᵢ Kaiming-uniform like LoRA's A, Bⱼ Gaussian with variance 1/r); α starts Gaussian with
    variance 1/k and β at zero, so the output equals the base's at init. A layer trains 2k numbers
    whatever its shape and rank; its bases are shared by the layers of one shape and regenerated on load.
    """

    method: Literal["nola"] = "nola"
    k: int = Field(default=256, ge=1, description="number of random basis matrices for A and for B")


def basis(seed: int, k: int, rows: int, cols: int, kind: str) -> torch.Tensor:
    """The k seeded basis matrices [k, rows, cols] of ``kind`` "A" (uniform ±1/√cols) or "B" (N(0, 1/cols))."""
    key = (seed, k, rows, cols, kind)
    cached = _BASES.get(key)
    if cached is not None:
        return cached
    gen = torch.Generator().manual_seed(seed * 7919 + rows * 31 + cols * 17 + (0 if kind == "A" else 1))
    if kind == "A":
        out = (torch.rand(k, rows, cols, generator=gen) * 2.0 - 1.0) / math.sqrt(cols)
    else:
        out = torch.randn(k, rows, cols, generator=gen) / math.sqrt(cols)
    _BASES[key] = out
    return out


class NOLADelta(Variant):
    """Coefficients ``alpha`` [k] (for A) and ``beta`` [k] (for B) train; the bases are non-saved buffers."""

    basis_A: torch.Tensor
    basis_B: torch.Tensor

    def __init__(self, alpha: torch.Tensor, beta: torch.Tensor, shape: tuple[int, int], rank: int, seed: int,
                 scaling: float) -> None:
        super().__init__()
        m, n = shape
        k = alpha.shape[0]
        self.alpha, self.beta = trainable(alpha), trainable(beta)
        self.register_buffer("basis_A", basis(seed, k, rank, n, "A"), persistent=False)
        self.register_buffer("basis_B", basis(seed, k, m, rank, "B"), persistent=False)
        self.scaling = float(scaling)

    @property
    def rank(self) -> int:
        return int(self.basis_A.shape[1])

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [r, n], B [m, r]) = (Σ αᵢ Aᵢ, Σ βⱼ Bⱼ)."""
        A = torch.tensordot(self.alpha, self.basis_A, dims=1)
        B = torch.tensordot(self.beta, self.basis_B, dims=1)
        return A, B

    def add_delta(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        A, B = self.factors()
        h = x.reshape(-1, x.shape[-1]) @ A.mT
        total = torch.addmm(y.reshape(-1, y.shape[-1]), h, B.mT, alpha=self.scaling)
        return total.view(*y.shape[:-1], total.shape[-1])

    def delta_weight(self) -> torch.Tensor:
        A, B = self.factors()
        return (self.scaling * B @ A).detach()

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        A, B = self.factors()
        return A.detach().contiguous(), (self.scaling * B).detach().contiguous()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"alpha": self.alpha.detach().contiguous(), "beta": self.beta.detach().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: Any, shape: tuple[int, int],
                     scaling: float) -> Variant:
        return cls(tensors["alpha"], tensors["beta"], shape, config.rank, config.seed, config.scaling())


@register("nola", NOLA, variant=NOLADelta)
def init_nola(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any) -> dict[str, Variant]:
    def one(_name: str, i: int, W: torch.Tensor) -> Variant:
        gen = torch.Generator().manual_seed(config.seed + 1_000_003 * (i + 1))
        alpha = torch.randn(config.k, generator=gen) / math.sqrt(config.k)
        shape = (W.shape[0], W.shape[1])
        return NOLADelta(alpha, torch.zeros(config.k), shape, config.rank, config.seed, config.scaling())

    return per_layer(weights, config.rank, one)
