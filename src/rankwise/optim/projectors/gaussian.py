"""``random``: a seeded Gaussian projection with channel-wise update scaling (APOLLO, Zhu et al. 2024).

P [d, r] has i.i.d. N(0, 1/r) entries, so ‖Pᵀ s‖ ≈ ‖s‖ for any column s (Johnson–Lindenstrauss). It is
never stored: only its seed is, and P is regenerated from that seed whenever it is needed.

APOLLO does not map the low-rank update back through P. It uses Adam's low-rank statistics only to
estimate a per-channel learning-rate scale: for each column j of the long side, the full-size update
is the raw gradient column scaled by ‖N[:, j]‖ / ‖R[:, j]‖ (N the normalised low-rank update, R the
projected gradient), i.e. how much Adam would rescale that channel.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rankwise.optim.projectors import PROJECTORS
from rankwise.optim.projectors.base import Projector, ProjectorState


def gaussian_projection(d: int, rank: int, seed: int) -> torch.Tensor:
    """P [d, r] with N(0, 1/r) entries, drawn from its own generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(d, rank, generator=gen, dtype=torch.float32).mul_(1.0 / math.sqrt(rank))


@PROJECTORS.register("random")
class RandomProjector(Projector):
    name = "random"
    orthonormal = False

    def fit(self, S: torch.Tensor, rank: int, seed: int) -> dict[str, Any]:
        # The rank is the moments' row count; storing it keeps P recoverable from the state alone.
        return {"proj_seed": seed, "proj_rank": rank}

    def basis(self, state: ProjectorState, dim: int) -> torch.Tensor:
        return gaussian_projection(dim, int(state["proj_rank"]), int(state["proj_seed"]))

    def apply_update(self, target: torch.Tensor, P: torch.Tensor, N: torch.Tensor, S: torch.Tensor,
                     R: torch.Tensor, alpha: float) -> None:
        r_norm = R.norm(dim=0)
        # A column with no gradient gets no update (0/0 would be NaN).
        factor = torch.where(r_norm > 0, N.norm(dim=0) / r_norm.clamp_min(torch.finfo(R.dtype).tiny), 0.0)
        target.addcmul_(S, factor[None, :], value=alpha)
