"""Before/after measurements of a compression run: perplexity per source and prefill/decode speed,
each stage with a labelled progress bar; perplexities cached by model and window fingerprints."""

from __future__ import annotations

import torch
from torch import nn

from rankwise.eval.cache import cached_perplexity, model_fingerprint
from rankwise.eval.perplexity import perplexity
from rankwise.eval.speed import throughput


def measure(model: nn.Module, sources: dict[str, torch.Tensor], speed: bool, label: str, cache: bool = True,
            progress: bool = True) -> tuple[dict[str, float], list[str]]:
    """``{"ppl_wiki": ..., "prefill_tokens_per_s": ..., ...}`` and the keys that came from the cache.

    ``label`` names the model in the progress bars (``dense · perplexity wiki``). A cached perplexity
    is exact: the key covers every weight byte and every token of the windows.
    """
    out: dict[str, float] = {}
    cached: list[str] = []
    fingerprint = model_fingerprint(model) if cache and sources else None
    for name, wins in sources.items():
        desc = f"{label} · perplexity {name}"
        if fingerprint is not None:
            result, hit = cached_perplexity(model, wins, progress=progress, desc=desc, model_fp=fingerprint)
            if hit:
                cached.append(f"ppl_{name}")
        else:
            result = perplexity(model, wins, progress=progress, desc=desc)
        out[f"ppl_{name}"] = result.perplexity
    if speed and sources:
        prompt = next(iter(sources.values()))[0]
        tp = throughput(model, prompt, progress=progress, desc=f"{label} · prefill/decode speed")
        out["prefill_tokens_per_s"], out["decode_tokens_per_s"] = tp.prefill_tokens_per_s, tp.decode_tokens_per_s
        out["speed_cpu_share"] = tp.cpu_share
    return out, cached
