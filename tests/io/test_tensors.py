import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rankwise.errors import RankwiseError
from rankwise.io.atomic import atomic_folder
from rankwise.io.shards import TensorSpec, plan_shards, save_sharded
from rankwise.io.tensors import TensorFolder, check_safetensors_folder
from tests.conftest import tiny_llama


def _mixed() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layers.10.w": torch.randn(3, 4, generator=g),
        "layers.2.w": torch.randn(5, generator=g).to(torch.bfloat16),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "ids": torch.arange(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "cube": torch.randn(2, 3, 4, generator=g).to(torch.float16),
        "bytes": torch.arange(5, dtype=torch.uint8),
    }


def test_reader_gives_every_rank_and_dtype_exactly(tmp_path: Path) -> None:
    tensors = _mixed()
    (tmp_path / "config.json").write_text("{}")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    folder = TensorFolder(tmp_path)
    assert set(folder.names()) == set(tensors)
    assert folder.names().index("layers.2.w") < folder.names().index("layers.10.w")
    for name, t in tensors.items():
        got = folder.get(name)
        assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t)
        assert folder.entries[name].shape == tuple(t.shape)


def test_sharded_writer_round_trips_through_safetensors_and_is_deterministic(tmp_path: Path) -> None:
    tensors = _mixed()
    for run in ("a", "b"):
        with atomic_folder(tmp_path / run) as tmp:
            (tmp / "config.json").write_text("{}")
            save_sharded(tensors, tmp, max_shard_bytes=40)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len([f for f in files if f.endswith(".safetensors")]) > 2
    for name in files:  # same tensors, same bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    index = json.loads((tmp_path / "a" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    back: dict[str, torch.Tensor] = {}
    for shard in set(index["weight_map"].values()):
        back.update(load_file(str(tmp_path / "a" / shard)))  # the reference reader accepts every shard
    for name, t in tensors.items():
        assert torch.equal(back[name], t) and back[name].dtype == t.dtype
        assert torch.equal(TensorFolder(tmp_path / "a").get(name), t)


def test_plan_shards_respects_the_limit_and_never_splits_a_tensor() -> None:
    specs = [TensorSpec(f"t{i}", (10,), torch.float32) for i in range(5)] + [TensorSpec("big", (100,), torch.float32)]
    groups = plan_shards(specs, max_shard_bytes=80)
    assert sorted(s.name for g in groups for s in g) == sorted(s.name for s in specs)
    for g in groups:
        assert len(g) == 1 or sum(s.nbytes for s in g) <= 80


def test_transformers_loads_a_sharded_folder(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = tiny_llama(seed=3)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    with atomic_folder(tmp_path / "m") as tmp:
        model.config.save_pretrained(tmp)
        save_sharded(state, tmp, max_shard_bytes=20_000)
    assert len(list((tmp_path / "m").glob("model-*.safetensors"))) > 1
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    x = torch.randint(0, 128, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    from rankwise.io.shards import ShardedWriter

    message = r"tensor x is \[2\] torch.float32, but the plan says \[3\]"
    with pytest.raises(RankwiseError, match=message), atomic_folder(tmp_path / "out") as tmp:
        writer = ShardedWriter(tmp, [TensorSpec("x", (3,), torch.float32)])
        writer.write("x", torch.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_check_folder_refuses_bad_folders_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    with pytest.raises(RankwiseError, match=r"only pickled weights such as pytorch_model.bin; rankwise never "
                                            r"unpickles"):
        check_safetensors_folder(tmp_path)
    save_file({"a": torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    check_safetensors_folder(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(RankwiseError, match=r"is truncated: tensor a ends at byte \d+ but the file has \d+ bytes"):
        check_safetensors_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(RankwiseError, match="is not a safetensors file"):
        check_safetensors_folder(tmp_path)
    with pytest.raises(RankwiseError, match="no such model folder"):
        check_safetensors_folder(tmp_path / "nope")
