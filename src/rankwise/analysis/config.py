"""Knobs of `rankwise analyze`, one field each (pydantic, extra="forbid", YAML round-trippable)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AnalyzeConfig(BaseModel):
    """Spectral diagnostics of weights, weight deltas and gradients.

    Power-law α as in WeightWatcher (Martin & Mahoney 2021); FARMS α (Hu et al. 2025); WeLore ranks
    (Jaiswal et al. 2024); intruder dimensions (Shuttleworth et al. 2024); gradient nuclear norm and
    effective rank (Li et al. 2025, "How Instruction and Reasoning Data shape Post-Training").
    """

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] | None = Field(default=None, description="metric names to compute (None: all registered)")
    include: str | None = Field(default=None, description="regex; only tensor names it matches are analysed")
    fast: bool = Field(default=False, description="randomized top-k singular values instead of the exact spectrum")
    fast_rank: int = Field(default=64, gt=0, description="k of the randomized top-k spectrum under fast")
    seed: int = Field(default=0, description="seed of the randomized SVD")
    precision: Literal["fp32", "fp64"] = Field(default="fp32", description="dtype of the Grams and eigenvalue solves")
    workers: int | None = Field(default=None, gt=0, description="matrices analysed in parallel, each single-threaded "
                                "(None: torch's thread count); never oversubscribes the cores")
    energies: list[float] = Field(default=[0.90, 0.95, 0.99], description="energy fractions for the rank_NN columns")
    farms_aspect_ratio: float = Field(default=1.0, ge=1.0, description="long/short side of the FARMS submatrices")
    farms_max_windows: int | None = Field(default=8, gt=0, description="at most this many FARMS submatrices per matrix")
    welore_ratio: float = Field(default=0.5, ge=0.0, lt=1.0, description="parameter fraction WeLore ranks remove")
    overlap_k: int = Field(default=32, gt=0, description="top-k singular subspace compared in delta mode")
    intruder_k: int = Field(default=10, gt=0, description="top fine-tuned singular vectors checked for intrusion")
    intruder_threshold: float = Field(default=0.5, gt=0.0, le=1.0, description="max |cos| of an intruder")
    gradients: bool = Field(default=False, description="also analyse the gradient of the LM loss on data")
    data: str = Field(default="wiki", description="text source of the gradient windows")
    windows: int = Field(default=16, gt=0, description="token windows whose loss is differentiated")
    seq_len: int = Field(default=256, gt=1, description="tokens per gradient window")
    batch_size: int = Field(default=4, gt=0, description="windows per backward pass (gradients are accumulated)")

    @field_validator("include")
    @classmethod
    def _include_is_a_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"'{value}' is not a valid regex ({exc}); fix the pattern") from None
        return value
