"""``output: adapter``: merge LoRA adapters of one base into one adapter, in factored form.

Every input is an adapter (rankwise or PEFT) of the same base; no dense update is ever formed. Each
input's update of a layer is written as s·B·A (an adapter whose init changed the base contributes
s·[B, −B₀][A; A₀], exactly its update of the untouched base). Methods:

- ``linear``: Σ wᵢ Δᵢ / Σ wᵢ; ``cat``: Σ wᵢ Δᵢ — both exact, factors concatenated (rank Σ rᵢ).
- ``ties``, ``dare_ties``, ``knots``: TIES (or DARE-TIES) on the coefficients of the updates in their
  shared SVD basis, as KnOTS does (rank ≤ Σ rᵢ).
- ``tsv``: each update's singular vectors (exact, from its factors) stacked, decorrelated, reassembled.

The result is a rankwise adapter folder (``adapter.yaml`` + ``adapter.safetensors`` + ``config.yaml``
naming the base), which ``rankwise export-peft`` turns into a PEFT LoRA.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from tqdm.auto import tqdm

from rankwise._version import __version__
from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder
from rankwise.io.tensors import natural_key, read_tensor
from rankwise.merge.config import MergeConfig
from rankwise.merge.driver import tensor_seed
from rankwise.merge.inputs import AdapterInput, LowRankDelta
from rankwise.merge.methods.dare import drop_random
from rankwise.merge.methods.knots import knots_factors
from rankwise.merge.methods.subspace import orthonormalize
from rankwise.merge.methods.ties import trim_magnitude
from rankwise.merge.plan import MergePlan, build_plan, layer_position, resolve_task

ADAPTER_METHODS = ("linear", "cat", "ties", "dare_ties", "knots", "tsv")


def factors(delta: LowRankDelta) -> tuple[torch.Tensor, torch.Tensor]:
    """(B [m, r'], A [r', n]) with B A = the layer's whole update (scaling folded into B)."""
    B, A = read_tensor(delta.B).float() * delta.scaling, read_tensor(delta.A).float()
    if delta.init_A is not None and delta.init_B is not None:
        B = torch.cat([B, -delta.scaling * read_tensor(delta.init_B).float()], dim=1)
        A = torch.cat([A, read_tensor(delta.init_A).float()], dim=0)
    return B, A


def _svd_of_product(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U [m, r], S [r], V [n, r]) of B A from the factors: two thin QRs and an r × r SVD."""
    Qb, Rb = torch.linalg.qr(B)
    Qa, Ra = torch.linalg.qr(A.T)
    u, s, vh = torch.linalg.svd(Rb @ Ra.T)
    return Qb @ u, s, Qa @ vh.T


def merge_layer(method: str, pairs: list[tuple[torch.Tensor, torch.Tensor]], models: list[dict[str, Any]],
                shared: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) of the merged update of one layer from each input's (Bᵢ, Aᵢ)."""
    weights = [float(m.get("weight", 1.0)) for m in models]
    if method in ("linear", "cat"):
        norm = sum(weights) if method == "linear" and shared["normalize"] else 1.0
        if norm == 0.0:
            raise RankwiseError("linear: the weights sum to 0; give at least one positive weight")
        B = torch.cat([B * (w / norm) for (B, _), w in zip(pairs, weights, strict=True)], dim=1)
        return B, torch.cat([A for _, A in pairs], dim=0)
    if method == "tsv":
        svds = [_svd_of_product(B * w, A) for (B, A), w in zip(pairs, weights, strict=True)]
        U = orthonormalize(torch.cat([u for u, _, _ in svds], dim=1))
        V = orthonormalize(torch.cat([v for _, _, v in svds], dim=1))
        return (U * torch.cat([s for _, s, _ in svds])) * float(shared.get("lambda", 1.0)), V.T
    # DARE's random drop, or TIES' trim, acts on each update's coefficients in the shared basis.
    sparsify = drop_random if method == "dare_ties" else trim_magnitude
    return knots_factors([B for B, _ in pairs], [A for _, A in pairs], models, shared, generator, sparsify)


def merge_adapters(config: MergeConfig, out: str | os.PathLike[str], *, overwrite: bool = False,
                   progress: bool = True) -> tuple[Path, MergePlan]:
    """Merge the adapters of ``config`` into a rankwise adapter folder ``out``; returns it and the plan."""
    method_name = config.merge_method
    if method_name not in ADAPTER_METHODS:
        raise RankwiseError(f"output: adapter supports the merge methods {', '.join(ADAPTER_METHODS)}, "
                            f"not '{method_name}'")
    plan = build_plan(config.model_copy(update={"merge_method": "linear" if method_name == "cat" else method_name,
                                                "output": "model"}))
    adapters = [i for i in plan.inputs if isinstance(i, AdapterInput)]
    if len(adapters) != len(plan.inputs) or not adapters:
        raise RankwiseError("output: adapter needs every model to be an adapter (rankwise or PEFT) of the base")
    base = adapters[0].base
    for a in adapters[1:]:
        if a.base.folder.resolve() != base.folder.resolve():
            raise RankwiseError(f"adapters '{adapters[0].label}' and '{a.label}' are for different base models")
    layers = sorted({name for a in adapters for name in a.deltas}, key=natural_key)
    layer_count = int(base.config.get("num_hidden_layers") or 1)
    settings = [m.parameters or {} for m in config.models if m.model != config.base_model]
    labels = [a.label for a in adapters]
    tensors: dict[str, torch.Tensor] = {}
    meta_layers: dict[str, Any] = {}
    for name in tqdm(layers, desc=f"merge adapters ({method_name})", unit="layer", disable=not progress):
        shared, models = resolve_task(config, plan.method, name, layer_position(name, layer_count), settings, labels)
        present = [(factors(a.deltas[name]), m) for a, m in zip(adapters, models, strict=True) if name in a.deltas]
        generator = torch.Generator().manual_seed(tensor_seed(config.seed, name))
        B, A = merge_layer(method_name, [p for p, _ in present], [m for _, m in present], shared, generator)
        layer = name.removesuffix(".weight")
        tensors[f"{layer}.lora_A"], tensors[f"{layer}.lora_B"] = A.contiguous(), B.contiguous()
        meta_layers[layer] = {"shape": list(base.entry(name).shape), "rank": int(A.shape[0]), "scaling": 1.0}
    _write(tensors, meta_layers, base.label, out, overwrite)
    return Path(out), plan


def _write(tensors: dict[str, torch.Tensor], layers: dict[str, Any], base: str, out: str | os.PathLike[str],
           overwrite: bool) -> None:
    from collections import Counter

    from rankwise.adapters.lora import LoRA  # the adapters package is heavy: only when writing one

    rank = int(Counter(v["rank"] for v in layers.values()).most_common(1)[0][0])
    meta = {"rankwise_version": __version__, "adapter": LoRA(rank=rank).model_dump(mode="json"), "layers": layers}
    with atomic_folder(out, overwrite) as tmp:
        save_file(tensors, str(tmp / "adapter.safetensors"))
        (tmp / "adapter.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        (tmp / "config.yaml").write_text(yaml.safe_dump({"model": base}, sort_keys=False))

