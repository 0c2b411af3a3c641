"""The one helper that swaps a submodule: compression replaces layers, adapters wrap them, both call it."""

from __future__ import annotations

from torch import nn


def parent_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """``("model.layers.0.mlp.up_proj")`` → (the ``mlp`` module, ``"up_proj"``)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where ``name`` was; returns the old module."""
    parent, attr = parent_of(model, name)
    old: nn.Module = getattr(parent, attr)
    setattr(parent, attr, new)
    return old
