"""Memory and speed levers of a fine-tuning step: activation checkpointing, bf16 mixed precision."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from rankwise.errors import RankwiseError


@contextmanager
def activation_checkpointing(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Recompute each decoder block's activations in the backward pass instead of storing them.

    A block then keeps only its input [B, T, d] for the backward pass, not the dozen [B, T, d] and
    [B, T, d_ff] intermediates its projections, norms and adapters save: on SmolLM2-135M with LoRA on
    every projection (batch 4 x 256) the peak RSS of a step drops from ~3.6 GB to ~2.2 GB, and the step
    takes ~1.4x as long (one extra forward pass of the blocks), so it is opt-in. Uses transformers'
    own non-reentrant checkpointing, so it works with any model that supports
    ``gradient_checkpointing_enable``; it is switched off again on exit.
    """
    if not enabled:
        yield
        return
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if enable is None or not getattr(model, "supports_gradient_checkpointing", False):
        raise RankwiseError(f"{type(model).__name__} does not support activation checkpointing; "
                            "train without --checkpointing")
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        model.gradient_checkpointing_disable()  # type: ignore[operator]


@contextmanager
def mixed_precision(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast the forward pass to bfloat16 when ``precision == "bf16"``; a no-op for ``"fp32"``.

    The frozen model's matmuls then run in bf16 (CPUs with AVX512-BF16 or AMX, and GPUs, multiply bf16
    several times faster than fp32) and the activations they save for the backward pass are half the
    size. `AdapterLinear` keeps the adapter path and its sum with the base output in fp32, the loss is
    reduced in fp32 and the optimizer updates fp32 weights, so small adapter updates are not rounded
    away. Run the backward pass outside this context, as torch recommends.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; use 'fp32' or 'bf16'")
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield
