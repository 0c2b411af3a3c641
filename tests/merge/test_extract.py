"""extract-lora: full rank reconstructs the delta, rank r meets the Eckart–Young error, auto respects its budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rankwise.cli.main import main
from rankwise.errors import RankwiseError
from rankwise.io.tensors import TensorFolder
from rankwise.merge.extract import extract_lora


def _deltas(folders: dict[str, Path]) -> dict[str, torch.Tensor]:
    ft, base = TensorFolder(folders["a"]), TensorFolder(folders["base"])
    return {n: ft.get(n) - base.get(n) for n in base.names() if ".layers." in n and base.get(n).ndim == 2}


def _products(folder: Path) -> dict[str, torch.Tensor]:
    t = load_file(str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    out = {}
    for key, A in t.items():
        if key.endswith("lora_A.weight"):
            layer = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            B = t[key.replace("lora_A", "lora_B")]
            r = A.shape[0]
            alpha = config["alpha_pattern"].get(layer, config["lora_alpha"])
            assert config["rank_pattern"].get(layer, config["r"]) == r
            out[f"{layer}.weight"] = (alpha / r) * B @ A
    return out


def test_full_rank_reconstructs_every_delta(folders: dict[str, Path], tmp_path: Path) -> None:
    report = extract_lora(str(folders["a"]), str(folders["base"]), tmp_path / "lora", rank=64, progress=False)
    deltas = _deltas(folders)
    products = _products(tmp_path / "lora")
    assert set(products) == set(deltas)
    for name, d in deltas.items():
        torch.testing.assert_close(products[name], d, rtol=0, atol=1e-5)
    assert all(m.relative_error < 1e-3 for m in report.matrices)
    assert "model.embed_tokens.weight" in report.dropped  # changed, but not a LoRA target


def test_rank_r_meets_the_eckart_young_error(folders: dict[str, Path], tmp_path: Path) -> None:
    report = extract_lora(str(folders["a"]), str(folders["base"]), tmp_path / "lora", rank=5, progress=False)
    products = _products(tmp_path / "lora")
    for m in report.matrices:
        d = _deltas(folders)[m.name].double()
        s = torch.linalg.svdvals(d)
        optimal = float(s[5:].square().sum().sqrt() / s.square().sum().sqrt())
        actual = float((d - products[m.name].double()).norm() / d.norm())
        assert m.rank == 5 and abs(actual - optimal) < 1e-5 and abs(m.relative_error - optimal) < 1e-5


def test_auto_ranks_fit_the_budget_and_beat_uniform(folders: dict[str, Path], tmp_path: Path) -> None:
    # A fine-tune whose deltas differ in size: the budget should go where the error is.
    base = TensorFolder(folders["base"])
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, n in enumerate(base.names()):
        W = base.get(n)
        if ".layers." in n and W.ndim == 2:
            W = W + (0.2 if i % 3 == 0 else 0.01) * torch.randn(W.shape, generator=g)
        tensors[n] = W
    ft = tmp_path / "ft"
    ft.mkdir()
    save_file(tensors, str(ft / "model.safetensors"))
    (ft / "config.json").write_text((folders["base"] / "config.json").read_text())
    fixed = extract_lora(str(ft), str(folders["base"]), tmp_path / "fixed", rank=8, progress=False)
    auto = extract_lora(str(ft), str(folders["base"]), tmp_path / "auto", rank="auto", budget_rank=8,
                        rank_multiple=2, progress=False)
    assert auto.params <= fixed.params
    assert len({m.rank for m in auto.matrices}) > 1
    squared = {m.name: float(torch.linalg.norm(tensors[m.name] - base.get(m.name))) ** 2 for m in fixed.matrices}
    assert auto.total_relative_error(squared) < fixed.total_relative_error(squared)
    config = json.loads((tmp_path / "auto" / "adapter_config.json").read_text())
    assert config["rank_pattern"]


def test_peft_loads_the_extracted_adapter(folders: dict[str, Path], tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    extract_lora(str(folders["a"]), str(folders["base"]), tmp_path / "lora", rank=64, progress=False)
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folders["base"]), tmp_path / "lora")
    merged = model.merge_and_unload()
    ft = TensorFolder(folders["a"])
    state = merged.state_dict()
    for name in _deltas(folders):
        torch.testing.assert_close(state[name], ft.get(name), rtol=0, atol=1e-5)


def test_cli_prints_errors_and_refuses_bad_input(folders: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lora"
    assert main(["extract-lora", str(folders["a"]), "--base", str(folders["base"]), "--rank", "4",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "model.layers.0.self_attn.q_proj.weight" in text and "relative error" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["extract-lora", str(folders["a"]), "--base", str(folders["base"]), "--rank", "0", "--out",
              str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "must be a positive integer or 'auto', got 0" in capsys.readouterr().err
    with pytest.raises(RankwiseError, match=r"does not differ from .* in any targeted matrix"):
        extract_lora(str(folders["base"]), str(folders["base"]), tmp_path / "same", rank=4, progress=False)
    assert not (tmp_path / "same").exists()
