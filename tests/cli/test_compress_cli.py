import json
from pathlib import Path

import pytest

from rankwise.cli.main import main
from tests.conftest import tiny_llama


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with the real tokenizer's vocabulary, saved as an HF folder."""
    from rankwise.data.windows import _default_tokenizer
    from rankwise.io import save_model

    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_model(tiny_llama(seed=0, vocab=49152), _default_tokenizer(), folder)
    return folder


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["compress", str(model), "--calib", "tinystories", "--calib-windows", "4", "--seq-len", "32",
            "--eval", "wiki", "--eval-tokens", "64", "--no-speed", "--rank-multiple", "2", "--out", str(out), *extra]


def test_compress_writes_one_folder_per_ratio_and_prints_the_table(tiny_folder: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "smol"
    assert main(_args(tiny_folder, out, "--ratio", "0.2,0.4")) == 0
    text = capsys.readouterr().out
    assert "targeted parameters" in text and "perplexity wiki" in text and "mlp.gate_proj" in text
    for pct in (20, 40):
        folder = tmp_path / f"smol-{pct}"
        report = json.loads((folder / "report.json").read_text())
        assert report["ratio_requested"] == pct / 100
        assert report["ratio_achieved"] >= pct / 100 - 1e-9
        assert {"ppl_wiki_before", "ppl_wiki_after"} <= set(report["evaluation"])
        assert {"calibration", "decomposition", "evaluation"} <= set(report["timings_s"])
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ratio", "1.5"], "--ratio values must be in (0, 1)"),
        (["--ratio", "0.2", "--method", "magic"], "unknown compression method 'magic'"),
        (["--ratio", "0.2", "--alloc", "lucky"], "unknown rank allocator 'lucky'"),
        (["--ratio", "0.2", "--calib", "nope"], "unknown data source 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_folder: Path, tmp_path: Path, extra: list[str],
                                                            message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_args(tiny_folder, out, *extra)) == 2  # a repeated --calib: argparse keeps the last
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_refused(tiny_folder: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert main(_args(tiny_folder, out, "--ratio", "0.2")) == 2
    assert "already exists" in capsys.readouterr().err
    assert list(out.iterdir()) == []
