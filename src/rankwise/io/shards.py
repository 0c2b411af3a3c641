"""A sharded safetensors writer that streams: one tensor in memory at a time, whatever the shard size.

The layout of every shard (which tensors, in which order, at which offsets) is fixed up front from
the names, shapes and dtypes, so each shard's header is written first and every tensor's bytes go
straight to their offset when the tensor arrives. ``model.safetensors.index.json`` maps names to
shards. Headers are deterministic (sorted keys, no timestamps): the same tensors give the same bytes.
Use it inside `rankwise.io.atomic.atomic_folder` so an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from rankwise.errors import RankwiseError
from rankwise.io.tensors import DTYPE_NAMES, INDEX_NAME, natural_key

DEFAULT_SHARD_BYTES = 2 * 2**30


@dataclass(frozen=True)
class TensorSpec:
    """The name, shape and dtype one output tensor will have."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass
class _Slot:
    shard: int
    offset: int  # absolute byte offset in the shard file
    spec: TensorSpec
    written: bool = False


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Group tensors (in natural name order) into shards of at most ``max_shard_bytes`` of data each.

    A tensor larger than the limit gets a shard of its own (a tensor is never split).
    """
    if max_shard_bytes <= 0:
        raise RankwiseError(f"shard size must be positive, got {max_shard_bytes} bytes")
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in sorted(specs, key=lambda s: natural_key(s.name)):
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def _header(specs: list[TensorSpec]) -> tuple[bytes, dict[str, int]]:
    """The padded header bytes and each tensor's offset within the data section.

    Tensors are laid out widest dtype first so every tensor starts at a multiple of its item size.
    """
    ordered = sorted(specs, key=lambda s: (-s.dtype.itemsize, natural_key(s.name)))
    offsets: dict[str, int] = {}
    body: dict[str, object] = {"__metadata__": {"format": "pt"}}
    at = 0
    for spec in ordered:
        if spec.dtype not in DTYPE_NAMES:
            raise RankwiseError(f"tensor {spec.name} has dtype {spec.dtype}, which safetensors cannot store")
        offsets[spec.name] = at
        body[spec.name] = {"dtype": DTYPE_NAMES[spec.dtype], "shape": list(spec.shape),
                           "data_offsets": [at, at + spec.nbytes]}
        at += spec.nbytes
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    return len(text).to_bytes(8, "little") + text, offsets


class ShardedWriter:
    """Write the tensors of ``specs`` into ``folder`` as ``<prefix>-0000i-of-0000n.safetensors`` + index.

    ``write(name, tensor)`` may be called in any order; ``close()`` checks every tensor arrived and
    writes the index. Shapes and dtypes must match the specs exactly.
    """

    def __init__(self, folder: str | os.PathLike[str], specs: list[TensorSpec],
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, prefix: str = "model") -> None:
        self.folder = Path(folder)
        groups = plan_shards(specs, max_shard_bytes)
        n = len(groups)
        self.files = [self.folder / f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._slots: dict[str, _Slot] = {}
        self._handles = []
        for i, group in enumerate(groups):
            head, offsets = _header(group)
            fh = open(self.files[i], "wb")  # noqa: SIM115  (closed in close())
            fh.write(head)
            fh.truncate(len(head) + sum(s.nbytes for s in group))
            self._handles.append(fh)
            for spec in group:
                self._slots[spec.name] = _Slot(i, len(head) + offsets[spec.name], spec)
        self._total = sum(s.nbytes for s in specs)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        slot = self._slots.get(name)
        if slot is None:
            raise RankwiseError(f"tensor {name} is not in the planned output")
        if tuple(tensor.shape) != slot.spec.shape or tensor.dtype != slot.spec.dtype:
            raise RankwiseError(f"tensor {name} is {list(tensor.shape)} {tensor.dtype}, but the plan says "
                                f"{list(slot.spec.shape)} {slot.spec.dtype}")
        fh = self._handles[slot.shard]
        fh.seek(slot.offset)
        if slot.spec.nbytes:
            fh.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        slot.written = True

    def close(self) -> Path:
        """Finish the shards and write the index; returns the index path."""
        for fh in self._handles:
            fh.close()
        self._handles = []
        missing = [name for name, slot in self._slots.items() if not slot.written]
        if missing:
            raise RankwiseError(f"{len(missing)} planned tensors were never written (first: {missing[0]})")
        weight_map = {name: self.files[slot.shard].name
                      for name, slot in sorted(self._slots.items(), key=lambda kv: natural_key(kv[0]))}
        index = {"metadata": {"total_size": self._total}, "weight_map": weight_map}
        path = self.folder / INDEX_NAME
        path.write_text(json.dumps(index, indent=2) + "\n")
        return path

    def abort(self) -> None:
        for fh in self._handles:
            fh.close()
        self._handles = []


def save_sharded(tensors: dict[str, torch.Tensor], folder: str | os.PathLike[str],
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, prefix: str = "model") -> Path:
    """Write a dict of tensors as shards + index into an existing ``folder``; returns the index path."""
    specs = [TensorSpec(name, tuple(t.shape), t.dtype) for name, t in tensors.items()]
    writer = ShardedWriter(folder, specs, max_shard_bytes, prefix)
    try:
        for name, t in tensors.items():
            writer.write(name, t)
    except BaseException:
        writer.abort()
        raise
    return writer.close()
