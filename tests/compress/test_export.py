"""Compressed folders: rebuild exactly in rankwise and in plain transformers; dense export; determinism."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import rankwise as rw
from rankwise.compress.export import REPORT_NAME
from tests.conftest import tiny_llama


def _compressed(seed: int = 0) -> tuple[torch.nn.Module, rw.compress.CompressionReport]:
    model = tiny_llama(seed=seed)
    calib = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))
    report = rw.compress.apply(model, rw.compress.SVDLLM(ratio=0.4, rank_multiple=2), calib=calib, batch_size=2,
                               progress=False)
    return model, report


def _logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return model(x).logits


def test_rankwise_load_rebuilds_the_compressed_model_exactly(tmp_path: Path) -> None:
    from rankwise.data.windows import _default_tokenizer

    model, report = _compressed()
    folder = rw.compress.save_compressed(model, _default_tokenizer(), tmp_path / "c", report)
    loaded, tokenizer = rw.load_model(str(folder))
    assert tokenizer is not None
    assert torch.equal(_logits(model), _logits(loaded))
    manifest = json.loads((folder / "rankwise.json").read_text())
    assert manifest["rank_map"] == report.rank_map and manifest["kind"] == "lowrank"
    assert "ratio_semantics" in json.loads((folder / REPORT_NAME).read_text())


def test_plain_transformers_loads_it_with_remote_code(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, report = _compressed()
    folder = rw.compress.save_compressed(model, None, tmp_path / "c", report)
    loaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert type(loaded).__name__ == "RankwiseLowRankForCausalLM"
    assert torch.equal(_logits(model), _logits(loaded))


def test_dense_export_is_an_ordinary_folder_with_the_same_function(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, report = _compressed()
    folder = rw.compress.save_compressed(model, None, tmp_path / "d", report, dense=True)
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" not in config and "rankwise_rank_map" not in config
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=1e-5, rtol=1e-5)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != REPORT_NAME}


def test_same_inputs_give_byte_identical_folders(tmp_path: Path) -> None:
    a = rw.compress.save_compressed(*_compressed()[:1], None, tmp_path / "a", _compressed()[1])
    m, r = _compressed()
    b = rw.compress.save_compressed(m, None, tmp_path / "b", r)
    assert _hashes(a) == _hashes(b)


def test_existing_output_folder_is_refused_and_untouched(tmp_path: Path) -> None:
    model, report = _compressed()
    target = tmp_path / "c"
    target.mkdir()
    with pytest.raises(rw.RankwiseError, match="already exists"):
        rw.compress.save_compressed(model, None, target, report)
    assert list(target.iterdir()) == []


def test_failure_while_writing_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, report = _compressed()

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("rankwise.compress.export.write_remote_code", broken)
    with pytest.raises(KeyboardInterrupt):
        rw.compress.save_compressed(model, None, tmp_path / "c", report)
    assert list(tmp_path.iterdir()) == []
