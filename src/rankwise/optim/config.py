"""Optimizer configs (pydantic, YAML round-trippable): one field per knob, validated once.

`LowRankAdamW` validates every param group through `LowRankAdamWConfig`, so a group override is
checked exactly like a constructor argument.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rankwise.optim.projectors import PROJECTORS

NanPolicy = Literal["raise", "skip"]


class AdamWConfig(BaseModel):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019), as `torch.optim.AdamW`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(default=1e-3, ge=0.0, description="learning rate (the training loop may set it every step)")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="decay of the first and second moments")
    eps: float = Field(default=1e-8, gt=0.0, description="added to the square root of the second moment")
    weight_decay: float = Field(default=0.0, ge=0.0, description="decoupled weight decay")


class LowRankAdamWConfig(AdamWConfig):
    """AdamW whose moments live in a low-rank projection of each 2-D gradient: GaLore (Zhao et al. 2024)
    with the ``svd``/``randomized`` projectors, the SVD-free DCT basis of Modoranu et al. 2024 (``dct``),
    or APOLLO's random projection with channel-wise scaling (Zhu et al. 2024, ``random``)."""

    rank: int = Field(default=64, gt=0, description="projection rank r (clamped to a matrix's shorter side)")
    update_gap: int = Field(default=200, gt=0, description="steps between projector refreshes")
    projector: str = Field(default="svd", description="projector name (rankwise.optim.PROJECTORS)")
    projector_options: dict[str, Any] = Field(default_factory=dict, description="the projector's own config knobs")
    scale: float = Field(default=0.25, gt=0.0, description="multiplies the projected-back update (GaLore's alpha)")
    reproject_state: bool = Field(default=True, description="carry both moments into a refreshed subspace")
    seed: int = Field(default=0, ge=0, description="seed of every random draw (with parameter index and refresh)")
    nan_policy: NanPolicy = Field(default="raise", description="on a NaN/inf gradient: raise, or skip the step")

    @field_validator("projector")
    @classmethod
    def _registered_projector(cls, name: str) -> str:
        PROJECTORS.get(name)  # an unknown name fails when the config is made, before any run starts
        return name
