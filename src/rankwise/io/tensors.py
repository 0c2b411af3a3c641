"""Tensor-by-tensor reading of safetensors files and model folders (sharded or not).

Opening a folder reads only the JSON headers; each tensor is fetched later with one ``seek`` + ``read``
of its own bytes, so peak memory stays near the largest tensor, not the checkpoint. Every header is
validated up front (corrupt JSON, offsets past the end of a truncated file, byte counts that do not
match the shape, unknown dtypes, shards missing from the index), so a bad checkpoint fails with one
line before any work. Folders whose weights are only pickles (``.bin``, ``.pt``) are refused: rankwise
never unpickles.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rankwise.errors import RankwiseError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: ``start`` is the absolute byte offset of its data in ``file``."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.is_floating_point and self.dtype.itemsize >= 2


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a safetensors file and the byte offset where its data starts."""
    path = Path(path)
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


def file_entries(path: str | os.PathLike[str]) -> dict[str, TensorEntry]:
    """Every tensor of one safetensors file (any rank and dtype), checked against the file's size."""
    path = Path(path)
    header, data_start = read_header(path)
    size = path.stat().st_size
    out: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            shape = tuple(int(d) for d in shape)
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError) as exc:
            raise RankwiseError(f"{path}: tensor {name} has a corrupt header entry; re-download or re-save it") from exc
        if data_start + end > size:
            raise RankwiseError(f"{path} is truncated: tensor {name} ends at byte {data_start + end} "
                                f"but the file has {size} bytes; re-download or re-save the checkpoint")
        if dtype_name not in DTYPES:
            raise RankwiseError(f"{path}: tensor {name} has unsupported dtype {dtype_name}")
        dtype = DTYPES[dtype_name]
        if end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
            raise RankwiseError(f"{path}: tensor {name} has {end - begin} bytes, not {list(shape)} × {dtype_name}; "
                                "the file is corrupt")
        out[name] = TensorEntry(path, dtype, shape, data_start + begin, end - begin)
    return out


def read_tensor(entry: TensorEntry, name: str = "tensor") -> torch.Tensor:
    """The tensor's data, read from disk now (a fresh, writable tensor in its stored dtype)."""
    buf = bytearray(entry.nbytes)  # read straight into the tensor's storage: one copy of the bytes, not two
    with open(entry.file, "rb") as fh:
        fh.seek(entry.start)
        got = fh.readinto(buf)
    if got != entry.nbytes:
        raise RankwiseError(f"{entry.file} is truncated while reading tensor {name}; re-download or re-save it")
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=entry.dtype)
    return torch.frombuffer(buf, dtype=entry.dtype).view(entry.shape)


def _pickle_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())


def shard_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The safetensors files of a model folder: those of its index, else every ``*.safetensors``."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / f for f in dict.fromkeys(weight_map.values())]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise RankwiseError(f"{index} is not a valid safetensors index (no weight_map)") from exc
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise RankwiseError(f"{folder} is missing shard files listed in its index: {', '.join(missing)}; "
                                "restore them or re-save the model")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = _pickle_files(folder)
        hint = (f" (it holds only pickled weights such as {pickles[0].name}; rankwise never unpickles: convert "
                "them to safetensors)") if pickles else ""
        raise RankwiseError(f"{folder} holds no .safetensors weights; pass a model folder{hint}")
    return files


def natural_key(name: str) -> list[Any]:
    """Sort key that puts layer 2 before layer 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class TensorFolder:
    """Every tensor of a safetensors model folder, by name; headers read now, data on ``get``."""

    def __init__(self, folder: str | os.PathLike[str], need_config: bool = True) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise RankwiseError(f"no such model folder: {self.folder}")
        if need_config and not (self.folder / "config.json").is_file():
            raise RankwiseError(f"{self.folder} is not a model folder (no config.json)")
        self.entries: dict[str, TensorEntry] = {}
        for shard in shard_files(self.folder):
            for name, entry in file_entries(shard).items():
                if name in self.entries:
                    raise RankwiseError(f"{self.folder}: tensor {name} is stored twice ({self.entries[name].file.name} "
                                        f"and {shard.name}); the checkpoint is corrupt")
                self.entries[name] = entry

    def names(self) -> list[str]:
        """Tensor names in natural order, whatever the file order."""
        return sorted(self.entries, key=natural_key)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` in its stored dtype, read from disk now."""
        return read_tensor(self.entries[name], name)


def check_safetensors_folder(folder: str | os.PathLike[str]) -> None:
    """Raise the one-line `RankwiseError` if ``folder`` is not a readable safetensors model folder.

    Checks everything that can be checked without reading tensor data: config.json present, shards
    present, headers parse, every tensor fits its file. Pickle-only folders are refused.
    """
    TensorFolder(folder)
