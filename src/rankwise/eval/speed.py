"""Prefill and decode throughput, measured with warm-up and the median of repeats."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Throughput:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prefill_batch: int
    prefill_seq_len: int
    decode_tokens: int


@torch.no_grad()
def throughput(
    model: nn.Module,
    prompt: torch.Tensor,
    prefill_batch: int = 4,
    decode_tokens: int = 32,
    repeats: int = 3,
) -> Throughput:
    """Prefill: a forward pass over ``prefill_batch`` copies of ``prompt`` [T] (no cache).
    Decode: greedy generation of ``decode_tokens`` tokens with the KV cache after a 1×T prefill.
    """
    model.eval()
    batch = prompt.reshape(1, -1).expand(prefill_batch, -1).contiguous()
    model(batch, use_cache=False)  # warm-up: first-call allocations and kernel selection
    prefill = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(batch, use_cache=False)
        prefill.append(time.perf_counter() - t0)
    decode = []
    for _ in range(max(1, repeats - 1)):
        out = model(prompt.reshape(1, -1), use_cache=True)
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(decode_tokens):
            out = model(nxt, past_key_values=cache, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        decode.append(time.perf_counter() - t0)
    return Throughput(
        prefill_tokens_per_s=batch.numel() / statistics.median(prefill),
        decode_tokens_per_s=decode_tokens / statistics.median(decode),
        prefill_batch=prefill_batch,
        prefill_seq_len=int(prompt.numel()),
        decode_tokens=decode_tokens,
    )
