"""`TripletDelta`: an update in SVD form, ΔW = U·diag(S)·Vh, for SVFit, SORSA and KaSA.

The triplets start as r singular triplets of W (the principal ones for SVFit and SORSA, the minor
ones for KaSA) and the frozen weight is W₀ − U₀·diag(S₀)·Vh₀, so the output is unchanged at init.
Which tensors train, and the regulariser, are the only differences between the three methods.
"""

from __future__ import annotations

from typing import Any

import torch

from rankwise.adapters.variant import Variant, frozen_buffer, orthonormality_penalty, trainable
from rankwise.linalg import Factors


class TripletDelta(Variant):
    """U [m, r], S [r], Vh [r, n]: S always trains; U and Vh train when ``train_vectors``.

    ``orth_weight`` · (‖UᵀU − I‖²_F + ‖Vh Vhᵀ − I‖²_F) + ``sigma_weight`` · ‖S‖² is the regulariser
    (SORSA's and KaSA's; zero weights for SVFit, whose vectors cannot leave orthonormality).
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    U0: torch.Tensor
    S0: torch.Tensor
    Vh0: torch.Tensor

    def __init__(self, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, train_vectors: bool,
                 orth_weight: float = 0.0, sigma_weight: float = 0.0, S0: torch.Tensor | None = None,
                 U0: torch.Tensor | None = None, Vh0: torch.Tensor | None = None) -> None:
        super().__init__()
        self.train_vectors = train_vectors
        self.orth_weight = float(orth_weight)
        self.sigma_weight = float(sigma_weight)
        self.S = trainable(S)
        if train_vectors:
            self.U, self.Vh = trainable(U), trainable(Vh)
        else:
            frozen_buffer(self, "U", U)
            frozen_buffer(self, "Vh", Vh)
        frozen_buffer(self, "S0", S if S0 is None else S0)
        # Frozen vectors are their own initial values: stored once.
        if train_vectors:
            frozen_buffer(self, "U0", U if U0 is None else U0)
            frozen_buffer(self, "Vh0", Vh if Vh0 is None else Vh0)

    @classmethod
    def from_factors(cls, part: Factors, train_vectors: bool, orth_weight: float = 0.0,
                     sigma_weight: float = 0.0) -> TripletDelta:
        return cls(part.U, part.S, part.Vh, train_vectors, orth_weight, sigma_weight)

    def _initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.U0, self.Vh0) if self.train_vectors else (self.U, self.Vh)

    @property
    def rank(self) -> int:
        return int(self.S.shape[0])

    def add_delta(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = (x.reshape(-1, x.shape[-1]) @ self.Vh.mT) * self.S  # [N, r]
        total = torch.addmm(y.reshape(-1, y.shape[-1]), h, self.U.mT)
        return total.view(*y.shape[:-1], total.shape[-1])

    def delta_weight(self) -> torch.Tensor:
        return ((self.U * self.S) @ self.Vh).detach()

    def initial_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        U0, Vh0 = self._initial()
        return Vh0, U0 * self.S0

    def update_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.train_vectors:  # same vectors: U·diag(S − S₀)·Vh, rank r
            return self.Vh.detach().clone(), (self.U * (self.S - self.S0)).detach()
        A0, B0 = self.initial_factors()
        A = torch.cat([self.Vh.detach(), A0], dim=0)
        B = torch.cat([(self.U * self.S).detach(), -B0], dim=1)
        return A, B

    def regulariser(self) -> torch.Tensor | None:
        terms: list[torch.Tensor] = []
        if self.orth_weight > 0 and self.train_vectors:
            penalty = orthonormality_penalty(self.U, rows=False) + orthonormality_penalty(self.Vh, rows=True)
            terms.append(self.orth_weight * penalty)
        if self.sigma_weight > 0:
            terms.append(self.sigma_weight * self.S.square().sum())
        return torch.stack(terms).sum() if terms else None

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ["U", "S", "Vh", "S0"] + (["U0", "Vh0"] if self.train_vectors else [])
        return {name: getattr(self, name).detach().contiguous() for name in names}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], config: Any, shape: tuple[int, int],
                     scaling: float) -> Variant:
        # Trained vectors are saved with their initial values (U0, Vh0); frozen ones are not.
        return cls(tensors["U"], tensors["S"], tensors["Vh"], "U0" in tensors, getattr(config, "orth_weight", 0.0),
                   getattr(config, "sigma_weight", 0.0), S0=tensors["S0"], U0=tensors.get("U0"),
                   Vh0=tensors.get("Vh0"))
