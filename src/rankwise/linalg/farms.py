"""FARMS: the ESD of fixed-aspect-ratio submatrices, removing the aspect-ratio bias of α.

Hu et al. 2025, "Eigenspectrum Analysis of Neural Networks without Aspect Ratio Bias" (FARMS):
the ESD of an m×n matrix depends on its aspect ratio, so α of a 1536×576 matrix and of a 576×576
one are not comparable. FARMS cuts W into submatrices of one fixed aspect ratio, pools (averages)
their ESDs, and fits the power law on the pooled ESD.

Here: with k = min(m, n) the short side and L the long side, each submatrix is k × w with
w = min(L, round(k · aspect_ratio)); ``ceil(L / w)`` windows (at most ``max_windows``) sit at evenly
spaced offsets along the long side, overlapping where needed so that together they cover it.

Cost: a window's Gram S Sᵀ is a sum over the long-side columns it covers, so the long side is cut at
every window edge into disjoint segments, each segment's Gram is computed once, and every window
Gram (and the whole matrix's Gram, for its ordinary ESD) is a sum of segment Grams. One pass over W
then serves the ordinary ESD and all windows; overlapping windows share their overlap's product.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from rankwise.linalg.spectrum import add_gram_lower_, gram_eigenvalues, short_side, singular_values


@dataclass(frozen=True)
class Windows:
    """Where the FARMS submatrices of a matrix with short side ``k`` and long side ``L`` sit.

    Window i covers long-side indices [starts[i], starts[i] + width).
    """

    k: int
    L: int
    width: int
    starts: tuple[int, ...]

    def covers_all(self) -> bool:
        """True when one window is the whole matrix (it already has the target aspect ratio)."""
        return self.width == self.L


def farms_windows(shape: tuple[int, int], aspect_ratio: float = 1.0, max_windows: int | None = None) -> Windows:
    """The FARMS windows of an m×n matrix (see the module docstring for the layout)."""
    if aspect_ratio < 1.0:
        raise ValueError(f"aspect_ratio is long side / short side and must be >= 1, got {aspect_ratio}")
    k, L = min(shape), max(shape)
    w = min(L, max(k, round(k * aspect_ratio)))
    count = math.ceil(L / w)
    if max_windows is not None:
        count = max(1, min(count, max_windows))
    starts = tuple(round(i * (L - w) / (count - 1)) for i in range(count)) if count > 1 else (0,)
    return Windows(k, L, w, starts)


def _segment_grams(A: torch.Tensor, win: Windows, dtype: torch.dtype, full: bool) -> torch.Tensor:
    """Lower-triangle Grams of ``A`` [k, L]: [whole (if ``full``), window 0, window 1, ...], each [k, k].

    Segments between consecutive window edges are multiplied once each and added to every Gram
    that contains them; segments no window covers are skipped unless the whole Gram is wanted.
    """
    first = 1 if full else 0
    ends = [s + win.width for s in win.starts]
    cuts = sorted({0, win.L, *win.starts, *ends})
    grams = torch.zeros(first + len(win.starts), win.k, win.k, dtype=dtype)
    part = torch.empty(win.k, win.k, dtype=dtype)
    for lo, hi in itertools.pairwise(cuts):
        targets = [first + i for i, (s, e) in enumerate(zip(win.starts, ends, strict=True)) if s <= lo and hi <= e]
        targets = [0, *targets] if full else targets
        if len(targets) == 1:
            add_gram_lower_(grams[targets[0]], A[:, lo:hi])  # one Gram wants it: accumulate in place
            continue
        if targets:
            add_gram_lower_(part.zero_(), A[:, lo:hi])
            for t in targets:
                grams[t] += part
    return grams


def farms_eigenvalues(
    W: torch.Tensor, aspect_ratio: float = 1.0, max_windows: int | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Pooled eigenvalues of S Sᵀ over the fixed-aspect-ratio submatrices S [k, w] of ``W`` [m, n].

    Grams and eigenvalues are computed in ``dtype``. Returns fp64 [windows · k], ascending within
    each window. A matrix already of the target aspect ratio is one window: its ordinary ESD.
    """
    A = short_side(W)
    win = farms_windows((A.shape[0], A.shape[1]), aspect_ratio, max_windows)
    return gram_eigenvalues(_segment_grams(A, win, dtype, full=False)).reshape(-1)


def spectrum_and_farms(
    W: torch.Tensor, aspect_ratio: float = 1.0, max_windows: int | None = None, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values of ``W`` [m, n], fp64 descending [k]; FARMS pooled eigenvalues fp64 [windows · k]).

    The same values as ``gram_singular_values(W, dtype)`` and ``farms_eigenvalues(W, ...)`` from one
    pass over W (see the module docstring). When W already has the target aspect ratio its one
    window is W itself: one eigvalsh serves both.
    """
    A = short_side(W)
    win = farms_windows((A.shape[0], A.shape[1]), aspect_ratio, max_windows)
    if win.covers_all():
        evals = gram_eigenvalues(_segment_grams(A, win, dtype, full=False)[0])
        return singular_values(evals), evals
    # One batched eigvalsh: the whole Gram and the windows' are all k×k.
    evals = gram_eigenvalues(_segment_grams(A, win, dtype, full=True))
    return singular_values(evals[0]), evals[1:].reshape(-1)
