"""Good and broken inputs for the bad-input suites, built in code: tiny models, run folders, data files.

`build_inputs(root)` fills ``root`` and returns the paths by name (the placeholders of the tables in
`test_bad_inputs.py`); `tree_digest` fingerprints a folder so a test can prove nothing in it changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import yaml

from tests.conftest import tiny_llama


def tree_digest(root: Path) -> str:
    """A hash of every path, file mode and file byte under ``root``."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = Path(folder) / name
            digest.update(f"{path.relative_to(root)}|{path.lstat().st_mode:o}\n".encode())
            if path.is_file() and not path.is_symlink():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _model_copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop))
    return dst


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _models(root: Path, tiny: Path) -> dict[str, Path]:
    from rankwise.io.loading import BUNDLED_MODELS

    paths: dict[str, Path] = {"tiny": tiny}
    paths["empty_dir"] = root / "empty-dir"
    paths["empty_dir"].mkdir()
    paths["pickle"] = root / "pickle-only"
    paths["pickle"].mkdir()
    shutil.copy(tiny / "config.json", paths["pickle"] / "config.json")
    (paths["pickle"] / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a pickled state dict, never to be read")
    paths["no_weights"] = _model_copy(tiny, root / "no-weights", drop=("*.safetensors",))
    paths["truncated"] = _model_copy(tiny, root / "truncated")
    _truncate(paths["truncated"] / "model.safetensors")
    paths["garbage"] = _model_copy(tiny, root / "garbage-header")
    (paths["garbage"] / "model.safetensors").write_bytes(b"\xff" * 64 + b"junk")
    paths["bad_json_header"] = _model_copy(tiny, root / "bad-json-header")
    (paths["bad_json_header"] / "model.safetensors").write_bytes((10).to_bytes(8, "little") + b"{not json!" + b"0" * 32)
    paths["bad_config"] = _model_copy(tiny, root / "bad-config")
    (paths["bad_config"] / "config.json").write_text("{not json")
    paths["no_tokenizer"] = _model_copy(tiny, root / "no-tokenizer", drop=("tokenizer*", "special_tokens*"))
    paths["bad_index"] = _model_copy(tiny, root / "bad-index")
    (paths["bad_index"] / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    paths["text_file"] = root / "notes.txt"
    paths["text_file"].write_text("A plain text file.\n\nIt is not a model.\n")
    paths["fake_gguf"] = root / "fake.gguf"
    paths["fake_gguf"].write_bytes(b"this is not a gguf file at all\n" * 10)
    bundled = BUNDLED_MODELS["smollm2-135m"]
    real = bundled.package.file(bundled.gguf_file)
    with open(real, "rb") as fh:
        paths["truncated_gguf"] = root / "truncated.gguf"
        paths["truncated_gguf"].write_bytes(fh.read(256 * 1024))
    paths["a_file"] = root / "a-file"
    paths["a_file"].write_text("a file where a folder is expected\n")
    paths["existing"] = root / "existing-out"
    paths["existing"].mkdir()
    (paths["existing"] / "keep.txt").write_text("an earlier result\n")
    paths["previous_40"] = root / "previous-40"  # as an earlier `compress --ratio 0.4 --out previous-40` left it
    paths["previous_40"].mkdir()
    paths["other_base"] = root / "other-base"
    return paths


def _data(root: Path) -> dict[str, Path]:
    data = root / "data"
    data.mkdir()
    paths = {"empty_txt": data / "empty.txt", "blank_txt": data / "blank.txt", "no_text_jsonl": data / "no-text.jsonl",
             "bad_jsonl": data / "bad.jsonl", "short_txt": data / "short.txt", "binary_txt": data / "binary.txt",
             "data_dir": data}
    paths["empty_txt"].write_text("")
    paths["blank_txt"].write_text("\n\n   \n")
    paths["no_text_jsonl"].write_text('{"content": "no text field here"}\n')
    paths["bad_jsonl"].write_text('{"text": "ok"}\n{broken\n')
    paths["short_txt"].write_text("Hi.\n")
    paths["binary_txt"].write_bytes(b"\xff\xfe\x00\x01" * 50)
    return paths


def _runs(root: Path, tiny: Path) -> dict[str, Path]:
    import rankwise as rw
    from rankwise.io import save_model

    model, _ = rw.load_model(tiny)
    rw.adapt(model, rw.adapters.LoRA(rank=2), targets=["q_proj", "v_proj"])
    run = root / "run"
    rw.adapters.save_adapter(model, run)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": str(tiny)}))
    paths = {"run": run}
    paths["run_truncated"] = _model_copy(run, root / "run-truncated")
    _truncate(paths["run_truncated"] / "adapter.safetensors")
    paths["run_no_config"] = _model_copy(run, root / "run-no-config", drop=("config.yaml",))
    paths["run_bad_yaml"] = _model_copy(run, root / "run-bad-yaml")
    (paths["run_bad_yaml"] / "config.yaml").write_text("model: [unclosed\n")
    paths["run_bad_meta"] = _model_copy(run, root / "run-bad-meta")
    (paths["run_bad_meta"] / "adapter.yaml").write_text("adapter: {method: [\n")
    paths["peft"] = root / "peft"
    rw.adapters.export_peft(model, paths["peft"])
    paths["peft_truncated"] = _model_copy(paths["peft"], root / "peft-truncated")
    _truncate(paths["peft_truncated"] / "adapter_model.safetensors")
    paths["other_base"] = root / "other-base"
    save_model(tiny_llama(seed=1, vocab=49152, hidden=16), None, paths["other_base"])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, paths["other_base"] / name)
    return paths


def _merges(root: Path, tiny: Path, other_base: Path) -> dict[str, Path]:
    """A "fine-tune" of the tiny model and merge configs that are bad in one way each."""
    from rankwise.io import save_model

    finetuned = root / "finetuned"
    save_model(tiny_llama(seed=2, vocab=49152), None, finetuned)
    paths = {"finetuned": finetuned}

    def config(name: str, method: str = "ties", model: Path = finetuned, **parameters: object) -> None:
        body = {"merge_method": method, "base_model": str(tiny),
                "models": [{"model": str(model), "parameters": {"weight": 0.5, "density": 0.5, **parameters}}]}
        paths[f"merge_{name}"] = root / f"merge-{name}.yaml"
        paths[f"merge_{name}"].write_text(yaml.safe_dump(body))

    config("ok")
    config("typo_method", method="dare-ties")
    config("density", density=1.5)
    config("nan_weight", weight=float("nan"))
    config("unknown_parameter", wieght=0.5)
    config("missing_model", model=root / "no-such-model")
    config("other_architecture", model=other_base)
    paths["merge_not_yaml"] = root / "merge-not-yaml.yaml"
    paths["merge_not_yaml"].write_text("merge_method: [\n")
    return paths


def build_inputs(root: Path) -> dict[str, Path]:
    """Every input of the tables, under ``root``."""
    from rankwise.io import DEFAULT_MODEL, resolve_model_folder, save_model
    from rankwise.io.loading import load_tokenizer

    tiny = root / "tiny"  # SmolLM2's vocabulary and tokenizer on a 2-layer model of a few MB
    save_model(tiny_llama(seed=0, vocab=49152), load_tokenizer(resolve_model_folder(DEFAULT_MODEL)), tiny)
    runs = _runs(root, tiny)
    return {**_models(root, tiny), **_data(root), **runs, **_merges(root, tiny, runs["other_base"])}
