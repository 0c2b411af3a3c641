"""The driver of `analyze`: iterate matrices, compute every registered metric, build the report."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from pydantic import ValidationError
from tqdm.auto import tqdm

from rankwise.analysis.config import AnalyzeConfig
from rankwise.analysis.metrics import METRICS, Spectrum, definitions
from rankwise.analysis.report import AnalysisReport
from rankwise.analysis.source import MatrixSource, iter_matrices, matrix_kind, open_source
from rankwise.errors import RankwiseError
from rankwise.linalg import svd
from rankwise.linalg.farms import spectrum_and_farms
from rankwise.linalg.spectrum import gram_singular_values
from rankwise.linalg.welore import welore_ranks

T = TypeVar("T")
R = TypeVar("R")


def _metric_names(cfg: AnalyzeConfig) -> list[str]:
    names = list(METRICS) if cfg.metrics is None else list(cfg.metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise RankwiseError(f"unknown metric(s) {', '.join(unknown)}; registered: {', '.join(METRICS)}")
    return names


def spectrum_of(name: str, W: torch.Tensor, cfg: AnalyzeConfig, farms: bool = False) -> Spectrum:
    """The :class:`Spectrum` of ``W`` [m, n]: exact (Gram eigenvalues) or randomized top-k under ``cfg.fast``.

    ``farms``: also the FARMS pooled ESD, from the same pass over W as the exact spectrum (the
    windows' Grams are sums of the pieces of W's own Gram; see :mod:`rankwise.linalg.farms`).
    """
    m, n = W.shape
    partial = cfg.fast and cfg.fast_rank < min(m, n)
    dtype = torch.float64 if cfg.precision == "fp64" else torch.float32
    farms_evals = None
    if partial:
        s = svd(W, rank=cfg.fast_rank, method="randomized", seed=cfg.seed).S.double()
    elif farms:
        s, farms_evals = spectrum_and_farms(W, cfg.farms_aspect_ratio, cfg.farms_max_windows, dtype)
    else:
        s = gram_singular_values(W, dtype)
    # Exact spectrum: ‖W‖²_F = Σσ² (the Gram's trace); top-k only: sum W's squares instead.
    frob2 = _frobenius_squared(W) if partial else float(s.square().sum())
    return Spectrum(name, (m, n), s, frob2, W, partial, cfg, farms_evals)


def _frobenius_squared(W: torch.Tensor, rows: int = 4096) -> float:
    """‖W‖²_F accumulated in fp64 over row blocks: no full-size fp64 copy of a large matrix."""
    return sum(float(W[i : i + rows].double().square().sum()) for i in range(0, W.shape[0], rows))


def matrix_row(spec: Spectrum, names: list[str]) -> dict[str, Any]:
    """One table row: name, layer, type, shape, then every metric's columns."""
    layer, kind = matrix_kind(spec.name)
    row: dict[str, Any] = {"name": spec.name, "layer": layer, "type": kind, "rows": spec.shape[0],
                           "cols": spec.shape[1]}
    for metric in names:
        row.update(METRICS[metric].fn(spec))
    return row


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch intra-op threads = 1 inside the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` over ``items``, results in input order, ``workers`` at a time, each op single-threaded.

    Matrices are small for BLAS: splitting one product over both cores loses to barrier waits as
    soon as another process competes for them (measured: 3× slower on average, 100× on some
    calls). One single-threaded op per core never oversubscribes. At most ``workers + 1`` items
    are being worked on or waiting for a worker, so memory stays bounded by a few matrices.
    A finished result waits (it is small: a row and a spectrum) until every earlier one is out,
    but it does not hold a slot: a slow item (the embedding) never leaves the other worker idle.
    """
    with single_threaded_ops():
        if workers <= 1:
            yield from map(fn, items)
            return
        # OpenMP thread counts are per OS thread: each worker pins itself too, or its LAPACK calls
        # may fork their own team and oversubscribe the cores.
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            pending: deque[Future[R]] = deque()  # submitted, not yet yielded, in input order
            busy: set[Future[R]] = set()  # submitted, not finished
            iterator = iter(items)
            while True:
                while len(busy) > workers:  # read the next item only when it can start soon
                    busy = wait(busy, return_when=FIRST_COMPLETED).not_done
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                future = pool.submit(fn, item)
                pending.append(future)
                busy.add(future)
                while pending and pending[0].done():
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def weight_pass(source: MatrixSource, cfg: AnalyzeConfig, progress: bool, desc: str = "analyze"
                ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor], float | None]:
    """Rows, singular values (fp32) and the WeLore threshold τ of every matrix of ``source``
    (τ and the WeLore ranks are None when ``--fast``'s top-k spectra are too short to place τ).

    A few matrices are in memory at a time; the WeLore ranks are set once all spectra are known.
    """
    names = _metric_names(cfg)
    farms = "farms_alpha" in names

    def one(item: tuple[str, torch.Tensor]) -> tuple[dict[str, Any], torch.Tensor]:
        spec = spectrum_of(item[0], item[1], cfg, farms)
        return matrix_row(spec, names), spec.s.float()

    rows, spectra = [], {}
    total = len(source.entries())
    workers = cfg.workers or torch.get_num_threads()
    results = parallel_map(one, iter_matrices(source), workers)
    for row, s in tqdm(results, total=total, desc=desc, unit="matrix", disable=not progress):
        rows.append(row)
        spectra[row["name"]] = s
    # WeLore factorises the transformer blocks' linears; embeddings and heads (σ₁ far above the rest)
    # would distort the shared threshold, so they get no WeLore rank unless nothing else was analysed.
    block = [r for r in rows if r["layer"] is not None] or rows
    shapes = {r["name"]: (r["rows"], r["cols"]) for r in block}
    tau: float | None
    ranks, tau = welore_ranks({n: spectra[n] for n in shapes}, shapes, cfg.welore_ratio)
    # Under --fast only the top-k singular values are known. If a matrix's rank reaches the end of its
    # known spectrum, the parameter count behind τ is only a lower bound, so neither τ nor any rank is
    # determined (keeping all k would otherwise pass for a recommendation).
    truncated = [n for n in shapes if spectra[n].numel() < min(shapes[n])]
    if any(ranks[n] >= spectra[n].numel() for n in truncated):
        ranks, tau = {}, None
    for r in rows:
        r["welore_rank"] = ranks.get(r["name"])
    return rows, spectra, tau


def analyze(
    model: Any,
    config: AnalyzeConfig | None = None,
    *,
    against: Any = None,
    tokens: torch.Tensor | None = None,
    progress: bool = True,
    **overrides: Any,
) -> AnalysisReport:
    """Spectral diagnostics of every 2-D weight of ``model``.

    ``model``: a loaded ``nn.Module``, a model folder, or a bundled name (folders are streamed one
    tensor at a time). ``against``: a base model/folder: adds the analysis of ΔW = W − W_base.
    ``tokens``: int64 [N, T] windows for the gradient mode instead of ``config.data``.
    ``config`` or keyword overrides (``fast=True``, ``gradients=True``, ...): see :class:`AnalyzeConfig`.
    """
    cfg = (config or AnalyzeConfig()).model_copy(update=overrides) if overrides else (config or AnalyzeConfig())
    try:
        cfg = AnalyzeConfig.model_validate(cfg.model_dump())
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise RankwiseError(f"invalid analyze setting {'.'.join(map(str, first['loc']))}: {message}") from None
    start = time.perf_counter()
    source = open_source(model, cfg.include)
    base = open_source(against, cfg.include) if against is not None else None
    if base is not None:
        from rankwise.analysis.delta import check_pairs

        check_pairs(source, base)  # before any long work
    rows, spectra, tau = weight_pass(source, cfg, progress)
    report = AnalysisReport(rows=rows, spectra=spectra, definitions=definitions(_metric_names(cfg)),
                            meta={"model": _describe(model), "config": cfg.model_dump(), "welore_tau": tau})
    if base is not None:
        from rankwise.analysis.delta import DEFINITIONS as DELTA_DEFINITIONS
        from rankwise.analysis.delta import delta_pass

        report.delta_rows, report.delta_spectra = delta_pass(source, base, cfg, progress)
        report.meta["against"] = _describe(against)
        report.definitions.update(DELTA_DEFINITIONS)
    if cfg.gradients or tokens is not None:
        from rankwise.analysis.gradients import DEFINITIONS as GRADIENT_DEFINITIONS
        from rankwise.analysis.gradients import gradient_pass

        report.gradient_rows = gradient_pass(model, cfg, progress, tokens)
        report.definitions.update(GRADIENT_DEFINITIONS)
    report.meta["seconds"] = round(time.perf_counter() - start, 3)
    report.meta["threads"] = torch.get_num_threads()
    return report


def _describe(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return type(model).__name__
