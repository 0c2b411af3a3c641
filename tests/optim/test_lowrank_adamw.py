"""LowRankAdamW's arithmetic against references computed another way."""

from __future__ import annotations

import pytest
import torch

from rankwise.optim import PROJECTORS, LowRankAdamW, state_bytes
from rankwise.optim.projectors.dct import dct_basis
from tests.conftest import tiny_llama

LR, BETAS, EPS, WD = 1e-2, (0.9, 0.99), 1e-8, 0.1


def _gradients(shape: tuple[int, int], steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Gradients with well-separated singular values (so a rank-r subspace is unambiguous in fp32)."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    d = min(m, n)
    out = []
    for _ in range(steps):
        U = torch.linalg.qr(torch.randn(m, d, generator=gen, dtype=torch.float64)).Q
        V = torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64)).Q
        out.append((U * torch.logspace(0, -2, d, dtype=torch.float64)) @ V.mT)
    return out


def _reference(W0: torch.Tensor, grads: list[torch.Tensor], basis, rank: int, gap: int, scale: float,
               reproject: bool) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Projected AdamW written out plainly in fp64: basis(S, r) -> P [d, r]."""
    W = W0.double().clone()
    M = V = P = None
    for t, G in enumerate(grads, start=1):
        wide = G.shape[0] <= G.shape[1]
        S = G if wide else G.mT
        if (t - 1) % gap == 0:
            P_new = basis(S, rank)
            if M is None:
                M = torch.zeros(rank, S.shape[1], dtype=torch.float64)
                V = torch.zeros_like(M)
            elif reproject:
                C = P_new.mT @ P
                M, V = C @ M, (C * C) @ V
            P = P_new
        R = P.mT @ S
        M = BETAS[0] * M + (1 - BETAS[0]) * R
        V = BETAS[1] * V + (1 - BETAS[1]) * R * R
        N = (M / (1 - BETAS[0] ** t)) / ((V / (1 - BETAS[1] ** t)).sqrt() + EPS)
        update = P @ N
        W = W * (1 - LR * WD) - LR * scale * (update if wide else update.mT)
    return W


def _run(W0: torch.Tensor, grads: list[torch.Tensor], **kw: object) -> torch.Tensor:
    W = torch.nn.Parameter(W0.clone())
    opt = LowRankAdamW([W], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, **kw)  # type: ignore[arg-type]
    for G in grads:
        W.grad = G.float()
        opt.step()
    return W.detach()


def _svd_basis(S: torch.Tensor, r: int) -> torch.Tensor:
    return torch.linalg.svd(S, full_matrices=False).U[:, :r]


def _dct_basis(S: torch.Tensor, r: int) -> torch.Tensor:
    D = dct_basis(S.shape[0]).double()
    order = torch.argsort((D.mT @ S).norm(dim=1), descending=True)  # ‖Dᵀ S‖ rows, formed explicitly
    return D[:, order[:r]]


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
@pytest.mark.parametrize(("projector", "basis", "reproject"),
                         [("svd", _svd_basis, True), ("dct", _dct_basis, True), ("dct", _dct_basis, False)])
def test_matches_a_plain_fp64_reference_across_refreshes(shape, projector, basis, reproject) -> None:  # type: ignore[no-untyped-def]
    # (SVD bases come with arbitrary signs; the update and the reprojected moments do not depend on them,
    # the moments *kept* in an old basis do, so the GaLore-style reproject=False case uses DCT bases.)
    W0 = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    grads = _gradients(shape, 7)
    ours = _run(W0, grads, rank=3, update_gap=2, projector=projector, scale=0.5, reproject_state=reproject)
    torch.testing.assert_close(ours.double(), _reference(W0, grads, basis, 3, 2, 0.5, reproject), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("projector", ["svd", "randomized", "dct"])
def test_a_one_row_matrix_at_rank_one_and_scale_one_is_adamw(projector: str) -> None:
    # With d = 1 the projection is ±1: Adam in the projected space is Adam itself.
    W0 = torch.randn(1, 12)
    grads = [torch.randn(1, 12, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    ours = _run(W0, grads, rank=1, update_gap=2, projector=projector, scale=1.0)
    W = torch.nn.Parameter(W0.clone())
    ref = torch.optim.AdamW([W], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
    for G in grads:
        W.grad = G
        ref.step()
    torch.testing.assert_close(ours, W.detach(), atol=1e-6, rtol=1e-6)


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> list[float]:
    x = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(seed))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_plain_groups_are_torch_adamw_bit_for_bit() -> None:
    a, b = tiny_llama(), tiny_llama()
    ours = LowRankAdamW([{"params": list(a.parameters()), "lowrank": False}], lr=LR, betas=BETAS, weight_decay=WD)
    ref = torch.optim.AdamW(b.parameters(), lr=LR, betas=BETAS, weight_decay=WD, foreach=False)
    _train(a, ours, 3)
    _train(b, ref, 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("projector", PROJECTORS.names())
def test_training_a_tiny_model_lowers_the_loss(projector: str) -> None:
    model = tiny_llama()
    opt = LowRankAdamW(model.parameters(), lr=1e-2, rank=8, update_gap=3, projector=projector, scale=1.0)
    losses = _train(model, opt, 8)
    assert losses[-1] < 0.9 * losses[0]


def test_same_inputs_give_the_same_bits() -> None:
    runs = []
    for _ in range(2):
        model = tiny_llama()
        _train(model, LowRankAdamW(model.parameters(), lr=1e-2, rank=4, update_gap=2, projector="random"), 4)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("projector", PROJECTORS.names())
def test_state_bytes_is_what_the_formula_says(projector: str) -> None:
    model, rank = tiny_llama(), 8
    opt = LowRankAdamW(model.parameters(), lr=1e-3, rank=rank, projector=projector)
    _train(model, opt, 1)
    expected, dims = 0, set()
    for p in model.parameters():
        if p.ndim != 2:
            expected += 2 * p.numel() * 4  # plain AdamW moments
            continue
        d, k = min(p.shape), max(p.shape)
        expected += 2 * rank * k * 4  # the projected moments
        expected += {"svd": d * rank * 4, "randomized": d * rank * 4, "dct": rank * 8, "random": 0}[projector]
        dims.add(d)
    if projector == "dct":
        expected += sum(d * d * 4 for d in dims)  # one shared basis per dimension
    assert state_bytes(opt) == expected
    adamw = torch.optim.AdamW(model.parameters())
    _train(model, adamw, 1)
    n_params = sum(p.numel() for p in model.parameters())
    assert state_bytes(adamw) == 2 * n_params * 4 + 4 * len(list(model.parameters()))  # + a float32 step each


def test_tied_embeddings_are_one_parameter_optimised_once() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb
    params = [emb, *model.parameters(), model.get_output_embeddings().weight]
    opt = LowRankAdamW(params, lr=1e-2, rank=4)
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters()))
    _train(model, opt, 2)
    assert opt.state[emb]["exp_avg"].shape == (4, 128)  # the 32-wide side projected, once
