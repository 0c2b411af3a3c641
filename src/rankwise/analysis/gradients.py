"""Gradient mode (`--gradients`): spectra of each linear layer's gradient of the LM loss.

Li et al. 2025, "How Instruction and Reasoning Data shape Post-Training: Data Quality through the
Lens of Layer-wise Gradients": the nuclear norm and effective rank of each layer's gradient tell how
much and how many directions the data would change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankwise import linalg
from rankwise.analysis.config import AnalyzeConfig
from rankwise.analysis.source import matrix_kind
from rankwise.calib.gradients import accumulate_gradients
from rankwise.errors import RankwiseError
from rankwise.linalg.spectrum import gram_singular_values

DEFINITIONS = {
    "grad_nuclear_norm": "Σσ of the gradient G = ∂(mean token NLL)/∂W on the --data windows",
    "grad_effective_rank": "effective rank of G (exp entropy of normalised σ(G))",
    "grad_stable_rank": "‖G‖²_F / ‖G‖²₂",
}


def _model_and_tokens(model: Any, cfg: AnalyzeConfig, tokens: torch.Tensor | None) -> tuple[nn.Module, torch.Tensor]:
    tokenizer = None
    if not isinstance(model, nn.Module):
        from rankwise.io.loading import load_model

        model, tokenizer = load_model(str(model))
    if tokens is None:
        from rankwise.data.windows import windows

        tokens = windows(cfg.data, split="calib", seq_len=cfg.seq_len, n=cfg.windows, seed=cfg.seed,
                         tokenizer=tokenizer)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise RankwiseError(f"gradient windows must be [N, T] with T >= 2, got {tuple(tokens.shape)}")
    return model, tokens


def gradient_pass(model: Any, cfg: AnalyzeConfig, progress: bool, tokens: torch.Tensor | None = None
                  ) -> list[dict[str, Any]]:
    """One row per targeted linear layer: gradient nuclear norm, effective and stable rank."""
    from rankwise.modules.targets import select_targets

    module, windows = _model_and_tokens(model, cfg, tokens)
    targets = select_targets(module, "all-linear")
    if cfg.include:
        import re

        targets = [t for t in targets if re.search(cfg.include, t + ".weight")]
        if not targets:
            raise RankwiseError(f"no linear layer matches --include '{cfg.include}'")
    grads = accumulate_gradients(module, windows, targets, cfg.batch_size, progress)
    rows = []
    for name, G in grads.items():
        if not torch.isfinite(G).all():
            raise RankwiseError(f"the gradient of {name} contains NaN or inf; check the model and data")
        s = gram_singular_values(G, torch.float64)
        layer, kind = matrix_kind(name + ".weight")
        rows.append({"name": name + ".weight", "layer": layer, "type": kind,
                     "grad_frobenius_norm": linalg.frobenius_norm(s), "grad_nuclear_norm": linalg.nuclear_norm(s),
                     "grad_effective_rank": linalg.effective_rank(s), "grad_stable_rank": linalg.stable_rank(s)})
    return rows
