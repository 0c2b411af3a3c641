"""`Variant`: the adapter layer's one hook for methods whose update is not a plain s·B·A.

`AdapterLinear` runs the plain LoRA path (one fused addmm) itself. A method that parameterises its
update differently (trainable singular values, coefficients over random bases, a sparse delta,
adaptive-rank triplets) hands the layer a `Variant`: how the update ΔW [m, n] is applied, what it is
as a dense matrix (merge), how far it moved the weight from the original one (export), what is saved,
and an optional regulariser. Each method keeps its variant in its own module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Variant(nn.Module):
    """The trainable part of one adapted m×n layer: y = W_frozen x + ΔW x.

    ``W_frozen`` is the base weight, or W₀ − B₀·A₀ when `initial_factors` is not None (methods that
    move part of the weight into the trainable update, so that the output is unchanged at init).
    """

    def add_delta(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y [..., m] + ΔW x for x [..., n], in fp32."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """ΔW [m, n] (fp32, detached): what `merge` adds to the frozen weight."""
        raise NotImplementedError

    @property
    def rank(self) -> int:
        """The rank of the update's factors (the number of trainable triplets for SVD-form updates)."""
        raise NotImplementedError

    def initial_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(A₀ [k, n], B₀ [m, k])`` with W_frozen = W₀ − B₀·A₀, or None when the base weight is untouched."""
        return None

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Exact ``(A [k, n], B [m, k])`` with B·A = W_adapted − W₀ (what a PEFT LoRA on the untouched base
        must add), or None when the update is not of B·A form (the export then truncates its SVD)."""
        return None

    def update_weight(self) -> torch.Tensor:
        """W_adapted − W₀ [m, n] (fp32)."""
        delta = self.delta_weight()
        initial = self.initial_factors()
        return delta if initial is None else delta - initial[1] @ initial[0]

    def regulariser(self) -> torch.Tensor | None:
        """A penalty the training loop adds to the loss (already weighted), or None."""
        return None

    def tensors(self) -> dict[str, torch.Tensor]:
        """What an adapter folder stores for this layer, by local name (contiguous fp32)."""
        raise NotImplementedError

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: Any, shape: tuple[int, int],
                     scaling: float) -> Variant:
        """Rebuild the variant of an m×n layer from `tensors` (as saved) and the method config."""
        raise NotImplementedError


def frozen_buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Register ``value`` as an fp32 buffer (saved by `tensors`, not trained)."""
    module.register_buffer(name, value.detach().to(torch.float32).contiguous().clone())


def trainable(value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value.detach().to(torch.float32).contiguous().clone())


def orthonormality_penalty(factor: torch.Tensor, rows: bool) -> torch.Tensor:
    """‖FᵀF − I‖²_F for the columns of F (``rows=False``) or ‖F Fᵀ − I‖²_F for its rows."""
    gram = factor @ factor.mT if rows else factor.mT @ factor
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return (gram - eye).square().sum()
