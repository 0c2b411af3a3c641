"""Calibration statistics gathered with hooks (Grams of layer inputs)."""

from rankwise.calib.grams import SharedGrams, collect_grams
from rankwise.calib.hooks import input_hooks

__all__ = ["SharedGrams", "collect_grams", "input_hooks"]
