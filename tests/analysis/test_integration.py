import math
import re

import numpy as np
import pytest
import torch

from rankwise.analysis import analyze
from rankwise.analysis.gradients import accumulate_gradients
from rankwise.analysis.source import FolderSource
from rankwise.data.windows import windows
from rankwise.io import resolve_model_folder
from rankwise.linalg.powerlaw import fit_power_law


@pytest.mark.integration
def test_smollm2_first_block_alpha_matches_an_fp64_svd() -> None:
    folder = resolve_model_folder("smollm2-135m")
    report = analyze(str(folder), include=r"layers\.0\.", progress=False)
    assert len(report.table) == 7
    source = FolderSource(folder, include=r"layers\.0\.")
    for row in report.table:
        W = source.get(row["name"]).double().numpy()
        s = np.linalg.svd(W, compute_uv=False)
        ref = fit_power_law(s**2)
        assert ref is not None
        assert row["alpha"] == pytest.approx(ref.alpha, abs=0.01), row["name"]
        assert row["spectral_norm"] == pytest.approx(float(s[0]), rel=1e-4)
        assert 1 <= row["welore_rank"] <= min(W.shape)



@pytest.mark.integration
def test_smollm2_fp32_alphas_match_fp64() -> None:
    """The default fp32 Grams and eigvalsh move α and FARMS α by less than 0.01 on real weights."""
    folder = resolve_model_folder("smollm2-135m")
    include = r"layers\.(0|29)\.|embed_tokens"
    fp32 = analyze(str(folder), include=include, metrics=["alpha", "farms_alpha"], progress=False)
    fp64 = analyze(str(folder), include=include, metrics=["alpha", "farms_alpha"], precision="fp64", progress=False)
    assert len(fp32.table) == 15
    for a, b in zip(fp32.table, fp64.table, strict=True):
        assert a["name"] == b["name"]
        assert b["farms_alpha"] is not None and b["alpha"] is not None, a["name"]
        assert abs(a["alpha"] - b["alpha"]) < 0.01, a["name"]
        assert abs(a["farms_alpha"] - b["farms_alpha"]) < 0.01, a["name"]

def _reference_metrics(G: torch.Tensor) -> tuple[float, float]:
    """(nuclear norm, effective rank) of ``G`` from an fp64 LAPACK SVD, written out independently."""
    s = torch.linalg.svdvals(G.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(s.sum()), float(torch.exp(-(p * p.log()).sum()))


@pytest.mark.integration
def test_smollm2_gradient_mode_matches_plain_autograd(smollm2: tuple[torch.nn.Module, object]) -> None:
    """`analyze --gradients --data wiki` on SmolLM2: every targeted layer gets a sane gradient spectrum,
    and the gradients equal those of one plain autograd pass of the HF loss over the same windows."""
    model, tokenizer = smollm2
    include = r"layers\.(0|14|29)\."
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    report = analyze(model, gradients=True, data="wiki", windows=4, seq_len=48, batch_size=3, include=include,
                     metrics=["norms"], progress=False)

    # Every Linear of the three layers, and nothing else (the LM head is never a gradient target).
    expected = {n + ".weight": (m.out_features, m.in_features) for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and re.search(include, n + ".weight")}
    assert len(expected) == 21
    rows = {r["name"]: r for r in report.gradient_rows}
    assert set(rows) == set(expected)
    for name, row in rows.items():
        m, n = expected[name]
        assert math.isfinite(row["grad_nuclear_norm"]) and row["grad_nuclear_norm"] > 0, name
        assert 1.0 <= row["grad_effective_rank"] <= min(m, n), name
        assert 1.0 <= row["grad_stable_rank"] <= min(m, n) + 1e-6, name
        assert row["grad_nuclear_norm"] >= row["grad_frobenius_norm"] * (1 - 1e-9), name  # Σσ ≥ √Σσ²
    # The model is left as it was: no gradients kept, requires_grad flags restored, still in eval mode.
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert not model.training

    # Reference: the same windows (analyze draws them with the config's seed 0), one batch, the HF
    # model's own mean-token loss, torch.autograd.grad. analyze went through 2 accumulated batches
    # and a chunked LM head, so only rounding may differ.
    tokens = windows("wiki", split="calib", seq_len=48, n=4, seed=0, tokenizer=tokenizer)
    layers = ["model.layers.14.mlp.down_proj", "model.layers.0.self_attn.k_proj"]
    weights = [model.get_submodule(name).weight for name in layers]
    try:
        for w in weights:
            w.requires_grad_(True)
        loss = model(input_ids=tokens, labels=tokens).loss
        grads = torch.autograd.grad(loss, weights)
    finally:
        for name, w in zip(layers, weights, strict=True):
            w.requires_grad_(before[name + ".weight"])
    direct = accumulate_gradients(model, tokens, layers, batch_size=3, progress=False)
    for name, G in zip(layers, grads, strict=True):
        assert float(G.abs().max()) > 0, name
        torch.testing.assert_close(direct[name], G, rtol=1e-3, atol=1e-5 * float(G.abs().max()))
        nuclear, effective = _reference_metrics(G)
        row = rows[name + ".weight"]
        assert row["grad_nuclear_norm"] == pytest.approx(nuclear, rel=1e-3), name
        assert row["grad_effective_rank"] == pytest.approx(effective, rel=1e-3), name
