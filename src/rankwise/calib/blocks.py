"""Block-by-block calibration: the inputs of every decoder block, captured once, then advanced one
block at a time, so sequential pipelines hold the activations of one block, never the whole model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rankwise.errors import RankwiseError


class _StopForward(Exception):
    """Raised by the last recorder once every block's keyword arguments are captured."""


@dataclass
class BlockBatch:
    """One calibration batch at the input of one block: ``hidden`` [B, T, d] and, per block index,
    the keyword arguments the model passes that block (masks and rotary tables differ by layer type)."""

    hidden: torch.Tensor
    kwargs: list[dict[str, Any]]


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The qualified name and list of the transformer blocks (``model.layers`` for Llama-like models)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith("layers") and len(module) > 0:
            return name, module
    raise RankwiseError("block-by-block compression needs a decoder with a `layers` list of blocks; this "
                        "architecture is not supported (use sequential=False, correct=False)")


class _Recorder(nn.Module):
    """Stands in for block ``index`` during capture: records its call and passes the hidden state on."""

    def __init__(self, index: int, last: bool, sink: list[Any]) -> None:
        super().__init__()
        self.index, self.last, self.sink = index, last, sink

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        if self.index == 0:
            self.sink.append(hidden)
        self.sink.append({k: v for k, v in kwargs.items() if k != "hidden_states"})
        if self.last:
            raise _StopForward
        return hidden  # type: ignore[no-any-return]


@torch.no_grad()
def capture_block_inputs(model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor,
                         batch_size: int) -> list[BlockBatch]:
    """The hidden states entering block 0 and every block's keyword arguments, per batch of ``windows``.

    Each block is swapped for a recorder that returns its input unchanged, so capturing costs the
    embedding and the mask construction, not a forward through the blocks.
    """
    originals = list(layers)
    batches = []
    try:
        for start in range(0, windows.shape[0], batch_size):
            sink: list[Any] = []
            for i in range(len(originals)):
                layers[i] = _Recorder(i, i == len(originals) - 1, sink)
            with contextlib.suppress(_StopForward):
                model(windows[start : start + batch_size], use_cache=False)
            batches.append(BlockBatch(sink[0], sink[1:]))
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
    return batches


def run_block(block: nn.Module, index: int, batches: list[BlockBatch]) -> list[torch.Tensor]:
    """Outputs [B, T, d] of ``block`` (at position ``index``) for every batch."""
    outs = []
    for batch in batches:
        out = block(batch.hidden, **batch.kwargs[index])
        outs.append(out[0] if isinstance(out, tuple) else out)
    return outs


def advance(batches: list[BlockBatch], outputs: list[torch.Tensor]) -> list[BlockBatch]:
    """The batches at the next block's input: its hidden states replaced by ``outputs``."""
    return [BlockBatch(out, batch.kwargs) for out, batch in zip(outputs, batches, strict=True)]
