"""Per-layer calibration statistics the data-aware methods need: input Grams and Fisher row weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.grams import collect_grams
from rankwise.eval.perplexity import window_nll
from rankwise.linalg.gram import GramAccumulator
from rankwise.modules.targets import linear_at


@dataclass
class LayerStats:
    """``gram``: input statistics (shared object for layers with the same input);
    ``fisher_rows`` [out]: Σ over batches of the squared gradient summed over each weight row."""

    gram: GramAccumulator | None = None
    fisher_rows: torch.Tensor | None = None


def gram_stats(model: nn.Module, names: list[str], windows: torch.Tensor, batch_size: int,
               progress: bool) -> dict[str, LayerStats]:
    grams = collect_grams(_body(model), names_in_body(model, names), windows, batch_size, progress)
    return {name: LayerStats(gram=grams[body_name]) for name, body_name in zip(names, names_in_body(model, names),
                                                                               strict=True)}


def _body(model: nn.Module) -> nn.Module:
    """The decoder without the LM head: calibration never needs vocabulary logits."""
    body = getattr(model, "model", None)
    return body if isinstance(body, nn.Module) else model


def names_in_body(model: nn.Module, names: list[str]) -> list[str]:
    body = _body(model)
    if body is model:
        return names
    prefix = next(n for n, m in model.named_modules() if m is body) + "."
    return [n.removeprefix(prefix) for n in names]


def fisher_stats(model: nn.Module, names: list[str], windows: torch.Tensor, batch_size: int,
                 progress: bool) -> dict[str, torch.Tensor]:
    """Σ_batches (∂L/∂W)² summed over each row, for every named linear layer ([out] fp64)."""
    layers = {name: linear_at(model, name) for name in names}
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers.values():
        layer.weight.requires_grad_(True)
    rows = {name: torch.zeros(layer.weight.shape[0], dtype=torch.float64) for name, layer in layers.items()}
    # Callers may hold no_grad; the Fisher needs the backward pass.
    with torch.enable_grad():
        try:
            for start in tqdm(range(0, windows.shape[0], batch_size), desc="fisher", disable=not progress,
                              unit="batch"):
                nll, count = window_nll(model, windows[start : start + batch_size])
                (nll / count).backward()  # type: ignore[no-untyped-call]
                for name, layer in layers.items():
                    grad = layer.weight.grad
                    if grad is not None:
                        rows[name] += grad.double().square().sum(1)
                        layer.weight.grad = None
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
    return rows
