"""`TrainConfig`: every knob of the training loop (saved as a run's resolved ``config.yaml``).

What trains (adapters, all weights, sampled layers) is not here: capabilities extend this config
with their own fields (``rankwise.adapters.FinetuneConfig`` adds the adapter, the targets, ``full``
and ``lisa``) and hand the loop a `Trainable`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rankwise.train.memory import Checkpointing


class TrainConfig(BaseModel):
    """Causal-LM training: linear warm-up then cosine decay to ``min_lr_ratio`` × ``lr``, gradient
    accumulation and clipping, any optimizer of `rankwise.optim`'s factory (AdamW, Loshchilov &
    Hutter 2019, by default). Trains on the ``calib`` split of ``data`` and measures perplexity on the
    ``eval`` split before and after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="smollm2-135m", description="bundled name, HF folder, .gguf or hub id")
    data: str = Field(default="tinystories", description="training text (its 'calib' split)")
    eval_data: str | None = Field(default=None, description="held-out text ('eval' split); None = data")
    seq_len: int = Field(default=256, gt=1)
    batch_size: int = Field(default=4, gt=0, description="windows per micro-batch")
    grad_accum: int = Field(default=1, gt=0, description="micro-batches per optimizer step")
    steps: int = Field(default=200, gt=0, description="optimizer steps")
    lr: float = Field(default=2e-4, gt=0, description="peak learning rate of the schedule")
    weight_decay: float = Field(default=0.0, ge=0, description="decoupled weight decay")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="Adam's moment decay rates")
    optimizer: str = Field(default="adamw", description="a name from rankwise.optim: adamw, lowrank_adamw, ...")
    optimizer_options: dict[str, Any] = Field(
        default_factory=dict, description="the optimizer's own knobs (e.g. rank, update_gap, projector for "
        "lowrank_adamw); checked against its config class when the run starts")
    warmup_steps: int = Field(default=10, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="clip the global grad norm; None = off")
    seed: int = Field(default=0, description="seeds data order, dropout and every init")
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
        "trainable tensors, the loss and the optimizer stay fp32")

    @field_validator("checkpointing", mode="before")
    @classmethod
    def _checkpointing(cls, value: Any) -> Any:
        # Configs written before the modes existed hold a bool: true was full checkpointing.
        if isinstance(value, bool):
            return "full" if value else "none"
        return value

    def to_yaml_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json")
        return data
