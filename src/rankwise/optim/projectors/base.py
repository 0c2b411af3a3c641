"""What a gradient projector is: the basis P [d, r] of a gradient's shorter side, and how it is refitted.

The optimizer always hands a projector the *short-side view* S [d, k] (d ≤ k) of a gradient G [m, n]:
S = G when m ≤ n, else Gᵀ. The projected gradient is R = Pᵀ S [r, k]; Adam runs on R, and the
projector adds the normalised update N [r, k], mapped back to full size [d, k], to the parameter.

A projector's per-parameter state is a flat dict of tensors and plain ints, stored in the optimizer's
``state[p]`` next to the moments, so that it checkpoints like any other optimizer state (safetensors +
JSON, never pickle). Tensors that many layers share (the DCT basis of one dimension) live in a
`SharedBases` cache owned by the optimizer: recomputable, never checkpointed, counted by `state_bytes`.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, MutableMapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

#: A projector's per-parameter state: tensors and plain ints only (checkpointable without pickle).
ProjectorState = MutableMapping[str, Any]


class ProjectorConfig(BaseModel):
    """Knobs of a projector; a projector without knobs uses this empty config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SharedBases:
    """Tensors shared by every layer that needs the same one, built once per key (e.g. ("dct", 576))."""

    def __init__(self) -> None:
        self.tensors: dict[tuple[str, int], torch.Tensor] = {}
        self._lock = threading.Lock()  # projectors are fitted on worker threads

    def get(self, key: tuple[str, int], build: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            if key not in self.tensors:
                self.tensors[key] = build()
            return self.tensors[key]


def derive_seed(seed: int, index: int, refresh: int) -> int:
    """A 63-bit seed from (user seed, parameter index in the groups, refresh count).

    A hash, not the global RNG nor Python's salted ``hash``: every process (every DDP rank, every
    resumed run) derives the same seed, so they draw the same subspace.
    """
    digest = hashlib.blake2b(f"{seed}:{index}:{refresh}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Projector(ABC):
    """One projection method. Subclasses set ``name`` and ``config_class`` and register themselves."""

    name: ClassVar[str]
    config_class: ClassVar[type[ProjectorConfig]] = ProjectorConfig
    #: Pᵀ P = I. Change of basis between two orthonormal bases needs no Gram correction.
    orthonormal: ClassVar[bool] = True

    def __init__(self, config: ProjectorConfig, shared: SharedBases) -> None:
        self.config = config
        self.shared = shared

    @abstractmethod
    def fit(self, S: torch.Tensor, rank: int, seed: int) -> dict[str, Any]:
        """New projector state for the short-side gradient view ``S`` [d, k] (fp32) at rank ``rank``.

        Runs on a single-threaded worker (`rankwise.linalg.threads.parallel_map`), one matrix per core.
        """

    @abstractmethod
    def basis(self, state: ProjectorState, dim: int) -> torch.Tensor:
        """P [dim, r] (fp32) from the stored state."""

    def apply_update(self, target: torch.Tensor, P: torch.Tensor, N: torch.Tensor, S: torch.Tensor,
                     R: torch.Tensor, alpha: float) -> None:
        """target += alpha · (P N) in place: ``target`` is the parameter's short-side view [d, k], ``P`` the
        basis [d, r], ``N`` [r, k] the normalised low-rank update, ``S`` the gradient view, R = Pᵀ S."""
        if target.dtype == torch.float32:
            target.addmm_(P, N, alpha=alpha)  # one fused product: no [d, k] temporary
        else:
            target.add_((P @ N).to(target.dtype), alpha=alpha)
