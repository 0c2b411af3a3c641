import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankwise.linalg import Factors, svd, truncation_error

svd_module = importlib.import_module("rankwise.linalg.svd")  # the module (the package re-exports the function)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 40), n=st.integers(2, 40), data=st.data(), seed=st.integers(0, 2**16))
def test_exact_truncation_meets_eckart_young(m: int, n: int, data: st.DataObject, seed: int) -> None:
    rank = data.draw(st.integers(1, min(m, n)))
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    f = svd(W, rank)
    err = (W - f.reconstruct().double()).square().sum().item()
    s_full = torch.linalg.svdvals(W)
    bound = truncation_error(s_full, rank)
    assert err == pytest.approx(bound, rel=1e-4, abs=1e-5 * float(s_full.square().sum()))


def test_full_rank_reconstructs_exactly() -> None:
    W = torch.randn(30, 17, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(svd(W).reconstruct(), W, atol=1e-5, rtol=1e-5)


def _flat_spectrum_matrix(m: int = 576, n: int = 1536, seed: int = 0) -> torch.Tensor:
    """A weight-like matrix: slowly decaying spectrum plus noise, like SmolLM2's 4-bit weights."""
    gen = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(m, k, generator=gen)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=gen)).Q
    s = 1.0 / torch.arange(1, k + 1, dtype=torch.float32) ** 0.35
    return (U * s) @ V.mT + 0.01 * torch.randn(m, n, generator=gen)


@pytest.mark.parametrize("shape", [(576, 1536), (1536, 576)])
def test_randomized_default_is_close_to_exact_principal_part(shape: tuple[int, int]) -> None:
    W = _flat_spectrum_matrix(*shape)
    exact = svd(W, 16).reconstruct()
    approx = svd(W, 16, "randomized", seed=0).reconstruct()
    # Stated tolerance on this deliberately flat spectrum: 8 % relative Frobenius distance of the
    # principal parts (PEFT-style q = r, 4 power steps is ~70 % away on such spectra).
    assert float((approx - exact).norm() / exact.norm()) < 0.08


@pytest.mark.integration
def test_randomized_default_on_real_smollm2_matrices(smollm2: tuple[torch.nn.Module, object]) -> None:
    model, _ = smollm2
    weights = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
    errors = []
    for W in weights[::7]:  # every projection type, across depth
        exact = svd(W, 16).reconstruct()
        errors.append(float((svd(W, 16, "randomized").reconstruct() - exact).norm() / exact.norm()))
    assert sum(errors) / len(errors) < 0.05


@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
def test_randomized_factors_are_the_exact_svd_of_the_projection_onto_their_span(shape: tuple[int, int]) -> None:
    """Whatever precision the sketch's Gram had, the factors are fitted to W in fp32: orthonormal, and
    U diag(S) Vh is W projected onto the sketched subspace of its short side (U Uᵀ W or W Vhᵀ Vh)."""
    W = _flat_spectrum_matrix(*shape)
    f = svd(W, 12, "randomized", seed=3)
    eye = torch.eye(12)
    assert torch.allclose(f.U.mT @ f.U, eye, atol=1e-5) and torch.allclose(f.Vh @ f.Vh.mT, eye, atol=1e-5)
    assert bool((f.S[:-1] >= f.S[1:]).all())
    projection = f.U @ (f.U.mT @ W) if shape[0] <= shape[1] else (W @ f.Vh.mT) @ f.Vh
    assert float((f.reconstruct() - projection).norm() / projection.norm()) < 1e-5


