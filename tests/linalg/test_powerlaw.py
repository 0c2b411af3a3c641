"""The pruned power-law fit picks exactly the x_min the exhaustive O(N²) KS search picks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankwise.linalg.powerlaw import fit_power_law


def _exhaustive(evals: np.ndarray, threshold: float = 1e-5) -> tuple[float, float, float]:
    """(α, x_min, D) of the full search: every candidate's KS distance over its whole tail."""
    x = np.sort(evals[evals > threshold])
    best = (math.inf, math.nan, math.nan)
    for i in range(x.size - 1):
        tail = x[i:]
        n = tail.size
        with np.errstate(divide="ignore"):
            alpha = 1 + n / np.sum(np.log(tail / x[i]))
        ks = 1.0
        if np.isfinite(alpha) and alpha > 1:
            ks = float(np.max(np.abs(1 - (tail / x[i]) ** (1 - alpha) - np.arange(n) / n)))
        if ks < best[0]:
            best = (ks, alpha, x[i])
    return best[1], best[2], best[0]


def _spectrum(kind: str, rng: np.random.Generator) -> np.ndarray:
    m, n = int(rng.integers(30, 400)), int(rng.integers(20, 200))
    if kind == "gaussian":  # Marchenko–Pastur bulk: flat KS curve, the hardest case for pruning
        W = rng.standard_normal((m, n))
    elif kind == "heavy":
        W = rng.standard_t(2.5, size=(m, n))
    else:  # a bulk plus a few spikes, like trained weights
        W = rng.standard_normal((m, n)) + rng.standard_normal((m, 3)) @ rng.standard_normal((3, n)) * 3
    s: np.ndarray = np.linalg.svd(W, compute_uv=False) ** 2
    return s


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["gaussian", "heavy", "spiked"]), seed=st.integers(0, 10_000),
       points=st.sampled_from([2, 5, 32]), block=st.sampled_from([7, 256]))
def test_pruned_fit_is_the_exhaustive_search(kind: str, seed: int, points: int, block: int) -> None:
    evals = _spectrum(kind, np.random.default_rng(seed))
    fit = fit_power_law(evals, block=block, points=points)
    alpha, xmin, ks = _exhaustive(evals)
    assert fit is not None
    assert fit.xmin == xmin  # the same candidate, not merely a close one
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.D == pytest.approx(ks, rel=1e-9, abs=1e-15)  # noqa: SIM300  (D is a field, not a constant)


def test_ties_resolve_to_the_smallest_xmin_like_the_exhaustive_search() -> None:
    # Repeated eigenvalues give many candidates with equal α and D.
    evals = np.repeat(np.geomspace(1.0, 1e3, 30), 4)
    fit = fit_power_law(evals, points=3)
    alpha, xmin, _ = _exhaustive(evals)
    assert fit is not None and fit.xmin == xmin and fit.alpha == pytest.approx(alpha, rel=1e-12)


def test_all_candidates_invalid_falls_back_like_the_exhaustive_search() -> None:
    # Equal eigenvalues: every candidate's MLE is undefined (D = 1 for all); the first one is reported.
    fit = fit_power_law(np.full(50, 2.0))
    assert fit is not None
    assert fit.D == 1.0 and fit.xmin == 2.0 and fit.n_tail == 50


def test_bounds_computed_in_many_chunks_give_the_same_fit() -> None:
    # 2**17 points per candidate → bounds in chunks of 4 candidates; the fit is still the exhaustive one.
    evals = _spectrum("spiked", np.random.default_rng(7))
    fit = fit_power_law(evals, points=2**17)
    alpha, xmin, _ = _exhaustive(evals)
    assert fit is not None and fit.xmin == xmin and fit.alpha == pytest.approx(alpha, rel=1e-12)
