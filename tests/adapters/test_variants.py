"""What the Variant-based methods promise beyond the generic invariants: NOLA stores coefficients only,
LIFT keeps optimizer state for its mask alone, AdaLoRA shrinks and IncreLoRA grows for real, the SORSA and
KaSA regularisers vanish on orthonormal factors, sparse updates export with their stated error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import rankwise as rw
from rankwise.adapters import adapter_layers
from rankwise.adapters.hooks import regulariser, schedule_step
from rankwise.adapters.ranked import RankedDelta, cubic_budget
from rankwise.adapters.triplets import TripletDelta
from rankwise.errors import RankwiseError
from tests.conftest import tiny_llama

X = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(X).logits


def backward(model: torch.nn.Module, seed: int = 0) -> None:
    """Real gradients on every trainable parameter (a step's backward pass)."""
    batch = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(seed))
    model(batch).logits.log_softmax(-1)[..., 0].mean().neg().backward()


def adam(model: torch.nn.Module) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(rw.adapters.trainable_parameters(model).values()), lr=1e-3)


def state_numel(optimizer: torch.optim.Optimizer) -> int:
    """Entries of every per-parameter state tensor (Adam's two moments), step counters left out."""
    return sum(v.numel() for s in optimizer.state.values() for k, v in s.items() if k != "step")


def test_nola_saves_only_coefficients_and_the_seed(tmp_path: Path) -> None:
    model = rw.adapt(tiny_llama(), rw.adapters.NOLA(rank=4, k=8, seed=7))
    with torch.no_grad():
        for name, p in rw.adapters.trainable_parameters(model).items():
            p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    rw.adapters.save_adapter(model, tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter.safetensors"))
    n_layers = len(adapter_layers(model))
    assert {key.rsplit(".", 1)[1] for key in saved} == {"alpha", "beta"} and len(saved) == 2 * n_layers
    assert all(t.shape == (8,) for t in saved.values())
    meta = yaml.safe_load((tmp_path / "a" / "adapter.yaml").read_text())
    assert meta["adapter"]["seed"] == 7 and meta["adapter"]["k"] == 8
    fresh = rw.adapters.load_adapter(tiny_llama(), tmp_path / "a")  # bases regenerated from the seed
    assert torch.equal(logits(fresh), logits(model))


def test_lift_trains_only_its_mask_and_keeps_state_for_it_alone() -> None:
    model = rw.adapt(tiny_llama(), rw.adapters.LIFT(rank=2, approx_rank=4))
    layers = adapter_layers(model)
    masks = {name: int(layer.variant.index.numel()) for name, layer in layers.items()}  # type: ignore[union-attr]
    for name, layer in layers.items():
        m, n = layer.out_features, layer.in_features
        assert masks[name] == 2 * (m + n)
        # The mask is the largest entries of the rank-4 approximation.
        approx = rw.linalg.svd(layer.original_weight(), 4, method="exact").reconstruct().abs().flatten()
        chosen = approx[layer.variant.index]  # type: ignore[union-attr]
        assert chosen.min() >= approx.kthvalue(approx.numel() - masks[name]).values
    optimizer = adam(model)
    backward(model)
    optimizer.step()
    assert state_numel(optimizer) == 2 * sum(masks.values())
    # Only masked entries moved.
    for layer in layers.values():
        delta = layer.delta_weight().flatten()
        outside = torch.ones_like(delta, dtype=torch.bool)
        outside[layer.variant.index] = False  # type: ignore[union-attr]
        assert torch.count_nonzero(delta[outside]) == 0 and torch.count_nonzero(delta) > 0


def test_adalora_parameters_and_optimizer_state_fall_to_the_budget(tmp_path: Path) -> None:
    config = rw.adapters.AdaLoRA(rank=6, target_rank=2, warmup=0.1, final=0.2, interval=2)
    model = rw.adapt(tiny_llama(), config)
    n_layers, total = len(adapter_layers(model)), 20
    optimizer = adam(model)
    counts = []
    for step in range(total):
        schedule_step(model, step, total, optimizer)
        optimizer.zero_grad(set_to_none=True)
        backward(model, step)
        optimizer.step()
        counts.append(sum(p.numel() for p in rw.adapters.trainable_parameters(model).values()))
        params = [p for g in optimizer.param_groups for p in g["params"]]
        assert {id(p) for p in params} == {id(p) for p in rw.adapters.trainable_parameters(model).values()}
        assert state_numel(optimizer) == 2 * counts[-1]  # moments for exactly the live triplets
    ranks = [layer.rank for layer in adapter_layers(model).values()]
    assert sum(ranks) == cubic_budget(total - 1, total, 6 * n_layers, 2 * n_layers, 2, 4) == 2 * n_layers
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]
    rw.adapters.save_adapter(model, tmp_path / "a")  # the current ranks come back on load
    fresh = rw.adapters.load_adapter(tiny_llama(), tmp_path / "a")
    assert [layer.rank for layer in adapter_layers(fresh).values()] == ranks
    assert torch.equal(logits(fresh), logits(model))
    # Adaptive ranks export exactly as PEFT's rank_pattern; rank-0 layers are left out.
    peft = pytest.importorskip("peft")
    rw.adapters.export_peft(model, tmp_path / "p")
    loaded = peft.PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "p"))
    torch.testing.assert_close(logits(loaded), logits(model), atol=1e-5, rtol=0)


