"""Exact and seeded randomized truncated SVD: the only SVD entry point in rankwise."""

from __future__ import annotations

import functools
import threading
from typing import Literal

import torch

from rankwise.linalg.factors import Factors

SVDMethod = Literal["exact", "randomized"]

#: Defaults measured on SmolLM2's flat (4-bit-noise) spectra at rank 16 over its 210 block matrices:
#: blocks of r columns and 8 extra Krylov blocks (a degree-9 Krylov space of G = A Aᵀ) put the
#: principal part ~2.5 % (mean relative Frobenius) from the exact one, where PEFT-style subspace
#: iteration with q = r and 4 power steps is ~68 % away. On these spectra extra Krylov degree buys
#: more accuracy per flop than oversampling: r + 8 columns with 5 blocks cost more and land at 5.2 %.
DEFAULT_OVERSAMPLE = 0
DEFAULT_NITER = 8


def all_finite(t: torch.Tensor) -> bool:
    """True when no element is NaN or ±inf.

    Any NaN or inf makes the sum non-finite, so a finite sum proves the tensor finite at the cost of
    one reduction (no [m, n] bool temporary); only a non-finite sum, which overflow can also cause,
    needs the element-wise check.
    """
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _check_matrix(W: torch.Tensor) -> None:
    if W.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(W.shape)}")
    if not all_finite(W):
        raise ValueError("matrix contains NaN or inf values")


def svd(
    W: torch.Tensor,
    rank: int | None = None,
    method: SVDMethod = "exact",
    *,
    oversample: int | None = None,
    niter: int | None = None,
    seed: int = 0,
) -> Factors:
    """Truncated SVD of ``W`` [m, n] in fp32.

    ``rank=None`` keeps all min(m, n) triplets. ``method="randomized"`` runs a seeded block-Krylov
    sketch with blocks of ``rank + oversample`` columns and ``niter`` extra Krylov blocks
    (``None`` means DEFAULT_OVERSAMPLE / DEFAULT_NITER). Same inputs and seed give bitwise-identical
    factors on CPU.
    """
    _check_matrix(W)
    m, n = W.shape
    full = min(m, n)
    rank = full if rank is None else rank
    if not 0 < rank <= full:
        raise ValueError(f"rank {rank} is outside [1, {full}] for a {m}x{n} matrix")
    A = W.detach().to(torch.float32)
    if method == "exact" or rank == full:
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        return Factors(U, S, Vh).truncate(rank)
    if method != "randomized":
        raise ValueError(f"unknown SVD method {method!r}; use 'exact' or 'randomized'")
    extra = DEFAULT_OVERSAMPLE if oversample is None else oversample
    steps = DEFAULT_NITER if niter is None else niter
    if extra < 0 or steps < 0:
        raise ValueError("oversample and niter must be non-negative")
    return _randomized(A, rank, rank + extra, steps, seed)


@functools.cache
def _fast_bf16_matmul() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 / AMX), ~4x faster than fp32 here."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())  # type: ignore[no-untyped-call]
    except (AttributeError, RuntimeError):  # private op missing in another torch build
        return False


_scratch_space = threading.local()
_SCRATCH_LIMIT = 16 << 20  # bytes; larger buffers (an lm_head's bf16 copy) are not kept between calls


