"""The merge driver end to end on tiny model folders: results, parameter forms, inputs, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

import rankwise as rw
from rankwise.io.tensors import TensorFolder
from tests.merge.conftest import save_tiny


def _config(folders: dict[str, Path], method: str, **params: Any) -> dict[str, Any]:
    return {"merge_method": method, "base_model": str(folders["base"]),
            "models": [{"model": str(folders["base"])},
                       {"model": str(folders["a"]), "parameters": {"weight": 0.7, **params}},
                       {"model": str(folders["b"]), "parameters": {"weight": 0.3, **params}}]}


def _read(folder: Path) -> dict[str, torch.Tensor]:
    f = TensorFolder(folder)
    return {n: f.get(n) for n in f.names()}


def test_ties_from_a_yaml_file_equals_the_method_on_each_tensor(folders: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = tmp_path / "ties.yaml"
    cfg.write_text(yaml.safe_dump(_config(folders, "ties", density=0.5)))
    out = rw.merge.run(cfg, tmp_path / "out", progress=False).folder
    merged, base, a, b = _read(out), _read(folders["base"]), _read(folders["a"]), _read(folders["b"])
    assert set(merged) == set(base)
    for name, x in merged.items():
        want = rw.merge.get("ties")(base[name], [a[name], b[name]], weight=[0.7, 0.3], density=0.5)
        assert torch.equal(x, want), name
    assert (out / "model.safetensors.index.json").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 32
    AutoModelForCausalLM.from_pretrained(out)  # loads as an ordinary HF folder


def test_same_config_and_seed_give_byte_identical_folders(folders: dict[str, Path], tmp_path: Path) -> None:
    cfg = {**_config(folders, "dare_ties", density=0.5), "seed": 3, "out_shard_size": 20_000}
    one = rw.merge.run(cfg, tmp_path / "one", progress=False).folder
    two = rw.merge.run(cfg, tmp_path / "two", progress=False).folder
    names = sorted(p.name for p in one.iterdir())
    assert len([n for n in names if n.endswith(".safetensors")]) > 1
    assert names == sorted(p.name for p in two.iterdir())
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    three = rw.merge.run({**cfg, "seed": 4}, tmp_path / "three", progress=False).folder
    assert _read(three)["model.layers.0.mlp.up_proj.weight"].ne(_read(one)["model.layers.0.mlp.up_proj.weight"]).any()


def test_gradients_and_filters_resolve_per_tensor(folders: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "slerp", "base_model": str(folders["base"]),
           "models": [{"model": str(folders["base"])}, {"model": str(folders["a"])}],
           "parameters": {"t": [{"filter": "self_attn", "value": [0.0, 1.0]}, {"value": 0.5}]}}
    plan = rw.merge.plan(cfg)
    t = {task.name: task.shared["t"] for task in plan.tasks}
    assert t["model.layers.0.self_attn.q_proj.weight"] == 0.0  # layer 0 of 2: t = 0
    assert t["model.layers.1.self_attn.q_proj.weight"] == 1.0  # layer 1 of 2: t = 1
    assert t["model.layers.1.mlp.up_proj.weight"] == 0.5 and t["model.embed_tokens.weight"] == 0.5
    out = _read(rw.merge.run(cfg, tmp_path / "out", progress=False).folder)
    assert torch.equal(out["model.layers.0.self_attn.q_proj.weight"],
                       _read(folders["base"])["model.layers.0.self_attn.q_proj.weight"])
    torch.testing.assert_close(out["model.layers.1.self_attn.q_proj.weight"],
                               _read(folders["a"])["model.layers.1.self_attn.q_proj.weight"], rtol=0, atol=1e-6)


def test_linear_with_dtype_writes_that_dtype(folders: dict[str, Path], tmp_path: Path) -> None:
    cfg = {"merge_method": "linear", "dtype": "bfloat16",
           "models": [{"model": str(folders["a"]), "parameters": {"weight": 1.0}},
                      {"model": str(folders["b"]), "parameters": {"weight": 3.0}}]}
    out = rw.merge.run(cfg, tmp_path / "out", progress=False).folder
    merged, a, b = _read(out), _read(folders["a"]), _read(folders["b"])
    name = "model.layers.1.self_attn.o_proj.weight"
    assert merged[name].dtype == torch.bfloat16
    want = (a[name].bfloat16().float() + 3 * b[name].bfloat16().float()) / 4
    torch.testing.assert_close(merged[name].float(), want, rtol=1e-2, atol=1e-3)
    assert json.loads((out / "config.json").read_text()).get("dtype") in (None, "bfloat16")


def _rankwise_adapter(folder: Path, base: dict[str, torch.Tensor], layer: str, pissa: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    m, n = base[f"{layer}.weight"].shape
    t = {f"{layer}.lora_A": torch.randn(4, n, generator=g), f"{layer}.lora_B": torch.randn(m, 4, generator=g)}
    if pissa:
        t[f"{layer}.init_A"], t[f"{layer}.init_B"] = torch.randn(4, n, generator=g), torch.randn(m, 4, generator=g)
    folder.mkdir()
    save_file(t, str(folder / "adapter.safetensors"))
    meta = {"adapter": {"method": "pissa" if pissa else "lora", "rank": 4},
            "layers": {layer: {"shape": [m, n], "rank": 4, "scaling": 0.5}}}
    (folder / "adapter.yaml").write_text(yaml.safe_dump(meta))
    return t


@pytest.mark.parametrize("pissa", [False, True])
def test_adapters_are_applied_on_their_base_tensor_by_tensor(folders: dict[str, Path], tmp_path: Path,
                                                             pissa: bool) -> None:
    base = _read(folders["base"])
    layer = "model.layers.1.mlp.down_proj"
    t = _rankwise_adapter(tmp_path / "adapter", base, layer, pissa)
    cfg = {"merge_method": "task_arithmetic", "base_model": str(folders["base"]),
           "models": [{"model": str(tmp_path / "adapter"), "parameters": {"weight": 1.0}}]}
    merged = _read(rw.merge.run(cfg, tmp_path / "out", progress=False).folder)
    want = base[f"{layer}.weight"] + 0.5 * t[f"{layer}.lora_B"] @ t[f"{layer}.lora_A"]
    if pissa:
        want = want - 0.5 * t[f"{layer}.init_B"] @ t[f"{layer}.init_A"]
    torch.testing.assert_close(merged[f"{layer}.weight"], want, rtol=0, atol=1e-5)
    assert torch.equal(merged["model.layers.0.mlp.down_proj.weight"], base["model.layers.0.mlp.down_proj.weight"])


def test_peft_adapter_in_mergekit_base_plus_adapter_form(folders: dict[str, Path], tmp_path: Path) -> None:
    base = _read(folders["base"])
    g = torch.Generator().manual_seed(1)
    peft = tmp_path / "peft"
    peft.mkdir()
    A, B = torch.randn(2, 32, generator=g), torch.randn(32, 2, generator=g)
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": A,
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": B},
              str(peft / "adapter_model.safetensors"))
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 8}))
    cfg = {"merge_method": "linear", "models": [{"model": f"{folders['base']}+{peft}", "parameters": {"weight": 1.0}}]}
    merged = _read(rw.merge.run(cfg, tmp_path / "out", progress=False).folder)
    torch.testing.assert_close(merged["model.layers.0.self_attn.q_proj.weight"],
                               base["model.layers.0.self_attn.q_proj.weight"] + 4.0 * B @ A, rtol=0, atol=1e-5)


def test_dry_run_reads_no_tensor_data(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import rankwise.io.tensors as tensors

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tensor data was read")

    monkeypatch.setattr(tensors, "read_tensor", refuse)
    plan = rw.merge.plan(_config(folders, "ties", density=0.5))
    text = plan.describe()
    assert "merge method: ties" in text and "estimated peak tensor memory" in text
    assert "model.layers.0.self_attn.q_proj.weight [32, 32] float32 ties" in text


def test_models_of_other_sizes_work_with_their_own_base(tmp_path: Path) -> None:
    base = save_tiny(tmp_path / "base3", None, layers=3)
    ft = save_tiny(tmp_path / "ft3", 9, layers=3)
    cfg = {"merge_method": "task_arithmetic", "base_model": str(base),
           "models": [{"model": str(ft), "parameters": {"weight": [0.0, 1.0]}}]}
    plan = rw.merge.plan(cfg)
    weights = {t.name: t.models[0]["weight"] for t in plan.tasks}
    assert weights["model.layers.1.mlp.up_proj.weight"] == 0.5  # halfway along the gradient


def test_regmean_run_uses_each_models_own_input_grams(folders: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    import rankwise.data
    import rankwise.io.loading

    tokens = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(rankwise.data, "windows", lambda *a, **k: tokens)
    monkeypatch.setattr(rankwise.io.loading, "load_model",
                        lambda folder: (AutoModelForCausalLM.from_pretrained(folder).eval(), None))
    cfg = {"merge_method": "regmean", "parameters": {"alpha": 1.0},
           "models": [{"model": str(folders["a"])}, {"model": str(folders["b"])}]}
    merged = _read(rw.merge.run(cfg, tmp_path / "out", progress=False).folder)
    layer = "model.layers.1.mlp.down_proj"
    inputs, weights = [], []
    for key in ("a", "b"):  # the layer's inputs captured by a plain forward hook
        model = AutoModelForCausalLM.from_pretrained(folders[key]).eval()
        seen: list[torch.Tensor] = []
        hook = lambda m, x, y, seen=seen: seen.append(x[0].reshape(-1, 64))  # noqa: E731
        handle = model.get_submodule(layer).register_forward_hook(hook)
        with torch.no_grad():
            model(tokens)
        handle.remove()
        inputs.append(torch.cat(seen).double())
        weights.append(model.get_submodule(layer).weight.detach().double())
    X = torch.cat(inputs)
    Y = torch.cat([Xi @ Wi.T for Xi, Wi in zip(inputs, weights, strict=True)])
    want = torch.linalg.lstsq(X, Y).solution.T
    torch.testing.assert_close(merged[f"{layer}.weight"].double(), want, rtol=0, atol=1e-4)
    a, b = _read(folders["a"]), _read(folders["b"])
    torch.testing.assert_close(merged["model.norm.weight"], (a["model.norm.weight"] + b["model.norm.weight"]) / 2)
