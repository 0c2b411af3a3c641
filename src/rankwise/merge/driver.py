"""The merge driver: plan (validate everything) → stream tensor by tensor → sharded safetensors, atomically.

For each output tensor only that tensor of each input is in memory, plus the method's scratch. The
output folder holds the shards and their index, the reference model's config.json, the tokenizer
files, ``merge_config.yaml`` and a ``rankwise.json`` manifest; it appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder, check_output_folder
from rankwise.io.loading import MANIFEST_NAME
from rankwise.io.saving import manifest_json
from rankwise.io.shards import ShardedWriter, TensorSpec
from rankwise.merge.config import MergeConfig, load_config
from rankwise.merge.inputs import ModelInput
from rankwise.merge.plan import MergePlan, TensorTask, build_plan

#: Files copied from the tokenizer source (those that exist).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.float64: "float64"}


@dataclass(frozen=True)
class MergeResult:
    folder: Path
    plan: MergePlan


def tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed independent of the order tensors are processed in."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def merge_tensor(plan: MergePlan, task: TensorTask) -> torch.Tensor:
    """The merged tensor ``task.name`` in its output dtype, read from the inputs now."""
    if task.method == "copy":
        copied: torch.Tensor = plan.reference.get(task.name)
        return copied

    def load(source: ModelInput) -> torch.Tensor:
        x = source.get(task.name)  # fresh from disk: the method may overwrite it
        if plan.compute_dtype is not None:
            x = x.to(plan.compute_dtype)  # mergekit computes in the config's dtype: round the inputs the same way
        x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        return x

    base = load(plan.base) if plan.base is not None else None
    tensors = [load(i) for i in plan.inputs]
    generator = torch.Generator().manual_seed(tensor_seed(plan.config.seed, task.name))
    out = plan.method.fn(base, tensors, task.models, task.shared, generator)
    del base, tensors
    if not bool(torch.isfinite(out).all()):
        raise RankwiseError(f"merging tensor {task.name} gave NaN or inf values; check the inputs and weights")
    return out.to(task.dtype)


def _copy_side_files(plan: MergePlan, tmp: Path) -> None:
    config = dict(plan.reference.config)
    dtypes = {t.dtype for t in plan.tasks if t.method != "copy"}
    if len(dtypes) == 1:
        name = _DTYPE_NAMES.get(next(iter(dtypes)))
        for key in ("dtype", "torch_dtype"):
            if key in config and name:
                config[key] = name
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    ref = plan.reference.folder
    if (ref / "generation_config.json").is_file():
        shutil.copyfile(ref / "generation_config.json", tmp / "generation_config.json")
    source = plan.tokenizer_folder or ref
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, tmp / name)


def write_model(plan: MergePlan, out: str | os.PathLike[str], *, overwrite: bool = False,
                progress: bool = True) -> Path:
    """Stream every tensor of ``plan`` into a new model folder ``out`` (atomic)."""
    specs = [TensorSpec(t.name, t.shape, t.dtype) for t in plan.tasks]
    threads = torch.get_num_threads()
    if plan.method.elementwise:
        torch.set_num_threads(1)
    try:
        return _write_model(plan, specs, out, overwrite, progress)
    finally:
        torch.set_num_threads(threads)


def _write_model(plan: MergePlan, specs: list[TensorSpec], out: str | os.PathLike[str], overwrite: bool,
                 progress: bool) -> Path:
    with atomic_folder(out, overwrite) as tmp:
        writer = ShardedWriter(tmp, specs, plan.config.out_shard_size)
        try:
            for task in tqdm(plan.tasks, desc=f"merge ({plan.method.name})", unit="tensor", disable=not progress):
                writer.write(task.name, merge_tensor(plan, task))
        except BaseException:
            writer.abort()
            raise
        writer.close()
        _copy_side_files(plan, tmp)
        dumped = plan.config.model_dump(mode="json", exclude_defaults=True)
        (tmp / "merge_config.yaml").write_text(yaml.safe_dump(dumped, sort_keys=False))
        (tmp / MANIFEST_NAME).write_text(manifest_json("rankwise merge", {"merge_method": plan.method.name}))
    return Path(out)


def plan(config: MergeConfig | dict[str, Any] | str | os.PathLike[str]) -> MergePlan:
    """Validate a merge config against its inputs (headers only) and return the plan."""
    return build_plan(load_config(config))


def run(config: MergeConfig | dict[str, Any] | str | os.PathLike[str], out: str | os.PathLike[str], *,
        overwrite: bool = False, progress: bool = True) -> MergeResult:
    """Merge as ``config`` says (a `MergeConfig`, a dict, or a mergekit-style YAML file) into folder ``out``."""
    cfg = load_config(config)
    check_output_folder(out, overwrite)
    if cfg.output == "adapter":
        from rankwise.merge.adapter_output import merge_adapters

        folder, adapter_plan = merge_adapters(cfg, out, overwrite=overwrite, progress=progress)
        return MergeResult(folder, adapter_plan)
    the_plan = build_plan(cfg)
    if the_plan.method.name == "regmean":
        from rankwise.merge.methods.regmean import prepare_regmean  # calibration: loads each model once

        prepare_regmean(the_plan, progress=progress)
    return MergeResult(write_model(the_plan, out, overwrite=overwrite, progress=progress), the_plan)
