"""Memory and speed levers of a fine-tuning step: activation checkpointing, bf16 mixed precision."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from rankwise.errors import RankwiseError

#: What a decoder block keeps for the backward pass: "none" recomputes nothing (everything its ops save
#: is kept), "selective" keeps only the outputs of its full-rank matmuls and attention and recomputes
#: the cheap rest, "full" keeps only the block's input and reruns the whole block.
Checkpointing = Literal["none", "selective", "full"]
CHECKPOINTING_MODES: tuple[str, ...] = get_args(Checkpointing)

#: A matmul whose inner (contracted) dimension is at most this costs at most this many multiply-adds per
#: output element to redo: LoRA's rank-r products, like the elementwise ops, are cheaper to recompute
#: than to keep. Attention's q·kᵀ (head_dim 64 and up) and every full-rank projection are kept.
LOW_RANK_INNER_MAX = 32

_aten = torch.ops.aten
_MATMULS = {_aten.mm.default: 1, _aten.bmm.default: 1, _aten.addmm.default: 2, _aten.baddbmm.default: 2}
_ATTENTION = {getattr(_aten, name).default for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention") if hasattr(_aten, name)}


def selective_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Keep an op's output when redoing it is expensive, recompute it otherwise (torch's selective
    activation checkpointing). Kept: fused attention and matmuls with an inner dimension above
    ``LOW_RANK_INNER_MAX``. Recomputed: norms, RoPE, activations, casts, residual adds, repeated KV
    heads and low-rank adapter products, which on SmolLM2 hold ~2/3 of what a block saves and cost
    a few percent of the step to redo."""
    if op in _ATTENTION:
        return CheckpointPolicy.MUST_SAVE
    position = _MATMULS.get(op)
    if position is not None:
        inner = args[position].shape[-2]  # the right operand [.., K, N]
        return CheckpointPolicy.MUST_SAVE if inner > LOW_RANK_INNER_MAX else CheckpointPolicy.PREFER_RECOMPUTE
    return CheckpointPolicy.PREFER_RECOMPUTE


@contextmanager
def activation_checkpointing(model: nn.Module, mode: Checkpointing = "full") -> Iterator[None]:
    """Recompute decoder-block activations in the backward pass instead of storing them.

    ``mode`` is one of `CHECKPOINTING_MODES`. On SmolLM2-135M with LoRA r=16 on every projection
    (batch 4 x 256, fp32; bench/adapt_step_vs_peft.py) a step's peak RSS is ~4.0 GB with "none", ~2.8 GB
    with "selective" (~1.1x the step time) and ~2.0 GB with "full" (~1.3x: one extra forward pass).
    Uses transformers' own non-reentrant checkpointing, so it works with any model that supports
    ``gradient_checkpointing_enable``, and switches it off again on exit. On a model without that
    support "selective" (the default of `rankwise finetune`) warns and keeps everything; "full" raises.
    """
    if mode not in CHECKPOINTING_MODES:
        raise ValueError(f"unknown checkpointing mode {mode!r}; use one of {', '.join(CHECKPOINTING_MODES)}")
    if mode == "none":
        yield
        return
    # transformers >= 5.x names it activation checkpointing (the old names warn); older releases have only
    # gradient_checkpointing_*.
    new_api = hasattr(model, "activation_checkpointing_enable")
    enable = getattr(model, "activation_checkpointing_enable" if new_api else "gradient_checkpointing_enable", None)
    if enable is None or not getattr(model, "supports_gradient_checkpointing", False):
        message = f"{type(model).__name__} does not support activation checkpointing"
        if mode == "full":
            raise RankwiseError(f"{message}; train with --checkpointing none")
        warnings.warn(f"{message}; training without it", stacklevel=3)
        yield
        return
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, selective_policy)
    enable(**{"activation_checkpointing_kwargs" if new_api else "gradient_checkpointing_kwargs": kwargs})
    try:
        yield
    finally:
        getattr(model, "activation_checkpointing_disable" if new_api else "gradient_checkpointing_disable")()


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
