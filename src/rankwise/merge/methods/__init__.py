"""Merge methods; importing this package registers every one of them."""

from rankwise.merge.methods import dare, iso, knots, linear, regmean, slerp, task_arithmetic, ties, tsv
from rankwise.merge.methods.base import METHODS, MergeMethod, Param, get

__all__ = ["METHODS", "MergeMethod", "Param", "dare", "get", "iso", "knots", "linear", "regmean", "slerp",
           "task_arithmetic", "ties", "tsv"]
