"""The one-shot compress stages: statistics → decompositions → rank allocation → module swap → report.

The maths lives in the method and allocator modules, hooks and statistics in `rankwise.calib`;
the pipelines (`pipeline.py`) chain these stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.precision import calibration_copy, resolve_precision
from rankwise.calib.stats import LayerStats, fisher_stats, gram_stats
from rankwise.compress.allocators.base import MatrixSpectrum, check_feasible, get_allocator
from rankwise.compress.config import CompressConfig
from rankwise.compress.registry import Compressor, get_compressor
from rankwise.compress.report import CompressionReport, MatrixResult
from rankwise.errors import RankwiseError
from rankwise.eval.params import parameter_count
from rankwise.linalg.factors import Factors
from rankwise.linalg.metrics import singular_values
from rankwise.linalg.threads import parallel_map
from rankwise.modules.lowrank import LowRankLinear
from rankwise.modules.replace import replace_module
from rankwise.modules.targets import TargetSpec, linear_at, select_targets


@dataclass
class Decomposition:
    """Everything computed before ranks are chosen; reusable for several ratios."""

    config: CompressConfig
    names: list[str]
    factors: dict[str, Factors]  # full-rank factors per target
    spectra: list[MatrixSpectrum]
    stats: dict[str, LayerStats]
    timings: dict[str, float]


def _check_targets(model: nn.Module, names: list[str]) -> None:
    for name in names:
        weight = linear_at(model, name).weight
        if not torch.isfinite(weight).all():
            raise RankwiseError(f"weight of {name} contains NaN or inf; the model is corrupt, reload it")


def collect_stats(model: nn.Module, compressor: Compressor, names: list[str], calib: torch.Tensor | None,
                  batch_size: int, progress: bool,
                  sensitivity_windows: int = 0,
                  dtype: torch.dtype | None = None) -> tuple[dict[str, LayerStats], dict[str, float]]:
    """Grams (always, when data is given: they also measure the activation error), Fisher rows for
    Fisher-weighted methods, and output sensitivities for the global allocator. The forwards run on
    a copy of ``model`` in ``dtype`` when that differs from the model's (bf16 calibration)."""
    if calib is None:
        if compressor.needs_gram or compressor.needs_fisher:
            raise RankwiseError(f"method '{compressor.name}' needs calibration data; pass calib windows "
                                "(CLI: --calib wiki)")
        return {name: LayerStats() for name in names}, {}
    runner = calibration_copy(model, dtype or next(model.parameters()).dtype)
    stats, sensitivity = gram_stats(runner, names, calib, batch_size, progress, sensitivity_windows)
    if compressor.needs_fisher:
        for name, rows in fisher_stats(runner, names, calib, max(1, batch_size // 2), progress).items():
            stats[name].fisher_rows = rows
    return stats, sensitivity


def decompose(model: nn.Module, config: CompressConfig, targets: TargetSpec = "all-linear",
              calib: torch.Tensor | None = None, batch_size: int = 8, progress: bool = True,
              factorize: bool = True) -> Decomposition:
    """Statistics and full factorizations of every target (the expensive, ratio-independent part).

    ``factorize=False`` computes the spectra alone (``factors`` stays empty): enough to allocate ranks
    when a later pass factorizes each layer again, as the blockwise pipeline does.
    """
    compressor = get_compressor(config.method)
    get_allocator(config.alloc)  # fail on a bad allocator name before any long work
    names = select_targets(model, targets)
    _check_targets(model, names)
    t0 = time.perf_counter()
    wants_sensitivity = config.alloc == "global" and config.sensitivity_windows > 0
    stats, sensitivity = collect_stats(model, compressor, names, calib, batch_size, progress,
                                       config.sensitivity_windows if wants_sensitivity else 0,
                                       resolve_precision(config.calib_precision, model))
    t1 = time.perf_counter()

    def one(name: str) -> tuple[Factors | None, MatrixSpectrum]:
        with torch.no_grad():
            W = linear_at(model, name).weight.detach()
            f = compressor.decompose(W, stats[name], config) if factorize else None
            S = f.S if f is not None else compressor.spectrum(W, stats[name], config)
            if not (torch.isfinite(S).all() and (f is None or (torch.isfinite(f.U).all()
                                                               and torch.isfinite(f.Vh).all()))):
                raise RankwiseError(f"decomposition of {name} is not finite; check the model and calibration data")
            weight_sv = singular_values(W) if config.alloc == "welore" else S
            return f, MatrixSpectrum(name, W.shape[0], W.shape[1], S.double().square(), weight_sv,
                                     sensitivity.get(name))

    desc = "decomposition" if factorize else "spectra"
    with tqdm(total=len(names), desc=desc, disable=not progress, unit="matrix") as bar:
        done = parallel_map(one, names, on_done=bar.update)
    factors = {name: f for name, (f, _) in zip(names, done, strict=True) if f is not None}
    spectra = [spectrum for _, spectrum in done]
    return Decomposition(config, names, factors, spectra, stats,
                         {"calibration": t1 - t0, "decomposition": time.perf_counter() - t1})


def relative_error(W: torch.Tensor, W_hat: torch.Tensor, stats: LayerStats) -> float:
    """‖(W − Ŵ)X‖²/‖W X‖² from the input Gram, or ‖W − Ŵ‖²/‖W‖² without data. W, Ŵ: [m, n]."""
    D = (W - W_hat).double()
    if stats.gram is None or stats.gram.count == 0:
        return float(D.square().sum() / W.double().square().sum().clamp_min(1e-300))
    G = stats.gram.gram
    return float(((D @ G) * D).sum() / ((W.double() @ G) * W.double()).sum().clamp_min(1e-300))


def allocate(dec: Decomposition, ratio: float) -> dict[str, int | None]:
    """Ranks for ``ratio`` (None: the matrix stays dense)."""
    check_feasible(dec.spectra, ratio, dec.config.rank_multiple)
    return get_allocator(dec.config.alloc)(dec.spectra, ratio, dec.config.rank_multiple)


#: ``error(W, Ŵ) -> float``: a swapped layer's relative error, both [m, n].
ErrorFn = Callable[[torch.Tensor, torch.Tensor], float]


def swap_layer(model: nn.Module, name: str, factors: Factors | None, rank: int | None,
               error: ErrorFn) -> MatrixResult:
    """Replace one ``nn.Linear`` by its rank-``rank`` factorization (or keep it dense for None)."""
    layer = model.get_submodule(name)
    assert isinstance(layer, nn.Linear)
    W = layer.weight.detach()
    m, n = W.shape
    if rank is None or factors is None:
        return MatrixResult(name, (m, n), None, m * n, m * n, error(W, W))
    new = LowRankLinear.from_factors(factors.truncate(rank), layer.bias, W.dtype)
    result = MatrixResult(name, (m, n), rank, m * n, rank * (m + n), error(W, new.dense_weight()))
    replace_module(model, name, new)
    return result


def stats_error(stats: LayerStats) -> ErrorFn:
    """`relative_error` against fixed statistics."""
    return lambda W, W_hat: relative_error(W, W_hat, stats)


def build_report(dec: Decomposition, ratio: float, results: list[MatrixResult], params_before: int,
                 model: nn.Module, error_kind: str | None = None) -> CompressionReport:
    has_data = any(s.gram is not None for s in dec.stats.values())
    kind = error_kind or ("activation" if has_data else "weight")
    return CompressionReport(dec.config.method, dec.config.model_dump(), ratio, results, params_before,
                             parameter_count(model), dict(dec.timings), error_kind=kind)


def realize(model: nn.Module, dec: Decomposition, ratio: float, progress: bool = True) -> CompressionReport:
    """Allocate ranks for ``ratio`` and swap the targets of ``model`` in place: the one-shot pipeline's
    last stage (``dec.config`` must be one-shot; `rw.compress.apply` runs any config)."""
    if dec.config.sequential or getattr(dec.config, "correct", False):
        raise RankwiseError("realize() swaps in one-shot factors, but this decomposition's config asks for the "
                            "block-by-block pipeline (correct=True or sequential=True); use rw.compress.apply, or "
                            "a config with correct=False, sequential=False")
    ranks = allocate(dec, ratio)
    params_before = parameter_count(model)
    with torch.no_grad():
        results = [swap_layer(model, name, dec.factors[name], ranks[name], stats_error(dec.stats[name]))
                   for name in tqdm(dec.names, desc="replace", disable=not progress, unit="matrix")]
    return build_report(dec, ratio, results, params_before, model)
