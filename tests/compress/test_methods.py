"""Every registered compressor through the shared invariants."""

import pytest
import torch

import rankwise as rw
from rankwise.calib.stats import LayerStats
from rankwise.compress.config import CONFIGS
from rankwise.compress.driver import collect_stats
from rankwise.compress.registry import get_compressor
from rankwise.modules.lowrank import LowRankLinear
from rankwise.modules.targets import select_targets
from tests.conftest import tiny_llama

METHODS = sorted(CONFIGS)


def _calib() -> torch.Tensor:
    return torch.randint(0, 128, (6, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", METHODS)
def test_full_rank_decomposition_reconstructs_the_weight(method: str) -> None:
    model = tiny_llama(seed=1)
    compressor = get_compressor(method)
    names = select_targets(model, "all-linear")
    stats, _ = collect_stats(model, compressor, names, _calib(), 3, progress=False)
    config = CONFIGS[method](ratio=0.5)
    for name in names:
        W = model.get_submodule(name).weight.detach()
        f = compressor.decompose(W, stats[name], config)
        assert f.rank == min(W.shape)
        assert bool((f.S[:-1] >= f.S[1:] - 1e-6).all()), "singular values must be descending"
        torch.testing.assert_close(f.reconstruct(), W, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("method", METHODS)
def test_spectra_alone_equal_the_factorizations_singular_values(method: str) -> None:
    """decompose(factorize=False), what the blockwise pipeline allocates from, gives the same spectra
    (the fast path of svd_llm: singular values without vectors) and no factors."""
    from rankwise.compress.driver import decompose

    model = tiny_llama(seed=2)
    config = CONFIGS[method](ratio=0.3, sensitivity_windows=0)
    full = decompose(model, config, calib=_calib(), batch_size=3, progress=False)
    alone = decompose(model, config, calib=_calib(), batch_size=3, progress=False, factorize=False)
    assert alone.factors == {} and len(full.factors) == len(full.names)
    for a, b in zip(full.spectra, alone.spectra, strict=True):
        assert a.name == b.name
        torch.testing.assert_close(a.error_sq, b.error_sq, rtol=1e-4, atol=1e-6)


def test_plain_svd_truncation_meets_eckart_young() -> None:
    model = tiny_llama(seed=2)
    W = model.model.layers[0].mlp.up_proj.weight.detach()
    f = get_compressor("svd").decompose(W, LayerStats(), CONFIGS["svd"](ratio=0.5))
    s = torch.linalg.svdvals(W.double())
    for r in (1, 5, 17):
        err = float((W.double() - f.truncate(r).reconstruct().double()).square().sum())
        assert err == pytest.approx(float(s[r:].square().sum()), rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_apply_compresses_in_place_with_finite_outputs_and_is_reproducible(method: str) -> None:
    outs = []
    for _ in range(2):
        model = tiny_llama(seed=3)
        report = rw.compress.apply(model, CONFIGS[method](ratio=0.3, alloc="uniform", rank_multiple=2),
                                   calib=_calib(), batch_size=3, progress=False)
        assert any(isinstance(m, LowRankLinear) for m in model.modules())
        assert report.targeted_after <= 0.7 * report.targeted_before + 1e-9
        x = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(9))
        with torch.no_grad():
            logits = model(x).logits
        assert torch.isfinite(logits).all()
        outs.append(logits)
    assert torch.equal(outs[0], outs[1])


def test_whitened_compression_has_lower_activation_error_than_plain_svd() -> None:
    errors = {}
    for method in ("svd", "svd_llm"):
        model = tiny_llama(seed=4)
        report = rw.compress.apply(model, CONFIGS[method](ratio=0.4, alloc="uniform", rank_multiple=2),
                                   calib=_calib(), batch_size=3, progress=False)
        errors[method] = sum(m.error for m in report.matrices)
    assert errors["svd_llm"] < errors["svd"]


def test_sequential_mode_runs_block_by_block_and_matches_budget() -> None:
    model = tiny_llama(seed=5)
    report = rw.compress.apply(model, rw.compress.SVDLLM(ratio=0.3, sequential=True, correct=False, rank_multiple=2),
                               calib=_calib(), batch_size=3, progress=False)
    assert "sequential" in report.timings
    assert report.ratio_achieved >= 0.3 - 1e-9
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(0, 128, (1, 8))).logits).all()


def test_data_aware_method_without_data_fails_clearly() -> None:
    with pytest.raises(rw.RankwiseError, match="needs calibration data"):
        rw.compress.apply(tiny_llama(), rw.compress.SVDLLM(ratio=0.2), progress=False)


def test_nan_weight_is_rejected_and_model_untouched() -> None:
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(rw.RankwiseError, match="NaN or inf"):
        rw.compress.apply(model, rw.compress.SVD(ratio=0.2), progress=False)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="ratio must be in"):
        rw.compress.SVD(ratio=1.5)
    with pytest.raises(ValueError, match="Extra inputs"):
        rw.compress.SVDLLM(ratio=0.2, niter=3)  # type: ignore[call-arg]
    cfg = rw.compress.ASVD(ratio=0.2, alpha=0.7)
    import yaml

    loaded = yaml.safe_load(cfg.to_yaml())
    assert loaded.pop("method") == "asvd" and rw.compress.ASVD(**loaded) == cfg


def test_output_sensitivity_matches_autograd_reference() -> None:
    from rankwise.calib.stats import output_sensitivity
    from rankwise.eval.perplexity import window_nll

    model = tiny_llama(seed=6)
    name = "model.layers.1.mlp.down_proj"
    windows = _calib()[:4]
    got = output_sensitivity(model, [name], windows, 2, progress=False)[name]
    # Reference: keep the layer's output, differentiate the summed NLL of each batch w.r.t. it.
    total, tokens = 0.0, 0
    kept: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, a, out: kept.append(out))
    for start in (0, 2):
        nll, _ = window_nll(model, windows[start : start + 2])
        (grad,) = torch.autograd.grad(nll, kept[-1])
        total += float(grad.double().square().sum())
        tokens += windows[start : start + 2].numel()
    handle.remove()
    assert got == pytest.approx(total / tokens / 32, rel=1e-5)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())
