"""Evaluation: perplexity, parameter counts, throughput."""

from rankwise.eval.cache import cached_perplexity, model_fingerprint
from rankwise.eval.params import (
    module_type,
    parameter_count,
    parameters_by_type,
    targeted_parameter_count,
    weight_bytes,
)
from rankwise.eval.perplexity import PerplexityResult, perplexity, window_nll
from rankwise.eval.speed import Throughput, speedup_line, throughput

__all__ = [
    "PerplexityResult",
    "Throughput",
    "cached_perplexity",
    "model_fingerprint",
    "module_type",
    "parameter_count",
    "parameters_by_type",
    "perplexity",
    "speedup_line",
    "targeted_parameter_count",
    "throughput",
    "weight_bytes",
    "window_nll",
]
