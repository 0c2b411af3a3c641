"""Sequential (layer-by-layer) compression: block l's statistics come from the already compressed
blocks < l, so each block absorbs upstream error; activations held stay bounded by one block."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.grams import SharedGrams
from rankwise.calib.hooks import input_hooks
from rankwise.compress.config import CompressConfig
from rankwise.compress.driver import allocate, build_report, decompose, swap_layer
from rankwise.compress.registry import get_compressor
from rankwise.compress.report import CompressionReport
from rankwise.compress.stats import LayerStats
from rankwise.errors import RankwiseError
from rankwise.eval.params import parameter_count
from rankwise.modules.targets import TargetSpec, linear_at


class _StopForward(Exception):
    """Raised by the capture hook once block 0's inputs are recorded."""


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The qualified name and list of the transformer blocks (``model.layers`` for Llama-like models)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith("layers") and len(module) > 0:
            return name, module
    raise RankwiseError("sequential compression needs a decoder with a `layers` list of blocks; this "
                        "architecture is not supported (use sequential=False)")


def capture_block_inputs(model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor,
                         batch_size: int) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(hidden_states [B, T, d], kwargs) entering block 0, per calibration batch."""
    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden, {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, windows.shape[0], batch_size):
            with contextlib.suppress(_StopForward):
                model(windows[start : start + batch_size], use_cache=False)
    finally:
        handle.remove()
    return captured


def _run_block(block: nn.Module, inputs: list[tuple[torch.Tensor, dict[str, Any]]]) -> list[torch.Tensor]:
    outs = []
    for hidden, kwargs in inputs:
        out = block(hidden, **kwargs)
        outs.append(out[0] if isinstance(out, tuple) else out)
    return outs


@torch.no_grad()
def apply_sequential(model: nn.Module, config: CompressConfig, targets: TargetSpec, calib: torch.Tensor | None,
                     batch_size: int, progress: bool) -> CompressionReport:
    compressor = get_compressor(config.method)
    if calib is None or not (compressor.needs_gram or compressor.needs_fisher):
        raise RankwiseError(f"sequential=True needs a data-aware method with calibration data; '{config.method}' "
                            "with this input cannot use it")
    # Ranks are chosen once from dense statistics: allocation needs every spectrum up front.
    dec = decompose(model, config, targets, calib, batch_size, progress)
    ranks = allocate(dec, config.ratio)
    params_before = parameter_count(model)
    t0 = time.perf_counter()
    prefix, layers = decoder_layers(model)
    states = capture_block_inputs(model, layers, calib, batch_size)
    results = {}
    for index in tqdm(range(len(layers)), desc="sequential blocks", disable=not progress, unit="block"):
        block_prefix = f"{prefix}.{index}."
        names = [n for n in dec.names if n.startswith(block_prefix)]
        if names:
            grams = SharedGrams()
            local = [n.removeprefix(block_prefix) for n in names]
            with input_hooks(layers[index], local, grams):
                for hidden, kwargs in states:
                    layers[index](hidden, **kwargs)
                    grams.end_batch()
            for name, short in zip(names, local, strict=True):
                stats = LayerStats(gram=grams.grams[short], fisher_rows=dec.stats[name].fisher_rows)
                W = linear_at(model, name).weight.detach()
                factors = compressor.decompose(W, stats, config) if ranks[name] is not None else dec.factors[name]
                results[name] = swap_layer(model, name, factors, ranks[name], stats)
        outs = _run_block(layers[index], states)
        states = [(out, kwargs) for out, (_, kwargs) in zip(outs, states, strict=True)]
    for name in dec.names:  # targets outside the decoder blocks: one-shot factors
        if name not in results:
            results[name] = swap_layer(model, name, dec.factors[name], ranks[name], dec.stats[name])
    dec.timings["sequential"] = time.perf_counter() - t0
    return build_report(dec, config.ratio, [results[n] for n in dec.names], params_before, model)
