"""SALT (Elsayed et al. 2025): scale and shift the top-r singular values, plus a LoRA on the rest of W."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from rankwise.adapters._common import SVDInitConfig, check_rank, per_layer, principal_triplets
from rankwise.adapters.config import register
from rankwise.adapters.lora import kaiming_a
from rankwise.adapters.variant import Variant, frozen_buffer, trainable


class SALT(SVDInitConfig):
    """SALT, "Singular Value Adaptation with Low-Rank Transformation" (Elsayed et al., 2025).

    W = W_rest + U_r·diag(σ ⊙ scale + shift)·V_rᵀ over the top ``rank`` triplets (U_r, σ, V_r frozen;
    ``scale`` starts at 1 and ``shift`` at 0) and a LoRA s·B·A of rank ``lora_rank`` (A Kaiming-uniform,
    B = 0, s = alpha / lora_rank) adapts the frozen rest W_rest = W − U_r·diag(σ)·V_rᵀ.
    """

    method: Literal["salt"] = "salt"
    lora_rank: int = Field(default=8, gt=0, description="rank of the LoRA on the remaining subspace")
    changes_base: ClassVar[bool] = True

    def scaling(self, rank: int | None = None) -> float:
        return super().scaling(self.lora_rank if rank is None else rank)


class SALTDelta(Variant):
    """U [m, r], σ [r], Vh [r, n] frozen; ``scale``, ``shift`` [r] and the LoRA ``lora_A`` [k, n],
    ``lora_B`` [m, k] train."""

    U: torch.Tensor
    sigma: torch.Tensor
    Vh: torch.Tensor

    def __init__(self, U: torch.Tensor, sigma: torch.Tensor, Vh: torch.Tensor, scale: torch.Tensor,
                 shift: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float) -> None:
        super().__init__()
        frozen_buffer(self, "U", U)
        frozen_buffer(self, "sigma", sigma)
        frozen_buffer(self, "Vh", Vh)
        self.scale, self.shift = trainable(scale), trainable(shift)
        self.lora_A, self.lora_B = trainable(A), trainable(B)
        self.scaling = float(scaling)

    @property
    def rank(self) -> int:
        return int(self.sigma.shape[0] + self.lora_A.shape[0])

    def _top(self) -> torch.Tensor:
        return self.sigma * self.scale + self.shift

    def add_delta(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # Both parts in one addmm: [x Vhᵀ·σ', s·x Aᵀ] @ [U, B]ᵀ.
        x2 = x.reshape(-1, x.shape[-1])
        h = torch.cat([(x2 @ self.Vh.mT) * self._top(), (x2 @ self.lora_A.mT) * self.scaling], dim=1)
        total = torch.addmm(y.reshape(-1, y.shape[-1]), h, torch.cat([self.U, self.lora_B], dim=1).mT)
        return total.view(*y.shape[:-1], total.shape[-1])

    def delta_weight(self) -> torch.Tensor:
        return ((self.U * self._top()) @ self.Vh + self.scaling * self.lora_B @ self.lora_A).detach()

    def initial_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.Vh, self.U * self.sigma

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        A = torch.cat([self.Vh, self.lora_A.detach()], dim=0)
        B = torch.cat([(self.U * (self._top() - self.sigma)).detach(), self.scaling * self.lora_B.detach()], dim=1)
        return A, B

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ["U", "sigma", "Vh", "scale", "shift", "lora_A", "lora_B"]
        return {name: getattr(self, name).detach().contiguous() for name in names}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: Any, shape: tuple[int, int],
                     scaling: float) -> Variant:
        t = tensors
        return cls(t["U"], t["sigma"], t["Vh"], t["scale"], t["shift"], t["lora_A"], t["lora_B"], config.scaling())


@register("salt", SALT, variant=SALTDelta)
def init_salt(weights: dict[str, torch.Tensor], grams: dict[str, torch.Tensor], config: Any) -> dict[str, Variant]:
    for name, W in weights.items():
        check_rank(name, W, config.lora_rank)

    def one(_name: str, i: int, W: torch.Tensor) -> Variant:
        top = principal_triplets(W, config, i)
        r, (m, n) = config.rank, W.shape
        A = kaiming_a(config.lora_rank, n, config.seed + i)
        return SALTDelta(top.U, top.S, top.Vh, torch.ones(r), torch.zeros(r), A, torch.zeros(m, config.lora_rank),
                         config.scaling())

    return per_layer(weights, config.rank, one)
