"""Output-matching correction: the closed form against references computed another way."""

import pytest
import torch

import rankwise as rw
from rankwise.calib.matching import MatchingStats
from rankwise.compress.correction import corrected_factors, is_singular, matching_error
from rankwise.linalg.gram import GramAccumulator
from rankwise.linalg.whiten import whitened_factors
from tests.conftest import tiny_llama


def _stats(X: torch.Tensor, Xt: torch.Tensor) -> MatchingStats:
    """X, Xt [T, n]: dense and compressed-model inputs, one token per row."""
    gram = GramAccumulator(X.shape[1])
    gram.update(Xt)
    return MatchingStats((X.double().mT @ Xt.double()), gram)


def _problem(seed: int, T: int = 400, n: int = 24, m: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, n, generator=g)
    X = torch.randn(T, n, generator=g) @ torch.randn(n, n, generator=g)
    Xt = X + 0.3 * torch.randn(T, n, generator=g) @ torch.randn(n, n, generator=g)  # upstream error
    return W, X, Xt


def _error(W: torch.Tensor, W_hat: torch.Tensor, X: torch.Tensor, Xt: torch.Tensor) -> float:
    return float((X.double() @ W.double().mT - Xt.double() @ W_hat.double().mT).square().sum())


def test_full_rank_correction_is_the_least_squares_solution() -> None:
    W, X, Xt = _problem(0)
    f = corrected_factors(W, _stats(X, Xt), clamp=1e-12)
    # Reference: Ŵᵀ = argmin ‖X̃ Ŵᵀ − X Wᵀ‖ by lstsq.
    ref = torch.linalg.lstsq(Xt.double(), X.double() @ W.double().mT).solution.mT
    torch.testing.assert_close(f.reconstruct().double(), ref, rtol=1e-4, atol=1e-4)


def test_ridge_correction_is_the_penalised_least_squares_solution() -> None:
    # argmin ‖W X − Ŵ X̃‖² + δ Σ_j G̃_jj ‖(Ŵ − W)_j‖²: augment X̃ and X with diag(√(δ G̃_jj)), solve by lstsq.
    W, X, Xt = _problem(6, T=40)  # few tokens: the unregularised fit is noisy
    ridge = 0.05
    pseudo = torch.diag((ridge * Xt.double().square().sum(0)).sqrt())
    ref = torch.linalg.lstsq(torch.cat([Xt.double(), pseudo]),
                             torch.cat([X.double(), pseudo]) @ W.double().mT).solution.mT
    got = corrected_factors(W, _stats(X, Xt), clamp=1e-12, ridge=ridge).reconstruct().double()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    plain = corrected_factors(W, _stats(X, Xt), clamp=1e-12).reconstruct().double()
    assert (got - W.double()).norm() < (plain - W.double()).norm()  # pulled towards W


def test_a_huge_ridge_gives_sequential_whitening_and_truncates_in_the_compressed_inputs_metric() -> None:
    W, X, Xt = _problem(7)
    stats = _stats(X, Xt)
    got = corrected_factors(W, stats, clamp=1e-12, ridge=1e9).truncate(5).reconstruct()
    ref = whitened_factors(W, stats.gram.whitener(1e-12)).truncate(5).reconstruct()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", [2, 6, 12])
def test_truncated_correction_beats_whitening_and_perturbations(rank: int) -> None:
    W, X, Xt = _problem(1)
    stats = _stats(X, Xt)
    best = corrected_factors(W, stats, clamp=1e-12).truncate(rank).reconstruct()
    err = _error(W, best, X, Xt)
    # today's sequential whitening (Ŵ fitted to W X̃ instead of W X) is a feasible rank-r candidate
    plain = whitened_factors(W, stats.gram.whitener(1e-12)).truncate(rank).reconstruct()
    assert err < _error(W, plain, X, Xt)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):  # the optimum: rank-r perturbations of its factors only do worse
        f = corrected_factors(W, stats, clamp=1e-12).truncate(rank)
        U = f.U + 0.01 * torch.randn(f.U.shape, generator=g)
        assert _error(W, (U * f.S) @ f.Vh, X, Xt) >= err