def test_increlora_grows_its_parameters_and_optimizer_state() -> None:
    config = rw.adapters.IncreLoRA(rank=1, target_rank=3, grow_layers=5, interval=1, warmup=0.1, final=0.2)
    model = rw.adapt(tiny_llama(), config)
    n_layers, total = len(adapter_layers(model)), 20
    optimizer = adam(model)
    counts = []
    for step in range(total):
        before = logits(model)
        schedule_step(model, step, total, optimizer)
        assert torch.equal(logits(model), before)  # a new triplet starts with λ = 0
        optimizer.zero_grad(set_to_none=True)
        backward(model, step)
        optimizer.step()
        counts.append(sum(p.numel() for p in rw.adapters.trainable_parameters(model).values()))
        assert state_numel(optimizer) == 2 * counts[-1]
    assert sum(layer.rank for layer in adapter_layers(model).values()) == 3 * n_layers
    assert counts == sorted(counts) and counts[-1] > counts[0]


@pytest.mark.parametrize("method", ["sorsa", "kasa"])
def test_regulariser_is_zero_for_orthonormal_factors(method: str) -> None:
    U = torch.linalg.qr(torch.randn(24, 4, generator=torch.Generator().manual_seed(0))).Q
    Vh = torch.linalg.qr(torch.randn(40, 4, generator=torch.Generator().manual_seed(1))).Q.mT
    delta = TripletDelta(U, torch.rand(4), Vh, train_vectors=True, orth_weight=0.5)
    reg = delta.regulariser()
    assert reg is not None and float(reg.detach()) < 1e-10
    with torch.no_grad():
        delta.U.mul_(1.1)  # columns of norm 1.1: ‖UᵀU − I‖² = 4 (1.21 − 1)², Vh untouched
    assert float(delta.regulariser().detach()) == pytest.approx(0.5 * 4 * 0.21**2, rel=1e-4)  # type: ignore[union-attr]
    # The methods' own init starts orthonormal (exact singular vectors), so their regulariser starts at ~0.
    model = rw.adapt(tiny_llama(), rw.adapters.make_config(method, rank=4, **({"svd": "exact"} if method == "sorsa"
                                                                                 else {})))
    assert float(regulariser(model).detach()) < 1e-8  # type: ignore[union-attr]


def test_adalora_regulariser_is_the_mean_of_the_layer_penalties() -> None:
    model = rw.adapt(tiny_llama(), rw.adapters.AdaLoRA(rank=4, orth_weight=0.3))
    eye = torch.eye(4)
    by_hand = []
    for layer in adapter_layers(model).values():
        d = layer.variant
        assert isinstance(d, RankedDelta)
        by_hand.append(0.3 * ((d.P.mT @ d.P - eye).square().sum() + (d.Q @ d.Q.mT - eye).square().sum()))
    torch.testing.assert_close(regulariser(model), torch.stack(by_hand).mean())


def test_sparse_update_exports_by_truncated_svd_with_its_stated_error(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = rw.adapt(tiny_llama(), rw.adapters.LIFT(rank=2), targets=["q_proj"])
    with torch.no_grad():
        for p in rw.adapters.trainable_parameters(model).values():
            p.normal_(generator=torch.Generator().manual_seed(0))
    with pytest.raises(RankwiseError, match="not of B·A form; pick the rank"):
        rw.adapters.export_peft(model, tmp_path / "none")
    rw.adapters.export_peft(model, tmp_path / "p", rank=3)
    printed = capsys.readouterr().err
    tensors = load_file(str(tmp_path / "p" / "adapter_model.safetensors"))
    for name, layer in adapter_layers(model).items():
        delta = layer.delta_weight()
        A, B = tensors[f"base_model.model.{name}.lora_A.weight"], tensors[f"base_model.model.{name}.lora_B.weight"]
        assert A.shape[0] == 3
        S = torch.linalg.svdvals(delta)
        optimal = float(S[3:].square().sum().sqrt() / S.square().sum().sqrt())  # Eckart–Young
        assert float((delta - B @ A).norm() / delta.norm()) == pytest.approx(optimal, rel=1e-3)
        assert f"{name}: rank-3 PEFT export, relative error {optimal:.4f}" in printed


def test_bad_configs_give_one_clear_line() -> None:
    cases = {
        ("adalora", (("rank", 4), ("target_rank", 6))): "invalid adalora config: target_rank 6 is above the initial "
        "rank 4; AdaLoRA's budget only shrinks: choose target_rank <= rank",
        ("increlora", (("rank", 4), ("target_rank", 2))): "invalid increlora config: target_rank 2 is below the "
        "initial rank 4; IncreLoRA's budget only grows: choose target_rank >= rank",
        ("nola", (("k", 0),)): "invalid nola config: k: Input should be greater than or equal to 1",
    }
    for (method, knobs), message in cases.items():
        with pytest.raises(RankwiseError) as info:
            rw.adapters.make_config(method, **dict(knobs))
        assert str(info.value) == message and "\n" not in str(info.value)
    model = tiny_llama()
    with pytest.raises(RankwiseError, match=r"^approx_rank 16 is not below min\(m, n\) = 16 for .*k_proj; choose"):
        rw.adapt(model, rw.adapters.LIFT(rank=2, approx_rank=16), targets=["k_proj"])
    with pytest.raises(RankwiseError, match=r"^rank 16 is not below min\(m, n\) = 16"):
        rw.adapt(model, rw.adapters.SALT(rank=2, lora_rank=16), targets=["k_proj"])
    assert not adapter_layers(model)
