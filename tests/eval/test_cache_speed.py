"""Cached perplexity (exact keys) and the loaded-machine rule of the speed comparison."""

from pathlib import Path

import pytest
import torch

from rankwise.eval import cached_perplexity, model_fingerprint, perplexity, speedup_line, throughput
from tests.conftest import tiny_llama


def test_cached_perplexity_is_exact_and_keyed_by_weights_and_windows(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path))
    model = tiny_llama(seed=1)
    wins = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    first, hit = cached_perplexity(model, wins, progress=False)
    assert not hit and first == perplexity(model, wins, progress=False)
    again, hit = cached_perplexity(model, wins, progress=False)
    assert hit and again == first
    _, hit = cached_perplexity(model, wins[:2], progress=False)  # other windows: measured
    assert not hit
    fp = model_fingerprint(model)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3  # one weight changed: another model
    assert model_fingerprint(model) != fp
    changed, hit = cached_perplexity(model, wins, progress=False)
    assert not hit and changed.nll != first.nll


def test_speed_line_gives_no_speedup_on_a_loaded_machine() -> None:
    assert speedup_line("prefill", 100.0, 150.0, cpu_share=0.95).endswith("(1.50x)")
    loaded = speedup_line("decode", 100.0, 150.0, cpu_share=0.3)
    assert "no speed-up given: the machine was loaded" in loaded and "30%" in loaded
    tp = throughput(tiny_llama(), torch.arange(16), repeats=2, decode_tokens=4)
    assert tp.cpu_share > 0 and tp.prefill_tokens_per_s > 0
