"""Planning a merge: every input opened (headers only), checked against the others, and every tensor's
method and parameters resolved, before any tensor data is read. Errors name the model and the tensor.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rankwise.errors import RankwiseError
from rankwise.io.tensors import natural_key
from rankwise.merge.config import MergeConfig, evaluate
from rankwise.merge.inputs import AdapterInput, ModelInput, adapter_base_hint, adapter_deltas, is_adapter_folder
from rankwise.merge.methods.base import MergeMethod, get, resolve

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
#: config.json fields that must agree for two checkpoints to be merged tensor by tensor.
ARCH_FIELDS = ("architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


@dataclass(frozen=True)
class TensorTask:
    """One output tensor: merged with ``method`` (or copied from the reference when ``method`` is "copy")."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    method: str
    shared: dict[str, Any]
    models: list[dict[str, Any]]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class MergePlan:
    """Everything the driver needs; ``reference`` is the input whose names, config and tokenizer lead."""

    config: MergeConfig
    method: MergeMethod
    base: ModelInput | None
    inputs: list[ModelInput]
    tokenizer_folder: Path | None = None
    compute_dtype: torch.dtype | None = None
    tasks: list[TensorTask] = field(default_factory=list)

    @property
    def reference(self) -> ModelInput:
        return self.base if self.base is not None else self.inputs[0]

    def peak_bytes(self) -> int:
        """Estimated peak of tensor memory: the largest tensor's inputs in fp32 plus the method's scratch."""
        copies = len(self.inputs) + (self.base is not None) + (3 if self.method.name in ("ties", "dare_ties") else 2)
        return max((t.numel * 4 * (copies if t.method != "copy" else 1) for t in self.tasks), default=0)

    def describe(self) -> str:
        merged = sum(t.method != "copy" for t in self.tasks)
        lines = [f"merge method: {self.method.name}",
                 f"base model: {self.base.label if self.base else '(none)'}",
                 "inputs: " + ", ".join(i.label for i in self.inputs),
                 f"tensors: {len(self.tasks)} ({merged} merged, {len(self.tasks) - merged} copied from "
                 f"{self.reference.label})"]
        for t in self.tasks:
            params = "" if t.method == "copy" else " " + _short(t)
            lines.append(f"  {t.name} {list(t.shape)} {str(t.dtype).removeprefix('torch.')} {t.method}{params}")
        size = sum(t.numel * t.dtype.itemsize for t in self.tasks)
        lines.append(f"output size: {size / 2**20:.1f} MiB; estimated peak tensor memory: "
                     f"{self.peak_bytes() / 2**20:.1f} MiB (one tensor at a time)")
        return "\n".join(lines)


def _short(t: TensorTask) -> str:
    per = {k: [m[k] for m in t.models] for k, v in (t.models[0] if t.models else {}).items()
           if not isinstance(v, torch.Tensor)}
    return " ".join(f"{k}={v}" for k, v in {**t.shared, **per}.items())


def open_input(spec: str, base: ModelInput | None) -> ModelInput:
    """A model folder, bundled name or .gguf file; an adapter folder (on ``base`` or the base it names)."""
    from rankwise.io.loading import resolve_model_folder

    base_spec, _, adapter_spec = spec.partition("+")
    path = Path(adapter_spec or spec).expanduser()
    if adapter_spec or is_adapter_folder(path):
        if adapter_spec:
            base = open_input(base_spec, None)
        elif base is None:
            hint = adapter_base_hint(path)
            if hint is None:
                raise RankwiseError(f"adapter '{spec}' does not name its base model; set base_model in the config "
                                    "or write it as BASE+ADAPTER")
            base = open_input(hint, None)
        kind, deltas = adapter_deltas(path)
        return AdapterInput(spec, path, base, deltas, kind)
    where = resolve_model_folder(spec)
    if not isinstance(where, Path):
        raise RankwiseError(f"'{spec}' is a hub id; download it to a local folder first (merge streams local files)")
    return ModelInput(spec, where)


def check_architecture(ref: ModelInput, other: ModelInput) -> None:
    for key in ARCH_FIELDS:
        a, b = ref.config.get(key), other.config.get(key)
        if a != b:
            raise RankwiseError(f"model '{other.label}' has {key} {b}, but '{ref.label}' has {a}; "
                                "merged models must share one architecture")


