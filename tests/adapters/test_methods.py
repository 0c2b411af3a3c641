"""Every registered adapter method through the shared invariants, on a tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rankwise as rw
from rankwise.adapters import adapter_layers, method_names
from rankwise.errors import RankwiseError
from tests.conftest import tiny_llama

METHODS = method_names()
X = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
CALIB = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))


def adapted(method: str, seed: int = 0, **kw: object) -> torch.nn.Module:
    model = tiny_llama(seed)
    return rw.adapt(model, rw.adapters.make_config(method, rank=4, **kw), calibration=CALIB)


def perturb(model: torch.nn.Module, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in rw.adapters.trainable_parameters(model).items():
            # NOLA's coefficients each move a whole random basis: a smaller step gives a similar ΔW.
            scale = 0.02 if name.endswith((".alpha", ".beta")) else 0.2
            p.add_(scale * torch.randn(p.shape, generator=gen))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(X).logits


def test_registry_lists_every_method() -> None:
    assert set(METHODS) == {"lora", "pissa", "milora", "corda", "eva", "svfit", "sorsa", "salt", "kasa", "nola",
                            "lift", "adalora", "increlora"}


@pytest.mark.parametrize("method", METHODS)
def test_output_equals_base_at_init(method: str) -> None:
    ref = logits(tiny_llama())
    model = adapted(method)
    assert adapter_layers(model)
    torch.testing.assert_close(logits(model), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_only_trainable_parameters(method: str) -> None:
    model = adapted(method)
    perturb(model)  # B != 0 so A gets a nonzero gradient too
    trainable = rw.adapters.trainable_parameters(model)
    own = ("lora_A", "lora_B") if rw.adapters.get_method(method).variant is None else (".variant.",)
    assert trainable and all(any(part in n for part in own) for n in trainable)
    model(X).logits.square().mean().backward()
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip(method: str, tmp_path: Path) -> None:
    model = adapted(method)
    perturb(model)
    rw.adapters.save_adapter(model, tmp_path / "a")
    fresh = rw.adapters.load_adapter(tiny_llama(), tmp_path / "a")
    assert torch.equal(logits(fresh), logits(model))
    assert rw.adapters.adapter_config(fresh) == rw.adapters.adapter_config(model)


@pytest.mark.parametrize("method", METHODS)
def test_merge_unmerge(method: str) -> None:
    model = adapted(method)
    perturb(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = logits(model)
    rw.adapters.merge(model)
    torch.testing.assert_close(logits(model), out, atol=1e-5, rtol=0)
    rw.adapters.unmerge(model)
    for n, p in model.named_parameters():
        assert (p - before[n]).abs().max() <= 1e-6, n
    torch.testing.assert_close(logits(model), out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_merge_and_unwrap_gives_a_plain_model_with_the_same_outputs(method: str) -> None:
    model = adapted(method)
    perturb(model)
    out = logits(model)
    rw.adapters.merge_and_unwrap(model)
    assert not adapter_layers(model) and not rw.adapters.trainable_parameters(model)
    torch.testing.assert_close(logits(model), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["lora", "pissa"])
def test_plain_adapter_folders_keep_their_format(method: str, tmp_path: Path) -> None:
    """Folders of the plain s·B·A methods hold exactly what they always held, so older folders still load."""
    from safetensors.torch import load_file

    model = adapted(method)
    rw.adapters.save_adapter(model, tmp_path / "a")
    keys = {k.rsplit(".", 1)[1] for k in load_file(str(tmp_path / "a" / "adapter.safetensors"))}
    assert keys == ({"lora_A", "lora_B", "init_A", "init_B"} if method == "pissa" else {"lora_A", "lora_B"})


@pytest.mark.parametrize("method", METHODS)
def test_peft_export_loads_in_peft_with_equal_logits(method: str, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    model = adapted(method)
    perturb(model)
    # Sparse updates (LIFT) export by truncated SVD: at full rank it is exact.
    rw.adapters.export_peft(model, tmp_path / "peft", rank=32)
    ours = logits(model)
    loaded = peft.PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "peft"))
    torch.testing.assert_close(logits(loaded), ours, atol=1e-5, rtol=0)
    # and back into rankwise
    back = rw.adapters.load_peft(tiny_llama(), tmp_path / "peft")
    torch.testing.assert_close(logits(back), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_bytes(method: str) -> None:
    a, b = adapted(method), adapted(method)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb), na


@pytest.mark.parametrize("method", METHODS)
def test_init_does_not_depend_on_the_thread_count(method: str) -> None:
    """Layers initialise on one worker per core; the bits must not depend on how many cores there are."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = adapted(method).state_dict()
        torch.set_num_threads(2)
        parallel = adapted(method).state_dict()
    finally:
        torch.set_num_threads(previous)
    for name, tensor in serial.items():
        assert torch.equal(tensor, parallel[name]), name


@pytest.mark.parametrize("method", METHODS)
def test_rank_at_or_above_min_dim_is_a_clear_error(method: str) -> None:
    model = tiny_llama()
    with pytest.raises(RankwiseError, match="rank 16 is not below min"):
        rw.adapt(model, rw.adapters.make_config(method, rank=16), targets=["k_proj"], calibration=CALIB)
    assert not adapter_layers(model)


def test_bad_targets_and_unknown_knobs() -> None:
    with pytest.raises(RankwiseError, match=r"did you mean .*q_proj"):
        rw.adapt(tiny_llama(), rw.adapters.LoRA(rank=2), targets=["q_prj"])
    with pytest.raises(RankwiseError, match="invalid pissa config: niterr"):
        rw.adapters.make_config("pissa", niterr=3)
    with pytest.raises(RankwiseError, match="unknown adapter method 'dora'"):
        rw.adapters.make_config("dora")


def test_adapter_for_another_base_is_refused(tmp_path: Path) -> None:
    rw.adapters.save_adapter(adapted("pissa"), tmp_path / "a")
    other = tiny_llama(hidden=48)
    with pytest.raises(RankwiseError, match="another base model"):
        rw.adapters.load_adapter(other, tmp_path / "a")
    assert not adapter_layers(other)


def test_config_yaml_round_trip() -> None:
    import yaml

    for method in METHODS:
        cfg = rw.adapters.make_config(method, rank=8)
        again = rw.adapters.config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
        assert again == cfg


@pytest.mark.parametrize("method", ["pissa", "eva"])
def test_adapt_shows_the_init_progress_layer_by_layer(method: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_llama()
    n = len(rw.modules.select_targets(model, "all-linear"))
    rw.adapt(model, rw.adapters.make_config(method, rank=2), calibration=torch.randint(0, 128, (4, 16)), progress=True)
    err = capsys.readouterr().err
    assert f"{method} init" in err and f"{n}/{n}" in err
    rw.adapt(tiny_llama(), rw.adapters.make_config(method, rank=2), calibration=torch.randint(0, 128, (4, 16)))
    assert f"{method} init" not in capsys.readouterr().err  # progress=False (the default) stays quiet


def test_layer_by_layer_inits_report_every_finished_layer() -> None:
    from rankwise.adapters._common import layer_done

    weights = {f"w{i}": torch.randn(12, 20) for i in range(5)}
    finished: list[int] = []
    token = layer_done.set(lambda: finished.append(1))
    try:
        rw.adapters.get_method("pissa").init(weights, {}, rw.adapters.PiSSA(rank=2))
    finally:
        layer_done.reset(token)
    assert len(finished) == len(weights)
