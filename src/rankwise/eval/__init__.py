"""Evaluation: perplexity, parameter counts, throughput."""

from rankwise.eval.params import (
    module_type,
    parameter_count,
    parameters_by_type,
    targeted_parameter_count,
    weight_bytes,
)
from rankwise.eval.perplexity import PerplexityResult, perplexity, window_nll
from rankwise.eval.speed import Throughput, throughput

__all__ = [
    "PerplexityResult",
    "Throughput",
    "module_type",
    "parameter_count",
    "parameters_by_type",
    "perplexity",
    "targeted_parameter_count",
    "throughput",
    "weight_bytes",
    "window_nll",
]
