"""Adapter folders: ``adapter.safetensors`` (tensors) + ``adapter.yaml`` (method config, layers, shapes).

A fine-tuning run folder holds these two files plus ``config.yaml`` and ``report.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from rankwise._version import __version__
from rankwise.adapters.apply import CONFIG_ATTR, adapter_config, adapter_layers
from rankwise.adapters.config import config_from_dict, get_method
from rankwise.adapters.layer import AdapterLinear
from rankwise.adapters.variant import Variant
from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder
from rankwise.io.tensors import file_entries
from rankwise.linalg.split import subtract_lowrank
from rankwise.modules import replace_module

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_META = "adapter.yaml"


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """``<layer>.lora_A`` [r, n], ``<layer>.lora_B`` [m, r], and ``<layer>.init_A/init_B`` where the init changed W;
    for variant layers, ``<layer>.<name>`` for each tensor the variant saves."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in adapter_layers(model).items():
        if layer.variant is not None:
            out.update({f"{name}.{key}": t.detach().contiguous() for key, t in layer.variant.tensors().items()})
            continue
        out[f"{name}.lora_A"] = layer.lora_A.detach().contiguous()
        out[f"{name}.lora_B"] = layer.lora_B.detach().contiguous()
        if layer.changes_base:
            out[f"{name}.init_A"] = layer.init_A_tensor().contiguous()
            out[f"{name}.init_B"] = layer.init_B_tensor().contiguous()
    return out


def adapter_meta(model: nn.Module) -> dict[str, Any]:
    config = adapter_config(model)
    layers = {name: {"shape": [layer.out_features, layer.in_features], "rank": layer.rank,
                     "scaling": layer.scaling} for name, layer in adapter_layers(model).items()}
    return {"rankwise_version": __version__, "adapter": config.model_dump(mode="json"), "layers": layers}


def write_adapter(model: nn.Module, folder: Path) -> None:
    """Write the adapter files into an existing folder (use inside `atomic_folder`)."""
    if any(layer.merged for layer in adapter_layers(model).values()):
        raise RankwiseError("the adapters are merged; unmerge them before saving")
    save_file(adapter_tensors(model), str(folder / ADAPTER_WEIGHTS))
    (folder / ADAPTER_META).write_text(yaml.safe_dump(adapter_meta(model), sort_keys=False))


def save_adapter(model: nn.Module, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Save the model's adapters (not the base) to ``folder``, atomically."""
    with atomic_folder(folder, overwrite) as tmp:
        write_adapter(model, tmp)
    return Path(folder)


def read_adapter_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder)
    meta_path = path / ADAPTER_META
    if not meta_path.is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise RankwiseError(f"{path} is not a rankwise adapter or run folder (no {ADAPTER_META} / {ADAPTER_WEIGHTS}); "
                            "pass a folder written by rankwise finetune or rw.adapters.save_adapter")
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or "adapter" not in meta or "layers" not in meta:
        raise RankwiseError(f"{meta_path} is not a valid adapter description; restore it or save the adapter again")
    return meta


def _check_fits(model: nn.Module, layers: dict[str, Any], folder: Path) -> None:
    """Names and shapes must match before anything is changed."""
    for name, info in layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise RankwiseError(f"adapter in {folder} is for another base model: it has no layer '{name}'; "
                                "load it onto the model it was trained on (the run's config.yaml names it)") from None
        if not isinstance(module, nn.Linear):
            raise RankwiseError(f"adapter in {folder} targets '{name}', which is not a plain nn.Linear here "
                                "(already adapted?)")
        if list(module.weight.shape) != list(info["shape"]):
            raise RankwiseError(f"adapter in {folder} is for another base model: '{name}' is "
                                f"{'x'.join(map(str, module.weight.shape))} here but "
                                f"{'x'.join(map(str, info['shape']))} in the adapter; load it onto the model it "
                                "was trained on (the run's config.yaml names it)")


def _variant_layer(base: nn.Linear, variant: Variant, dropout: float) -> AdapterLinear:
    initial = variant.initial_factors()
    if initial is not None:  # the same formula and bits as `adapt` used for the frozen residual
        with torch.no_grad():
            base.weight.copy_(subtract_lowrank(base.weight, initial[1], initial[0], 1.0).to(base.weight.dtype))
    return AdapterLinear(base, dropout=dropout, variant=variant)


def load_adapter(model: nn.Module, folder: str | os.PathLike[str]) -> nn.Module:
    """Put a saved adapter (or a run's) back onto a freshly loaded base model, in place; returns ``model``."""
    path = Path(folder)
    meta = read_adapter_meta(path)
    config = config_from_dict(meta["adapter"])
    layers: dict[str, Any] = meta["layers"]
    if adapter_layers(model):
        raise RankwiseError("the model already has adapters; load the adapter onto a fresh base model")
    _check_fits(model, layers, path)
    file_entries(path / ADAPTER_WEIGHTS)  # a truncated or corrupt file fails in one line, before any change
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    variant_cls = get_method(config.method).variant
    model.requires_grad_(False)
    for name, info in layers.items():
        base = model.get_submodule(name)
        assert isinstance(base, nn.Linear)
        if variant_cls is not None:
            own = {key[len(name) + 1:]: t for key, t in tensors.items() if key.startswith(f"{name}.")}
            shape = (int(info["shape"][0]), int(info["shape"][1]))
            replace_module(model, name, _variant_layer(base, variant_cls.from_tensors(own, config, shape, 1.0),
                                                       config.dropout))
            continue
        A, B = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
        init_A, init_B = tensors.get(f"{name}.init_A"), tensors.get(f"{name}.init_B")
        scaling = float(info["scaling"])
        if init_A is not None and init_B is not None:
            with torch.no_grad():
                base.weight.copy_(subtract_lowrank(base.weight, init_B, init_A, scaling).to(base.weight.dtype))
        layer = AdapterLinear(base, A, B, scaling, config.dropout, init_A=init_A, init_B=init_B)
        replace_module(model, name, layer)
    setattr(model, CONFIG_ATTR, config)
    return model
