"""Compressed model folders: write the rank map and remote code; rebuild the model exactly."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rankwise.errors import RankwiseError
from rankwise.modules.lowrank import apply_rank_map

if TYPE_CHECKING:
    from transformers import PreTrainedModel

REMOTE_CODE_FILE = "modeling_rankwise_lowrank.py"
REMOTE_CLASS = "RankwiseLowRankForCausalLM"


def remote_code_text(base_class: str) -> str:
    template = resources.files("rankwise.modules").joinpath("remote_code", REMOTE_CODE_FILE).read_text()
    return template.replace("BASE_CLASS_PLACEHOLDER", base_class)


def write_remote_code(folder: Path, base_class: str, rank_map: dict[str, int]) -> None:
    """Add the rank map and an ``auto_map`` entry to ``folder/config.json`` and write the modeling file."""
    (folder / REMOTE_CODE_FILE).write_text(remote_code_text(base_class))
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["rankwise_rank_map"] = rank_map
    config["architectures"] = [base_class]
    config["auto_map"] = {"AutoModelForCausalLM": f"{REMOTE_CODE_FILE[:-3]}.{REMOTE_CLASS}"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _state_dict_from_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise RankwiseError(f"{folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def load_lowrank_model(folder: Path, manifest: dict[str, Any], dtype: torch.dtype) -> PreTrainedModel:
    """Rebuild a compressed model: base architecture from config, rank map applied, weights loaded strictly."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    rank_map: dict[str, int] = {str(k): int(v) for k, v in manifest["rank_map"].items()}
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    apply_rank_map(model, rank_map, dtype)
    state = _state_dict_from_folder(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight") and getattr(config, "tie_word_embeddings", False)}
    if set(missing) - tied or unexpected:
        raise RankwiseError(f"{folder} does not match its rank map: missing {sorted(set(missing) - tied)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]}; the folder may be corrupt")
    model.tie_weights()
    return model
