"""Optimizer checkpoints without pickle, for any `torch.optim.Optimizer`.

``opt.state_dict()`` is split into safetensors-ready tensors and a JSON-able skeleton that names them.
JSON has no tuples, non-string keys or NaN, so the skeleton tags them ({"__tuple__": [...]},
{"__dict__": [[key, value], ...]}, {"__float__": "nan"}); a tensor becomes {"__tensor__": name}.
Anything else (an object another library keeps in its state) cannot be saved without pickle and is
refused with its path.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rankwise.errors import RankwiseError

FORMAT = "rankwise-optimizer-state"
VERSION = 1


def optimizer_state_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors for `safetensors.torch.save_file`, JSON-able meta) of ``opt.state_dict()``."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            # Own contiguous CPU copies: safetensors refuses views and tensors sharing memory.
            tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
            return {"__tensor__": path}
        if isinstance(obj, bool | int | str) or obj is None:
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, tuple):
            return {"__tuple__": [encode(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [encode(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj):
                return {k: encode(v, f"{path}.{k}" if path else k) for k, v in obj.items()}
            return {"__dict__": [[encode(k, f"{path}.key"), encode(v, f"{path}.{k}" if path else str(k))]
                                 for k, v in obj.items()]}
        raise RankwiseError(f"optimizer state holds a {type(obj).__name__} at '{path}', which cannot be saved "
                            "without pickle; keep only tensors, numbers and strings in optimizer state")

    meta = {"format": FORMAT, "version": VERSION, "optimizer": type(opt).__name__,
            "state_dict": encode(opt.state_dict(), "")}
    return tensors, meta


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Load what `optimizer_state_to_tensors` produced into ``opt`` (built over the same parameters)."""
    if meta.get("format") != FORMAT:
        raise RankwiseError("not a rankwise optimizer state (its meta has no 'format' of "
                            f"'{FORMAT}'); save it with rankwise.optim.optimizer_state_to_tensors")
    if meta.get("optimizer") != type(opt).__name__:
        raise RankwiseError(f"optimizer state was saved from {meta.get('optimizer')} but is loaded into "
                            f"{type(opt).__name__}; build the optimizer the saved run used")

    def decode(obj: Any) -> Any:
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "__tensor__" in obj:
            name = obj["__tensor__"]
            if name not in tensors:
                raise RankwiseError(f"optimizer state names tensor '{name}' that the tensor file lacks; "
                                    "load the tensors saved with this meta")
            return tensors[name]
        if "__tuple__" in obj:
            return tuple(decode(v) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__dict__" in obj:
            return {decode(k): decode(v) for k, v in obj["__dict__"]}
        return {k: decode(v) for k, v in obj.items()}

    try:
        opt.load_state_dict(decode(meta["state_dict"]))
    except (ValueError, KeyError) as e:
        raise RankwiseError(f"optimizer state does not fit this optimizer: {e}") from None
