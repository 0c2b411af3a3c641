"""`rankwise finetune`, `export-peft`, `merge-adapter`: one-line errors, and an end-to-end run on SmolLM2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rankwise.cli.main", *args], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
                          timeout=600, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["finetune", "smollm2-135m", "--method", "dora"], "unknown adapter method 'dora'; available: corda, eva"),
        (["finetune", "smollm2-135m", "--method", "pissa", "--mode", "kpm"], "invalid pissa config: mode"),
        (["finetune", "smollm2-135m", "--lr", "abc"], "--lr: expected a number, got 'abc'"),
        (["export-peft", "nowhere"], "nowhere is not a rankwise adapter or run folder"),
        (["merge-adapter", "nowhere"], "nowhere is not a rankwise adapter or run folder"),
        (["finetune", "smollm2-135m", "--resume"], "nothing to resume"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = _run(*args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rankwise: error:"), proc.stderr
    assert message in lines[0]
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
