"""`RankedDelta`: ΔW = s·P·diag(λ)·Q with a rank that changes during training (AdaLoRA, IncreLoRA).

Triplets are removed or added for real: the parameters are replaced by smaller or larger ones and
the optimizer's per-parameter state is sliced or zero-extended to match, so memory follows the rank.
Importance is AdaLoRA's smoothed sensitivity: for every entry w, Ī ← β₁Ī + (1−β₁)|w·∂L/∂w| and
Ū ← β₂Ū + (1−β₂)|I − Ī|, scored Ī·Ū; a triplet scores s(λᵢ) + mean s(P·ᵢ) + mean s(Qᵢ·).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rankwise.adapters.variant import Variant, orthonormality_penalty, trainable

_PARAMS = ("P", "lam", "Q")
#: The rank dimension of each parameter: P [m, r], λ [r], Q [r, n].
_RANK_DIM = {"P": 1, "lam": 0, "Q": 0}


def _inner(optimizer: Any) -> Any:
    """The torch optimizer itself (accelerate wraps Trainer's in an ``.optimizer`` attribute)."""
    return getattr(optimizer, "optimizer", optimizer)


def swap_parameter(optimizer: Any, old: nn.Parameter, new: nn.Parameter,
                   resize: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Put ``new`` in ``old``'s place in the optimizer; its state tensors shaped like ``old`` go through ``resize``."""
    opt = _inner(optimizer)
    if opt is None:
        return
    for group in opt.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = opt.state.pop(old, None)
    if state is not None:
        opt.state[new] = {key: resize(value) if torch.is_tensor(value) and value.shape == old.shape else value
                          for key, value in state.items()}


class RankedDelta(Variant):
    """P [m, r], λ [r], Q [r, n] train; ``ipt_*``/``unc_*`` buffers hold the smoothed importance."""

    def __init__(self, P: torch.Tensor, lam: torch.Tensor, Q: torch.Tensor, scaling: float, orth_weight: float,
                 stats: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.P, self.lam, self.Q = trainable(P), trainable(lam), trainable(Q)
        self.scaling = float(scaling)
        self.orth_weight = float(orth_weight)
        for name in _PARAMS:
            for kind in ("ipt", "unc"):
                key = f"{kind}_{name}"
                value = stats[key] if stats is not None else torch.zeros_like(getattr(self, name))
                self.register_buffer(key, value.detach().float().contiguous().clone())

    @property
    def rank(self) -> int:
        return int(self.lam.shape[0])

    def add_delta(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = (x.reshape(-1, x.shape[-1]) @ self.Q.mT) * self.lam
        total = torch.addmm(y.reshape(-1, y.shape[-1]), h, self.P.mT, alpha=self.scaling)
        return total.view(*y.shape[:-1], total.shape[-1])

    def delta_weight(self) -> torch.Tensor:
        return (self.scaling * (self.P * self.lam) @ self.Q).detach()

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.Q.detach().contiguous(), (self.scaling * self.P * self.lam).detach().contiguous()

    def regulariser(self) -> torch.Tensor | None:
        if self.orth_weight <= 0 or self.rank == 0:
            return None
        penalty = orthonormality_penalty(self.P, rows=False) + orthonormality_penalty(self.Q, rows=True)
        return self.orth_weight * penalty

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().contiguous() for name, t in [*self.named_parameters(), *self.named_buffers()]}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: Any, shape: tuple[int, int],
                     scaling: float) -> Variant:
        return cls(tensors["P"], tensors["lam"], tensors["Q"], config.scaling(), config.orth_weight, tensors)

    # -- importance ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def update_importance(self, beta1: float, beta2: float) -> bool:
        """Fold the current gradients into the smoothed importance; False when there are none yet."""
        if any(getattr(self, name).grad is None for name in _PARAMS):
            return False
        for name in _PARAMS:
            p = getattr(self, name)
            sensitivity = (p * p.grad).abs()
            ipt, unc = getattr(self, f"ipt_{name}"), getattr(self, f"unc_{name}")
            ipt.mul_(beta1).add_(sensitivity, alpha=1 - beta1)
            unc.mul_(beta2).add_((sensitivity - ipt).abs(), alpha=1 - beta2)
        return True

    def triplet_scores(self) -> torch.Tensor:
        """[r]: s(λᵢ) + mean over column i of s(P) + mean over row i of s(Q), with s = Ī·Ū."""
        score: dict[str, torch.Tensor] = {name: getattr(self, f"ipt_{name}") * getattr(self, f"unc_{name}")
                                          for name in _PARAMS}
        total: torch.Tensor = score["lam"]
        return total + score["P"].mean(dim=0) + score["Q"].mean(dim=1)

    # -- resizing -----------------------------------------------------------------------------------------

    def _resize(self, optimizer: Any, change: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
        for name in _PARAMS:
            dim, old = _RANK_DIM[name], getattr(self, name)
            new = nn.Parameter(change(old.detach(), dim).contiguous())
            setattr(self, name, new)
            swap_parameter(optimizer, old, new, functools.partial(_along, change, dim))
            for kind in ("ipt", "unc"):
                key = f"{kind}_{name}"
                setattr(self, key, change(getattr(self, key), dim).contiguous())

    def keep(self, index: torch.Tensor, optimizer: Any = None) -> None:
        """Keep only the triplets at ``index`` (sorted): the rest leave the parameters and the optimizer."""
        self._resize(optimizer, lambda t, dim: t.index_select(dim, index))

    def grow(self, count: int, generator: torch.Generator, optimizer: Any = None) -> None:
        """Add ``count`` triplets with λ = 0 (the output does not change), P and Q ~ N(0, 0.02²) as at init;
        their optimizer state starts at zero."""
        m, n = self.P.shape[0], self.Q.shape[1]
        fresh = {"P": 0.02 * torch.randn(m, count, generator=generator), "lam": torch.zeros(count),
                 "Q": 0.02 * torch.randn(count, n, generator=generator)}
        for name in _PARAMS:
            dim, old = _RANK_DIM[name], getattr(self, name)
            new = nn.Parameter(torch.cat([old.detach(), fresh[name]], dim=dim).contiguous())
            setattr(self, name, new)
            swap_parameter(optimizer, old, new, functools.partial(_append_zeros, like=fresh[name], dim=dim))
            for kind in ("ipt", "unc"):
                key = f"{kind}_{name}"
                setattr(self, key, torch.cat([getattr(self, key), torch.zeros_like(fresh[name])], dim=dim))


def _along(change: Callable[[torch.Tensor, int], torch.Tensor], dim: int, t: torch.Tensor) -> torch.Tensor:
    return change(t, dim)


def _append_zeros(t: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.cat([t, torch.zeros_like(like)], dim=dim)


def initial_triplets(m: int, n: int, rank: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """P [m, r], λ [r] = 0, Q [r, n] with P, Q ~ N(0, 0.02²): ΔW = 0 at init (AdaLoRA's choice)."""
    return 0.02 * torch.randn(m, rank, generator=generator), torch.zeros(rank), 0.02 * torch.randn(
        rank, n, generator=generator)


def cubic_budget(step: int, total: int, start: int, end: int, warmup: int, final: int) -> int:
    """AdaLoRA's budget: ``start`` until ``warmup``, then cubic decay to ``end`` at ``total − final``."""
    if step < warmup:
        return start
    span = total - final - warmup
    if span <= 0 or step >= total - final:
        return end
    return end + math.floor((start - end) * (1 - (step - warmup) / span) ** 3)
