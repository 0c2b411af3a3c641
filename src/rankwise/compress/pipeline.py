"""Which pipeline compresses a model: one-shot (statistics of the dense model, every layer at once) or
block by block (sequential whitening, or svd_llm's output-matching correction)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from rankwise.compress.blockwise import apply_blockwise
from rankwise.compress.config import SVDLLM, CompressConfig
from rankwise.compress.driver import decompose, realize
from rankwise.compress.report import CompressionReport
from rankwise.modules.targets import TargetSpec
from rankwise.registry import Registry


class Pipeline(Protocol):
    def __call__(self, model: nn.Module, config: CompressConfig, targets: TargetSpec, calib: torch.Tensor | None,
                 batch_size: int, progress: bool) -> CompressionReport: ...


PIPELINES: Registry[Pipeline] = Registry("compression pipeline")


@PIPELINES.register("one_shot")
def apply_one_shot(model: nn.Module, config: CompressConfig, targets: TargetSpec, calib: torch.Tensor | None,
                   batch_size: int, progress: bool) -> CompressionReport:
    return realize(model, decompose(model, config, targets, calib, batch_size, progress), config.ratio, progress)


PIPELINES.add("blockwise", apply_blockwise)


def pipeline_name(config: CompressConfig) -> str:
    """``blockwise`` for sequential mode or svd_llm's correction, else ``one_shot``."""
    return "blockwise" if config.sequential or (isinstance(config, SVDLLM) and config.correct) else "one_shot"


def apply(model: nn.Module, config: CompressConfig, targets: TargetSpec = "all-linear",
          calib: torch.Tensor | None = None, batch_size: int = 8, progress: bool = True) -> CompressionReport:
    """Compress ``model`` in place with ``config``; returns the report.

    Example: ``rw.compress.apply(model, rw.compress.SVDLLM(ratio=0.2), targets="all-linear", calib=windows)``.
    """
    return PIPELINES.get(pipeline_name(config))(model, config, targets, calib, batch_size, progress)