def test_correction_without_upstream_error_is_svd_llm() -> None:
    W, X, _ = _problem(2)
    stats = _stats(X, X)
    got = corrected_factors(W, stats, clamp=1e-10).truncate(5).reconstruct()
    ref = whitened_factors(W, stats.gram.whitener(1e-10)).truncate(5).reconstruct()
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


def test_matching_error_from_statistics_equals_the_direct_error() -> None:
    W, X, Xt = _problem(3)
    W_hat = corrected_factors(W, _stats(X, Xt), clamp=1e-12).truncate(4).reconstruct()
    energy = float((X.double() @ W.double().mT).square().sum())
    got = matching_error(W, W_hat, _stats(X, Xt), X.double().mT @ X.double())
    assert got == pytest.approx(_error(W, W_hat, X, Xt) / energy, rel=1e-4)


def test_unseen_directions_keep_the_weight_instead_of_zero() -> None:
    # X̃ never excites the last 4 channels: the clamped floor keeps W there (pseudo-tokens with x = x̃).
    W, X, Xt = _problem(4, T=300)
    Xt[:, -4:] = 0.0
    X[:, -4:] = 0.0
    W_hat = corrected_factors(W, _stats(X, Xt), clamp=1e-6).reconstruct()
    torch.testing.assert_close(W_hat[:, -4:], W[:, -4:], rtol=1e-3, atol=1e-3)


def test_singular_gram_falls_back_and_the_report_says_which_layers() -> None:
    assert is_singular(_stats(*_problem(5, T=10)[1:]))
    model = tiny_llama(seed=3, hidden=32)
    calib = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))  # 12 tokens < 32 channels
    with pytest.warns(UserWarning, match="calibration saw 12 tokens for inputs of dimension up to 64"):
        report = rw.compress.apply(model, rw.compress.SVDLLM(ratio=0.3, rank_multiple=2, correct=True), calib=calib,
                                   batch_size=1, progress=False)
    assert set(report.fallbacks) == {m.name for m in report.matrices if m.rank is not None}
    assert "correction fell back to plain whitening" in report.table()
    with torch.no_grad():
        assert torch.isfinite(model(calib).logits).all()


def _final_hidden_error(model: torch.nn.Module, dense: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        a = model.model(x).last_hidden_state
        b = dense.model(x).last_hidden_state
    return float((a - b).square().mean())


def test_correction_tracks_the_dense_model_better_than_sequential_whitening() -> None:
    calib = torch.randint(0, 128, (16, 32), generator=torch.Generator().manual_seed(0))
    dense = tiny_llama(seed=7, layers=3)
    errors = {}
    for correct in (False, True):
        model = tiny_llama(seed=7, layers=3)
        config = rw.compress.SVDLLM(ratio=0.4, rank_multiple=2, alloc="uniform", sequential=True, correct=correct)
        report = rw.compress.apply(model, config, calib=calib, batch_size=4, progress=False)
        assert report.fallbacks == []
        errors[correct] = _final_hidden_error(model, dense, calib)
    assert errors[True] < errors[False]


def test_correction_is_the_default_and_realize_refuses_a_blockwise_config() -> None:
    config = rw.compress.SVDLLM(ratio=0.3, rank_multiple=2)
    assert config.correct and config.correct_ridge == 1.0
    assert rw.compress.pipeline_name(config) == "blockwise"
    model = tiny_llama()
    calib = torch.randint(0, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    dec = rw.compress.decompose(model, config, calib=calib, progress=False)
    with pytest.raises(rw.RankwiseError, match=r"realize\(\) swaps in one-shot factors.*use rw.compress.apply"):
        rw.compress.realize(model, dec, 0.3, progress=False)
