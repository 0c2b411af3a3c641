import json
import struct
from pathlib import Path

import pytest
import torch

from rankwise.analysis.source import FolderSource, ModelSource, iter_matrices, matrix_kind, open_source
from rankwise.errors import RankwiseError
from tests.conftest import tiny_llama


def test_matrix_kind() -> None:
    assert matrix_kind("model.layers.3.self_attn.q_proj.weight") == (3, "self_attn.q_proj")
    assert matrix_kind("model.layers.12.mlp.down_proj.weight") == (12, "mlp.down_proj")
    assert matrix_kind("model.embed_tokens.weight") == (None, "embed_tokens")
    assert matrix_kind("lm_head.weight") == (None, "lm_head")


def test_folder_streams_the_same_matrices_as_the_model(tiny_folder: Path) -> None:
    model = tiny_llama()
    from_model = dict(iter_matrices(ModelSource(model)))
    from_folder = dict(iter_matrices(FolderSource(tiny_folder)))
    assert set(from_model) == set(from_folder) and len(from_model) == 1 + 2 * 7 + 1
    for name, W in from_model.items():
        torch.testing.assert_close(from_folder[name], W, rtol=0, atol=0)
    names = [n for n, _ in FolderSource(tiny_folder).entries()]
    assert names.index("model.layers.1.mlp.up_proj.weight") < names.index("model.layers.1.self_attn.q_proj.weight")


def test_include_filters_and_tied_weights_count_once() -> None:
    model = tiny_llama()
    model.lm_head.weight = model.model.embed_tokens.weight  # tie them
    names = [n for n, _ in ModelSource(model).entries()]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    assert [n for n, _ in ModelSource(model, include=r"layers\.0\..*k_proj").entries()] == [
        "model.layers.0.self_attn.k_proj.weight"]
    with pytest.raises(RankwiseError, match="no 2-D weight matrices matching 'nope'"):
        ModelSource(model, include="nope")


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_truncated_file_is_one_clear_error(tiny_folder: Path) -> None:
    weights = tiny_folder / "model.safetensors"
    _truncate(weights, weights.stat().st_size - 100)
    with pytest.raises(RankwiseError, match=r"is truncated: tensor .* ends at byte"):
        FolderSource(tiny_folder)
    _truncate(weights, 5)
    with pytest.raises(RankwiseError, match="not a safetensors file"):
        FolderSource(tiny_folder)


def test_corrupt_header_is_one_clear_error(tiny_folder: Path) -> None:
    weights = tiny_folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:12] = b"\xff\xfe{{"
    weights.write_bytes(bytes(data))
    with pytest.raises(RankwiseError, match="corrupt safetensors header"):
        FolderSource(tiny_folder)
    weights.write_bytes(struct.pack("<Q", 10**12) + bytes(data[8:]))
    with pytest.raises(RankwiseError, match="corrupt safetensors header"):
        FolderSource(tiny_folder)


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(RankwiseError, match="not a model folder"):
        FolderSource(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RankwiseError, match=r"holds no \.safetensors weights"):
        FolderSource(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(RankwiseError, match="never unpickles"):
        FolderSource(tmp_path)
    with pytest.raises(RankwiseError, match="not a model folder"):
        open_source(str(tmp_path.parent))


def test_nan_matrix_is_one_clear_error(tiny_folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_folder / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(tensors, str(tiny_folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(RankwiseError, match=r"model.layers.1.mlp.up_proj.weight contains NaN"):
        list(iter_matrices(FolderSource(tiny_folder)))


def test_sharded_folder_with_missing_shard(tiny_folder: Path) -> None:
    index = {"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
    (tiny_folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(RankwiseError, match="missing shard files"):
        FolderSource(tiny_folder)
