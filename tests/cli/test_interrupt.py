"""Ctrl-C is honoured at any stage: `rankwise` in a subprocess gets SIGINT mid-run and exits with 130,
one line saying what happened to the output, no traceback, and nothing half-written left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

#: A hang guard, not a timing assertion: a run that ignores Ctrl-C would block the suite forever.
GRACE_S = 60
NOTHING_WRITTEN = "rankwise: interrupted; no output was written"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rankwise.io import DEFAULT_MODEL, resolve_model_folder, save_model
    from rankwise.io.loading import load_tokenizer
    from tests.conftest import tiny_llama

    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_model(tiny_llama(seed=0, vocab=49152), load_tokenizer(resolve_model_folder(DEFAULT_MODEL)), folder)
    return folder


class Run:
    """``python -m rankwise.cli.main ARGS`` with both streams read as they come."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        # A shell that starts the test suite in the background ignores SIGINT for its children, and Python
        # then never raises KeyboardInterrupt: the child gets Ctrl-C's default disposition back, as in a terminal.
        self.proc = subprocess.Popen([sys.executable, "-m", "rankwise.cli.main", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, sink: list[str]) -> None:
        while chunk := stream.read(1):  # type: ignore[attr-defined]
            sink.append(chunk)

    def wait_for(self, marker: str, stdout: bool = False, timeout: float = 300) -> None:
        """Block until ``marker`` appears on stderr (a stage's progress bar) or ``stdout``."""
        deadline = time.monotonic() + timeout
        while marker not in "".join(self.out if stdout else self.err):
            assert self.proc.poll() is None, f"the run ended before '{marker}':\n{''.join(self.err)[-2000:]}"
            assert time.monotonic() < deadline, f"no '{marker}' after {timeout} s"
            time.sleep(0.05)

    def interrupt(self) -> tuple[int, str]:
        """Send SIGINT (what Ctrl-C sends); the exit code and the last stderr line."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=GRACE_S)
        for reader in self._readers:
            reader.join(timeout=10)
        err = "".join(self.err)
        assert "Traceback" not in err, err[-3000:]
        lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
        return code, lines[-1]


def _compress(tiny: Path, out: Path, ratios: str) -> list[str]:
    return ["compress", str(tiny), "--ratio", ratios, "--calib", "tinystories", "--calib-windows", "8",
            "--seq-len", "64", "--eval", "wiki", "--eval-tokens", "8192", "--no-speed", "--rank-multiple", "2",
            "--out", str(out)]


@pytest.mark.parametrize(("stage", "pipeline"), [("calibration", []), ("correction", []),
                                               ("decomposition", ["--no-correct"])])
def test_compress_interrupted_at_any_stage_leaves_nothing(stage: str, pipeline: list[str], tiny: Path,
                                                          tmp_path: Path) -> None:
    run = Run(*_compress(tiny, tmp_path / "out" / "smol", "0.2"), *pipeline)
    run.wait_for(stage)
    code, last = run.interrupt()
    assert (code, last) == (130, NOTHING_WRITTEN)
    assert list(tmp_path.iterdir()) == []  # not even the parent folder the output would have gone into


def test_compress_interrupted_after_a_complete_folder_says_it_was_kept(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "smol"
    run = Run(*_compress(tiny, out, "0.2,0.4"))
    run.wait_for(f"wrote {out}-20", stdout=True)
    code, last = run.interrupt()
    assert code == 130
    assert last == f"rankwise: interrupted; kept the complete {out}-20; nothing else was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smol-20"]  # no -40, no hidden temporary folder
    assert {"config.json", "model.safetensors", "report.json"} <= {p.name for p in (tmp_path / "smol-20").iterdir()}


def test_eval_interrupted_mid_perplexity_writes_no_json(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    # Enough windows for several seconds even on a quiet machine (tqdm may skip the 1 % mark entirely).
    run = Run("eval", str(tiny), "--tokens", "65536", "--seq-len", "64", "--batch-size", "1", "--no-speed",
              "--out", str(out))
    run.wait_for("perplexity (wiki):")
    assert run.interrupt() == (130, NOTHING_WRITTEN)
    assert list(tmp_path.iterdir()) == []


def test_analyze_interrupted_mid_gradients_writes_no_report(tiny: Path, tmp_path: Path) -> None:
    run = Run("analyze", str(tiny), "--gradients", "--data", "tinystories", "--windows", "64", "--seq-len", "128",
              "--out", str(tmp_path / "report"))
    run.wait_for("gradients:")
    assert run.interrupt() == (130, NOTHING_WRITTEN)
    assert list(tmp_path.iterdir()) == []
