"""Merge methods; importing this package registers every one of them."""

from rankwise.merge.methods import dare, linear, slerp, task_arithmetic, ties
from rankwise.merge.methods.base import METHODS, MergeMethod, Param, get

__all__ = ["METHODS", "MergeMethod", "Param", "dare", "get", "linear", "slerp", "task_arithmetic", "ties"]
