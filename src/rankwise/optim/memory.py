"""`state_bytes`: how much memory an optimizer's state takes, for any `torch.optim.Optimizer`."""

from __future__ import annotations

from typing import Any

import torch


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in ``opt.state`` (moments, steps, projector bases), counted once each.

    Tensors inside objects kept in the state (another library's projector object holding its basis)
    count too, as do tensors an optimizer declares it keeps elsewhere through an
    ``extra_state_tensors()`` method (`LowRankAdamW`'s shared DCT bases).
    """
    seen: set[tuple[int, int]] = set()
    total = 0

    def visit(obj: Any, depth: int) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            key = (obj.data_ptr(), obj.nbytes)
            if key not in seen:  # views of one buffer, or one tensor reachable twice, count once
                seen.add(key)
                total += obj.nbytes
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value, depth)
        elif isinstance(obj, list | tuple | set):
            for value in obj:
                visit(value, depth)
        elif depth < 2 and hasattr(obj, "__dict__") and not isinstance(obj, type):
            for value in vars(obj).values():
                visit(value, depth + 1)

    for per_param in opt.state.values():
        visit(per_param, 0)
    extra = getattr(opt, "extra_state_tensors", None)
    if callable(extra):
        visit(list(extra()), 0)
    return total
