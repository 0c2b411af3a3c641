"""Perplexity of a model cached by a fingerprint of its weights and of the exact token windows, so
commands that re-measure the same dense model on the same data do not recompute it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from rankwise.eval.perplexity import PerplexityResult, perplexity

#: Bumped whenever what a cached figure means changes (scoring, windows), so stale entries are never read.
CACHE_VERSION = 1


def _digest_tensor(h: hashlib.blake2b, t: torch.Tensor) -> None:
    flat = t.detach().contiguous().reshape(-1)
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")


def model_fingerprint(model: nn.Module) -> str:
    """Hex digest of every parameter and buffer (name, dtype, shape, bytes) and the model class."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__name__.encode())
    for name, tensor in sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items()):
        h.update(name.encode())
        _digest_tensor(h, tensor)
    return h.hexdigest()


def perplexity_key(model_fp: str, windows: torch.Tensor, batch_size: int) -> str:
    """The cache key: model fingerprint, the windows' exact tokens, the batching and the torch version."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"v{CACHE_VERSION}|{model_fp}|{batch_size}|{torch.__version__}".encode())
    _digest_tensor(h, windows)
    return h.hexdigest()


def _cache_file(key: str) -> Path:
    from rankwise.io.loading import cache_dir

    return cache_dir() / "perplexity" / f"{key}.json"


def cached_perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 8, progress: bool = True,
                      desc: str = "perplexity", model_fp: str | None = None) -> tuple[PerplexityResult, bool]:
    """(result, True) when read from the cache, else (measured result, False) and the cache is filled.

    ``model_fp``: a precomputed `model_fingerprint` (hashing the weights takes a moment; pass it when
    measuring one model on several sources). Entries are written atomically; a damaged one is ignored.
    """
    key = perplexity_key(model_fp or model_fingerprint(model), windows, batch_size)
    path = _cache_file(key)
    try:
        data = json.loads(path.read_text())
        return PerplexityResult(float(data["perplexity"]), float(data["nll"]), int(data["tokens"])), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = perplexity(model, windows, batch_size=batch_size, progress=progress, desc=desc)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"perplexity": result.perplexity, "nll": result.nll, "tokens": result.tokens}, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the next run a recomputation
    return result, False
