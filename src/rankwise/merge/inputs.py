"""The inputs of a merge: model folders (bundled names and ``.gguf`` files converted once) and adapters
applied on their base tensor by tensor (W + s·B·A), never as a materialised adapted model.

Opening an input reads config.json and the safetensors headers only; tensor data is read by ``get``.
Adapter forms: a rankwise adapter or run folder (``adapter.yaml`` + ``adapter.safetensors``, with
``init_A``/``init_B`` where the init changed W: W0 − s·init_B·init_A + s·B·A), a PEFT LoRA folder
(``adapter_config.json`` + ``adapter_model.safetensors``), or mergekit's ``BASE+ADAPTER`` spelling.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rankwise.errors import RankwiseError
from rankwise.io.tensors import PICKLE_SUFFIXES, TensorEntry, TensorFolder, file_entries, read_tensor

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
RANKWISE_WEIGHTS = "adapter.safetensors"
_PEFT_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight")


class ModelInput:
    """A model folder read tensor by tensor. ``label`` is the spec as the user wrote it."""

    def __init__(self, label: str, folder: Path) -> None:
        self.label = label
        self.folder = folder
        self.tensors = TensorFolder(folder)
        try:
            self.config: dict[str, Any] = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise RankwiseError(f"{folder}/config.json of model '{label}' is not valid JSON ({exc})") from None

    def names(self) -> list[str]:
        return self.tensors.names()

    def entry(self, name: str) -> TensorEntry:
        return self.tensors.entries[name]

    def get(self, name: str) -> torch.Tensor:
        return self.tensors.get(name)


@dataclass(frozen=True)
class LowRankDelta:
    """s·(B A − B₀ A₀) for one weight: entries of ``A`` [r, n], ``B`` [m, r] and the optional init pair."""

    A: TensorEntry
    B: TensorEntry
    scaling: float
    init_A: TensorEntry | None = None
    init_B: TensorEntry | None = None

    def dense(self) -> torch.Tensor:
        """The fp32 update [m, n]."""
        A, B = read_tensor(self.A).float(), read_tensor(self.B).float()
        out = (B @ A).mul_(self.scaling)
        if self.init_A is not None and self.init_B is not None:
            out.sub_(read_tensor(self.init_B).float() @ read_tensor(self.init_A).float(), alpha=self.scaling)
        return out


class AdapterInput(ModelInput):
    """An adapter on a base model: ``get`` returns base + delta for the adapted weights."""

    def __init__(self, label: str, adapter_folder: Path, base: ModelInput, deltas: dict[str, LowRankDelta],
                 kind: str) -> None:
        self.label, self.folder, self.tensors, self.config = label, base.folder, base.tensors, base.config
        self.adapter_folder, self.base, self.deltas, self.kind = adapter_folder, base, deltas, kind
        for name, d in deltas.items():
            if name not in base.tensors:
                raise RankwiseError(f"adapter '{label}' is for another base model: {base.label} has no tensor {name}")
            shape = base.entry(name).shape
            if len(shape) != 2 or (d.B.shape[0], d.A.shape[1]) != shape or d.A.shape[0] != d.B.shape[1]:
                raise RankwiseError(f"adapter '{label}' is for another base model: its factors of {name} "
                                    f"({list(d.B.shape)} @ {list(d.A.shape)}) do not fit "
                                    f"{list(base.entry(name).shape)} in {base.label}")

    def get(self, name: str) -> torch.Tensor:
        W = self.base.get(name)
        if name not in self.deltas:
            return W
        return W.float().add_(self.deltas[name].dense()).to(W.dtype)


def is_adapter_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "adapter.yaml").is_file() or (path / PEFT_CONFIG).is_file())


def _refuse_pickles(path: Path, weights: str) -> None:
    if not (path / weights).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise RankwiseError(f"adapter {path} holds only pickled weights ({pickles[0]}); rankwise never "
                                f"unpickles: save it as {weights}")
        raise RankwiseError(f"adapter {path} has no {weights}")


def rankwise_deltas(path: Path) -> dict[str, LowRankDelta]:
    from rankwise.adapters.run_io import read_adapter_meta  # the adapters package is heavy: only when needed

    _refuse_pickles(path, RANKWISE_WEIGHTS)
    meta = read_adapter_meta(path)
    entries = file_entries(path / RANKWISE_WEIGHTS)
    out: dict[str, LowRankDelta] = {}
    for layer, info in meta["layers"].items():
        try:
            A, B = entries[f"{layer}.lora_A"], entries[f"{layer}.lora_B"]
        except KeyError as exc:
            raise RankwiseError(f"adapter {path} is missing tensor {exc.args[0]}; it is corrupt") from None
        out[f"{layer}.weight"] = LowRankDelta(A, B, float(info["scaling"]), entries.get(f"{layer}.init_A"),
                                              entries.get(f"{layer}.init_B"))
    return out


def _pattern(patterns: dict[str, Any], layer: str, default: Any) -> Any:
    # PEFT's rule: a key applies when it matches the end of the layer name at a dot boundary.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", layer):
            return value
    return default


def peft_deltas(path: Path) -> dict[str, LowRankDelta]:
    _refuse_pickles(path, PEFT_WEIGHTS)
    config = json.loads((path / PEFT_CONFIG).read_text())
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("fan_in_fan_out"):
        raise RankwiseError(f"adapter {path} is not a plain LoRA (peft_type {config.get('peft_type')}, DoRA or "
                            "fan_in_fan_out); rankwise merges plain LoRA adapters")
    pairs: dict[str, dict[str, TensorEntry]] = {}
    for key, entry in file_entries(path / PEFT_WEIGHTS).items():
        match = _PEFT_KEY.fullmatch(key)
        if match is None:
            raise RankwiseError(f"adapter {path}: unexpected tensor '{key}' (only lora_A/lora_B weights are merged)")
        pairs.setdefault(match.group(1), {})[match.group(2)] = entry
    out: dict[str, LowRankDelta] = {}
    for layer, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise RankwiseError(f"adapter {path}: layer {layer} lacks lora_A or lora_B")
        r = ab["A"].shape[0]
        alpha = float(_pattern(config.get("alpha_pattern") or {}, layer, config.get("lora_alpha", 8)))
        scaling = alpha / r**0.5 if config.get("use_rslora") else alpha / r
        out[f"{layer}.weight"] = LowRankDelta(ab["A"], ab["B"], scaling)
    return out


def adapter_deltas(path: Path) -> tuple[str, dict[str, LowRankDelta]]:
    """("rankwise" | "peft", {weight name: delta}) of an adapter folder (headers only)."""
    if (path / "adapter.yaml").is_file():
        return "rankwise", rankwise_deltas(path)
    return "peft", peft_deltas(path)


def adapter_base_hint(path: Path) -> str | None:
    """The base model an adapter names itself (a run's config.yaml, PEFT's base_model_name_or_path)."""
    import yaml

    if (path / "config.yaml").is_file():
        data = yaml.safe_load((path / "config.yaml").read_text())
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            return str(data["model"])
    if (path / PEFT_CONFIG).is_file():
        value = json.loads((path / PEFT_CONFIG).read_text()).get("base_model_name_or_path")
        return str(value) if value else None
    return None
