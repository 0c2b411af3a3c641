"""The adapt driver: select targets, gather statistics, run a method's init, wrap layers; merge/unmerge."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.adapters._common import layer_done
from rankwise.adapters.config import AdapterConfig, get_method
from rankwise.adapters.layer import AdapterLinear
from rankwise.adapters.variant import Variant
from rankwise.errors import RankwiseError
from rankwise.linalg.split import subtract_lowrank
from rankwise.modules import TargetSpec, replace_module, select_targets

#: Attribute of an adapted model holding its method config (the layers hold their own tensors).
CONFIG_ATTR = "rankwise_adapter_config"


def adapter_layers(model: nn.Module) -> dict[str, AdapterLinear]:
    """Every ``AdapterLinear`` in the model by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLinear)}


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that will train (``requires_grad``), by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _linear(model: nn.Module, name: str) -> nn.Linear:
    module = model.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise RankwiseError(f"'{name}' is a {type(module).__name__}, not an nn.Linear")
    return module


def _calibration_grams(model: nn.Module, config: Any, names: list[str], windows: torch.Tensor | None,
                       progress: bool) -> dict[str, torch.Tensor]:
    from rankwise.calib import collect_grams

    if windows is None:
        from rankwise.data import windows as make_windows

        cal = config.calibration
        windows = make_windows(cal.source, "calib", cal.seq_len, n=cal.windows, seed=config.seed)
    batch = config.calibration.batch_size
    accs = collect_grams(model, names, windows, batch_size=batch, progress=progress)
    means: dict[int, torch.Tensor] = {}  # shared accumulators (q/k/v) give one shared mean
    return {n: means.setdefault(id(accs[n]), accs[n].mean_gram()) for n in names}


def adapt(
    model: nn.Module,
    config: AdapterConfig,
    targets: TargetSpec = "all-linear",
    *,
    calibration: torch.Tensor | None = None,
    progress: bool = False,
) -> nn.Module:
    """Wrap the targeted ``nn.Linear`` layers of ``model`` in place with ``config``'s adapter; returns ``model``.

    Every other parameter is frozen. ``calibration`` (int64 [N, T] token windows) overrides the
    config's calibration data for methods that need input statistics (CorDA, EVA).
    """
    if adapter_layers(model):
        raise RankwiseError("the model already has adapters; load a fresh base model or merge them first")
    method = get_method(config.method)
    names = select_targets(model, targets)
    grams = _calibration_grams(model, config, names, calibration, progress) if config.needs_calibration else {}
    weights = {n: _linear(model, n).weight.detach().to(torch.float32) for n in names}
    with tqdm(total=len(names), desc=f"{config.method} init", unit="layer", disable=not progress) as bar:
        token = layer_done.set(bar.update)
        try:
            inits = method.init(weights, grams, config)
        except ValueError as exc:
            raise RankwiseError(f"{config.method} init failed: {exc}") from None
        finally:
            layer_done.reset(token)
        bar.update(len(names) - bar.n)  # methods that do not init layer by layer (EVA) finish at once
    model.requires_grad_(False)
    scaling = config.scaling()
    for name, init in inits.items():
        base = _linear(model, name)
        if isinstance(init, Variant):
            initial = init.initial_factors()
            if initial is not None:  # the part of W the update now carries leaves the frozen weight
                base.weight.data = subtract_lowrank(weights[name], initial[1], initial[0], 1.0).to(base.weight.dtype)
            layer = AdapterLinear(base, dropout=config.dropout, variant=init)
        elif config.changes_base:
            # Formed here, on the caller's thread, not in the init's workers: memory the process freed
            # earlier is reused from this thread's heap (per-worker heaps are handed back to the OS,
            # and every fresh page faults: ~75k faults, ~0.2 s CPU, per SmolLM2 init). Rebound, not
            # copied: the loaded weight may be a memory-mapped file, where writes fault every page.
            residual = subtract_lowrank(weights[name], init.B, init.A, scaling)
            base.weight.data = residual.to(base.weight.dtype)
            layer = AdapterLinear(base, init.A, init.B, scaling, config.dropout, init_A=init.A, init_B=init.B)
        else:
            layer = AdapterLinear(base, init.A, init.B, scaling, config.dropout)
        replace_module(model, name, layer)
    setattr(model, CONFIG_ATTR, config)
    return model


def adapter_config(model: nn.Module) -> AdapterConfig:
    config = getattr(model, CONFIG_ATTR, None)
    if not isinstance(config, AdapterConfig) or not adapter_layers(model):
        raise RankwiseError("the model has no rankwise adapters; call rw.adapt(model, ...) or load_adapter first")
    return config


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight (in place; reversible with `unmerge`)."""
    for layer in adapter_layers(model).values():
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo `merge`: the weights return to their pre-merge values within fp32 rounding."""
    for layer in adapter_layers(model).values():
        layer.unmerge()
    return model


def merge_and_unwrap(model: nn.Module) -> nn.Module:
    """Merge and put the plain ``nn.Linear`` layers back: an ordinary dense model again."""
    for name, layer in adapter_layers(model).items():
        layer.merge()
        replace_module(model, name, layer.base)
    if hasattr(model, CONFIG_ATTR):
        delattr(model, CONFIG_ATTR)
    return model
