import math

import pytest
import torch

from rankwise.eval import parameter_count, parameters_by_type, perplexity, targeted_parameter_count
from tests.conftest import tiny_llama


def _reference_perplexity(model: torch.nn.Module, windows: torch.Tensor) -> float:
    """Token by token: feed each prefix, take log-softmax of the last position, sum the target's NLL."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for row in windows:
            for t in range(1, row.numel()):
                logits = model(row[:t].unsqueeze(0)).logits[0, -1].double()
                nll -= float(torch.log_softmax(logits, -1)[row[t]])
                count += 1
    return math.exp(nll / count)


def test_perplexity_matches_token_by_token_reference() -> None:
    model = tiny_llama(seed=3)
    windows = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    result = perplexity(model, windows, batch_size=2, progress=False)
    assert result.tokens == 3 * 11
    assert result.perplexity == pytest.approx(_reference_perplexity(model, windows), rel=1e-4)


def test_perplexity_is_independent_of_batch_size() -> None:
    model = tiny_llama(seed=4)
    windows = torch.randint(0, 128, (5, 16), generator=torch.Generator().manual_seed(1))
    a = perplexity(model, windows, batch_size=1, progress=False).perplexity
    b = perplexity(model, windows, batch_size=5, progress=False).perplexity
    assert a == pytest.approx(b, rel=1e-5)


def test_parameter_counts_count_tied_weights_once() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    expected = sum(p.numel() for p in set(model.parameters()))
    assert parameter_count(model) == expected
    by_type = parameters_by_type(model)
    assert by_type["self_attn.q_proj.weight"] == 16 * 16
    assert targeted_parameter_count(model, ["model.layers.0.mlp.up_proj"]) == 32 * 16
