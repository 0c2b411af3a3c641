"""The init maths of each method against its definition, and PEFT-made adapters imported into rankwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rankwise as rw
from rankwise.adapters import adapter_layers
from rankwise.adapters.eva import allocate_by_variance
from rankwise.linalg import covariance_factors, svd
from rankwise.linalg.split import subtract_lowrank
from tests.conftest import tiny_llama

W = torch.randn(24, 40, generator=torch.Generator().manual_seed(0))


def _init(method: str, **kw: object) -> rw.adapters.AdapterInit:
    cfg = rw.adapters.make_config(method, rank=4, **kw)
    grams = {"w": torch.eye(40, dtype=torch.float64) + 0.1}
    return rw.adapters.get_method(method).init({"w": W}, grams, cfg)["w"]


@pytest.mark.parametrize("alpha", [None, 2.0])
def test_pissa_exact_takes_the_principal_part(alpha: float | None) -> None:
    init = _init("pissa", svd="exact", alpha=alpha)
    s = rw.adapters.PiSSA(rank=4, alpha=alpha).scaling()
    torch.testing.assert_close(s * init.B @ init.A, svd(W, 4).reconstruct(), atol=1e-5, rtol=0)
    assert rw.adapters.PiSSA.changes_base  # adapt freezes W - s·B·A in place of W


def test_pissa_randomized_default_is_close_to_exact() -> None:
    exact, fast = _init("pissa", svd="exact"), _init("pissa")
    err = (fast.B @ fast.A - exact.B @ exact.A).norm() / (exact.B @ exact.A).norm()
    assert err < 0.05


def test_milora_takes_the_minor_part() -> None:
    init = _init("milora")
    full = svd(W)
    torch.testing.assert_close(init.B @ init.A, full.tail(full.rank - 4).reconstruct(), atol=1e-5, rtol=0)
    top = torch.linalg.svdvals(subtract_lowrank(W, init.B, init.A, 1.0))[: full.rank - 4]  # the residual adapt freezes
    torch.testing.assert_close(top, full.S[: full.rank - 4], atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["ipm", "kpm"])
def test_corda_splits_the_covariance_svd(mode: str) -> None:
    init = _init("corda", mode=mode)
    full = covariance_factors(W, torch.eye(40, dtype=torch.float64) + 0.1)
    part = full.truncate(4) if mode == "ipm" else full.tail(full.rank - 4)
    torch.testing.assert_close(init.B @ init.A, part.reconstruct(), atol=1e-4, rtol=0)
    assert rw.adapters.CorDA.changes_base


def test_eva_allocates_the_budget_by_explained_variance() -> None:
    ratios = {"a": torch.tensor([0.5, 0.3, 0.2]), "b": torch.tensor([0.9, 0.05, 0.05])}
    assert allocate_by_variance(ratios, 3, {"a": 3, "b": 3}) == {"a": 2, "b": 1}
    assert allocate_by_variance(ratios, 4, {"a": 3, "b": 1}) == {"a": 3, "b": 1}
    model = rw.adapt(tiny_llama(), rw.adapters.EVA(rank=4), calibration=torch.randint(0, 128, (4, 16)))
    ranks = [layer.rank for layer in adapter_layers(model).values()]
    assert sum(ranks) <= 4 * 14 and max(ranks) <= 8
    init = _init("eva")
    assert torch.equal(init.B, torch.zeros_like(init.B))
    torch.testing.assert_close(init.A @ init.A.T, torch.eye(init.A.shape[0]), atol=1e-5, rtol=0)


def test_lora_rslora_scaling() -> None:
    assert rw.adapters.LoRA(rank=16, alpha=8, rslora=True).scaling() == 2.0
    assert rw.adapters.LoRA(rank=16, alpha=8).scaling() == 0.5


def test_peft_made_adapter_with_patterns_imports(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=True,
                          rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 3}, init_lora_weights=False)
    torch.manual_seed(0)
    pm = peft.get_peft_model(tiny_llama(), cfg)
    pm.save_pretrained(tmp_path / "p")
    x = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        ref = pm(x).logits
        ours = rw.adapters.load_peft(tiny_llama(), tmp_path / "p")(x).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_peft_adapter_for_another_base_is_refused(tmp_path: Path) -> None:
    model = rw.adapt(tiny_llama(), rw.adapters.LoRA(rank=2))
    rw.adapters.export_peft(model, tmp_path / "p")
    with pytest.raises(rw.RankwiseError, match="another base model"):
        rw.adapters.load_peft(tiny_llama(hidden=48), tmp_path / "p")
