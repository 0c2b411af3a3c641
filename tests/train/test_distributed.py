"""Data-parallel fine-tuning: `torchrun -m rankwise finetune` with 2 gloo processes on CPU equals one process
with the doubled batch, for an adapter and for all weights with LowRankAdamW across subspace updates."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_llama


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rankwise.data.windows import _default_tokenizer
    from rankwise.io.saving import save_model

    folder = tmp_path_factory.mktemp("ddp") / "tiny"
    save_model(tiny_llama(seed=0, vocab=49152), _default_tokenizer(), folder)
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "dog", "ran", "to", "park", "and", "back", "home"]
    gen = torch.Generator().manual_seed(0)
    paragraphs = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (60,), generator=gen))
                  for _ in range(40)]
    path = tmp_path_factory.mktemp("ddp") / "text.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _finetune(procs: int, batch: int, out: Path, model: Path, data: Path, *extra: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ":".join(sys.path)}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), "--master-port",
                 str(_free_port()), "-m", "rankwise"] if procs > 1 else [sys.executable, "-m", "rankwise"])
    args = ["finetune", str(model), "--data", str(data), "--seq-len", "16", "--batch-size", str(batch),
            "--steps", "4", "--warmup", "1", "--eval-tokens", "64", "--checkpoint-every", "2",
            "--checkpointing", "none", "--no-progress", "--out", str(out), *extra]
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(("name", "extra", "weights"), [
    ("adapter", ["--method", "lora", "--rank", "4", "--lr", "1e-2"], "adapter.safetensors"),
    ("full", ["--full", "--optimizer", "lowrank_adamw", "--proj-rank", "4", "--update-gap", "2", "--lr", "1e-3"],
     "model.safetensors"),
])
def test_two_processes_equal_one_with_the_doubled_batch(name: str, extra: list[str], weights: str,
                                                        tiny_folder: Path, text_file: Path, tmp_path: Path) -> None:
    _finetune(2, 2, tmp_path / "ddp", tiny_folder, text_file, *extra)
    _finetune(1, 4, tmp_path / "one", tiny_folder, text_file, *extra)
    ddp, one = (json.loads((tmp_path / r / "report.json").read_text()) for r in ("ddp", "one"))
    assert ddp["processes"] == 2 and one["processes"] == 1
    assert ddp["tokens_trained"] == one["tokens_trained"]
    torch.testing.assert_close(torch.tensor(ddp["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-5)
    a, b = load_file(str(tmp_path / "ddp" / weights)), load_file(str(tmp_path / "one" / weights))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    start = load_file(str(tiny_folder / "model.safetensors"))
    trained = [k for k in a if (k.endswith("lora_B") and a[k].abs().max() > 0) or (k in start and not
                                                                                  torch.equal(a[k], start[k]))]
    assert len(trained) > 4  # the comparison is between runs that did train
    assert not list(tmp_path.glob(".*partial"))  # only rank 0 wrote, and it finished
