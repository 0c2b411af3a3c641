"""RegMean (Jin et al., ICLR 2023): merge each linear layer so its outputs match every model's on that
model's own inputs, in the least-squares sense.

For y = W x and input Grams Gᵢ = Xᵢᵀ Xᵢ, the minimiser of Σᵢ ‖Xᵢ Wᵀ − Xᵢ Wᵢᵀ‖² is
W = (Σᵢ Wᵢ G̃ᵢ)(Σᵢ G̃ᵢ)⁻¹, with the off-diagonal entries of each Gram shrunk, G̃ = α G + (1 − α) diag(G),
which keeps the solve well conditioned. ``weight`` scales each model's Gram. Tensors without a Gram
(embeddings, norms) take the weighted mean. The Grams come from calibration windows run through each
model (`prepare_regmean`, called by the driver before streaming).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from rankwise.errors import RankwiseError
from rankwise.merge.methods.base import MergeMethod, Param, register

if TYPE_CHECKING:
    from rankwise.merge.plan import MergePlan


def shrink(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """α G + (1 − α) diag(G)."""
    return gram * alpha + torch.diag(torch.diagonal(gram)) * (1.0 - alpha)


def regmean(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
            shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """``models[i]["gram"]`` [n, n] (each model's input Gram of this layer) or absent (weighted mean)."""
    weights = [float(m["weight"]) for m in models]
    grams = [m.get("gram") for m in models]
    if any(g is None for g in grams) or tensors[0].ndim != 2:
        out = tensors[0].mul_(weights[0])
        for t, w in zip(tensors[1:], weights[1:], strict=True):
            out.add_(t, alpha=w)
        return out.div_(sum(weights))
    alpha = float(shared["alpha"])
    total = torch.zeros_like(grams[0], dtype=torch.float64)  # type: ignore[arg-type]
    rhs = torch.zeros(tensors[0].shape, dtype=torch.float64)
    for t, g, w in zip(tensors, grams, weights, strict=True):
        assert g is not None
        shrunk = shrink(g.double(), alpha) * w
        total += shrunk
        rhs += t.double() @ shrunk
    # W Σ G̃ = Σ Wᵢ G̃ᵢ with Σ G̃ symmetric: solve (Σ G̃) Wᵀ = (Σ Wᵢ G̃ᵢ)ᵀ. A ridge of 1e-8 of the mean
    # diagonal keeps a layer whose inputs never used a channel solvable.
    ridge = 1e-8 * float(torch.diagonal(total).mean()) + 1e-30
    total += torch.eye(total.shape[0], dtype=torch.float64) * ridge
    merged: torch.Tensor = torch.linalg.solve(total, rhs.T).T.to(tensors[0].dtype)
    return merged


register(MergeMethod(
    "regmean", regmean,
    (Param("weight", "model", float, 1.0, check="nonneg"), Param("alpha", "shared", float, 0.9, check="unit"),
     Param("gram", "model", object, None, in_config=False)),
    base="none", elementwise=False,
    summary="least-squares match of every model's layer outputs (needs calibration data)",
))


def prepare_regmean(plan: MergePlan, progress: bool = True) -> None:
    """Run the calibration windows through each input model; put each linear layer's shrunk-ready
    input Gram into that tensor's per-model parameters."""
    from rankwise.calib import collect_grams
    from rankwise.data import windows
    from rankwise.io.loading import load_model
    from rankwise.merge.inputs import AdapterInput

    config = plan.config
    for i, source in enumerate(plan.inputs):
        if isinstance(source, AdapterInput):
            raise RankwiseError(f"regmean needs full models to calibrate on; merge the adapter '{source.label}' "
                                "into its base first (rankwise merge-adapter)")
        model, tok = load_model(source.folder)
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                 and f"{n}.weight" in source.tensors and n != "lm_head"]
        calib = windows(config.calib_data, split="calib", seq_len=config.calib_seq_len, n=config.calib_windows,
                        seed=config.seed, tokenizer=tok)
        grams = collect_grams(model, names, calib, progress=progress)
        del model
        # Layers fed the same input share one accumulator, so one fp32 copy serves them all.
        converted: dict[int, torch.Tensor] = {}
        by_tensor = {}
        for name, acc in grams.items():
            if id(acc) not in converted:
                converted[id(acc)] = acc.mean_gram().to(torch.float32)
            by_tensor[f"{name}.weight"] = converted[id(acc)]
        for task in plan.tasks:
            if task.name in by_tensor:
                task.models[i]["gram"] = by_tensor[task.name]
