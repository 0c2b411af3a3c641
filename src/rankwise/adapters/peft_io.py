"""PEFT LoRA export and import (``adapter_config.json`` + ``adapter_model.safetensors``).

Export targets the *untouched* base model. A layer whose init changed the base weight
(W_res = W₀ − s·B₀A₀) has, relative to W₀, the update s·(B A − B₀ A₀) = s·[B, −B₀]·[A; A₀]:
exactly a rank-2r LoRA, which is what gets written (PEFT's own PiSSA conversion does the same).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rankwise.adapters.apply import CONFIG_ATTR, adapter_layers
from rankwise.adapters.layer import AdapterLinear
from rankwise.adapters.lora import LoRA
from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder
from rankwise.io.loading import read_json_file
from rankwise.io.tensors import file_entries
from rankwise.modules import replace_module

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def peft_factors(layer: AdapterLinear, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """``(lora_A [r', n], lora_B [m, r'], relative error)`` with s·lora_B·lora_A = W_adapted − W₀ (s = the
    layer's scaling; r' = r or 2r), exact (error None) where the update is of B·A form. Otherwise (a sparse
    update) the rank-``rank`` truncated SVD of W_adapted − W₀, with its relative Frobenius error."""
    factors = layer.update_factors()
    if factors is not None:
        A, B = factors
        return A.contiguous(), B.contiguous(), None
    if rank is None:
        raise RankwiseError("this adapter's update is not of B·A form; pick the rank of its truncated-SVD "
                            "export (export_peft(..., rank=16), or --rank)")
    from rankwise.linalg import svd

    delta = layer.variant.update_weight() if layer.variant is not None else layer.delta_weight()
    k = min(rank, *delta.shape)
    parts = svd(delta, k, method="exact")
    B, A = parts.to_ab()
    norm = float(delta.norm())
    error = float((delta - B @ A).norm()) / norm if norm > 0 else 0.0
    return A.contiguous(), B.contiguous(), error


def _patterns(values: dict[str, float], default: float) -> dict[str, float]:
    return {name: v for name, v in values.items() if v != default}


def export_peft(model: nn.Module, folder: str | os.PathLike[str], base_model: str | None = None,
                overwrite: bool = False, rank: int | None = None) -> Path:
    """Write the model's adapters as a PEFT LoRA that loads on the unchanged base model.

    Updates of B·A form (LoRA, SVD-initialised and SVD-form methods, random-basis and adaptive-rank
    ones, whose per-layer ranks become PEFT's ``rank_pattern``) are written exactly. Others (LIFT's
    sparse update) need ``rank``: their update is truncated to it by SVD, and the relative error of
    each layer is printed to stderr. Layers whose adaptive rank fell to zero are left out.
    """
    layers = adapter_layers(model)
    if not layers:
        raise RankwiseError("the model has no rankwise adapters to export")
    if any(layer.merged for layer in layers.values()):
        raise RankwiseError("the adapters are merged; unmerge them before exporting")
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, float] = {}
    alphas: dict[str, float] = {}
    for name, layer in layers.items():
        A, B, error = peft_factors(layer, rank)
        if error is not None:
            print(f"{name}: rank-{A.shape[0]} PEFT export, relative error {error:.4f}", file=sys.stderr)
        if A.shape[0] == 0:
            continue  # an adaptive rank pruned to nothing: no update to export (PEFT needs r > 0)
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = A
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = B
        ranks[name] = A.shape[0]
        alphas[name] = layer.scaling * A.shape[0]  # PEFT's scaling is lora_alpha / r
    if not ranks:
        raise RankwiseError("every adapter layer has rank 0; there is nothing to export")
    r = int(Counter(ranks.values()).most_common(1)[0][0])
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    dropout = getattr(getattr(model, CONFIG_ATTR, None), "dropout", 0.0)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "use_rslora": False, "use_dora": False,
        "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "target_modules": sorted(ranks), "rank_pattern": {k: int(v) for k, v in _patterns(ranks, r).items()},
        "alpha_pattern": _patterns(alphas, alpha), "modules_to_save": None,
    }
    with atomic_folder(folder, overwrite) as tmp:
        save_file(tensors, str(tmp / PEFT_WEIGHTS))
        (tmp / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return Path(folder)


def _pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """PEFT's rule: a pattern key applies when it matches the end of the layer name at a dot boundary."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def _read_peft(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not (folder / PEFT_CONFIG).is_file() or not (folder / PEFT_WEIGHTS).is_file():
        raise RankwiseError(f"{folder} is not a PEFT adapter folder (needs {PEFT_CONFIG} and {PEFT_WEIGHTS})")
    config = read_json_file(folder / PEFT_CONFIG, "re-export the adapter")
    file_entries(folder / PEFT_WEIGHTS)  # truncated or corrupt: one line, not a loader traceback
    if config.get("peft_type") != "LORA":
        raise RankwiseError(f"{folder} holds a {config.get('peft_type')} adapter; only LORA is supported")
    if config.get("use_dora") or config.get("fan_in_fan_out"):
        raise RankwiseError(f"{folder} uses DoRA or fan_in_fan_out, which rankwise does not import")
    return config, load_file(str(folder / PEFT_WEIGHTS))


def load_peft(model: nn.Module, folder: str | os.PathLike[str]) -> nn.Module:
    """Wrap ``model`` in place with a PEFT LoRA adapter (per-layer ranks from the tensors, ``alpha_pattern``
    honoured); shapes and names are checked before anything changes. Returns ``model``."""
    path = Path(folder)
    config, tensors = _read_peft(path)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        match = re.fullmatch(rf"{re.escape(_PREFIX)}(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if match is None:
            raise RankwiseError(f"{path}: unexpected tensor '{key}' (only lora_A/lora_B weights are supported)")
        pairs.setdefault(match.group(1), {})[match.group(2)] = t
    for name, ab in pairs.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise RankwiseError(f"PEFT adapter in {path} is for another base model: no layer '{name}'") from None
        if not isinstance(module, nn.Linear) or set(ab) != {"A", "B"}:
            raise RankwiseError(f"PEFT adapter in {path}: '{name}' is not a plain linear layer with lora_A and lora_B")
        r = ab["A"].shape[0]
        if ab["A"].shape != (r, module.in_features) or ab["B"].shape != (module.out_features, r):
            raise RankwiseError(f"PEFT adapter in {path} is for another base model: shapes of '{name}' do not fit "
                                f"a {module.out_features}x{module.in_features} layer")
    if adapter_layers(model):
        raise RankwiseError("the model already has adapters; load the PEFT adapter onto a fresh base model")
    model.requires_grad_(False)
    rslora = bool(config.get("use_rslora", False))
    for name, ab in pairs.items():
        r = ab["A"].shape[0]
        alpha = float(_pattern_value(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", 8)))
        scaling = alpha / (r**0.5) if rslora else alpha / r
        base = model.get_submodule(name)
        assert isinstance(base, nn.Linear)
        dropout = float(config.get("lora_dropout", 0.0))
        replace_module(model, name, AdapterLinear(base, ab["A"], ab["B"], scaling, dropout))
    default_r = int(config.get("r", 8))
    setattr(model, CONFIG_ATTR, LoRA(rank=default_r, alpha=float(config.get("lora_alpha", 8)), rslora=rslora,
                                     dropout=float(config.get("lora_dropout", 0.0))))
    return model
