"""Optimizers by name: a registry of (config class, builder), for configs, the CLI and the training loop.

The training loop sets ``group["lr"]`` itself every step from its own schedule, so ``lr`` here is only
the value before the first step.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from rankwise.errors import RankwiseError
from rankwise.optim.config import AdamWConfig, LowRankAdamWConfig
from rankwise.optim.lowrank_adamw import LowRankAdamW
from rankwise.registry import Registry

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


@dataclass(frozen=True)
class OptimizerEntry:
    config_class: type[BaseModel]
    build: Callable[[Any, Params], torch.optim.Optimizer]


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer")


def _adamw(config: AdamWConfig, params: Params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, eps=config.eps,
                             weight_decay=config.weight_decay)


def _lowrank_adamw(config: LowRankAdamWConfig, params: Params) -> torch.optim.Optimizer:
    return LowRankAdamW(params, **config.model_dump())


OPTIMIZERS.add("adamw", OptimizerEntry(AdamWConfig, _adamw))
OPTIMIZERS.add("lowrank_adamw", OptimizerEntry(LowRankAdamWConfig, _lowrank_adamw))


def optimizer_names() -> list[str]:
    return OPTIMIZERS.names()


def optimizer_config(name: str, **knobs: Any) -> BaseModel:
    """The validated config of optimizer ``name``; a one-line `RankwiseError` for an unknown name or knob."""
    entry = OPTIMIZERS.get(name)
    fields = list(entry.config_class.model_fields)
    for knob in knobs:
        if knob not in fields:
            close = difflib.get_close_matches(knob, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RankwiseError(f"optimizer '{name}' has no option '{knob}'{hint}; "
                                f"its options are: {', '.join(fields)}")
    try:
        return entry.config_class(**knobs)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RankwiseError(f"optimizer '{name}' option {where}: {first['msg']}") from None


def build_optimizer(config: BaseModel, params: Params) -> torch.optim.Optimizer:
    """The optimizer a config from `optimizer_config` describes, over ``params`` (tensors or param groups)."""
    for _, entry in OPTIMIZERS.items():
        if type(config) is entry.config_class:
            return entry.build(config, params)
    raise RankwiseError(f"{type(config).__name__} is not an optimizer config; make one with "
                        f"optimizer_config(name, ...) for a name in: {', '.join(optimizer_names())}")
