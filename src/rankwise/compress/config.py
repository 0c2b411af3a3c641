"""Compression configs: one pydantic model per method, one field per knob, YAML round-trippable."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CompressConfig(BaseModel):
    """Settings shared by every compression method.

    ``ratio`` is the fraction of the *targeted* matrices' parameters removed (0.2 removes 20 %).
    A matrix whose allocated rank r has r·(m + n) ≥ m·n stays dense.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: ClassVar[str] = ""

    ratio: float = Field(description="fraction of the targeted parameters to remove, in (0, 1)")
    alloc: str = Field("global", description="rank allocator: uniform, energy, welore or global")
    rank_multiple: int = Field(8, ge=1, description="ranks are rounded to a multiple of this")
    sequential: bool = Field(False, description="collect statistics block by block on the already "
                             "compressed model (data-aware methods)")
    sensitivity_windows: int = Field(8, ge=0, description="calibration windows whose LM-loss gradients weigh "
                                     "each layer's error for the global allocator (0: relative errors)")
    calib_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="dtype of the calibration forwards (statistics are always accumulated in fp64): "
        "auto = bf16 where the CPU has bf16 units, else fp32")

    @field_validator("ratio")
    @classmethod
    def _ratio_in_open_unit_interval(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {value}")
        return value

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump({"method": self.method, **self.model_dump()}, sort_keys=False)


class SVD(CompressConfig):
    """Plain truncated SVD of each weight (LoRD; Kaushal et al. 2023). Data-free."""

    method: ClassVar[str] = "svd"


class ASVD(CompressConfig):
    """Activation-aware SVD (Yuan et al. 2023): scale input channel j by mean|x_j|^alpha before the SVD."""

    method: ClassVar[str] = "asvd"
    alpha: float = Field(0.5, gt=0.0, le=2.0, description="exponent of the mean absolute activation")


class FWSVD(CompressConfig):
    """Fisher-weighted SVD (Hsu et al. 2022): rows weighted by √(Σ squared gradients of the LM loss)."""

    method: ClassVar[str] = "fwsvd"


class SVDLLM(CompressConfig):
    """SVD-LLM (Wang et al. 2024): truncation-aware whitening with the input Gram G = Σ x xᵀ.

    The rank-r result minimises ‖(W − Ŵ)X‖_F; a ridge of ``clamp``·λ_max is added to G so a
    rank-deficient Gram still whitens. With ``correct`` (output matching), blocks
    are compressed in order and each target instead minimises ‖W X − Ŵ X̃‖_F, X̃ its inputs in the
    partly compressed model, so every layer also compensates the error of the layers before it.
    """

    method: ClassVar[str] = "svd_llm"
    clamp: float = Field(1e-6, gt=0.0, lt=1.0,
                         description="ridge added to the Gram, relative to its largest eigenvalue")
    correct: bool = Field(True, description="output-matching correction: match the dense outputs from the "
                          "compressed model's inputs, block by block (on by default: on SmolLM2 it removes "
                          "~45 % of the perplexity excess at 40 % for ~3x the compression time; see the README)")
    correct_ridge: float = Field(1.0, ge=0.0, description="correction only: penalty δ Σ_j G̃_jj ‖(Ŵ − W)_j‖² "
                                 "pulling each corrected layer's input channels towards the dense weight, in "
                                 "proportion to their energy (0: exact correction, which overfits few calibration "
                                 "tokens; large: sequential mode)")


CONFIGS: dict[str, type[CompressConfig]] = {c.method: c for c in (SVD, ASVD, FWSVD, SVDLLM)}
