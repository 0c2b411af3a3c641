"""The one owner of calibration hooks and of every statistic gathered from data: input Grams and
cross-Grams, Fisher rows, output sensitivities, weight gradients; one-shot or block by block."""

from rankwise.calib.grams import SharedGrams, collect_grams
from rankwise.calib.hooks import grads_only_for, input_hooks, output_grad_hooks, output_hooks
from rankwise.calib.precision import calibration_copy, resolve_precision
from rankwise.calib.stats import LayerStats, fisher_stats, gram_stats, output_sensitivity
from rankwise.linalg.bf16 import cpu_has_bf16_units

__all__ = [
    "LayerStats",
    "SharedGrams",
    "calibration_copy",
    "collect_grams",
    "cpu_has_bf16_units",
    "fisher_stats",
    "grads_only_for",
    "gram_stats",
    "input_hooks",
    "output_grad_hooks",
    "output_hooks",
    "output_sensitivity",
    "resolve_precision",
]
