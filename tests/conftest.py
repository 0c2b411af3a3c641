"""Shared fixtures: tiny Llama models built in code, the real bundled model for integration tests."""

from __future__ import annotations

import pytest
import torch


def tiny_llama(seed: int = 0, layers: int = 2, vocab: int = 128, hidden: int = 32) -> torch.nn.Module:
    """A 2-layer Llama with random weights: every projection type of a real model, in a few KB."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return tiny_llama()


@pytest.fixture(scope="session")
def smollm2() -> tuple[torch.nn.Module, object]:
    import rankwise as rw

    return rw.load_model("smollm2-135m")
