"""Products of bf16 activations on the CPU's bf16 units, exactly.

The product of two bf16 numbers has at most 16 significant bits, so it is exact in fp32; a matmul
that rounds its fp32 inputs to bf16 and accumulates in fp32 (oneDNN's ``fp32_precision="bf16"``) is
therefore exact, up to the order of the fp32 sums, whenever the inputs already hold bf16 values, as
the activations of a bf16 calibration forward do. On CPUs with AMX this runs several times faster
than an fp32 matmul, and calibration statistics are mostly such products.
"""

from __future__ import annotations

import threading
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


def outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_t a_t b_tᵀ = aᵀ b as fp32 [n, m], for a [T, n] and b [T, m] in any float dtype.

    When both are bf16 (and the CPU has bf16 units) the fp32 matmul runs at bf16 precision, which is
    exact for them; otherwise a plain fp32 matmul. The precision setting is process-wide, so it is
    held under a lock and only around this product.
    """
    a32, b32 = a.to(torch.float32), b.to(torch.float32)
    if a.dtype != torch.bfloat16 or b.dtype != torch.bfloat16 or not _bf16_precision_available():
        return a32.mT @ b32
    matmul = torch.backends.mkldnn.matmul  # type: ignore[attr-defined]
    with _LOCK:
        previous = matmul.fp32_precision
        matmul.fp32_precision = "bf16"
        try:
            return a32.mT @ b32
        finally:
            matmul.fp32_precision = previous
