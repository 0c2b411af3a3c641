"""Bad merge inputs: one exact line on stderr, exit code 2, no output folder, inputs untouched."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.torch import load_file, save_file

import rankwise as rw
from rankwise.cli.main import main
from tests.merge.conftest import save_tiny


def _config(folders: dict[str, Path], method: str = "ties", **params: Any) -> dict[str, Any]:
    return {"merge_method": method, "base_model": str(folders["base"]),
            "models": [{"model": str(folders["base"])},
                       {"model": str(folders["a"]), "parameters": {"weight": 0.5, "density": 0.5, **params}},
                       {"model": str(folders["b"]), "parameters": {"weight": 0.5, "density": 0.5}}]}


def _digest(folders: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for folder in folders.values():
        for f in sorted(folder.iterdir()):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _fails(tmp_path: Path, config: dict[str, Any] | str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    capsys.readouterr()  # drop what setting up printed
    code = main(["merge", str(cfg), "--out", str(tmp_path / "out"), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("rankwise: error: "), err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    return err.removeprefix("rankwise: error: ")


def _drop_tensor(folder: Path, name: str) -> None:
    t = load_file(str(folder / "model.safetensors"))
    del t[name]
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")


def _truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-64])


CASES: list[tuple[str, Callable[[dict[str, Path]], Any], str]] = [
    ("unknown method", lambda f: {**_config(f), "merge_method": "tie"},
     "unknown merge method 'tie' (did you mean 'ties'?); choose one of: "),
    ("unknown parameter", lambda f: _config(f, densty=0.5),
     "unknown parameter 'densty' for merge method 'ties' (did you mean 'density'?)"),
    ("density above 1", lambda f: _config(f, density=1.5),
     "/a', tensor lm_head.weight: parameter 'density' is 1.5; density must be in (0, 1]"),
    ("density 0", lambda f: _config(f, density=0),
     "parameter 'density' is 0.0; density must be in (0, 1]"),
    ("negative weight", lambda f: _config(f, weight=-0.5),
     "parameter 'weight' is -0.5, but this method needs weights >= 0"),
    ("NaN weight", lambda f: _config(f, weight=float("nan")), "parameter 'weight' is nan; give a finite number"),
    ("no base model", lambda f: {"merge_method": "task_arithmetic",
                                 "models": [{"model": str(f["a"]), "parameters": {"weight": 1.0}}]},
     "merge method 'task_arithmetic' needs a base_model; add base_model to the config"),
    ("slices", lambda f: {"merge_method": "linear", "slices": []},
     "unknown field 'slices'; rankwise merges whole models: replace 'slices' by a 'models' list"),
    ("missing model", lambda f: {**_config(f), "base_model": str(f["base"]) + "-nope"}, "no such file or folder: "),
]


@pytest.mark.parametrize(("label", "make", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_config(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str,
                    make: Callable[[dict[str, Path]], Any], message: str) -> None:
    before = _digest(folders)
    assert message in _fails(tmp_path, make(folders), capsys)
    assert _digest(folders) == before


BROKEN: list[tuple[str, Callable[[dict[str, Path]], object], str]] = [
    ("missing tensor", lambda f: _drop_tensor(f["b"], "model.layers.1.mlp.up_proj.weight"),
     "has no tensor model.layers.1.mlp.up_proj.weight (which '"),
    ("pickle only", lambda f: _pickle_only(f["a"]),
     "holds only pickled weights such as pytorch_model.bin; rankwise never unpickles"),
    ("truncated", lambda f: _truncate(f["b"]), "is truncated: tensor "),
    ("corrupt header", lambda f: (f["a"] / "model.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{broken}"),
     "has a corrupt safetensors header"),
]


@pytest.mark.parametrize(("label", "breaker", "message"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_inputs(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str,
                       breaker: Callable[[dict[str, Path]], object], message: str) -> None:
    breaker(folders)
    assert message in _fails(tmp_path, _config(folders), capsys)


def test_other_architecture_and_shapes_are_refused(folders: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    wide = save_tiny(tmp_path / "wide", 3, hidden=64)
    cfg = _config(folders)
    cfg["models"][2]["model"] = str(wide)
    assert f"model '{wide}' has hidden_size 64, but '{folders['base']}' has 32" in _fails(tmp_path, cfg, capsys)
    # Same config.json, other tensor shapes.
    (wide / "config.json").write_text((folders["base"] / "config.json").read_text())
    assert f"tensor lm_head.weight is [128, 64] in '{wide}' but [128, 32] in '{folders['base']}'" in _fails(
        tmp_path, cfg, capsys)


def test_existing_output_folder_is_refused(folders: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump(_config(folders)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["merge", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"rankwise: error: output folder {tmp_path / 'out'} already exists; "
                                       "choose another path or pass --overwrite\n")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_interrupted_merge_leaves_no_output(folders: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import rankwise.merge.driver as driver

    calls = {"n": 0}
    real = driver.merge_tensor

    def interrupt(plan: Any, task: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(plan, task)

    monkeypatch.setattr(driver, "merge_tensor", interrupt)
    before = _digest(folders)
    with pytest.raises(KeyboardInterrupt):
        rw.merge.run(_config(folders), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert _digest(folders) == before


def test_dry_run_prints_the_plan(folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump(_config(folders)))
    assert main(["merge", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tensors: 21 (21 merged, 0 copied" in out and "estimated peak tensor memory" in out
    assert not (tmp_path / "out").exists()
    assert json.loads((folders["base"] / "config.json").read_text())["hidden_size"] == 32


def test_pickled_adapter_is_refused(folders: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 8}))
    (peft / "adapter_model.bin").write_bytes(b"\x80\x02}q\x00.")
    cfg = {"merge_method": "task_arithmetic", "base_model": str(folders["base"]),
           "models": [{"model": str(peft), "parameters": {"weight": 1.0}}]}
    assert _fails(tmp_path, cfg, capsys) == (f"adapter {peft} holds only pickled weights (adapter_model.bin); "
                                             "rankwise never unpickles: save it as adapter_model.safetensors")