@pytest.mark.parametrize("shape", [(576, 1536), (1536, 576)])
def test_randomized_without_bf16_units_takes_fp32_products(shape: tuple[int, int],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """CPUs without native bf16 run the Krylov products in fp32; the result must be as good as the bf16 ones'."""
    W = _flat_spectrum_matrix(*shape)
    exact = svd(W, 16).reconstruct()
    has_bf16 = svd_module._fast_bf16_matmul()
    with_bf16 = svd(W, 16, "randomized", seed=0).reconstruct()
    monkeypatch.setattr(svd_module, "_fast_bf16_matmul", lambda: False)
    fp32 = svd(W, 16, "randomized", seed=0).reconstruct()
    assert not has_bf16 or not torch.equal(fp32, with_bf16)  # on a bf16 CPU the two paths really differ
    for approx in (fp32, with_bf16):
        assert float((approx - exact).norm() / exact.norm()) < 0.08


def test_more_krylov_blocks_never_hurt() -> None:
    """Long Krylov runs keep an orthonormal basis: without reorthogonalization against the whole basis it
    decayed and 24 blocks landed 77 % from the exact principal part on this flat spectrum, against 7 % for 8."""
    W = _flat_spectrum_matrix()
    exact = svd(W, 16).reconstruct()
    errors = [float((svd(W, 16, "randomized", niter=n).reconstruct() - exact).norm() / exact.norm())
              for n in (8, 16, 24)]
    assert errors[1] <= errors[0] + 1e-3 and errors[2] <= errors[0] + 1e-3


def _low_rank(kind: str, true_rank: int) -> torch.Tensor:
    """A 400x900 matrix of rank ``true_rank``: dense Gaussian factors, or nonzero only in a corner block
    (its range is spanned by coordinate vectors, which is where QR's completions of a deficient block land)."""
    gen = torch.Generator().manual_seed(true_rank)
    if kind == "dense":
        return torch.randn(400, true_rank, generator=gen) @ torch.randn(true_rank, 900, generator=gen)
    W = torch.zeros(400, 900)
    W[:true_rank, : true_rank + 10] = torch.randn(true_rank, true_rank + 10, generator=gen)
    return W


@pytest.mark.parametrize("bf16_units", [True, False])
@pytest.mark.parametrize(("kind", "true_rank"), [("dense", 3), ("dense", 16), ("dense", 40), ("corner", 20),
                                                 ("corner", 60)])
def test_randomized_on_an_exactly_low_rank_matrix_is_exact(kind: str, true_rank: int, bf16_units: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A matrix of rank at most the Krylov dimension exhausts the space: later blocks are rounding noise.
    The factors must still be orthonormal (also for zero singular values, true rank 3 < 16), and the
    error must meet the Eckart–Young bound up to the ~2⁻⁹ rounding of the bf16 Krylov products. Where a
    block is numerically zero, QR completes it with directions of its own that overlap the basis (dense
    rank 40 on the fp32 path once landed at 0.79 against the optimal 0.66; a 20x30 corner block at 0.31
    against 0.17)."""
    if not bf16_units:
        monkeypatch.setattr(svd_module, "_fast_bf16_matmul", lambda: False)
    W = _low_rank(kind, true_rank)
    f = svd(W, 16, "randomized", seed=0)
    eye = torch.eye(16)
    assert torch.allclose(f.U.mT @ f.U, eye, atol=1e-4) and torch.allclose(f.Vh @ f.Vh.mT, eye, atol=1e-4)
    err = float((W - f.reconstruct()).norm() / W.norm())
    bound = truncation_error(torch.linalg.svdvals(W.double()), 16) ** 0.5 / float(W.norm())
    assert err <= bound + 4e-3
    assert bool(torch.isfinite(f.Vh).all()) and float(f.S[true_rank:].sum()) < 1e-3 * float(f.S[0])


def test_randomized_is_bitwise_reproducible_for_a_seed() -> None:
    W = _flat_spectrum_matrix(200, 300)
    a, b = svd(W, 8, "randomized", seed=7), svd(W, 8, "randomized", seed=7)
    assert torch.equal(a.U, b.U) and torch.equal(a.S, b.S) and torch.equal(a.Vh, b.Vh)


def test_rank_out_of_range_and_nan_are_rejected() -> None:
    W = torch.randn(4, 6)
    with pytest.raises(ValueError, match="rank 5 is outside"):
        svd(W, 5)
    W[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        svd(W, 2)


def test_factors_to_ab_and_truncate() -> None:
    W = torch.randn(12, 9, generator=torch.Generator().manual_seed(3))
    f = svd(W)
    B, A = f.truncate(4).to_ab()
    assert B.shape == (12, 4) and A.shape == (4, 9)
    torch.testing.assert_close(B @ A, f.truncate(4).reconstruct(), atol=1e-5, rtol=1e-5)
    head, tail = f.truncate(4), f.tail(4)
    torch.testing.assert_close(head.reconstruct() + tail.reconstruct(), W, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        Factors(torch.zeros(3, 2), torch.zeros(3), torch.zeros(2, 5))


def test_all_finite_fast_path_and_overflow_fallback() -> None:
    from rankwise.linalg.svd import all_finite

    big = torch.full((4, 4), 3e38)  # finite elements whose sum overflows to inf
    assert all_finite(big)
    big[1, 2] = float("inf")
    assert not all_finite(big)
    small = torch.ones(3, 3)
    small[0, 0] = float("nan")
    assert not all_finite(small)
