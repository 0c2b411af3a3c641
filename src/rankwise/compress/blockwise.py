"""Block-by-block compression: block l is compressed on the model whose blocks < l (and whose earlier
layers in block l) are already compressed, holding the activations of one block at a time.

``sequential``: each target is whitened with its inputs in the partly compressed model, X̃.
``correct`` (svd_llm): each target matches the dense model's outputs W X from X̃ (`correction.py`).
Ranks are chosen once, up front, from the dense model's statistics: allocation needs every spectrum.
"""

from __future__ import annotations

import copy
import time
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from rankwise.calib.blocks import BlockBatch, advance, capture_block_inputs, decoder_layers, run_block
from rankwise.calib.matching import DensePass, MatchingStats, dense_pass, matching_stats
from rankwise.calib.precision import calibration_copy, resolve_precision
from rankwise.calib.stats import LayerStats
from rankwise.compress.config import SVDLLM, CompressConfig
from rankwise.compress.correction import (
    CorrectionSystem,
    corrected_factors,
    correction_system,
    is_singular,
    matching_error,
)
from rankwise.compress.driver import Decomposition, ErrorFn, allocate, build_report, decompose, stats_error, swap_layer
from rankwise.compress.registry import get_compressor
from rankwise.compress.report import CompressionReport, MatrixResult
from rankwise.errors import RankwiseError
from rankwise.eval.params import parameter_count
from rankwise.linalg.factors import Factors
from rankwise.linalg.threads import parallel_map
from rankwise.modules.targets import TargetSpec, linear_at


class _Block:
    """State of one block's compression: its layers' names, the ranks, what the dense pass measured."""

    def __init__(self, model: nn.Module, dec: Decomposition, ranks: dict[str, int | None], prefix: str,
                 dense: DensePass | None) -> None:
        self.model, self.dec, self.ranks, self.prefix, self.dense = model, dec, ranks, prefix, dense
        self.fallbacks: list[str] = []

    def factorize(self, local: str, stats: MatchingStats, system: CorrectionSystem | None) -> Factors | None:
        """The full factorization of one layer (``local``: its name inside the block); None if it stays dense.

        Corrected with ``system``; without one (sequential mode, or correction where G̃ is singular),
        whitened with X̃ alone (sequential mode's factors).
        """
        name = self.prefix + local
        config = self.dec.config
        if self.ranks[name] is None:
            return None
        W = linear_at(self.model, name).weight.detach()
        if system is not None:
            assert isinstance(config, SVDLLM)
            factors = corrected_factors(W, stats, config.clamp, config.correct_ridge, system)
        else:
            layer_stats = LayerStats(gram=stats.gram, fisher_rows=self.dec.stats[name].fisher_rows)
            factors = get_compressor(config.method).decompose(W, layer_stats, config)
        if not (torch.isfinite(factors.S).all() and torch.isfinite(factors.Vh).all()):
            raise RankwiseError(f"decomposition of {name} is not finite; check the model and calibration data")
        return factors

    def swap(self, local: str, factors: Factors | None, stats: MatchingStats, correct: bool) -> MatrixResult:
        """Swap one layer in (serially: module replacement is not shared across threads)."""
        name = self.prefix + local
        if correct and factors is not None and is_singular(stats):
            self.fallbacks.append(name)
        error: ErrorFn
        dense_gram = self.dec.stats[name].gram
        if correct and self.dense is not None and dense_gram is not None:
            error = lambda W, W_hat: matching_error(W, W_hat, stats, dense_gram.gram)  # noqa: E731
        else:
            error = stats_error(LayerStats(gram=stats.gram))
        return swap_layer(self.model, name, factors, self.ranks[name], error)

    def group(self, group: list[str], stats: MatchingStats, correct: bool) -> list[MatrixResult]:
        """Factorize a group of layers sharing one input in parallel, then swap them in.

        A group of one (o_proj, down_proj) runs on all of torch's threads instead of one pinned worker:
        its solve and SVD are large enough to gain from them, and nothing else could use the other cores.
        """
        config = self.dec.config
        system = None
        if correct and isinstance(config, SVDLLM) and not is_singular(stats) \
                and any(self.ranks[self.prefix + local] is not None for local in group):
            # the shared whitening and Cholesky factor: once per group, on all threads
            system = correction_system(stats, config.clamp, config.correct_ridge)
        one = partial(self.factorize, stats=stats, system=system)
        done = [one(group[0])] if len(group) == 1 else parallel_map(one, group)
        return [self.swap(local, f, stats, correct) for local, f in zip(group, done, strict=True)]


