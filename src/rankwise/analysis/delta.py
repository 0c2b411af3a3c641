"""Delta mode (`--against BASE`): spectra of ΔW = W_ft − W_base and how the top subspaces moved."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from rankwise import linalg
from rankwise.analysis.config import AnalyzeConfig
from rankwise.analysis.source import MatrixSource, iter_matrices, load_matrix, matrix_kind
from rankwise.errors import RankwiseError
from rankwise.linalg.spectrum import gram_singular_values
from rankwise.linalg.subspace import intruder_dimensions, subspace_overlap

DEFINITIONS = {
    "delta_effective_rank": "effective rank of ΔW = W_ft − W_base (exp entropy of normalised σ(ΔW))",
    "delta_stable_rank": "‖ΔW‖²_F / ‖ΔW‖²₂",
    "delta_rank_90": "smallest r whose rank-r approximation keeps 90 % of ‖ΔW‖²_F",
    "relative_change": "‖ΔW‖_F / ‖W_base‖_F",
    "overlap": "‖U_ftᵀ U_base‖²_F / k for the top-k left singular vectors (1: same subspace, ≈k/m: unrelated)",
    "intruders": "intruder dimensions (Shuttleworth et al. 2024): top intruder_k singular vectors of W_ft whose "
                 "largest |cos| with every singular vector of W_base is below intruder_threshold",
}


def check_pairs(source: MatrixSource, base: MatrixSource) -> None:
    """Raise one RankwiseError listing every name or shape that differs between the two models."""
    ft, bs = dict(source.entries()), dict(base.entries())
    only_ft, only_base = sorted(set(ft) - set(bs)), sorted(set(bs) - set(ft))
    shapes = [f"{n} {ft[n][0]}x{ft[n][1]} vs {bs[n][0]}x{bs[n][1]}" for n in ft if n in bs and ft[n] != bs[n]]
    problems = []
    if only_ft:
        problems.append(f"only in the model: {_short(only_ft)}")
    if only_base:
        problems.append(f"only in the base: {_short(only_base)}")
    if shapes:
        problems.append(f"shape mismatch: {_short(shapes)}")
    if problems:
        raise RankwiseError("--against: the model and the base do not have the same matrices; " + "; ".join(problems))


def _short(items: list[str], keep: int = 5) -> str:
    more = f" (+{len(items) - keep} more)" if len(items) > keep else ""
    return ", ".join(items[:keep]) + more


def delta_row(name: str, W_ft: torch.Tensor, W_base: torch.Tensor, cfg: AnalyzeConfig
              ) -> tuple[dict[str, Any], torch.Tensor]:
    """Metrics of one pair W_ft, W_base [m, n] and the singular values of ΔW (fp32)."""
    D = W_ft - W_base
    s = gram_singular_values(D, torch.float64 if cfg.precision == "fp64" else torch.float32)
    base_norm = float(W_base.double().norm())
    U_ft = linalg.svd(W_ft).U  # [m, k]
    U_base = linalg.svd(W_base).U
    layer, kind = matrix_kind(name)
    row: dict[str, Any] = {
        "name": name, "layer": layer, "type": kind,
        "delta_frobenius_norm": linalg.frobenius_norm(s),
        "relative_change": linalg.frobenius_norm(s) / base_norm if base_norm > 0 else None,
        "delta_effective_rank": linalg.effective_rank(s),
        "delta_stable_rank": linalg.stable_rank(s),
        "delta_rank_90": linalg.rank_for_energy(s, 0.9) if float(s.max()) > 0 else 0,
        "overlap": subspace_overlap(U_ft, U_base, cfg.overlap_k),
        "intruders": intruder_dimensions(U_ft, U_base, cfg.intruder_k, cfg.intruder_threshold),
    }
    return row, s.float()


def _pairs(source: MatrixSource, base: MatrixSource) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    for name, W_ft in iter_matrices(source):
        yield name, W_ft, load_matrix(base, name)


def delta_pass(source: MatrixSource, base: MatrixSource, cfg: AnalyzeConfig, progress: bool
               ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Rows and ΔW singular values of every matrix pair, a few pairs in memory at a time."""
    from rankwise.analysis.analyze import parallel_map

    check_pairs(source, base)
    rows, spectra = [], {}
    workers = cfg.workers or torch.get_num_threads()
    results = parallel_map(lambda item: delta_row(*item, cfg), _pairs(source, base), workers)
    for row, s in tqdm(results, total=len(source.entries()), desc="delta", unit="matrix", disable=not progress):
        rows.append(row)
        spectra[row["name"]] = s
    return rows, spectra
