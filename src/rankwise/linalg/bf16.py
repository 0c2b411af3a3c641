"""Products of bf16 activations on the CPU's bf16 units, exactly.

The product of two bf16 numbers has at most 16 significant bits, so it is exact in fp32; a matmul
that rounds its fp32 inputs to bf16 and accumulates in fp32 (oneDNN's ``fp32_precision="bf16"``) is
therefore exact, up to the order of the fp32 sums, whenever the inputs already hold bf16 values, as
the activations of a bf16 calibration forward do. On CPUs with AMX this runs several times faster
than an fp32 matmul, and calibration statistics are mostly such products.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool:
    """True when oneDNN reports native bf16 matmul support on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _bf16_precision_available() -> bool:
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    return cpu_has_bf16_units() and matmul is not None and hasattr(matmul, "fp32_precision")


@contextmanager
def bf16_matmuls() -> Iterator[bool]:
    """fp32 matmuls inside run on the bf16 units: inputs rounded to bf16, fp32 accumulation and output.

    Exact for inputs that hold bf16 values (see the module docstring); for other fp32 inputs each
    element is rounded to 8 significant bits, which callers accept explicitly. Yields whether the
    bf16 path is active (False on CPUs without bf16 units: plain fp32). The setting is process-wide,
    so it is held under a lock and only around the caller's own products.
    """
    if not _bf16_precision_available():
        yield False
        return
    matmul = torch.backends.mkldnn.matmul  # type: ignore[attr-defined]
    with _LOCK:
        previous = matmul.fp32_precision
        matmul.fp32_precision = "bf16"
        try:
            yield True
        finally:
            matmul.fp32_precision = previous


def outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_t a_t b_tᵀ = aᵀ b as fp32 [n, m], for a [T, n] and b [T, m] in any float dtype.

    When both are bf16 (and the CPU has bf16 units) the fp32 matmul runs at bf16 precision, which is
    exact for them; otherwise a plain fp32 matmul.
    """
    a32, b32 = a.to(torch.float32), b.to(torch.float32)
    if a.dtype != torch.bfloat16 or b.dtype != torch.bfloat16:
        return a32.mT @ b32
    with bf16_matmuls():
        return a32.mT @ b32
