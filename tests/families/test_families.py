"""compress, adapt and analyze on the model families users bring (tiny models built in code)."""

from pathlib import Path

import pytest
import torch

import rankwise as rw
from rankwise.calib.blocks import capture_block_inputs, decoder_layers, run_block
from rankwise.data.windows import leading_bos
from rankwise.modules.lowrank import LowRankLinear
from tests.families.builders import FAMILIES, TEXT, VOCAB, bos_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "text.txt"
    words = TEXT.split()
    paragraphs = [" ".join(words[i:] + words[:i]) for i in range(40)]  # distinct documents (no dedup)
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return str(path)


def _windows(corpus: str, n: int = 8, seq_len: int = 24) -> torch.Tensor:
    return rw.data.windows(corpus, split="all", seq_len=seq_len, n=n, seed=0, tokenizer=bos_tokenizer())


def test_bos_tokenizer_windows_start_with_bos_and_hold_the_stream(corpus: str) -> None:
    tok = bos_tokenizer()
    assert leading_bos(tok) == 1
    wins = rw.data.windows(corpus, split="all", seq_len=16, tokenizer=tok)  # consecutive
    assert wins.shape[1] == 16 and bool((wins[:, 0] == 1).all())
    stream = rw.data.token_stream(corpus, "all", tok)
    torch.testing.assert_close(wins[:, 1:].reshape(-1), stream[: wins.shape[0] * 15])
    assert not bool((wins[:, 1:] == 1).any())  # BOS only where a window starts


def test_bos_position_is_not_scored(corpus: str) -> None:
    model = FAMILIES["gemma3"](0)
    wins = _windows(corpus, n=4, seq_len=12)
    result = rw.eval.perplexity(model, wins, progress=False)
    assert result.tokens == 4 * 11
    with torch.no_grad():
        logits = model(wins).logits[:, :-1].float()
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), wins[:, 1:].reshape(-1))
    assert result.nll == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_block_capture_reproduces_the_model(family: str, corpus: str) -> None:
    """Per-block keyword arguments (sliding vs full masks, rotary tables) are captured per block."""
    model = FAMILIES[family](0)
    wins = _windows(corpus, n=2, seq_len=20)
    _, layers = decoder_layers(model)
    with torch.no_grad():
        batches = capture_block_inputs(model, layers, wins, batch_size=2)
        hidden = batches[0].hidden
        for index, layer in enumerate(layers):
            from rankwise.calib.blocks import advance

            batches = advance(batches, run_block(layer, index, batches))
        ref = model.model(wins).last_hidden_state
    final = model.model.norm(batches[0].hidden)
    assert hidden.shape == (2, 20, 32)
    torch.testing.assert_close(final, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compress_with_correction_saves_and_reloads(family: str, corpus: str, tmp_path: Path) -> None:
    model = FAMILIES[family](1)
    wins = _windows(corpus)
    config = rw.compress.SVDLLM(ratio=0.3, rank_multiple=2, correct=True)
    report = rw.compress.apply(model, config, calib=wins, batch_size=4, progress=False)
    assert report.error_kind == "output-matching" and report.fallbacks == []
    assert any(isinstance(m, LowRankLinear) for m in model.modules())
    if family == "qwen2":
        low = [m for m in model.modules() if isinstance(m, LowRankLinear) and m.B.bias is not None]
        assert low, "q/k/v biases must survive compression"
    folder = rw.compress.save_compressed(model, bos_tokenizer(), tmp_path / family, report)  # type: ignore[arg-type]
    loaded, _ = rw.load_model(str(folder))
    with torch.no_grad():
        assert torch.equal(model(wins).logits, loaded(wins).logits)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", ["pissa", "corda"])
def test_adapt_starts_at_the_base_outputs(family: str, method: str, corpus: str) -> None:
    model = FAMILIES[family](2)
    wins = _windows(corpus)
    with torch.no_grad():
        before = model(wins).logits
    config = rw.adapters.PiSSA(rank=4) if method == "pissa" else rw.adapters.CorDA(rank=4)
    rw.adapt(model, config, targets="all-linear", calibration=wins)
    with torch.no_grad():
        torch.testing.assert_close(model(wins).logits, before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_analyze_weights_and_gradients(family: str, corpus: str) -> None:
    model = FAMILIES[family](3)
    report = rw.analyze(model, gradients=True, tokens=_windows(corpus, n=4), progress=False)
    names = {row["name"] for row in report.table}
    assert any("q_proj" in n for n in names) and any("down_proj" in n for n in names)
