"""``svd``: the top-r left singular vectors of the gradient's short side (GaLore, Zhao et al. 2024).

The left singular vectors of S [d, k] are the eigenvectors of S Sᵀ [d, d]; forming that Gram (one
product) and one d×d eigendecomposition finds the same subspace as a thin SVD of S for a fraction of
its cost when k ≫ d (an embedding's 576 × 49152), which is what makes GaLore's first step stall.
"""

from __future__ import annotations

from typing import Any

import torch

from rankwise.optim.projectors import PROJECTORS
from rankwise.optim.projectors.base import Projector, ProjectorState


@PROJECTORS.register("svd")
class SVDProjector(Projector):
    name = "svd"

    def fit(self, S: torch.Tensor, rank: int, seed: int) -> dict[str, Any]:
        gram = S @ S.mT
        gram = 0.5 * (gram + gram.mT)  # exactly symmetric for eigh
        _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
        return {"proj": vectors[:, -rank:].flip(1).contiguous()}

    def basis(self, state: ProjectorState, dim: int) -> torch.Tensor:
        proj: torch.Tensor = state["proj"]
        return proj
