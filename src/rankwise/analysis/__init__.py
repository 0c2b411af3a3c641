"""Spectral diagnostics of weights, weight deltas and gradients (`rankwise analyze`)."""

from rankwise.analysis.analyze import analyze
from rankwise.analysis.config import AnalyzeConfig
from rankwise.analysis.metrics import METRICS, register_metric
from rankwise.analysis.report import AnalysisReport

__all__ = ["METRICS", "AnalysisReport", "AnalyzeConfig", "analyze", "register_metric"]
