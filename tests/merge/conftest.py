"""Tiny model folders for merge tests: a base and seeded 'fine-tunes' (perturbations of every float tensor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_llama


def save_tiny(folder: Path, seed: int | None, scale: float = 0.02, **llama: int) -> Path:
    """The tiny Llama (base weights), perturbed with seed ``seed`` (None: the base itself), as an HF folder."""
    model = tiny_llama(**llama)
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g), alpha=scale)
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    return folder


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {"base": save_tiny(tmp_path / "base", None), "a": save_tiny(tmp_path / "a", 1),
            "b": save_tiny(tmp_path / "b", 2)}
