"""Prefill and decode throughput, measured with warm-up and the median of repeats, and whether the
machine let this process have its cores while measuring (CPU time against wall time)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

#: Below this share of its threads' wall time on a CPU, the process was starved by other work and
#: its speed says more about the machine's load than about the model.
LOADED_BELOW = 0.75


@dataclass(frozen=True)
class Throughput:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prefill_batch: int
    prefill_seq_len: int
    decode_tokens: int
    # CPU time / (wall time × torch threads) over the prefill runs, whose large matmuls keep every
    # thread busy on an idle machine (single-token decode steps do not, so they cannot tell).
    cpu_share: float = 1.0

    @property
    def loaded(self) -> bool:
        """True when other processes took a large share of the cores while this was measured."""
        return self.cpu_share < LOADED_BELOW


def speedup_line(kind: str, before: float, after: float, cpu_share: float) -> str:
    """``prefill tokens/s  a -> b (1.34x)``, or why no speed-up is given when the machine was loaded
    (``cpu_share``: the lower of the two measurements' `Throughput.cpu_share`)."""
    line = f"{kind + ' tokens/s':<20} {before:>13.1f} -> {after:>13.1f}   "
    if cpu_share < LOADED_BELOW:
        return line + (f"(no speed-up given: the machine was loaded, this process got {cpu_share:.0%} of its "
                       f"{torch.get_num_threads()} threads' time)")
    return line + f"({after / before:.2f}x)"


@torch.no_grad()
def throughput(
    model: nn.Module,
    prompt: torch.Tensor,
    prefill_batch: int = 4,
    decode_tokens: int = 32,
    repeats: int = 3,
    progress: bool = False,
    desc: str = "speed",
) -> Throughput:
    """Prefill: a forward pass over ``prefill_batch`` copies of ``prompt`` [T] (no cache).
    Decode: greedy generation of ``decode_tokens`` tokens with the KV cache after a 1×T prefill.
    """
    model.eval()
    batch = prompt.reshape(1, -1).expand(prefill_batch, -1).contiguous()
    decode_rounds = max(1, repeats - 1)
    bar = tqdm(total=1 + repeats + decode_rounds, desc=desc, disable=not progress, unit="run")
    model(batch, use_cache=False)  # warm-up: first-call allocations and kernel selection
    bar.update()
    wall_total, cpu_total = 0.0, 0.0
    prefill = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        model(batch, use_cache=False)
        prefill.append(time.perf_counter() - t0)
        wall_total, cpu_total = wall_total + prefill[-1], cpu_total + time.process_time() - c0
        bar.update()
    decode = []
    for _ in range(decode_rounds):
        out = model(prompt.reshape(1, -1), use_cache=True)
        cache, nxt = out.cache, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(decode_tokens):
            out = model(nxt, cache=cache, use_cache=True)
            cache, nxt = out.cache, out.logits[:, -1:].argmax(-1)
        decode.append(time.perf_counter() - t0)
        bar.update()
    bar.close()
    return Throughput(
        prefill_tokens_per_s=batch.numel() / statistics.median(prefill),
        decode_tokens_per_s=decode_tokens / statistics.median(decode),
        prefill_batch=prefill_batch,
        prefill_seq_len=int(prompt.numel()),
        decode_tokens=decode_tokens,
        cpu_share=cpu_total / max(wall_total * torch.get_num_threads(), 1e-9),
    )
