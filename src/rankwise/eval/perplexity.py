"""Token-level perplexity: exp of the mean NLL of every predicted token over a set of windows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # tokens scored: windows × (seq_len − 1)

    def __float__(self) -> float:
        return self.perplexity


def hidden_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The decoder body and LM head of an HF causal LM, when it exposes both."""
    get_head = getattr(model, "get_output_embeddings", None)
    body = getattr(model, "model", None) or getattr(model, "base_model", None)
    head = get_head() if callable(get_head) else None
    if isinstance(body, nn.Module) and isinstance(head, nn.Module) and body is not model:
        return body, head
    return None


def window_nll(model: nn.Module, batch: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, int]:
    """Summed NLL (fp64 scalar) and token count of ``batch`` [B, T] predicting tokens 1..T−1.

    The LM head runs on ``chunk`` positions at a time so full-vocabulary logits for every
    position never exist at once (49k × B × T floats would dominate memory).
    """
    parts = hidden_and_head(model)
    targets = batch[:, 1:].reshape(-1)
    if parts is None:
        logits = model(batch).logits[:, :-1]
        logits = logits.reshape(-1, logits.shape[-1])
        return nn.functional.cross_entropy(logits.float(), targets, reduction="sum").double(), targets.numel()
    body, head = parts
    hidden = body(input_ids=batch).last_hidden_state[:, :-1].reshape(targets.numel(), -1)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, targets.numel(), chunk):
        logits = head(hidden[start : start + chunk]).float()
        total += nn.functional.cross_entropy(logits, targets[start : start + chunk], reduction="sum").double()
    return total, targets.numel()




@torch.no_grad()
def perplexity(
    model: nn.Module, windows: torch.Tensor, batch_size: int = 8, progress: bool = True, desc: str = "perplexity"
) -> PerplexityResult:
    """Perplexity of ``model`` on ``windows`` [N, T]; each window is scored independently."""
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [N, T] with T >= 2, got {tuple(windows.shape)}")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, disable=not progress, unit="batch"):
            nll, n = window_nll(model, windows[start : start + batch_size])
            total += float(nll)
            count += n
    finally:
        model.train(was_training)
    mean = total / count
    return PerplexityResult(math.exp(mean), mean, count)
