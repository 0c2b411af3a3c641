"""output: adapter — merging adapters of one base in factored form, against dense references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import rankwise as rw
from rankwise.errors import RankwiseError
from rankwise.io.tensors import TensorFolder

LAYERS = ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj")


def _adapter(folder: Path, base: TensorFolder, seed: int, pissa: bool = False,
             rank: int = 3) -> dict[str, torch.Tensor]:
    """A rankwise adapter folder; returns each layer's dense update (what it adds to the base weight)."""
    g = torch.Generator().manual_seed(seed)
    tensors, layers, updates = {}, {}, {}
    for layer in LAYERS:
        m, n = base.entries[f"{layer}.weight"].shape
        A, B = torch.randn(rank, n, generator=g), torch.randn(m, rank, generator=g)
        tensors[f"{layer}.lora_A"], tensors[f"{layer}.lora_B"] = A, B
        updates[f"{layer}.weight"] = 0.5 * B @ A
        if pissa:
            A0, B0 = torch.randn(rank, n, generator=g), torch.randn(m, rank, generator=g)
            tensors[f"{layer}.init_A"], tensors[f"{layer}.init_B"] = A0, B0
            updates[f"{layer}.weight"] -= 0.5 * B0 @ A0
        layers[layer] = {"shape": [m, n], "rank": rank, "scaling": 0.5}
    folder.mkdir()
    save_file(tensors, str(folder / "adapter.safetensors"))
    (folder / "adapter.yaml").write_text(yaml.safe_dump({"adapter": {"method": "lora", "rank": rank},
                                                         "layers": layers}))
    return updates


def _updates(folder: Path) -> dict[str, torch.Tensor]:
    t = load_file(str(folder / "adapter.safetensors"))
    meta = yaml.safe_load((folder / "adapter.yaml").read_text())
    return {f"{layer}.weight": info["scaling"] * t[f"{layer}.lora_B"] @ t[f"{layer}.lora_A"]
            for layer, info in meta["layers"].items()}


@pytest.fixture
def adapters(folders: dict[str, Path], tmp_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    base = TensorFolder(folders["base"])
    return _adapter(tmp_path / "ad1", base, 1), _adapter(tmp_path / "ad2", base, 2, pissa=True)


def _config(folders: dict[str, Path], tmp_path: Path, method: str, **params: Any) -> dict[str, Any]:
    return {"merge_method": method, "base_model": str(folders["base"]), "output": "adapter",
            "models": [{"model": str(tmp_path / "ad1"), "parameters": {"weight": 0.6, **params}},
                       {"model": str(tmp_path / "ad2"), "parameters": {"weight": 0.4, **params}}]}


@pytest.mark.parametrize("method", ["linear", "cat"])
def test_linear_and_cat_are_exact(folders: dict[str, Path], tmp_path: Path, adapters: Any, method: str) -> None:
    u1, u2 = adapters
    out = rw.merge.run(_config(folders, tmp_path, method), tmp_path / "out", progress=False).folder
    got = _updates(out)
    for name in u1:
        want = 0.6 * u1[name] + 0.4 * u2[name]  # weights sum to 1: linear and cat agree here
        torch.testing.assert_close(got[name], want, rtol=0, atol=1e-4)
    meta = yaml.safe_load((out / "adapter.yaml").read_text())
    assert meta["layers"][LAYERS[0]]["rank"] == 3 + 6  # concatenated: r + 2r (the PiSSA-like adapter)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == str(folders["base"])


def test_ties_in_the_shared_basis_matches_dense_knots(folders: dict[str, Path], tmp_path: Path,
                                                      adapters: Any) -> None:
    u1, u2 = adapters
    out = rw.merge.run(_config(folders, tmp_path, "ties", density=0.5), tmp_path / "out", progress=False).folder
    got = _updates(out)
    base = TensorFolder(folders["base"])
    for name in u1:
        W = base.get(name)
        want = rw.merge.get("knots")(W, [W + u1[name], W + u2[name]], weight=[0.6, 0.4], density=0.5) - W
        torch.testing.assert_close(got[name], want, rtol=0, atol=1e-4)
    # Full density and one adapter: the shared basis is lossless.
    one = {**_config(folders, tmp_path, "knots"), "models": [{"model": str(tmp_path / "ad2"),
                                                                "parameters": {"weight": 1.0}}]}
    exact = _updates(rw.merge.run(one, tmp_path / "one", progress=False).folder)
    for name in u2:
        torch.testing.assert_close(exact[name], u2[name], rtol=0, atol=1e-4)


def test_tsv_from_factors_matches_dense_tsv_at_the_adapters_rank(folders: dict[str, Path], tmp_path: Path,
                                                                  adapters: Any) -> None:
    u1, _ = adapters
    base = TensorFolder(folders["base"])
    u3 = _adapter(tmp_path / "ad3", base, 3)
    cfg = _config(folders, tmp_path, "tsv")
    cfg["models"][1]["model"] = str(tmp_path / "ad3")
    got = _updates(rw.merge.run(cfg, tmp_path / "out", progress=False).folder)
    name = f"{LAYERS[0]}.weight"  # 32 x 32, rank 3 each: dense TSV keeping 3 of 32 directions per task
    W = base.get(name)
    want = rw.merge.get("tsv")(W, [W + u1[name], W + u3[name]], weight=[0.6, 0.4], rank_fraction=3 / 32) - W
    torch.testing.assert_close(got[name], want, rtol=0, atol=1e-4)


def test_merged_adapter_loads_back_onto_the_base(folders: dict[str, Path], tmp_path: Path, adapters: Any) -> None:
    from transformers import AutoModelForCausalLM

    u1, u2 = adapters
    out = rw.merge.run(_config(folders, tmp_path, "linear"), tmp_path / "out", progress=False).folder
    model = rw.adapters.load_adapter(AutoModelForCausalLM.from_pretrained(folders["base"]), out)
    rw.adapters.export_peft(model, tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["r"] == 9
    rw.adapters.merge_and_unwrap(model)
    name = f"{LAYERS[1]}.weight"
    torch.testing.assert_close(model.state_dict()[name], TensorFolder(folders["base"]).get(name)
                               + 0.6 * u1[name] + 0.4 * u2[name], rtol=0, atol=1e-4)


def test_adapter_output_refuses_full_models(folders: dict[str, Path], tmp_path: Path, adapters: Any) -> None:
    cfg = _config(folders, tmp_path, "linear")
    cfg["models"].append({"model": str(folders["a"]), "parameters": {"weight": 1.0}})
    with pytest.raises(RankwiseError, match="output: adapter needs every model to be an adapter"):
        rw.merge.run(cfg, tmp_path / "out", progress=False)
    with pytest.raises(RankwiseError, match=r"output: adapter supports the merge methods .*, not 'slerp'"):
        rw.merge.run({**cfg, "merge_method": "slerp"}, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
