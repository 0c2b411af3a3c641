"""`rankwise finetune`, `export-peft`, `merge-adapter`: one-line errors, and an end-to-end run on SmolLM2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rankwise.cli.main", *args], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
                          timeout=600, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["finetune", "smollm2-135m", "--method", "dora"],
         "unknown adapter method 'dora'; available: adalora, corda, eva"),
        (["finetune", "smollm2-135m", "--method", "pissa", "--mode", "kpm"], "invalid pissa config: mode"),
        (["finetune", "smollm2-135m", "--lr", "abc"], "--lr: expected a number, got 'abc'"),
        (["export-peft", "nowhere"], "nowhere is not a rankwise adapter or run folder"),
        (["merge-adapter", "nowhere"], "nowhere is not a rankwise adapter or run folder"),
        (["finetune", "smollm2-135m", "--resume"], "nothing to resume"),
        (["finetune", "--config", "nope.yaml"], "config file nope.yaml does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = _run(*args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rankwise: error:"), proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def _config(*argv: str) -> Any:
    from rankwise.cli.finetune import build_config
    from rankwise.cli.main import build_parser

    return build_config(build_parser().parse_args(["finetune", *argv, "--out", "unused"]))


def test_config_file_is_read_and_options_given_override_it(tmp_path: Path) -> None:
    import yaml

    file = tmp_path / "cfg.yaml"
    file.write_text(yaml.safe_dump({"model": "some/folder", "adapter": {"method": "pissa", "rank": 4, "svd": "exact"},
                                    "steps": 7, "lr": 1e-3, "targets": ["q_proj"]}))
    cfg = _config("--config", str(file), "--lr", "2e-3", "--checkpointing", "--precision", "bf16")
    assert (cfg.model, cfg.steps, cfg.lr, cfg.targets) == ("some/folder", 7, 2e-3, ["q_proj"])
    assert (cfg.checkpointing, cfg.precision) == ("full", "bf16")  # the bare flag means full checkpointing
    assert (cfg.adapter.method, cfg.adapter.rank, cfg.adapter.svd) == ("pissa", 4, "exact")
    assert _config("--config", str(file), "--rank", "8").adapter.rank == 8
    other = _config("--config", str(file), "--method", "lora")  # another method starts from its own defaults
    assert (other.adapter.method, other.adapter.rank) == ("lora", 16)
    defaults = _config()  # no file: the documented defaults
    assert _config("--checkpointing", "none").checkpointing == "none"
    assert defaults.checkpointing == "selective" and defaults.precision == "fp32" and defaults.adapter.method == "lora"


def test_a_runs_config_yaml_reproduces_its_settings(tmp_path: Path) -> None:
    import yaml

    original = _config("tiny", "--method", "corda", "--mode", "kpm", "--rank", "4", "--steps", "3", "--seed", "5",
                       "--calib-windows", "8", "--targets", "q_proj,v_proj", "--max-grad-norm", "0")
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(original.to_yaml_dict(), sort_keys=False))
    assert _config("--config", str(file)) == original


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [1\n", "is not valid YAML at line"),
        ("- a list\n", "must hold a mapping of settings"),
        ("stepz: 3\n", "invalid setting stepz: Extra inputs are not permitted"),
        ("steps: -1\n", "invalid setting steps"),
        ("adapter: {method: pissa, rnak: 3}\n", "invalid pissa config: rnak"),
    ],
)
def test_bad_config_file_is_one_line_and_exit_2(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(text)
    proc = _run("finetune", "--config", "cfg.yaml", "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_finetune_export_merge_end_to_end(tmp_path: Path, smollm2: tuple[torch.nn.Module, object]) -> None:
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    import rankwise as rw

    small = ["--steps", "2", "--seq-len", "32", "--batch-size", "1", "--eval-tokens", "64", "--rank", "2",
             "--targets", "q_proj,down_proj", "--lr", "1e-3", "--no-progress"]
    proc = _run("finetune", "smollm2-135m", "--method", "pissa", *small, "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "perplexity" in proc.stdout and (tmp_path / "run" / "report.json").is_file()
    again = _run("finetune", "smollm2-135m", "--method", "pissa", *small, "--out", "run", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert _run("export-peft", "run", "--out", "peft", cwd=tmp_path).returncode == 0
    assert _run("merge-adapter", "run", "--out", "merged", cwd=tmp_path).returncode == 0

    x = torch.randint(0, 1000, (1, 24), generator=torch.Generator().manual_seed(0))
    ours = rw.adapters.load_adapter(rw.load_model("smollm2-135m")[0], tmp_path / "run")
    with torch.no_grad():
        ref = ours(x).logits
        via_peft = peft.PeftModel.from_pretrained(rw.load_model("smollm2-135m")[0], str(tmp_path / "peft"))(x).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(x).logits
        base = smollm2[0](x).logits
    assert (ref - base).abs().max() > 1e-2  # the adapter trained: the comparisons below mean something
    torch.testing.assert_close(via_peft, ref, atol=1e-4, rtol=0)
    # merged weights round once more in fp32 (W_res + s·B·A); 30 layers deep that is ~1e-5 relative
    torch.testing.assert_close(merged, ref, atol=1e-3, rtol=0)


def test_finetune_help_names_every_registered_method_optimizer_and_projector() -> None:
    from rankwise.adapters.config import method_names
    from rankwise.cli.main import build_parser
    from rankwise.optim import PROJECTORS, optimizer_names

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["finetune"]  # type: ignore[union-attr]
    helps = {a.dest: a.help or "" for a in sub._actions}
    registries = {"method": method_names(), "optimizer": optimizer_names(), "projector": PROJECTORS.names()}
    for dest, names in registries.items():
        for name in names:
            assert name in helps[dest], (dest, name)
