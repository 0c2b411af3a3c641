"""FARMS from shared segment Grams equals the per-window definition; fp32 is accurate enough for α."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankwise.linalg.farms import farms_eigenvalues, farms_windows, spectrum_and_farms
from rankwise.linalg.powerlaw import fit_power_law
from rankwise.linalg.spectrum import gram_singular_values


def _per_window(W: torch.Tensor, aspect_ratio: float, max_windows: int | None) -> torch.Tensor:
    """The definition written out: eigvalsh of every window's own fp64 Gram, concatenated."""
    A = W if W.shape[0] <= W.shape[1] else W.T
    win = farms_windows(tuple(W.shape), aspect_ratio, max_windows)
    parts = []
    for start in win.starts:
        S = A[:, start : start + win.width].double()
        parts.append(torch.linalg.eigvalsh(S @ S.T).clamp_min(0))
    return torch.cat(parts)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 90), n=st.integers(1, 90), aspect=st.sampled_from([1.0, 1.5, 2.0]),
       max_windows=st.sampled_from([None, 1, 2, 8]), seed=st.integers(0, 10_000))
def test_segment_grams_give_the_per_window_eigenvalues(m: int, n: int, aspect: float, max_windows: int | None,
                                                        seed: int) -> None:
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = _per_window(W, aspect, max_windows)
    pooled = farms_eigenvalues(W, aspect, max_windows)
    s, pooled_too = spectrum_and_farms(W, aspect, max_windows)
    scale = float(expected.max()) if expected.numel() else 1.0
    torch.testing.assert_close(pooled, expected, atol=1e-10 * scale, rtol=0)
    torch.testing.assert_close(pooled_too, expected, atol=1e-10 * scale, rtol=0)
    torch.testing.assert_close(s, gram_singular_values(W), atol=1e-6 * (scale**0.5), rtol=0)
    assert s.dtype == pooled.dtype == torch.float64


def test_windows_cover_the_long_side_evenly() -> None:
    win = farms_windows((1536, 576))
    assert (win.k, win.L, win.width, win.starts) == (576, 1536, 576, (0, 480, 960))
    assert farms_windows((576, 1536)) == win  # orientation does not matter
    capped = farms_windows((49152, 576), max_windows=8)
    assert len(capped.starts) == 8 and capped.starts[0] == 0 and capped.starts[-1] + capped.width == 49152
    assert farms_windows((576, 576)).covers_all()
    assert farms_windows((300, 100), aspect_ratio=3.0).covers_all()
    with pytest.raises(ValueError):
        farms_windows((4, 4), aspect_ratio=0.5)


def test_square_matrix_reuses_its_own_spectrum() -> None:
    W = torch.randn(64, 64, dtype=torch.float64)
    s, pooled = spectrum_and_farms(W)
    torch.testing.assert_close(pooled, s.flip(0).square(), rtol=1e-12, atol=0)  # the very same eigenvalues


def _heavy_tailed(m: int, n: int, df: float, seed: int) -> torch.Tensor:
    """Student-t entries: an ESD with a power-law tail (α ≈ 3.5 for df = 2.5, ≈ 7 for df = 3), fp32."""
    return torch.from_numpy(np.random.default_rng(seed).standard_t(df, size=(m, n))).float()


@pytest.mark.parametrize("df", [2.5, 3.0])
@pytest.mark.parametrize("shape", [(1536, 576), (576, 1536), (192, 576), (2000, 256)])
def test_fp32_alphas_are_within_0_01_of_fp64(shape: tuple[int, int], df: float) -> None:
    W = _heavy_tailed(*shape, df=df, seed=sum(shape))
    farms64 = fit_power_law(farms_eigenvalues(W, 1.0, 8, torch.float64))
    s32, pooled32 = spectrum_and_farms(W, 1.0, 8, torch.float32)
    farms32 = fit_power_law(pooled32)
    plain64 = fit_power_law(gram_singular_values(W, torch.float64).square())
    plain32 = fit_power_law(s32.square())
    assert farms64 is not None and farms32 is not None and plain64 is not None and plain32 is not None
    assert farms64.alpha > 2  # a real tail, not a degenerate fit
    assert abs(farms32.alpha - farms64.alpha) < 0.01
    assert abs(plain32.alpha - plain64.alpha) < 0.01
