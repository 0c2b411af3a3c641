import copy
from pathlib import Path

import pytest
import torch

import rankwise as rw


@pytest.mark.integration
def test_compress_real_smollm2_blocks_and_reload(smollm2: tuple[torch.nn.Module, object], tmp_path: Path) -> None:
    dense, tok = smollm2
    model = copy.deepcopy(dense)
    calib = rw.data.windows("wiki", split="calib", seq_len=128, n=16, seed=0, tokenizer=tok)
    evaluation = rw.data.windows("wiki", split="eval", seq_len=64, n=4, tokenizer=tok)
    report = rw.compress.apply(model, rw.compress.SVDLLM(ratio=0.2, sensitivity_windows=4),
                               targets=r"re:model\.layers\.[0-3]\..*", calib=calib, progress=False)
    assert len(report.matrices) == 4 * 7
    assert report.ratio_achieved >= 0.2 - 1e-9
    before = rw.eval.perplexity(dense, evaluation, progress=False).perplexity
    after = rw.eval.perplexity(model, evaluation, progress=False).perplexity
    assert before < after < 3 * before  # 20 % of four blocks: a mild, finite degradation
    folder = rw.compress.save_compressed(model, tok, tmp_path / "smol", report)  # type: ignore[arg-type]
    loaded, _ = rw.load_model(str(folder))
    x = evaluation[:1]
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
