"""Optimizers: drop-in `torch.optim.Optimizer`s that project gradients onto low-rank subspaces.

`LowRankAdamW` keeps Adam's moments in an r-dimensional projection of each 2-D gradient (GaLore,
the SVD-free DCT basis, APOLLO's random projection: `PROJECTORS`), so the optimizer state of a full
fine-tune shrinks to a fraction of AdamW's (`state_bytes`). Optimizers are built by name from
pydantic configs (`optimizer_config`, `build_optimizer`) and checkpointed without pickle
(`optimizer_state_to_tensors`, `load_optimizer_state`).
"""

from rankwise.optim.config import AdamWConfig, LowRankAdamWConfig
from rankwise.optim.factory import OPTIMIZERS, build_optimizer, optimizer_config, optimizer_names
from rankwise.optim.lowrank_adamw import LowRankAdamW
from rankwise.optim.memory import state_bytes
from rankwise.optim.projectors import PROJECTORS
from rankwise.optim.projectors.base import Projector, ProjectorConfig
from rankwise.optim.state_io import load_optimizer_state, optimizer_state_to_tensors

__all__ = [
    "OPTIMIZERS",
    "PROJECTORS",
    "AdamWConfig",
    "LowRankAdamW",
    "LowRankAdamWConfig",
    "Projector",
    "ProjectorConfig",
    "build_optimizer",
    "load_optimizer_state",
    "optimizer_config",
    "optimizer_names",
    "optimizer_state_to_tensors",
    "state_bytes",
]
