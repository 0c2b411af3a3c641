"""`Factors`: a (possibly truncated) singular value decomposition W ≈ U · diag(S) · Vh."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Factors:
    """Three factors of an m×n matrix.

    Shapes: ``U`` [m, k], ``S`` [k] (non-negative, descending), ``Vh`` [k, n].
    For a plain SVD, U and Vhᵀ have orthonormal columns. For a whitened SVD, ``Vh`` already
    contains the inverse whitening and is not orthonormal; ``reconstruct`` is still W_k.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    def __post_init__(self) -> None:
        k = self.S.shape[0]
        if self.U.shape[1] != k or self.Vh.shape[0] != k:
            raise ValueError(f"inconsistent factor shapes U{tuple(self.U.shape)} S{tuple(self.S.shape)} "
                             f"Vh{tuple(self.Vh.shape)}")

    @property
    def rank(self) -> int:
        return int(self.S.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.U.shape[0]), int(self.Vh.shape[1])

    def reconstruct(self) -> torch.Tensor:
        """The m×n matrix U · diag(S) · Vh."""
        return (self.U * self.S) @ self.Vh

    def truncate(self, rank: int) -> Factors:
        """Keep the ``rank`` leading triplets."""
        if not 0 <= rank <= self.rank:
            raise ValueError(f"rank {rank} is outside [0, {self.rank}]")
        return Factors(self.U[:, :rank], self.S[:rank], self.Vh[:rank])

    def tail(self, start: int) -> Factors:
        """The triplets from index ``start`` on (the minor part)."""
        return Factors(self.U[:, start:], self.S[start:], self.Vh[start:])

    def to_ab(self, scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Split the singular values evenly: returns ``(B [m, k], A [k, n])`` with scaling · B @ A = W_k.

        This is the LoRA convention (``lora_B`` [out, r], ``lora_A`` [r, in], output scaled by ``scaling``).
        """
        root = (self.S / scaling).sqrt()
        return self.U * root, root[:, None] * self.Vh

    def to(self, dtype: torch.dtype) -> Factors:
        return Factors(self.U.to(dtype), self.S.to(dtype), self.Vh.to(dtype))
