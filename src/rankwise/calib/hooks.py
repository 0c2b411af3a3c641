"""Forward pre-hooks owned by one context manager that always removes them."""

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
