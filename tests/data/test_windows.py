import pytest
import torch

from rankwise import RankwiseError
from rankwise.data import documents, token_stream, windows


def test_wiki_calib_and_eval_share_no_document() -> None:
    calib, evaluation = documents("wiki", "calib"), documents("wiki", "eval")
    assert calib and evaluation
    assert not set(calib) & set(evaluation)
    assert len(calib) + len(evaluation) == len(documents("wiki", "all"))
    assert not any(d.startswith("<doc") or "</doc>" in d for d in calib + evaluation)


@pytest.mark.parametrize("name", ["c4", "tinystories", "code"])
def test_other_bundled_corpora_load(name: str) -> None:
    assert len(documents(name, "calib")) > 10


def test_windows_are_deterministic_for_a_seed() -> None:
    a = windows("wiki", split="calib", seq_len=64, n=8, seed=0)
    b = windows("wiki", split="calib", seq_len=64, n=8, seed=0)
    c = windows("wiki", split="calib", seq_len=64, n=8, seed=1)
    assert a.shape == (8, 64) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_windows_are_consecutive_and_counted_by_tokens() -> None:
    w = windows("wiki", split="eval", seq_len=128, tokens=1000)
    assert w.shape == (7, 128)
    assert torch.equal(w[1], windows("wiki", split="eval", seq_len=128, n=2)[1])


def test_text_and_jsonl_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    txt = tmp_path / "notes.txt"
    txt.write_text("first paragraph\n\nsecond paragraph\n\nthird\n\nfourth")
    assert documents(str(txt), "calib") == ["first paragraph", "second paragraph"]
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"text": "a b c"}\n{"text": "d e f"}\n')
    assert documents(str(jl), "all") == ["a b c", "d e f"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": 1}\n')
    with pytest.raises(RankwiseError, match="no string \"text\" field"):
        documents(str(bad))


def test_bad_data_requests_fail_clearly() -> None:
    with pytest.raises(RankwiseError, match="unknown data source 'nope'"):
        documents("nope")
    with pytest.raises(RankwiseError, match="seq_len must be a positive"):
        windows("wiki", seq_len=0)
    with pytest.raises(RankwiseError, match=r"only .* windows"):
        windows("c4", split="eval", seq_len=256, n=10**6)
    with pytest.raises(RankwiseError, match="unknown split"):
        documents("wiki", "test")


def test_smollm2_adds_no_bos_so_windows_are_plain_stream_slices() -> None:
    from rankwise.data.windows import _default_tokenizer, leading_bos

    tok = _default_tokenizer()
    assert leading_bos(tok) is None
    wins = windows("wiki", split="eval", seq_len=64, tokens=256, tokenizer=tok)
    torch.testing.assert_close(wins.reshape(-1), token_stream("wiki", "eval", tok)[:256])
