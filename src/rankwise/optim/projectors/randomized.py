"""``randomized``: the top-r left singular vectors from rankwise's seeded block-Krylov SVD.

The same subspace as ``svd`` up to the sketch's accuracy; each refresh draws its start block from a
seed derived from (seed, parameter index, refresh count), so every DDP rank finds the same basis.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from rankwise.linalg.svd import svd
from rankwise.optim.projectors import PROJECTORS
from rankwise.optim.projectors.base import Projector, ProjectorConfig, ProjectorState


class RandomizedConfig(ProjectorConfig):
    """Block-Krylov sketch size (Musco & Musco 2015, as in `rankwise.linalg.svd`)."""

    # A gradient subspace is refreshed every few hundred steps and only has to hold most of the
    # gradient's energy, so a shallow Krylov space does (the linalg default targets weight spectra).
    niter: int = Field(default=2, ge=0, description="extra Krylov blocks")
    oversample: int = Field(default=0, ge=0, description="extra columns per block")


@PROJECTORS.register("randomized")
class RandomizedProjector(Projector):
    name = "randomized"
    config_class = RandomizedConfig

    def fit(self, S: torch.Tensor, rank: int, seed: int) -> dict[str, Any]:
        assert isinstance(self.config, RandomizedConfig)
        f = svd(S, rank, method="randomized", oversample=self.config.oversample, niter=self.config.niter, seed=seed)
        return {"proj": f.U.contiguous()}

    def basis(self, state: ProjectorState, dim: int) -> torch.Tensor:
        proj: torch.Tensor = state["proj"]
        return proj
