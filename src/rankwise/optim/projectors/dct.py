"""``dct``: r columns of a fixed orthonormal DCT-II basis (Modoranu et al. 2024, "Breaking the Frontier
of ... DCT"): SVD-free.

One basis D [d, d] per dimension d is built once and shared by every layer with that dimension; a
layer keeps only the int indices of its r chosen columns. The columns chosen are those along which
the gradient has the most energy: the largest ‖Dᵀ S‖ rows, i.e. the largest diagonal entries of
Dᵀ (S Sᵀ) D, computed through the d×d Gram so that no [d, k] temporary is made. Two bases of the
same D differ by a selection of columns, so carrying moments across a refresh is exact for the
columns both keep.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rankwise.optim.projectors import PROJECTORS
from rankwise.optim.projectors.base import Projector, ProjectorState


def dct_basis(d: int) -> torch.Tensor:
    """Orthonormal DCT-II basis D [d, d] (fp32): column j is the frequency-j cosine over positions i,
    D[i, j] = √(2/d)·c_j·cos(π (i + ½) j / d) with c_0 = 1/√2, c_j = 1 otherwise; DᵀD = I."""
    i = torch.arange(d, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)[None, :]
    D = torch.cos(math.pi * (i + 0.5) * j / d) * math.sqrt(2.0 / d)
    D[:, 0] /= math.sqrt(2.0)
    return D.to(torch.float32)


@PROJECTORS.register("dct")
class DCTProjector(Projector):
    name = "dct"

    def _basis(self, d: int) -> torch.Tensor:
        return self.shared.get(("dct", d), lambda: dct_basis(d))

    def fit(self, S: torch.Tensor, rank: int, seed: int) -> dict[str, Any]:
        D = self._basis(S.shape[0])
        gram = S @ S.mT
        energy = (D * (gram @ D)).sum(dim=0)  # ‖Dᵀ S‖² per column of D
        # A stable sort, so that ties (a zero gradient) pick the lowest frequencies, identically everywhere.
        order = torch.sort(energy, descending=True, stable=True).indices
        return {"proj_idx": order[:rank].contiguous()}

    def basis(self, state: ProjectorState, dim: int) -> torch.Tensor:
        return self._basis(dim)[:, state["proj_idx"]]
