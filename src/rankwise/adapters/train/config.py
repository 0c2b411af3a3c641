"""`FinetuneConfig`: every knob of a fine-tuning run (saved as the run's resolved ``config.yaml``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from rankwise.adapters.config import AdapterConfig, config_from_dict
from rankwise.adapters.train.memory import Checkpointing


class FinetuneConfig(BaseModel):
    """Causal-LM fine-tuning of an adapter: AdamW (Loshchilov & Hutter 2019), linear warm-up then cosine
    decay to ``min_lr_ratio`` × ``lr``, gradient accumulation and clipping. Trains on the ``calib`` split
    of ``data`` and measures perplexity on the ``eval`` split before and after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="smollm2-135m", description="bundled name, HF folder, .gguf or hub id")
    adapter: SerializeAsAny[AdapterConfig]
    targets: str | list[str] = Field(default="all-linear")
    data: str = Field(default="tinystories", description="training text (its 'calib' split)")
    eval_data: str | None = Field(default=None, description="held-out text ('eval' split); None = data")
    seq_len: int = Field(default=256, gt=1)
    batch_size: int = Field(default=4, gt=0, description="windows per micro-batch")
    grad_accum: int = Field(default=1, gt=0, description="micro-batches per optimizer step")
    steps: int = Field(default=200, gt=0, description="optimizer steps")
    lr: float = Field(default=2e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = Field(default=(0.9, 0.999))
    warmup_steps: int = Field(default=10, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="clip the global grad norm; None = off")
    seed: int = Field(default=0, description="seeds data order, dropout and the adapter init")
    eval_tokens: int = Field(default=8192, ge=0, description="held-out tokens scored before/after; 0 = skip")
    eval_batch_size: int = Field(default=8, gt=0)
    checkpoint_every: int = Field(default=50, gt=0, description="save a resumable checkpoint every N steps")
    loss_chunk: int = Field(default=512, gt=0, description="positions per LM-head chunk in the loss")
    checkpointing: Checkpointing = Field(
        default="selective", description="what decoder blocks recompute in the backward pass instead of keeping: "
        "'none', 'selective' (the cheap ops: ~0.7x the peak memory of 'none' for ~1.1x the step time) or "
        "'full' (~0.5x for ~1.3x); it changes memory and time, never the results")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16: autocast the frozen model's matmuls to bfloat16 (mixed precision); "
        "the adapters, their sum with the base output, the loss and the optimizer stay fp32")

    @field_validator("checkpointing", mode="before")
    @classmethod
    def _checkpointing(cls, value: Any) -> Any:
        # Configs written before the modes existed hold a bool: true was full checkpointing.
        if isinstance(value, bool):
            return "full" if value else "none"
        return value

    @field_validator("adapter", mode="before")
    @classmethod
    def _adapter(cls, value: Any) -> Any:
        return config_from_dict(value) if isinstance(value, dict) else value

    def to_yaml_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json")
        return data
