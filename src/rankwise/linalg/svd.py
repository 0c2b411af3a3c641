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

    On CPU, G X is A (Aᵀ X): two skinny products per Krylov step cost less than forming G (k²N), also
    in fp32 (10 steps on a 576x1536 matrix: 7.2 ms against 10.4 ms for G alone, measured here). Where
    the CPU has bf16 units the products take bf16 inputs, ~3x faster than fp32. Only the Krylov
    *subspace* comes from these products; the factors are fitted to the fp32 matrix inside it
    afterwards, so bf16's 2⁻⁹ rounding costs ~0.3 percentage point of principal-part accuracy on
    SmolLM2's flat spectra. Accelerators form G once in fp32, one large product. The bf16 copy lives in
    per-thread scratch memory: use an operator before the next one is made on this thread. (Batching
    same-shaped matrices into 3-D products was measured 2x slower: CPU bf16 bmm leaves the fast 2-D
    kernels.)
    """

    def __init__(self, short: torch.Tensor) -> None:
        self.stored: torch.Tensor | None = None  # A or Aᵀ, whichever is contiguous (bf16 where that is fast)
        self.gram: torch.Tensor | None = None
        # Keep the memory order the matrix already has: converting a transposed view into a contiguous
        # buffer is a strided copy, 10x slower (1.3 ms for a 1536x576 gate_proj).
        self.stores_transpose = not short.is_contiguous() and short.mT.is_contiguous()
        source = short.mT if self.stores_transpose else short
        if short.device.type != "cpu":
            self.gram = _gram(short)
        elif _fast_bf16_matmul():
            self.stored = _scratch("half", tuple(source.shape), torch.bfloat16).copy_(source)
        else:
            self.stored = source.contiguous()  # a view of the matrix itself unless it was neither layout

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """G X [k, b] (fp32) for X [k, b]."""
        if self.stored is None:
            assert self.gram is not None
            return self.gram @ X
        # One product is M Y and the other Mᵀ Y with M the contiguous matrix; the second runs as (Yᵀ M)ᵀ,
        # which the bf16 (oneDNN) and fp32 (MKL) kernels run 10-25 % faster than a transposed M times Y.
        M, Xm = self.stored, X.to(self.stored.dtype)
        if self.stores_transpose:  # A = Mᵀ: G X = Mᵀ (M X)
            return (((M @ Xm).mT @ M).mT).to(torch.float32)
        return (M @ (Xm.mT @ M).mT).to(torch.float32)  # A = M: G X = M (Mᵀ X)


#: A Krylov block whose new directions are this much shorter than ‖G‖ gets a second Gram–Schmidt pass.
_EXHAUSTED = 1e-4


def _block_lanczos(G: _GramOperator, k: int, block: int, niter: int, seed: int, like: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis Q [k, dim] of the Krylov space GΩ, G²Ω, … (``niter + 1`` blocks of ``block``
    columns, Ω seeded Gaussian) and T = Qᵀ G Q [dim, dim], both in per-thread scratch memory.

    T is assembled from the Gram–Schmidt coefficients as the basis grows (block Arnoldi): column block
    i-1 is Qᵀ G X_{i-1} = [C; R; 0], so Rayleigh–Ritz costs no extra product.
    """
    dim = block * (niter + 1)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    basis = _scratch("basis", (k, dim), like.dtype, like.device)
    ritz = _scratch("ritz", (dim, dim), like.dtype, like.device).zero_()
    X = torch.linalg.qr(G(torch.randn(k, block, generator=gen, dtype=like.dtype).to(like.device))).Q
    basis[:, :block] = X
    scale = 0.0
    for i in range(1, niter + 1):
        Y = G(X)
        done = basis[:, : i * block]
        # Block Lanczos with full reorthogonalization. In exact arithmetic G X_{i-1} has components along
        # the last two blocks only: removing those first (a product with ≤ 2 blocks) leaves what rounding
        # and the bf16 products put along older blocks, small enough that one classical Gram–Schmidt pass
        # against the whole basis keeps the basis orthonormal (measured max |QᵀQ − I| < 1e-6 on all of
        # SmolLM2's matrices, ≤ 3e-5 on decaying and low-rank test spectra; a second pass everywhere cost
        # ~3 % of a PiSSA init).
        # (For i ≤ 2 the last two blocks are the whole basis, so this is simply two passes.)
        recent = basis[:, max(0, i - 2) * block : i * block]
        local = recent.mT @ Y
        Y = torch.addmm(Y, recent, local, alpha=-1.0)
        C = done.mT @ Y
        Y = torch.addmm(Y, done, C, alpha=-1.0)
        X, R = torch.linalg.qr(Y)
        if i == 1:
            scale = float(local.diagonal().abs().max())  # Rayleigh quotients of the start block: ~‖G‖
        if float(R.diagonal().abs().min()) < _EXHAUSTED * scale:
            # What is left is tiny next to G (a fast-decaying spectrum, or a space that has exhausted a
            # low-rank matrix), so rounding error is large next to it: one pass left max |QᵀQ − I| at
            # 0.1-0.5 on 1/k² and 0.9^k spectra, and a basis that loses orthogonality makes extra blocks
            # *hurt* (77 % error at niter=24 on a flat spectrum). A second pass restores it.
            again = done.mT @ Y
            Y = torch.addmm(Y, done, again, alpha=-1.0)
            C += again
            X, R = torch.linalg.qr(Y)
            if float(R.diagonal().abs().min()) < _EXHAUSTED * scale:
                # Y is numerically rank-deficient (the space has exhausted the matrix's range): QR completes
                # X with directions of its own, e.g. unit vectors inside a range the basis already spans
                # (max |QᵀQ − I| ≈ 1, and 0.79 instead of the optimal 0.66 error on a rank-40 matrix). Keep
                # the left singular vectors of Y's numerical range instead (sorted first, so the QR below
                # leaves their span alone), complete them with seeded random directions projected out of
                # the basis, and take Y's coefficients in the resulting X.
                P, spread, _ = torch.linalg.svd(Y, full_matrices=False)
                weak = spread < _EXHAUSTED * scale
                P[:, weak] = torch.randn(k, int(weak.sum()), generator=gen, dtype=P.dtype).to(P.device)
                for _ in range(2):
                    P = torch.addmm(P, done, done.mT @ P, alpha=-1.0)
                X = torch.linalg.qr(P).Q
                R = X.mT @ Y
        C[-local.shape[0] :] += local
        ritz[: i * block, (i - 1) * block : i * block] = C
        ritz[i * block : (i + 1) * block, (i - 1) * block : i * block] = R
        basis[:, i * block : (i + 1) * block] = X
    ritz[:, niter * block :] = basis.mT @ G(X)
    return basis, ritz


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
        # A Krylov space this close to all k dimensions costs more than solving exactly: an eigh of the
        # fp32 Gram (1.9 ms on SmolLM2's 192x576 k/v projections, where 9 Krylov blocks would cover 144
        # of 192 dimensions anyway).
        U = torch.linalg.eigh(_gram(short)).eigenvectors[:, -rank:]
    else:
        G = _GramOperator(short)
        basis, ritz = _block_lanczos(G, k, block, niter, seed, A)
        top = torch.linalg.eigh(0.5 * (ritz + ritz.mT)).eigenvectors[:, -rank:]
        U = torch.linalg.qr(basis @ top).Q  # orthonormal to fp32 rounding whatever the basis lost
    # Final Rayleigh–Ritz in fp32 on the matrix itself: Uᵀ A = Z diag(S) Vh within span(U). An SVD of
    # Yᵀ, not an eigh of Y Yᵀ: it stays orthonormal where W has fewer than r nonzero singular values
    # (dividing by S there gave rows of 1e32), and the tall layout is ~5x faster than the wide one.
    # Yᵀ = shortᵀ U [N, r]; for a tall A that is A U, a product with the matrix in its own layout (fp32
    # kernels run A U ~10 % faster than Uᵀ Aᵀ for SmolLM2's 1536x576 gate/up projections).
    Yt = A @ U if transposed else (U.mT @ short).mT
    P, S, Zh = torch.linalg.svd(Yt, full_matrices=False)  # Yᵀ = P diag(S) Zh
    U, Vh = U @ Zh.mT, P.mT  # [k, r], [r, N]
    return Factors(Vh.mT.contiguous(), S, U.mT.contiguous()) if transposed else Factors(U, S, Vh)
