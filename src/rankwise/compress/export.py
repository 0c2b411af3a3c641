"""Write a compressed model folder: factorised (loads in rankwise and, via remote code, in transformers)
or dense (factors multiplied out, for tools that only know dense models)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from rankwise.compress.report import RATIO_SEMANTICS, CompressionReport
from rankwise.io.atomic import atomic_folder
from rankwise.io.loading import MANIFEST_NAME
from rankwise.io.saving import manifest_json
from rankwise.modules.lowrank import LowRankLinear
from rankwise.modules.lowrank_io import write_remote_code
from rankwise.modules.replace import replace_module

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

REPORT_NAME = "report.json"


def densified(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``LowRankLinear`` multiplied out into an ``nn.Linear``."""
    dense = copy.deepcopy(model)
    for name, module in list(dense.named_modules()):
        if isinstance(module, LowRankLinear):
            layer = nn.Linear(module.in_features, module.out_features, bias=module.B.bias is not None,
                              dtype=module.A.weight.dtype)
            with torch.no_grad():
                layer.weight.copy_(module.dense_weight())
                if module.B.bias is not None and layer.bias is not None:
                    layer.bias.copy_(module.B.bias)
            replace_module(dense, name, layer)
    return dense


def save_compressed(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, folder: str | os.PathLike[str],
                    report: CompressionReport, *, dense: bool = False, overwrite: bool = False) -> Path:
    """Write the folder atomically. Every file but ``report.json`` (wall times, speeds) is a
    deterministic function of the inputs: two runs with the same seed give identical bytes."""
    base_class = type(model).__name__
    with atomic_folder(folder, overwrite) as tmp:
        if dense:
            densified(model).save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
        else:
            model.save_pretrained(tmp, safe_serialization=True)
            write_remote_code(tmp, base_class, report.rank_map)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        manifest = {
            "kind": "dense" if dense else "lowrank",
            "rank_map": {} if dense else report.rank_map,
            "method": report.method, "config": report.config, "ratio_semantics": RATIO_SEMANTICS,
            "ratio_achieved": report.ratio_achieved,
            "targeted_params_before": report.targeted_before, "targeted_params_after": report.targeted_after,
        }
        (tmp / MANIFEST_NAME).write_text(manifest_json("rankwise compress", manifest))
        (tmp / REPORT_NAME).write_text(report.to_json())
    return Path(folder)