def _groups(block: nn.Module, index: int, local: list[str], batches: list[BlockBatch],
            dense: DensePass | None) -> list[list[str]]:
    """Target layers grouped by shared input, in execution order."""
    return dense.groups if dense is not None else dense_pass(block, index, local, batches[:1]).groups


@torch.no_grad()
def apply_blockwise(model: nn.Module, config: CompressConfig, targets: TargetSpec, calib: torch.Tensor | None,
                    batch_size: int, progress: bool, dense: Decomposition | None = None) -> CompressionReport:
    """Compress ``model`` in place block by block (``config.sequential`` or svd_llm's ``correct``).

    ``dense``: the dense model's `decompose` for the same config at another ratio, on the same ``calib``
    windows (several ratios share one dense calibration; only the block-by-block pass runs per ratio; its
    dense Grams also normalise the reported output-matching errors).
    """
    compressor = get_compressor(config.method)
    correct = isinstance(config, SVDLLM) and config.correct
    if dense is None:
        # spectra alone: every layer is factorized again below, from its statistics in the partly compressed model
        dec = decompose(model, config, targets, calib, batch_size, progress, factorize=False)
    else:
        dec = Decomposition(config, dense.names, dense.factors, dense.spectra, dense.stats, dict(dense.timings))
    if calib is None or not compressor.needs_gram:
        raise RankwiseError(f"sequential=True needs a method with input statistics (asvd, svd_llm) and calibration "
                            f"data; '{config.method}' cannot use it")
    ranks = allocate(dec, config.ratio)
    params_before = parameter_count(model)
    t0 = time.perf_counter()
    dtype = resolve_precision(config.calib_precision, model)
    prefix, layers = decoder_layers(model)
    runner = calibration_copy(model, dtype)
    run_layers = decoder_layers(runner)[1]
    compressed = capture_block_inputs(runner, run_layers, calib, batch_size)
    del runner, run_layers
    dense_states = compressed
    results: dict[str, MatrixResult] = {}
    fallbacks: list[str] = []
    for index in tqdm(range(len(layers)), desc="correction" if correct else "sequential blocks",
                      disable=not progress, unit="block"):
        block_prefix = f"{prefix}.{index}."
        local = [n.removeprefix(block_prefix) for n in dec.names if n.startswith(block_prefix)]
        measured = None
        if correct:
            measured = dense_pass(copy.deepcopy(layers[index]).to(dtype), index, local, dense_states)
            dense_states = advance(dense_states, measured.outputs)
            measured.outputs = []
        state = _Block(model, dec, ranks, block_prefix, measured)
        groups = _groups(calibration_copy(layers[index], dtype), index, local, compressed, measured) if local else []
        for group in groups:
            work = calibration_copy(layers[index], dtype)
            inputs = measured.inputs[group[0]] if measured is not None else None
            stats = matching_stats(work, index, group[0], inputs, compressed)
            results.update({r.name: r for r in state.group(group, stats, correct)})
        fallbacks += state.fallbacks
        compressed = advance(compressed, run_block(calibration_copy(layers[index], dtype), index, compressed))
    for name in dec.names:  # targets outside the decoder blocks: one-shot factors
        if name not in results:
            factors = dec.factors.get(name) or compressor.decompose(linear_at(model, name).weight.detach(),
                                                                    dec.stats[name], config)
            results[name] = swap_layer(model, name, factors, ranks[name], stats_error(dec.stats[name]))
    dec.timings["correction" if correct else "sequential"] = time.perf_counter() - t0
    report = build_report(dec, config.ratio, [results[n] for n in dec.names], params_before, model,
                          error_kind="output-matching" if correct else None)
    report.fallbacks = sorted(fallbacks)
    return report
