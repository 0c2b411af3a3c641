"""Documents → fixed-length token windows for calibration, evaluation and training."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from rankwise.data.sources import documents
from rankwise.errors import RankwiseError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@lru_cache(maxsize=1)
def _default_tokenizer() -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    from rankwise.io.loading import DEFAULT_MODEL, resolve_model_folder
    from rankwise.io.quiet import quiet_transformers

    quiet_transformers()
    return AutoTokenizer.from_pretrained(resolve_model_folder(DEFAULT_MODEL))


def leading_bos(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The BOS token id when ``tokenizer`` starts every encoded text with it (its own convention,
    observed rather than read from a flag, which tokenizers spell differently), else None."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return int(bos) if ids and ids[0] == bos else None


def token_stream(source: str, split: str, tokenizer: PreTrainedTokenizerBase | None = None) -> torch.Tensor:
    """All documents of the split tokenised and joined by the EOS token: int64 [T]."""
    tok = tokenizer if tokenizer is not None else _default_tokenizer()
    docs = documents(source, split)
    ids = tok(docs, add_special_tokens=False)["input_ids"]
    sep = tok.eos_token_id
    stream: list[int] = []
    for doc_ids in ids:
        stream.extend(doc_ids)
        if sep is not None:
            stream.append(int(sep))
    return torch.tensor(stream, dtype=torch.long)


def windows(
    source: str,
    split: str = "eval",
    seq_len: int = 256,
    n: int | None = None,
    tokens: int | None = None,
    seed: int | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> torch.Tensor:
    """Non-overlapping token windows, int64 [num_windows, seq_len].

    The count is ``n``, or ``tokens // seq_len``, or every full window when neither is given.
    ``seed=None`` takes consecutive windows from the start (evaluation); a seed samples window
    positions without replacement (calibration), the same for the same seed.

    Where the tokenizer adds a BOS token (Gemma, Llama 2/3), every window starts with it followed by
    seq_len − 1 tokens of text, as evaluation harnesses do: such models are trained never to see text
    without it. Position 0 is never a prediction target, so the BOS itself is not scored.
    """
    if seq_len <= 0:
        raise RankwiseError(f"seq_len must be a positive number of tokens, got {seq_len}")
    if n is not None and tokens is not None:
        raise RankwiseError("give either n (windows) or tokens, not both")
    if tokens is not None and tokens < seq_len:
        raise RankwiseError(f"tokens={tokens} is less than one window of seq_len={seq_len}")
    if n is not None and n <= 0:
        raise RankwiseError(f"n must be a positive number of windows, got {n}")
    tok = tokenizer if tokenizer is not None else _default_tokenizer()
    bos = leading_bos(tok)
    if bos is not None and seq_len < 2:
        raise RankwiseError(f"seq_len must be at least 2 for a tokenizer that starts windows with BOS, got {seq_len}")
    stream = token_stream(source, split, tok)
    text_len = seq_len - (bos is not None)
    available = stream.numel() // text_len
    wanted = available if n is None and tokens is None else (n if n is not None else int(tokens or 0) // seq_len)
    if wanted > available:
        raise RankwiseError(f"'{source}' split '{split}' has {stream.numel()} tokens: only {available} windows "
                            f"of {seq_len}, but {wanted} were asked for; ask for fewer tokens or shorter windows")
    chunks = stream[: available * text_len].view(available, text_len)
    if seed is None:
        picked = chunks[:wanted]
    else:
        gen = torch.Generator().manual_seed(seed)
        picked = chunks[torch.randperm(available, generator=gen)[:wanted]]
    if bos is None:
        return picked.clone()
    return torch.cat([torch.full((picked.shape[0], 1), bos, dtype=torch.long), picked], dim=1)
