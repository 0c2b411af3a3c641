"""Honest parameter and byte counts: tied weights counted once, per module type, targeted subset."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from torch import nn


def _unique_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    seen: set[int] = set()
    out: dict[str, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue  # tied (e.g. embedding = LM head): stored once, counted once
        seen.add(id(p))
        out[name] = p
    return out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in _unique_parameters(model).values())


def weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in _unique_parameters(model).values())


def module_type(param_name: str) -> str:
    """``model.layers.3.self_attn.q_proj.weight`` → ``self_attn.q_proj.weight`` (layer index dropped)."""
    return re.sub(r"^.*?\.\d+\.", "", param_name) if re.search(r"\.\d+\.", param_name) else param_name


def parameters_by_type(model: nn.Module) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for name, p in _unique_parameters(model).items():
        counts[module_type(name)] += p.numel()
    return dict(counts)


def targeted_parameter_count(model: nn.Module, module_names: Iterable[str]) -> int:
    """Parameters (weights and biases) held by the named modules."""
    modules = dict(model.named_modules())
    return sum(p.numel() for name in module_names for p in modules[name].parameters())
