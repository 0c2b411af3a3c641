"""Hooks owned by context managers that always remove them: layer inputs on the forward pass,
layer output gradients on the backward pass, and a scoped "only these tensors require grad"."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

InputCallback = Callable[[str, torch.Tensor], None]


@contextmanager
def input_hooks(model: nn.Module, names: list[str], callback: InputCallback) -> Iterator[None]:
    """Call ``callback(name, x)`` with the input x [..., in_features] of each named module on every forward."""
    handles = []

    def make(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            callback(name, args[0])

        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_pre_hook(make(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def output_hooks(model: nn.Module, names: list[str], callback: InputCallback) -> Iterator[None]:
    """Call ``callback(name, y)`` with the output y [..., out_features] of each named module on every forward."""
    handles = []

    def make(name: str) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], None]:
        def hook(_module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> None:
            callback(name, out)

        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(make(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def output_grad_hooks(model: nn.Module, names: list[str], callback: InputCallback) -> Iterator[None]:
    """Call ``callback(name, g)`` with ∂L/∂y [..., out_features] of each named module on every backward.

    The input embedding's output is made to require grad inside, so activation gradients flow
    even when every weight is frozen (no weight gradient need ever be formed).
    """
    handles = []

    def make(name: str) -> Callable[[nn.Module, Any, tuple[torch.Tensor, ...]], None]:
        def hook(_module: nn.Module, _grad_in: Any, grad_out: tuple[torch.Tensor, ...]) -> None:
            callback(name, grad_out[0].detach())

        return hook

    def embed_hook(_m: nn.Module, _a: Any, out: torch.Tensor) -> None:
        out.requires_grad_(True)

    try:
        embed: nn.Module = model.get_input_embeddings()  # type: ignore[operator]
        handles.append(embed.register_forward_hook(embed_hook))
        for name in names:
            handles.append(model.get_submodule(name).register_full_backward_hook(make(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def grads_only_for(model: nn.Module, params: list[torch.Tensor]) -> Iterator[None]:
    """Inside: grad mode on, and only ``params`` require grad (the rest of the model is frozen so
    no unneeded weight gradient is formed). Every parameter's flag is restored on exit."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        for t in params:
            t.requires_grad_(True)
        with torch.enable_grad():  # callers may hold no_grad; these passes need the backward
            yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
