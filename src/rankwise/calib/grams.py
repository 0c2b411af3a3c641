"""Input Gram statistics of target layers over calibration windows, one Gram per distinct input."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.hooks import input_hooks
from rankwise.linalg.gram import GramAccumulator


class SharedGrams:
    """Hook callback that gives layers fed the same tensor (q/k/v, gate/up) one shared accumulator.

    Layers reading one input run back to back in a transformer block, so "same tensor object as
    the previous hooked call" identifies sharing while holding only one activation alive.
    """

    def __init__(self) -> None:
        self.grams: dict[str, GramAccumulator] = {}
        self._last_input: torch.Tensor | None = None
        self._last_name: str | None = None

    def __call__(self, name: str, x: torch.Tensor) -> None:
        if x is self._last_input and self._last_name is not None:
            self.grams.setdefault(name, self.grams[self._last_name])
            return
        self._last_input, self._last_name = x, name
        acc = self.grams.get(name)
        if acc is None:
            acc = self.grams[name] = GramAccumulator(x.shape[-1])
        acc.update(x)

    def end_batch(self) -> None:
        self._last_input, self._last_name = None, None


@torch.no_grad()
def collect_grams(
    model: nn.Module, names: list[str], windows: torch.Tensor, batch_size: int = 8, progress: bool = True
) -> dict[str, GramAccumulator]:
    """Run ``windows`` [N, T] through ``model``; return each named layer's input Gram (shared objects
    for layers with the same input). Hooks are removed even if the forward fails."""
    stats = SharedGrams()
    with input_hooks(model, names, stats):
        for start in tqdm(range(0, windows.shape[0], batch_size), desc="calibration", disable=not progress,
                          unit="batch"):
            model(windows[start : start + batch_size], use_cache=False)
            stats.end_batch()
    return stats.grams