def _scratch(slot: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | None = None
             ) -> torch.Tensor:
    """A per-thread buffer of ``shape``, reused across calls on CPU (its contents are garbage).

    The randomized SVD runs once per matrix over hundreds of matrices; fresh multi-MB temporaries
    page-fault on every call (~3 µs per 4 KiB page measured here), which cost more than the
    arithmetic. Callers must not keep the returned view beyond the current call.
    """
    if device is not None and device.type != "cpu":  # accelerators have caching allocators of their own
        return torch.empty(shape, dtype=dtype, device=device)
    numel = 1
    for size in shape:
        numel *= size
    if numel * dtype.itemsize > _SCRATCH_LIMIT:  # not worth pinning per thread: faults are small next to the work
        return torch.empty(shape, dtype=dtype, device=device)
    buffers: dict[tuple[str, torch.dtype], torch.Tensor] = _scratch_space.__dict__.setdefault("buffers", {})
    buf = buffers.get((slot, dtype))
    if buf is None or buf.numel() < numel:
        buf = buffers[(slot, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def _gram(short: torch.Tensor) -> torch.Tensor:
    """G = A Aᵀ [k, k] (fp32) of ``short`` = A [k, N], in per-thread scratch memory on CPU."""
    k = short.shape[0]
    return torch.matmul(short, short.mT, out=_scratch("gram", (k, k), short.dtype, short.device))


class _GramOperator:
    """X [k, b] -> G X for G = A Aᵀ [k, k] of ``short`` = A [k, N].

    Where the CPU has bf16 units, G X is A (Aᵀ X) with bf16 inputs: two skinny bf16 products per
    Krylov step cost less than forming G (k²N) and are ~3x faster than fp32. Only the Krylov
    *subspace* comes from these products; the factors are fitted to the fp32 matrix inside it
    afterwards, so bf16's 2⁻⁹ rounding costs ~0.1 percentage point of principal-part accuracy on
    SmolLM2's flat spectra. Elsewhere G is formed once in fp32. Buffers live in per-thread scratch
    memory: use an operator before the next one is made on this thread. (Batching same-shaped
    matrices into 3-D products was measured 2x slower: CPU bf16 bmm leaves the fast 2-D kernels.)
    """

    def __init__(self, short: torch.Tensor) -> None:
        self.half: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        if short.device.type == "cpu" and _fast_bf16_matmul():
            # Copy in the memory order the matrix already has: converting a transposed view into a
            # contiguous buffer is a strided copy, 10x slower (1.3 ms for a 1536x576 gate_proj).
            source = short.mT if not short.is_contiguous() and short.mT.is_contiguous() else short
            stored = _scratch("half", tuple(source.shape), torch.bfloat16).copy_(source)
            self.half = stored if source is short else stored.mT
        else:
            self.gram = _gram(short)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """G X [k, b] (fp32) for X [k, b]."""
        if self.half is not None:
            return (self.half @ (self.half.mT @ X.to(torch.bfloat16))).to(torch.float32)
        assert self.gram is not None
        return self.gram @ X


def _randomized(A: torch.Tensor, rank: int, block: int, niter: int, seed: int) -> Factors:
    """Seeded block-Krylov SVD (Musco & Musco 2015) on the Gram of the short side of A [m, n].

    Works with G = A Aᵀ (or AᵀA) [k, k], k = min(m, n): Krylov blocks GΩ, G²Ω, … of ``block``
    columns, ``niter + 1`` blocks in all, then Rayleigh–Ritz for the top ``rank`` directions U [k, r]
    and a final fp32 SVD of Uᵀ A [r, N] (so the factors are exact within span(U) whatever precision
    the products had). Krylov spaces converge on flat spectra where plain power iteration stalls.
    Use ``method="exact"`` for the minor part.
    """
    transposed = A.shape[0] > A.shape[1]
    short = A.mT if transposed else A  # [k, N], k <= N
    k = short.shape[0]
    block = max(1, min(block, k))
    dim = block * (niter + 1)
    if 4 * dim >= 3 * k:
        # A Krylov space this close to all k dimensions costs more than solving exactly. The fp32 Gram
        # is exact and, on SmolLM2's k/v projections (192x576), faster than a bf16 copy and Gram.
        U = torch.linalg.eigh(_gram(short)).eigenvectors[:, -rank:]
    else:
        G = _GramOperator(short)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        basis = _scratch("basis", (k, dim), A.dtype, A.device)  # orthonormal Krylov basis Q [k, dim]
        # T = Qᵀ G Q [dim, dim], assembled from the Gram–Schmidt coefficients as the basis grows (block
        # Arnoldi): column block i-1 is Qᵀ G X_{i-1} = [C; R; 0], so Rayleigh–Ritz costs no extra product.
        ritz = _scratch("ritz", (dim, dim), A.dtype, A.device).zero_()
        X = torch.linalg.qr(G(torch.randn(k, block, generator=gen, dtype=A.dtype).to(A.device))).Q
        basis[:, :block] = X
        for i in range(1, niter + 1):
            Y = G(X)
            done = basis[:, : i * block]
            # Block classical Gram–Schmidt against the whole basis, twice. With one pass orthogonality
            # decays geometrically as Ritz values converge (measured max |QᵀQ − I|: 7e-5 after 8 blocks
            # on SmolLM2's hardest matrix but 0.1 after 20; ~1 after 8 blocks of a 0.9^i spectrum), and
            # a lost basis makes extra blocks *hurt* (77 % error at niter=24 on a flat spectrum).
            C = done.mT @ Y
            Y = torch.addmm(Y, done, C, alpha=-1.0)
            again = done.mT @ Y
            C += again
            X, R = torch.linalg.qr(torch.addmm(Y, done, again, alpha=-1.0))
            ritz[: i * block, (i - 1) * block : i * block] = C
            ritz[i * block : (i + 1) * block, (i - 1) * block : i * block] = R
            basis[:, i * block : (i + 1) * block] = X
        ritz[:, niter * block :] = basis.mT @ G(X)
        top = torch.linalg.eigh(0.5 * (ritz + ritz.mT)).eigenvectors[:, -rank:]
        U = torch.linalg.qr(basis @ top).Q  # orthonormal to fp32 rounding whatever the basis lost
    # Final Rayleigh–Ritz in fp32 on the matrix itself: Uᵀ A = Z diag(S) Vh within span(U). An SVD of
    # Yᵀ, not an eigh of Y Yᵀ: it stays orthonormal where W has fewer than r nonzero singular values
    # (dividing by S there gave rows of 1e32), and the tall layout is ~5x faster than the wide one.
    Y = U.mT @ short  # [r, N]
    P, S, Zh = torch.linalg.svd(Y.mT, full_matrices=False)  # Yᵀ [N, r] = P diag(S) Zh
    U, Vh = U @ Zh.mT, P.mT  # [k, r], [r, N]
    return Factors(Vh.mT.contiguous(), S, U.mT.contiguous()) if transposed else Factors(U, S, Vh)
