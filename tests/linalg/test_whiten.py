import pytest
import torch

from rankwise.linalg import GramAccumulator, whitened_svd, whitening
from rankwise.linalg.whiten import largest_eigenvalue


def _output_error(W: torch.Tensor, W_hat: torch.Tensor, X: torch.Tensor) -> float:
    return float(((W - W_hat).double() @ X.double().mT).square().sum())


@pytest.mark.parametrize("rank", [1, 5, 12])
def test_whitened_svd_reaches_the_optimum_computed_via_eigendecomposition(rank: int) -> None:
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(20, 16, generator=gen, dtype=torch.float64)
    X = torch.randn(200, 16, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3, 16, dtype=torch.float64)
    G = X.mT @ X
    f = whitened_svd(W, G, rank)
    # Reference, another square root than rankwise's Cholesky: with G = Q Λ Qᵀ and L = Q Λ^½, the
    # optimal output error is Σ_{i>r} σ_i(W L)².
    evals, Q = torch.linalg.eigh(G)
    L = Q * evals.sqrt()
    optimum = float(torch.linalg.svdvals(W @ L)[rank:].square().sum())
    assert _output_error(W, f.reconstruct().double(), X) == pytest.approx(optimum, rel=1e-4)
    # The factors' own singular values predict the same error.
    assert float(f.S.double().square().sum()) == pytest.approx(float(torch.linalg.svdvals(W @ L)[:rank].square().sum()),
                                                             rel=1e-4)


def test_whitened_svd_beats_plain_svd_on_output_error() -> None:
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(24, 24, generator=gen)
    X = torch.randn(500, 24, generator=gen) * torch.logspace(-2, 1, 24)
    plain = torch.linalg.svd(W)
    plain_hat = (plain.U[:, :6] * plain.S[:6]) @ plain.Vh[:6]
    white = whitened_svd(W, X.mT @ X, 6).reconstruct()
    assert _output_error(W, white, X) < _output_error(W, plain_hat, X)


def test_rank_deficient_gram_stays_finite() -> None:
    gen = torch.Generator().manual_seed(2)
    W = torch.randn(10, 32, generator=gen)
    X = torch.randn(5, 32, generator=gen)  # 5 tokens for 32 channels: rank 5
    X[:, 3] = 0.0  # a dead channel
    wh = whitening(X.mT @ X)
    # S Sᵀ is the Gram plus the ridge, and S_inv inverts S, although the Gram itself is singular.
    ridged = (X.mT @ X).double() + wh.floor * torch.eye(32, dtype=torch.float64)
    torch.testing.assert_close(wh.S @ wh.S.mT, ridged, rtol=1e-9, atol=1e-9 * float(ridged.abs().max()))
    torch.testing.assert_close(wh.S_inv @ wh.S, torch.eye(32, dtype=torch.float64), rtol=0, atol=1e-6)
    f = whitened_svd(W, X.mT @ X, 4)
    assert torch.isfinite(f.reconstruct()).all()
    # On the span of the data, the rank-5 whitened fit is exact.
    exact_on_data = whitened_svd(W, X.mT @ X, 5).reconstruct()
    assert _output_error(W, exact_on_data, X) < 1e-6 * float((W @ X.mT).square().sum())


def test_all_zero_gram_falls_back_to_plain_svd() -> None:
    W = torch.randn(6, 8, generator=torch.Generator().manual_seed(4))
    f = whitened_svd(W, torch.zeros(8, 8), 3)
    torch.testing.assert_close(f.S, torch.linalg.svdvals(W)[:3], atol=1e-5, rtol=1e-5)


def test_gram_accumulator_streams_batches() -> None:
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(3, 50, 8, generator=gen)
    acc = GramAccumulator(8)
    for batch in X:
        acc.update(batch)
    flat = X.reshape(-1, 8).double()
    torch.testing.assert_close(acc.gram, flat.mT @ flat, rtol=1e-5, atol=1e-5)
    assert acc.count == 150
    torch.testing.assert_close(acc.mean_abs(), flat.abs().mean(0), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="last dim 8"):
        acc.update(torch.zeros(2, 7))


def test_largest_eigenvalue_is_within_a_few_percent_and_never_above() -> None:
    gen = torch.Generator().manual_seed(6)
    for n, tokens in ((16, 8), (64, 500), (300, 1000)):
        X = torch.randn(tokens, n, generator=gen, dtype=torch.float64) * torch.logspace(-3, 1, n, dtype=torch.float64)
        G = X.mT @ X
        exact = float(torch.linalg.eigvalsh(G).max())
        assert 0.95 * exact <= largest_eigenvalue(G) <= exact * (1 + 1e-12)


def test_an_indefinite_gram_falls_back_to_the_eigendecomposition() -> None:
    # rounding can leave a "Gram" with eigenvalues below -ridge: Cholesky fails, the eigendecomposition
    # (negative eigenvalues set to 0, then the ridge) takes over
    gen = torch.Generator().manual_seed(7)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))
    evals = torch.cat([torch.tensor([-1e-3], dtype=torch.float64), torch.linspace(1, 10, 11, dtype=torch.float64)])
    G = (Q * evals) @ Q.mT
    wh = whitening(G, clamp=1e-6)
    expected = (Q * (evals.clamp_min(0.0) + wh.floor)) @ Q.mT
    torch.testing.assert_close(wh.S @ wh.S.mT, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(wh.S_inv @ wh.S, torch.eye(12, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("indefinite", [False, True])
def test_times_inverse_is_the_product_with_the_inverse(indefinite: bool) -> None:
    # Cholesky path (triangular solve) and eigendecomposition fallback (explicit inverse) agree with S⁻¹
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(100, 12, generator=gen, dtype=torch.float64)
    G = X.mT @ X
    if indefinite:
        G[0, 0] = -1e3  # Cholesky fails: the eigendecomposition factor is used
    wh = whitening(G, clamp=1e-4)
    assert wh.triangular is not indefinite
    A = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(wh.times_inverse(A) @ wh.S, A, rtol=0, atol=1e-9)
    torch.testing.assert_close(wh.times_inverse(A), A @ torch.linalg.inv(wh.S), rtol=1e-9, atol=1e-9)
