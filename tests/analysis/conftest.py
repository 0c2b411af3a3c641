from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_llama


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """The tiny Llama saved as an HF safetensors folder."""
    folder = tmp_path / "tiny"
    tiny_llama().save_pretrained(folder)
    return folder


def perturbed_folder(base: torch.nn.Module, folder: Path, scale: float = 1.0) -> Path:
    """A 'fine-tuned' copy: every q_proj gets a rank-2 update along random new directions."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.endswith("q_proj.weight"):
                m, n = p.shape
                p += scale * torch.randn(m, 2) @ torch.randn(2, n)
    base.save_pretrained(folder)
    return folder
