"""Per-layer calibration statistics: input Grams, Fisher row weights and LM-loss output sensitivities."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.grams import SharedGrams
from rankwise.calib.hooks import grads_only_for, input_hooks, output_grad_hooks
from rankwise.eval.perplexity import window_nll
from rankwise.linalg.gram import GramAccumulator
from rankwise.modules.targets import linear_at


@dataclass
class LayerStats:
    """``gram``: input statistics (shared object for layers with the same input);
    ``fisher_rows`` [out]: Σ over batches of the squared gradient summed over each weight row."""

    gram: GramAccumulator | None = None
    fisher_rows: torch.Tensor | None = None


def decoder_body(model: nn.Module) -> nn.Module:
    """The decoder without the LM head: Gram statistics never need vocabulary logits."""
    body = getattr(model, "model", None)
    return body if isinstance(body, nn.Module) else model


def warn_if_rank_deficient(grams: dict[str, GramAccumulator]) -> None:
    """One warning line when some Gram saw fewer tokens than its input dimension: it is singular, so
    whitened errors read 0.0000 on the calibration data while saying nothing about new text."""
    short = {id(g): (name, g) for name, g in grams.items() if 0 < g.count < g.dim}
    if short:
        name, g = max(short.values(), key=lambda item: item[1].dim)
        warnings.warn(f"calibration saw {g.count} tokens for inputs of dimension up to {g.dim} ({name}): "
                      f"{len(short)} input Grams are rank-deficient and the reported errors are not meaningful; "
                      f"use at least {g.dim} tokens (more windows or a longer seq_len)", stacklevel=3)


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
        body = decoder_body(model)
        with torch.no_grad():
            for start in tqdm(range(k, windows.shape[0], batch_size), desc="calibration · grams",
                              disable=not progress, unit="batch"):
                body(windows[start : start + batch_size], use_cache=False)
                shared.end_batch()
    warn_if_rank_deficient(shared.grams)
    return {name: LayerStats(gram=shared.grams[name]) for name in names}, sensitivity


def fisher_stats(model: nn.Module, names: list[str], windows: torch.Tensor, batch_size: int,
                 progress: bool) -> dict[str, torch.Tensor]:
    """Σ_batches (∂L/∂W)² summed over each row, for every named linear layer ([out] fp64)."""
    layers = {name: linear_at(model, name) for name in names}
    rows = {name: torch.zeros(layer.weight.shape[0], dtype=torch.float64) for name, layer in layers.items()}
    with grads_only_for(model, [layer.weight for layer in layers.values()]):
        for start in tqdm(range(0, windows.shape[0], batch_size), desc="calibration · fisher", disable=not progress,
                          unit="batch"):
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
    unit (loss), which rank allocation needs. Only activation gradients are computed (no weight
    gradient is ever formed).
    """
    sums = dict.fromkeys(names, 0.0)
    sizes = {name: linear_at(model, name).out_features for name in names}
    tokens = 0

    def add(name: str, grad: torch.Tensor) -> None:
        sums[name] += float(grad.double().square().sum())

    with output_grad_hooks(model, names, add), grads_only_for(model, []):
        for start in tqdm(range(0, windows.shape[0], batch_size), desc="calibration · sensitivity",
                          disable=not progress, unit="batch"):
            batch = windows[start : start + batch_size]
            nll, _ = window_nll(model, batch)
            nll.backward()  # type: ignore[no-untyped-call]  # summed NLL: every token weighs 1
            tokens += batch.numel()
            if after_batch is not None:
                after_batch()
    return {name: sums[name] / tokens / sizes[name] for name in names}
