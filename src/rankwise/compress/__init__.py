"""Post-training low-rank compression: `apply(model, SVDLLM(ratio=0.2), calib=windows)`."""

from rankwise.compress import allocators
from rankwise.compress.config import ASVD, CONFIGS, FWSVD, SVD, SVDLLM, CompressConfig
from rankwise.compress.driver import Decomposition, decompose, realize
from rankwise.compress.export import densified, save_compressed
from rankwise.compress.heal import HealReport, heal
from rankwise.compress.pipeline import PIPELINES, apply, pipeline_name
from rankwise.compress.report import CompressionReport

__all__ = [
           "ASVD",
           "CONFIGS",
           "FWSVD",
           "PIPELINES",
           "SVD",
           "SVDLLM",
           "CompressConfig",
           "CompressionReport",
           "Decomposition",
           "HealReport",
           "allocators",
           "apply",
           "decompose",
           "densified",
           "heal",
           "pipeline_name",
           "realize",
           "save_compressed",
]
