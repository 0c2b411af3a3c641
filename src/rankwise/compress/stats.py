"""Per-layer calibration statistics the data-aware methods need: input Grams and Fisher row weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.grams import SharedGrams
from rankwise.calib.hooks import input_hooks
from rankwise.eval.perplexity import window_nll
from rankwise.linalg.gram import GramAccumulator
from rankwise.modules.targets import linear_at


@dataclass
class LayerStats:
    """``gram``: input statistics (shared object for layers with the same input);
    ``fisher_rows`` [out]: Σ over batches of the squared gradient summed over each weight row."""

    gram: GramAccumulator | None = None
    fisher_rows: torch.Tensor | None = None


def gram_stats(model: nn.Module, names: list[str], windows: torch.Tensor, batch_size: int, progress: bool,
               sensitivity_windows: int = 0) -> tuple[dict[str, LayerStats], dict[str, float]]:
    """Input Grams of the named layers over all ``windows`` [N, T] and, when asked, output
    sensitivities from the first ``sensitivity_windows`` of them.

    The sensitivity pass (forward + backward) also feeds the Grams, so those windows are not run
    a second time; the rest go through the decoder body only (no LM head, no gradients).
    """
    shared = SharedGrams()
    k = min(sensitivity_windows, windows.shape[0])
    sensitivity: dict[str, float] = {}
    with input_hooks(model, names, shared):
        if k:
            sensitivity = output_sensitivity(model, names, windows[:k], max(1, batch_size // 2), progress,
                                             after_batch=shared.end_batch)
        body = _body(model)
        with torch.no_grad():
            for start in tqdm(range(k, windows.shape[0], batch_size), desc="calibration", disable=not progress,
                              unit="batch"):
                body(windows[start : start + batch_size], use_cache=False)
                shared.end_batch()
    return {name: LayerStats(gram=shared.grams[name]) for name in names}, sensitivity


def _body(model: nn.Module) -> nn.Module:
    """The decoder without the LM head: Gram statistics never need vocabulary logits."""
    body = getattr(model, "model", None)
    return body if isinstance(body, nn.Module) else model


@contextmanager
def grads_only_for(model: nn.Module, params: list[torch.Tensor]) -> Iterator[None]:
    """Inside: grad mode on, and only ``params`` require grad (the rest of the model is frozen so
    no unneeded weight gradient is formed). Every parameter's flag is restored on exit."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        for t in params:
            t.requires_grad_(True)
        with torch.enable_grad():  # callers may hold no_grad; these passes need the backward
            yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def fisher_stats(model: nn.Module, names: list[str], windows: torch.Tensor, batch_size: int,
                 progress: bool) -> dict[str, torch.Tensor]:
    """Σ_batches (∂L/∂W)² summed over each row, for every named linear layer ([out] fp64)."""
    layers = {name: linear_at(model, name) for name in names}
    rows = {name: torch.zeros(layer.weight.shape[0], dtype=torch.float64) for name, layer in layers.items()}
    with grads_only_for(model, [layer.weight for layer in layers.values()]):
        for start in tqdm(range(0, windows.shape[0], batch_size), desc="fisher", disable=not progress, unit="batch"):
            nll, count = window_nll(model, windows[start : start + batch_size])
            (nll / count).backward()  # type: ignore[no-untyped-call]
            for name, layer in layers.items():
                grad = layer.weight.grad
                if grad is not None:
                    rows[name] += grad.double().square().sum(1)
                    layer.weight.grad = None
    return rows


def output_sensitivity(model: nn.Module, names: list[str], windows: torch.Tensor, batch_size: int,
                       progress: bool, after_batch: Callable[[], None] | None = None) -> dict[str, float]:
    """Mean squared LM-loss gradient per output element of each named layer: E_t[‖∂L/∂y_t‖²]/m.

    To second order, perturbing a layer's outputs by δY changes the loss by about
    ½·Σ_t δy_tᵀ F δy_t; with F ≈ (this scalar)·I per layer, a truncation whose output error is
    ‖δY‖²_F costs ≈ ½·sensitivity·‖δY‖²_F / tokens. That puts every layer's error curve in the same
    unit (loss), which rank allocation needs. Only activation gradients are computed: the embedding
    output is the one tensor that requires grad, so no weight gradient is ever formed.
    """
    sums = {name: 0.0 for name in names}
    sizes = {name: linear_at(model, name).out_features for name in names}
    tokens = 0
    handles = []

    def make(name: str) -> Any:
        def hook(_m: nn.Module, _gin: Any, gout: tuple[torch.Tensor, ...]) -> None:
            sums[name] += float(gout[0].detach().double().square().sum())

        return hook

    embed: nn.Module = model.get_input_embeddings()  # type: ignore[operator]
    handles.append(embed.register_forward_hook(lambda _m, _a, out: out.requires_grad_(True)))
    for name in names:
        handles.append(linear_at(model, name).register_full_backward_hook(make(name)))
    try:
        with grads_only_for(model, []):  # no weight gradients: only activation gradients are needed
            for start in tqdm(range(0, windows.shape[0], batch_size), desc="sensitivity", disable=not progress,
                              unit="batch"):
                batch = windows[start : start + batch_size]
                nll, _ = window_nll(model, batch)
                nll.backward()  # type: ignore[no-untyped-call]  # summed NLL: every token weighs 1
                tokens += batch.numel()
                if after_batch is not None:
                    after_batch()
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / tokens / sizes[name] for name in names}