def check_tensors(ref: ModelInput, other: ModelInput) -> None:
    ours, theirs = set(ref.names()), set(other.names())
    missing = sorted(ours - theirs, key=natural_key)
    if missing:
        raise RankwiseError(f"model '{other.label}' has no tensor {missing[0]} (which '{ref.label}' has)"
                            + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = sorted(theirs - ours, key=natural_key)
    if extra:
        raise RankwiseError(f"model '{other.label}' has tensor {extra[0]}, which '{ref.label}' lacks")
    for name in ref.names():
        a, b = ref.entry(name).shape, other.entry(name).shape
        if a != b:
            raise RankwiseError(f"tensor {name} is {list(b)} in '{other.label}' but {list(a)} in '{ref.label}'")


def _dtype(name: str | None, what: str) -> torch.dtype | None:
    if name is None:
        return None
    if name not in _DTYPES:
        raise RankwiseError(f"unknown {what} '{name}'; choose one of: float32, bfloat16, float16, float64")
    return _DTYPES[name]


def _check_param_names(config: MergeConfig, method: MergeMethod) -> None:
    known = [p.name for p in method.params if p.in_config]
    scopes: list[tuple[str, dict[str, Any] | None]] = [("parameters", config.parameters)]
    scopes += [(f"parameters of model '{m.model}'", m.parameters) for m in config.models]
    for where, params in scopes:
        for key in params or {}:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise RankwiseError(f"{where}: unknown parameter '{key}' for merge method '{method.name}'{hint}; "
                                    f"it takes: {', '.join(known) or 'no parameters'}")


def layer_position(name: str, layers: int) -> float:
    """mergekit's interpolation position: layer i of L at i / (L − 1); tensors outside the layers at 0."""
    match = _LAYER.search(name)
    if match is None:
        return 0.0
    return int(match.group(1)) / (layers - 1) if layers > 1 else 1.0


def resolve_task(config: MergeConfig, method: MergeMethod, name: str, t: float, model_settings: list[dict[str, Any]],
                  labels: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    top = config.parameters or {}
    shared: dict[str, Any] = {}
    models: list[dict[str, Any]] = [{} for _ in model_settings]
    for p in [p for p in method.params if p.in_config]:
        if p.scope == "shared":
            value = evaluate(top[p.name], name, t) if p.name in top else None
            shared[p.name] = resolve(p, value, f"tensor {name}")
            continue
        for i, own in enumerate(model_settings):
            value = None
            for scope in (own, top):
                if p.name in scope:
                    value = evaluate(scope[p.name], name, t)
                    if value is not None:
                        break
            models[i][p.name] = resolve(p, value, f"model '{labels[i]}', tensor {name}")
    return shared, models


def build_plan(config: MergeConfig) -> MergePlan:
    """Open every input (headers only), check them against each other, resolve every tensor's parameters."""
    method = get(config.merge_method)
    _check_param_names(config, method)
    if config.tokenizer_source == "union":
        raise RankwiseError("tokenizer_source 'union' is not supported; use 'base' or one of the models")
    base = open_input(config.base_model, None) if config.base_model else None
    if method.base == "required" and base is None:
        raise RankwiseError(f"merge method '{method.name}' needs a base_model; add base_model to the config")
    entries = [m for m in config.models if not (method.base == "required" and m.model == config.base_model)]
    inputs = [open_input(m.model, base) for m in entries]
    plan = MergePlan(config, method, base if method.base == "required" else None, inputs)
    lo, hi = method.inputs
    if len(inputs) < lo or (hi is not None and len(inputs) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
        raise RankwiseError(f"merge method '{method.name}' takes {want} models besides the base, got {len(inputs)}")
    ref = plan.reference
    for other in [i for i in [base, *inputs] if i is not None and i is not ref]:
        check_architecture(ref, other)
        check_tensors(ref, other)
    dtype, out_dtype = _dtype(config.dtype, "dtype"), _dtype(config.out_dtype, "out_dtype")
    plan.compute_dtype = dtype
    if config.tokenizer_source not in (None, "base"):
        plan.tokenizer_folder = open_input(config.tokenizer_source, None).folder
    else:
        plan.tokenizer_folder = (base or ref).folder
    layers = int(ref.config.get("num_hidden_layers") or 1)
    settings = [m.parameters or {} for m in entries]
    labels = [m.model for m in entries]
    for name in ref.names():
        entry = ref.entry(name)
        if not entry.is_float:
            plan.tasks.append(TensorTask(name, entry.shape, entry.dtype, "copy", {}, []))
            continue
        shared, models = resolve_task(config, method, name, layer_position(name, layers), settings, labels)
        plan.tasks.append(TensorTask(name, entry.shape, out_dtype or dtype or entry.dtype, method.name, shared, models))
    return plan
