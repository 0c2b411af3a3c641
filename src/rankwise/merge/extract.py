"""LoRA extraction: the truncated SVD of each weight delta ΔW = W_ft − W_base, written as a PEFT LoRA.

By Eckart–Young the rank-r truncation is the best rank-r approximation of ΔW in Frobenius norm.
``rank="auto"`` spends a total size budget (that of a uniform rank-``budget_rank`` LoRA on the same
matrices) where it removes the most error: the spectra of all deltas are measured first, then
rankwise's rank allocators choose the per-matrix ranks (``alloc="threshold"``: one global threshold
on the marginal squared error per parameter, i.e. the smallest total ‖ΔW − ΔŴ‖²_F; ``"energy"``: the
same share of every delta's energy). Inputs are streamed: one matrix of each model in memory.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from rankwise.compress.allocators.base import MatrixSpectrum, get_allocator
from rankwise.compress.allocators.global_error import greedy_allocation
from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder, check_output_folder
from rankwise.linalg import singular_values, svd
from rankwise.merge.inputs import PEFT_CONFIG, PEFT_WEIGHTS
from rankwise.merge.plan import check_architecture, check_tensors, open_input

#: Default targets: the projections inside the decoder blocks (what "all-linear" adapts).
DEFAULT_INCLUDE = r"\.layers\.\d+\..*\.weight$"


@dataclass
class ExtractedMatrix:
    name: str
    shape: tuple[int, int]
    rank: int
    relative_error: float  # ‖ΔW − ΔŴ‖_F / ‖ΔW‖_F


@dataclass
class ExtractReport:
    folder: Path
    matrices: list[ExtractedMatrix] = field(default_factory=list)
    skipped_unchanged: int = 0
    dropped: list[str] = field(default_factory=list)  # changed tensors that are not LoRA targets

    @property
    def params(self) -> int:
        return sum(m.rank * (m.shape[0] + m.shape[1]) for m in self.matrices)

    def total_relative_error(self, deltas_sq: dict[str, float]) -> float:
        err = sum((m.relative_error**2) * deltas_sq[m.name] for m in self.matrices)
        return math.sqrt(err / max(sum(deltas_sq.values()), 1e-300))


def _targets(base_names: list[str], shapes: dict[str, tuple[int, ...]], include: str) -> list[str]:
    pattern = re.compile(include)
    return [n for n in base_names if len(shapes[n]) == 2 and pattern.search(n)]


def allocate_ranks(spectra: list[MatrixSpectrum], budget_rank: int, alloc: str, multiple: int) -> dict[str, int]:
    """Per-matrix ranks whose total size Σ r(m + n) is at most that of rank ``budget_rank`` everywhere."""
    budget = sum(min(budget_rank, min(s.out_features, s.in_features)) * (s.out_features + s.in_features)
                 for s in spectra)
    dense = sum(s.dense_params for s in spectra)
    ratio = 1.0 - budget / dense
    if not 0.0 < ratio < 1.0:
        raise RankwiseError(f"budget rank {budget_rank} is as large as the matrices themselves; use a smaller rank")
    if alloc == "threshold":
        ranks = greedy_allocation(spectra, ratio, multiple, normalize=False)
    else:
        ranks = get_allocator(alloc)(spectra, ratio, multiple)
    # "Dense" (None) is not a LoRA: the largest rank that is still smaller than the matrix stands in.
    return {s.name: int(ranks[s.name] or s.max_lowrank(multiple) or multiple) for s in spectra}


def extract_lora(finetuned: str, base: str, out: str | os.PathLike[str], rank: int | Literal["auto"] = 64, *,
                 budget_rank: int = 64, alloc: str = "threshold", rank_multiple: int = 8,
                 include: str = DEFAULT_INCLUDE, overwrite: bool = False, progress: bool = True) -> ExtractReport:
    """Write ``finetuned − base`` as a PEFT LoRA folder ``out`` (fixed ``rank``, or ``"auto"`` ranks)."""
    if rank != "auto" and (not isinstance(rank, int) or rank <= 0):
        raise RankwiseError(f"rank must be a positive integer or 'auto', got {rank!r}")
    check_output_folder(out, overwrite)
    if alloc != "threshold":
        get_allocator(alloc)
    ft_in, base_in = open_input(finetuned, None), open_input(base, None)
    check_architecture(base_in, ft_in)
    check_tensors(base_in, ft_in)
    shapes = {n: base_in.entry(n).shape for n in base_in.names()}
    targets = _targets(base_in.names(), shapes, include)
    if not targets:
        raise RankwiseError(f"no 2-D tensors of {base} match '{include}'; pass another --include")
    report = ExtractReport(Path(out))

    def delta(name: str) -> torch.Tensor:
        return ft_in.get(name).float().sub_(base_in.get(name).float())

    ranks: dict[str, int] = {}
    energy: dict[str, float] = {}
    if rank == "auto":
        spectra = []
        for name in tqdm(targets, desc="spectra", unit="matrix", disable=not progress):
            s = singular_values(delta(name))
            energy[name] = float(s.double().square().sum())
            if energy[name] > 0:
                m, n = shapes[name]
                spectra.append(MatrixSpectrum(name, m, n, s.square(), s))
        ranks = allocate_ranks(spectra, budget_rank, alloc, rank_multiple)
    tensors: dict[str, torch.Tensor] = {}
    for name in tqdm(targets, desc="extract", unit="matrix", disable=not progress):
        d = delta(name)
        total = float(d.double().square().sum())
        energy[name] = total
        if total == 0.0:
            report.skipped_unchanged += 1
            continue
        r = min(ranks.get(name, 0) if rank == "auto" else int(rank), *d.shape)
        if r == 0:
            continue
        f = svd(d, r)
        B, A = f.to_ab(1.0)
        kept = float(f.S.double().square().sum())
        layer = name.removesuffix(".weight")
        tensors[f"base_model.model.{layer}.lora_A.weight"] = A.contiguous()
        tensors[f"base_model.model.{layer}.lora_B.weight"] = B.contiguous()
        error = math.sqrt(max(total - kept, 0.0) / total)
        report.matrices.append(ExtractedMatrix(name, (int(d.shape[0]), int(d.shape[1])), r, error))
    for name in base_in.names():
        if name not in targets and base_in.entry(name).is_float and not torch.equal(ft_in.get(name), base_in.get(name)):
            report.dropped.append(name)
    if not report.matrices:
        raise RankwiseError(f"{finetuned} does not differ from {base} in any targeted matrix; nothing to extract")
    _write_peft(report, tensors, base, Path(out), overwrite, energy)
    return report


def _write_peft(report: ExtractReport, tensors: dict[str, torch.Tensor], base: str, out: Path, overwrite: bool,
                energy: dict[str, float]) -> None:
    from collections import Counter

    ranks = {m.name.removesuffix(".weight"): m.rank for m in report.matrices}
    r = int(Counter(ranks.values()).most_common(1)[0][0])
    # lora_alpha = r everywhere (scaling 1): the factors carry the singular values themselves.
    pattern = {name: rank for name, rank in ranks.items() if rank != r}
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": r, "lora_alpha": r,
        "lora_dropout": 0.0, "use_rslora": False, "use_dora": False, "bias": "none", "fan_in_fan_out": False,
        "init_lora_weights": True, "inference_mode": True, "target_modules": sorted(ranks),
        "rank_pattern": pattern, "alpha_pattern": dict(pattern), "modules_to_save": None,
    }
    details = {"matrices": [{"name": m.name, "rank": m.rank, "relative_error": m.relative_error}
                            for m in report.matrices],
               "lora_params": report.params, "total_relative_error": report.total_relative_error(
                   {m.name: energy[m.name] for m in report.matrices}),
               "changed_but_not_extracted": report.dropped}
    with atomic_folder(out, overwrite) as tmp:
        save_file(tensors, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        (tmp / PEFT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / "extract_report.json").write_text(json.dumps(details, indent=2) + "\n")
