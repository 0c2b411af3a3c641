"""Where the matrices come from: a loaded model, or a safetensors folder read one tensor at a time.

Reading a folder never maps or loads the whole checkpoint: each tensor is read with one ``seek`` +
``read`` of its own bytes, so peak memory stays near the largest single matrix. Headers are
validated up front (corrupt JSON, offsets past the end of a truncated file, unknown dtypes), so a bad
checkpoint fails before any work with one clear line.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from rankwise.errors import RankwiseError

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_NON_FLOAT = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2"}
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_MAX_HEADER = 100 * 2**20


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


@dataclass(frozen=True)
class _Entry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, int]
    start: int  # absolute byte offset in the file
    nbytes: int


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise RankwiseError(f"{path} is not a safetensors file (only {size} bytes); it is truncated or corrupt")
        (length,) = struct.unpack("<Q", raw)
        if length <= 0 or length > _MAX_HEADER or 8 + length > size:
            raise RankwiseError(f"{path} has a corrupt safetensors header (header length {length}, file size {size}); "
                                "re-download or re-save the checkpoint")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RankwiseError(f"{path} has a corrupt safetensors header ({exc}); re-download or re-save it") from exc
    if not isinstance(header, dict):
        raise RankwiseError(f"{path} has a corrupt safetensors header (not a JSON object)")
    return header, 8 + length


def _file_entries(path: Path) -> dict[str, _Entry]:
    header, data_start = _read_header(path)
    size = path.stat().st_size
    out: dict[str, _Entry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise RankwiseError(f"{path}: tensor {name} has a corrupt header entry") from exc
        if data_start + int(end) > size:
            raise RankwiseError(f"{path} is truncated: tensor {name} ends at byte {data_start + int(end)} "
                                f"but the file has {size} bytes; re-download or re-save the checkpoint")
        if len(shape) != 2 or dtype_name in _NON_FLOAT:
            continue
        if dtype_name not in _DTYPES:
            raise RankwiseError(f"{path}: tensor {name} has unsupported dtype {dtype_name}")
        dtype = _DTYPES[dtype_name]
        nbytes = int(end) - int(begin)
        if nbytes != shape[0] * shape[1] * dtype.itemsize:
            raise RankwiseError(f"{path}: tensor {name} has {nbytes} bytes, not {shape} × {dtype_name}; "
                                "the file is corrupt")
        out[name] = _Entry(path, dtype, (int(shape[0]), int(shape[1])), data_start + int(begin), nbytes)
    return out


def _shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RankwiseError(f"{index} is not a valid safetensors index (no weight_map)") from exc
        files = [folder / f for f in dict.fromkeys(weight_map.values())]
        missing = [str(f.name) for f in files if not f.is_file()]
        if missing:
            raise RankwiseError(f"{folder} is missing shard files listed in its index: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        hint = " (this looks like a PyTorch .bin checkpoint; rankwise never unpickles: convert it to " \
               "safetensors)" if any(folder.glob("*.bin")) else ""
        raise RankwiseError(f"{folder} holds no .safetensors weights; pass a model folder{hint}")
    return files


class FolderSource:
    """The 2-D floating-point tensors of a safetensors model folder, read one at a time."""

    def __init__(self, folder: str | os.PathLike[str], include: str | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise RankwiseError(f"no such model folder: {self.folder}")
        if not (self.folder / "config.json").is_file():
            raise RankwiseError(f"{self.folder} is not a model folder (no config.json)")
        pattern = re.compile(include) if include else None
        self._entries: dict[str, _Entry] = {}
        for shard in _shards(self.folder):
            for name, entry in _file_entries(shard).items():
                if pattern is None or pattern.search(name):
                    self._entries[name] = entry
        if not self._entries:
            raise RankwiseError(f"{self.folder} holds no 2-D weight matrices{_matching(include)}")

    def entries(self) -> list[tuple[str, tuple[int, int]]]:
        """(name, shape) in natural order: layer 2 before layer 10, whatever the file order."""
        return [(name, self._entries[name].shape) for name in sorted(self._entries, key=_natural)]

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` [m, n] in its stored dtype, read from disk now."""
        e = self._entries[name]
        buf = bytearray(e.nbytes)  # read straight into the tensor's storage: one copy of the bytes, not two
        with open(e.file, "rb") as fh:
            fh.seek(e.start)
            got = fh.readinto(buf)
        if got != e.nbytes:
            raise RankwiseError(f"{e.file} is truncated while reading tensor {name}")
        return torch.frombuffer(buf, dtype=e.dtype).view(e.shape)


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


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
