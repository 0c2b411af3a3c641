"""SLERP: spherical interpolation between the base tensor and one other model's (Shoemake 1985).

The angle is the one between the two flattened tensors; nearly collinear pairs (|cos| > 0.9995)
interpolate linearly, where the spherical formula would divide by sin θ ≈ 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rankwise.merge.methods.base import MergeMethod, Param, register

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def _norms_and_dot(x: torch.Tensor, y: torch.Tensor, block: int = 2**20) -> tuple[float, float, float]:
    """‖x‖, ‖y‖ and x·y accumulated in fp64 block by block (exact enough that only the inputs' rounding counts)."""
    xx = yy = xy = 0.0
    for start in range(0, x.numel(), block):
        a, b = x[start : start + block].double(), y[start : start + block].double()
        xx, yy, xy = xx + float(a @ a), yy + float(b @ b), xy + float(a @ b)
    return math.sqrt(xx), math.sqrt(yy), xy


def slerp(base: torch.Tensor | None, tensors: list[torch.Tensor], models: list[dict[str, Any]],
          shared: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """(sin((1 − t)θ) X₀ + sin(tθ) X₁) / sin θ, with X₀ the base, X₁ the other model, cos θ their cosine."""
    assert base is not None
    t = float(shared["t"])
    other = tensors[0]
    norm0, norm1, dot = _norms_and_dot(base.reshape(-1), other.reshape(-1))
    norm0, norm1 = (norm0 if norm0 > EPS else 1.0), (norm1 if norm1 > EPS else 1.0)
    dot = min(1.0, max(-1.0, dot / (norm0 * norm1)))
    if abs(dot) > DOT_THRESHOLD:
        c0, c1 = 1.0 - t, t
    else:
        theta = math.acos(dot)
        c0, c1 = math.sin((1.0 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
    return other.mul_(c1).add_(base, alpha=c0)


register(MergeMethod(
    "slerp", slerp, (Param("t", "shared", required=True, check="unit"),),
    inputs=(1, 1), summary="spherical interpolation between the base and one model",
))
