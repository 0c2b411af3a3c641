"""Weight gradients of the mean token NLL over calibration windows (analysis' gradient spectra)."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.hooks import grads_only_for
from rankwise.errors import RankwiseError
from rankwise.eval.perplexity import window_nll
from rankwise.modules.targets import linear_at


def accumulate_gradients(model: nn.Module, tokens: torch.Tensor, names: list[str], batch_size: int,
                     progress: bool) -> dict[str, torch.Tensor]:
    """∂(mean token NLL over ``tokens`` [N, T])/∂W for each named Linear, fp32 [out, in] each.

    Only the named weights require grad during the passes; every flag, and train/eval mode, is
    restored afterwards.
    """
    weights = {name: linear_at(model, name).weight for name in names}
    was_training = model.training
    model.eval()
    total_tokens = tokens.shape[0] * (tokens.shape[1] - 1)
    try:
        for w in weights.values():
            w.grad = None
        with grads_only_for(model, list(weights.values())):
            for start in tqdm(range(0, tokens.shape[0], batch_size), desc="gradients", unit="batch",
                              disable=not progress):
                nll, _ = window_nll(model, tokens[start : start + batch_size])
                (nll / total_tokens).backward()  # type: ignore[no-untyped-call]
        grads = {}
        for name, w in weights.items():
            if w.grad is None:
                raise RankwiseError(f"layer {name} received no gradient; it is not used by the model's forward")
            grads[name] = w.grad.detach().float().clone()
            w.grad = None
        return grads
    finally:
        model.train(was_training)
