"""`LowRankLinear`: the two-factor replacement for an `nn.Linear` (y = B(A(x)))."""

from __future__ import annotations

import torch
from torch import nn

from rankwise.linalg.factors import Factors


class LowRankLinear(nn.Module):
    """y = B · (A · x) + bias, with ``A.weight`` [r, in] and ``B.weight`` [out, r] (bias on B).

    Stores r·(in + out) weights instead of in·out; cheaper only while r < in·out / (in + out).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.A = nn.Linear(in_features, rank, bias=False, dtype=dtype, device=device)
        self.B = nn.Linear(rank, out_features, bias=bias, dtype=dtype, device=device)

    @classmethod
    def from_factors(cls, factors: Factors, bias: torch.Tensor | None, dtype: torch.dtype) -> LowRankLinear:
        """Build from truncated factors of W [out, in]: B = U·√S [out, r], A = √S·Vh [r, in]."""
        B, A = factors.to_ab()
        out_features, in_features = factors.shape
        layer = cls(in_features, out_features, factors.rank, bias=bias is not None, dtype=dtype)
        with torch.no_grad():
            layer.A.weight.copy_(A.to(dtype))
            layer.B.weight.copy_(B.to(dtype))
            if bias is not None and layer.B.bias is not None:
                layer.B.bias.copy_(bias.to(dtype))
        if not (torch.isfinite(layer.A.weight).all() and torch.isfinite(layer.B.weight).all()):
            raise ValueError("low-rank factors are not finite")
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.B(self.A(x))
        return out

    def dense_weight(self) -> torch.Tensor:
        """B·A as [out, in]."""
        return self.B.weight @ self.A.weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def lowrank_saves_parameters(rank: int, out_features: int, in_features: int) -> bool:
    """True when r·(m + n) < m·n, i.e. the factorization is smaller than the dense matrix."""
    return rank * (out_features + in_features) < out_features * in_features


def apply_rank_map(model: nn.Module, rank_map: dict[str, int], dtype: torch.dtype | None = None) -> None:
    """Replace each named ``nn.Linear`` by an (uninitialised) ``LowRankLinear`` of the given rank."""
    from rankwise.modules.replace import replace_module

    for name, rank in rank_map.items():
        old = model.get_submodule(name)
        if not isinstance(old, nn.Linear):
            raise ValueError(f"{name} is not an nn.Linear (got {type(old).__name__})")
        new = LowRankLinear(old.in_features, old.out_features, rank, bias=old.bias is not None,
                            dtype=dtype or old.weight.dtype, device=old.weight.device)
        replace_module(model, name, new)
