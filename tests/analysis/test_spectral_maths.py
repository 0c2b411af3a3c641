import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankwise.linalg.farms import farms_eigenvalues
from rankwise.linalg.powerlaw import fit_power_law
from rankwise.linalg.spectrum import gram_singular_values
from rankwise.linalg.subspace import intruder_dimensions, subspace_overlap
from rankwise.linalg.welore import welore_ranks


def _reference_fit(evals: np.ndarray) -> tuple[float, float]:
    """Clauset et al.'s procedure written as the plain loop (WeightWatcher's WWFit)."""
    x = np.sort(evals[evals > 1e-5])
    best = (math.inf, math.nan, math.nan)
    for i in range(x.size - 1):
        tail = x[i:]
        n = tail.size
        alpha = 1 + n / np.sum(np.log(tail / x[i]))
        D = 1.0
        if alpha > 1:
            D = float(np.max(np.abs(1 - (tail / x[i]) ** (1 - alpha) - np.arange(n) / n)))
        if best[0] > D:
            best = (D, alpha, x[i])
    return best[1], best[2]


@pytest.mark.parametrize("df", [2.5, 4.0, 30.0])
def test_power_law_fit_matches_the_reference_loop(df: float) -> None:
    rng = np.random.default_rng(int(df * 10))
    W = rng.standard_t(df, size=(300, 120))
    evals = np.linalg.svd(W, compute_uv=False) ** 2
    fit = fit_power_law(evals, block=37)  # a block size that does not divide N
    alpha, xmin = _reference_fit(evals)
    assert fit is not None
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.xmin == pytest.approx(xmin, rel=1e-12)


def test_power_law_recovers_a_known_exponent_and_is_scale_free() -> None:
    rng = np.random.default_rng(0)
    samples = (1 - rng.random(4000)) ** (-1 / 2.0)  # Pareto with density ∝ x^-3
    fit = fit_power_law(samples)
    assert fit is not None and fit.alpha == pytest.approx(3.0, abs=0.15)
    scaled = fit_power_law(samples * 1e3)
    assert scaled is not None and scaled.alpha == pytest.approx(fit.alpha, rel=1e-9)


def test_power_law_needs_enough_eigenvalues() -> None:
    assert fit_power_law(np.linspace(1, 2, 19)) is None
    assert fit_power_law(np.r_[np.zeros(100), np.linspace(1, 2, 10)]) is None  # zeros are below the threshold
    with pytest.raises(ValueError):
        fit_power_law(np.array([1.0, np.nan] * 20))


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_gram_singular_values_match_svd(m: int, n: int, seed: int) -> None:
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = torch.linalg.svdvals(W)
    got = gram_singular_values(W)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6 * float(expected[0]), rtol=0)


def test_farms_is_the_plain_esd_for_a_square_matrix_and_pools_windows_otherwise() -> None:
    W = torch.randn(64, 64, dtype=torch.float64)
    torch.testing.assert_close(farms_eigenvalues(W), torch.linalg.eigvalsh(W @ W.T).clamp_min(0))
    tall = torch.randn(200, 64, dtype=torch.float64)
    pooled = farms_eigenvalues(tall)
    assert pooled.numel() == 4 * 64  # ceil(200 / 64) windows of 64 × 64
    first = tall[:64]
    torch.testing.assert_close(pooled[:64], torch.linalg.eigvalsh(first @ first.T).clamp_min(0))
    assert farms_eigenvalues(tall, max_windows=2).numel() == 2 * 64
    assert farms_eigenvalues(tall.T).numel() == 4 * 64  # orientation does not matter


def test_welore_ranks_meet_the_budget_and_follow_the_decay() -> None:
    fast = torch.tensor([10.0 * 0.5**i for i in range(64)])  # steep: low rank suffices
    flat = torch.linspace(10.0, 5.0, 64)
    spectra = {"fast": fast, "flat": flat}
    shapes = {"fast": (64, 64), "flat": (64, 64)}
    ranks, tau = welore_ranks(spectra, shapes, ratio=0.5)
    kept = sum(min(r * 128, 64 * 64) for r in ranks.values())
    assert kept <= 0.5 * 2 * 64 * 64
    assert ranks["fast"] < ranks["flat"]
    assert 0.0 < tau < 1.0
    full, tau0 = welore_ranks(spectra, shapes, ratio=0.0)
    assert full == {"fast": 64, "flat": 64} and tau0 == 0.0


def test_subspace_overlap_and_intruders() -> None:
    Q = torch.linalg.qr(torch.randn(50, 50, dtype=torch.float64)).Q
    assert subspace_overlap(Q[:, :5], Q[:, :5], 5) == pytest.approx(1.0)
    assert subspace_overlap(Q[:, :5], Q[:, 5:10], 5) == pytest.approx(0.0, abs=1e-12)
    assert intruder_dimensions(Q[:, :10], Q, k=10) == 0
    # Two of the fine-tuned directions mix base vectors evenly: |cos| = 1/√4 < 0.5 with each.
    mixed = Q.clone()
    mixed[:, 0] = Q[:, 20:24].sum(dim=1) / 2
    mixed[:, 1] = Q[:, 30:34].sum(dim=1) / 2
    assert intruder_dimensions(mixed[:, :10], Q[:, :20], k=10, threshold=0.55) == 2
