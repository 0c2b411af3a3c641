import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankwise.cli.main import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rankwise.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "nope"], "unknown model 'nope'; bundled models: smollm2-135m"),
        (["eval", "org/model"], "hub is unreachable"),
        (["eval", "smollm2-135m", "--data", "nope", "--no-speed"], "unknown data source 'nope'"),
        (["eval", "smollm2-135m", "--seq-len", "0"], "--seq-len: must be a positive integer, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = _run(*args, "--out", str(out)) if args[0] == "eval" else _run(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rankwise: error:")
    assert message in lines[0]
    assert not out.exists()


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "rankwise 0." in capsys.readouterr().out
    for command in ("info", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out


@pytest.mark.integration
def test_info_and_eval_on_real_smollm2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "smollm2-135m"]) == 0
    text = capsys.readouterr().out
    assert "134,515,008" in text and "mlp.gate_proj.weight" in text and "1536x576" in text
    out = tmp_path / "eval.json"
    assert main(["eval", "smollm2-135m", "--tokens", "512", "--seq-len", "128", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tokens_scored"] == 4 * 127
    # Dense SmolLM2-135M on Wikipedia: a sane language model, far from uniform (49152).
    assert 5 < result["perplexity"] < 80
    assert result["prefill_tokens_per_s"] > 0 and result["decode_tokens_per_s"] > 0
