"""Statistics for output matching: each layer's inputs in the dense model (X) and in the model whose
earlier layers are already compressed (X̃), gathered block by block.

For a layer W and a replacement Ŵ, ‖W X − Ŵ X̃‖²_F = tr(W G Wᵀ) − 2 tr(W C Ŵᵀ) + tr(Ŵ G̃ Ŵᵀ), with the
cross-Gram C = Σ_t x_t x̃_tᵀ and G̃ = Σ_t x̃_t x̃_tᵀ; tr(W G Wᵀ) only normalises, and comes from the dense
Gram G of the one-shot calibration (same windows).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from rankwise.calib.blocks import BlockBatch
from rankwise.calib.hooks import input_hooks
from rankwise.linalg.bf16 import outer_sum
from rankwise.linalg.gram import GramAccumulator


class _StopBlock(Exception):
    """Raised by a hook once the statistics it needs from this batch are taken."""


@dataclass
class MatchingStats:
    """``cross`` [n, n] fp64: Σ x x̃ᵀ (dense input times compressed-model input); ``gram``: Σ x̃ x̃ᵀ."""

    cross: torch.Tensor
    gram: GramAccumulator


@dataclass
class DensePass:
    """What the dense block gives block-by-block matching: per input group (keyed by its first layer)
    the inputs of every batch, and the block outputs."""

    groups: list[list[str]]
    inputs: dict[str, list[torch.Tensor]]
    outputs: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def dense_pass(block: nn.Module, index: int, names: list[str], batches: list[BlockBatch]) -> DensePass:
    """Run the dense ``block`` (position ``index``) over ``batches``; ``names`` are its target layers
    (relative to the block). Layers fed the same tensor object (q/k/v, gate/up) form one group;
    groups come in execution order."""
    groups: list[list[str]] = []
    inputs: dict[str, list[torch.Tensor]] = {}
    last: list[torch.Tensor | None] = [None]
    current: list[list[str]] = []  # the group the last new input started

    def on_input(name: str, x: torch.Tensor) -> None:
        if x is last[0] and current:
            if name not in current[0]:
                current[0].append(name)
            return
        last[0] = x
        group = next((g for g in groups if name in g), None)
        if group is None:
            group = [name]
            groups.append(group)
        current[:] = [group]
        inputs.setdefault(group[0], []).append(x)

    outputs = []
    with input_hooks(block, names, on_input):
        for batch in batches:
            last[0] = None
            current.clear()
            out = block(batch.hidden, **batch.kwargs[index])
            outputs.append(out[0] if isinstance(out, tuple) else out)
    return DensePass(groups, inputs, outputs)


@torch.no_grad()
def matching_stats(block: nn.Module, index: int, first: str, dense_inputs: list[torch.Tensor] | None,
                   batches: list[BlockBatch]) -> MatchingStats:
    """Gram (and, given the dense inputs of every batch, cross-Gram) of the input of layer ``first`` in
    ``block`` as it is now (earlier layers possibly compressed), fed the compressed model's ``batches``.
    Each forward stops at that layer."""
    dim = int(block.get_submodule(first).in_features)  # type: ignore[arg-type]
    stats = MatchingStats(torch.zeros(dim, dim, dtype=torch.float64), GramAccumulator(dim))
    current: list[torch.Tensor] = []

    def on_input(_name: str, x: torch.Tensor) -> None:
        tilde = x.detach().reshape(-1, dim)
        if current:
            stats.cross += outer_sum(current[0].reshape(-1, dim), tilde).double()
        stats.gram.update(tilde)
        raise _StopBlock

    with input_hooks(block, [first], on_input):
        for i, batch in enumerate(batches):
            current[:] = [] if dense_inputs is None else [dense_inputs[i]]
            with contextlib.suppress(_StopBlock):
                block(batch.hidden, **batch.kwargs[index])
    return stats
