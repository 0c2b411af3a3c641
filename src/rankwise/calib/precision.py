"""The precision calibration forwards run in: bf16 where the CPU multiplies it natively, else fp32.

Statistics never live in bf16: every hook promotes activations to fp32 for its products and
accumulates across batches in fp64. Only the forward's own matmuls take bf16 inputs, which on
CPUs with bf16 units (AVX512-BF16 / AMX) run several times faster than fp32.
"""

from __future__ import annotations

import copy
from typing import Literal, TypeVar

import torch
from torch import nn

from rankwise.errors import RankwiseError
from rankwise.linalg.bf16 import cpu_has_bf16_units

CalibPrecision = Literal["auto", "fp32", "bf16"]
M = TypeVar("M", bound=nn.Module)


def resolve_precision(precision: CalibPrecision, model: nn.Module) -> torch.dtype:
    """The dtype calibration forwards run in for ``precision`` on this machine and ``model``."""
    dtype = next(model.parameters()).dtype
    if precision == "fp32" or dtype != torch.float32:
        return dtype  # a model already in half precision is calibrated as it is
    if precision == "bf16":
        if not cpu_has_bf16_units():
            raise RankwiseError("calib_precision='bf16' needs a CPU with bf16 units (AVX512-BF16 or AMX); "
                                "use 'auto' or 'fp32'")
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_bf16_units() else torch.float32


def calibration_copy(module: M, dtype: torch.dtype) -> M:
    """``module`` itself when it already is in ``dtype``, else a copy cast to it (the original is untouched)."""
    if next(module.parameters()).dtype == dtype:
        return module
    return copy.deepcopy(module).to(dtype)
