"""Where the matrices come from: a loaded model, or a safetensors folder read one tensor at a time.

Folders are read through `rankwise.io.tensors` (headers validated up front, one tensor's bytes at a
time), so peak memory stays near the largest single matrix and a bad checkpoint fails before any
work with one clear line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rankwise.errors import RankwiseError
from rankwise.io.tensors import TensorFolder

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def matrix_kind(name: str) -> tuple[int | None, str]:
    """(layer index or None, matrix type) of a tensor name.

    ``model.layers.3.self_attn.q_proj.weight`` → (3, "self_attn.q_proj");
    ``model.embed_tokens.weight`` → (None, "embed_tokens").
    """
    base = name.removesuffix(".weight")
    match = _LAYER.search(base)
    if match is None:
        return None, base.split(".")[-1]
    return int(match.group(1)), base[match.end():]


class MatrixSource(Protocol):
    """An ordered set of named 2-D weight matrices, fetched one at a time."""

    def entries(self) -> list[tuple[str, tuple[int, int]]]: ...

    def get(self, name: str) -> torch.Tensor: ...


class ModelSource:
    """Every distinct 2-D floating-point parameter of ``model`` (tied weights once, first name)."""

    def __init__(self, model: nn.Module, include: str | None = None) -> None:
        self._params: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        pattern = re.compile(include) if include else None
        for name, p in model.named_parameters(remove_duplicate=False):
            if p.ndim != 2 or not p.is_floating_point() or id(p) in seen:
                continue
            seen.add(id(p))
            if pattern is None or pattern.search(name):
                self._params[name] = p
        if not self._params:
            raise RankwiseError(f"the model has no 2-D weight matrices{_matching(include)}")

    def entries(self) -> list[tuple[str, tuple[int, int]]]:
        return [(name, (int(p.shape[0]), int(p.shape[1]))) for name, p in self._params.items()]

    def get(self, name: str) -> torch.Tensor:
        return self._params[name].detach()


class FolderSource:
    """The 2-D floating-point tensors of a safetensors model folder, read one at a time."""

    def __init__(self, folder: str | os.PathLike[str], include: str | None = None) -> None:
        self._tensors = TensorFolder(folder)
        self.folder = self._tensors.folder
        pattern = re.compile(include) if include else None
        self._names = [name for name in self._tensors.names()
                       if len(self._tensors.entries[name].shape) == 2 and self._tensors.entries[name].is_float
                       and (pattern is None or pattern.search(name))]
        if not self._names:
            raise RankwiseError(f"{self.folder} holds no 2-D weight matrices{_matching(include)}; "
                                f"{'widen --include' if include else 'pass a model folder'}")

    def entries(self) -> list[tuple[str, tuple[int, int]]]:
        """(name, shape) in natural order: layer 2 before layer 10, whatever the file order."""
        out = []
        for name in self._names:
            m, n = self._tensors.entries[name].shape
            out.append((name, (m, n)))
        return out

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` [m, n] in its stored dtype, read from disk now."""
        return self._tensors.get(name)


def _matching(include: str | None) -> str:
    return f" matching '{include}'" if include else ""


def open_source(model: Any, include: str | None = None) -> MatrixSource:
    """A loaded ``nn.Module`` → ModelSource; a bundled name or folder path → FolderSource."""
    if isinstance(model, nn.Module):
        return ModelSource(model, include)
    if isinstance(model, (str, os.PathLike)):
        from rankwise.io.loading import resolve_model_folder

        where = resolve_model_folder(str(model))
        if not isinstance(where, Path):
            from rankwise.io.loading import load_model

            return ModelSource(load_model(where)[0], include)
        return FolderSource(where, include)
    raise RankwiseError(f"cannot analyse a {type(model).__name__}; pass a model, a model folder or a bundled name")


def load_matrix(source: MatrixSource, name: str) -> torch.Tensor:
    """The fp32 matrix ``name`` [m, n]; NaN/inf raises RankwiseError."""
    W = source.get(name).to(torch.float32)
    # A NaN or inf entry makes the sum NaN or inf, so a finite sum proves W finite at the cost of one
    # read (16x cheaper than isfinite + all here). Only a non-finite sum, which finite entries can
    # also give by overflowing, needs the element-wise check, in row blocks: isfinite on the whole
    # matrix would allocate a temporary as large as the matrix.
    if not math.isfinite(float(W.sum())) and not all(
        bool(torch.isfinite(W[i : i + 4096]).all()) for i in range(0, W.shape[0], 4096)
    ):
        raise RankwiseError(f"matrix {name} contains NaN or inf values; the checkpoint is corrupt")
    return W


def iter_matrices(source: MatrixSource) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, fp32 matrix) in source order; a matrix with NaN/inf raises RankwiseError."""
    for name, _ in source.entries():
        yield name, load_matrix(source, name)
