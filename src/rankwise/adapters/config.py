"""Adapter method configs (pydantic, YAML round-trippable) and the one registry of adapter methods.

A method is one module that defines its config class (a subclass of `AdapterConfig` with a
``method`` literal) and its pure init function, and registers both with `register`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rankwise.errors import RankwiseError
from rankwise.registry import Registry

if TYPE_CHECKING:
    import torch

    from rankwise.adapters.layer import AdapterLinear
    from rankwise.adapters.variant import Variant


class AdapterConfig(BaseModel):
    """Knobs every adapter method shares.

    ``alpha`` sets the scaling s = alpha / rank (alpha / √rank with ``rslora``, Kalajdzievski 2023);
    ``alpha=None`` means alpha = rank, i.e. s = 1 (or √rank with rsLoRA).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    rank: int = Field(default=16, gt=0, description="adapter rank r")
    alpha: float | None = Field(default=None, gt=0, description="scaling numerator; None means alpha = rank")
    rslora: bool = Field(default=False, description="scale by alpha/sqrt(r) instead of alpha/r (rsLoRA)")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    seed: int = Field(default=0, description="seed of every random draw of the init")

    #: True when the init changes the frozen base weight (W_res = W − s·B₀A₀), so that export
    #: needs the initial factors.
    changes_base: ClassVar[bool] = False
    #: True when the init needs input statistics from calibration windows.
    needs_calibration: ClassVar[bool] = False

    def scaling(self, rank: int | None = None) -> float:
        """The factor s multiplying B·A for a layer of the given rank (default: ``self.rank``)."""
        r = self.rank if rank is None else rank
        alpha = float(self.rank if self.alpha is None else self.alpha)
        return alpha / math.sqrt(r) if self.rslora else alpha / r


class CalibrationData(BaseModel):
    """Where calibration windows for data-aware inits (CorDA, EVA) come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(default="wiki", description="bundled corpus, text file, or hf:NAME")
    windows: int = Field(default=32, gt=0, description="number of calibration windows")
    seq_len: int = Field(default=256, gt=0, description="tokens per window")
    batch_size: int = Field(default=4, gt=0)


@dataclass(frozen=True)
class AdapterInit:
    """Initial tensors of one adapted layer: ``A`` [r, n], ``B`` [m, r] (fp32).

    When the method's config has ``changes_base``, `adapt` freezes W − s·B·A in place of W, so that
    the output is unchanged at init and every method's residual is the same formula.
    """

    A: torch.Tensor
    B: torch.Tensor


#: ``init(weights, grams, config) -> inits``: ``weights`` maps layer name → W [m, n] (fp32), ``grams``
#: maps layer name → mean input Gram E[x xᵀ] [n, n] (fp64; empty unless ``needs_calibration``). A layer's
#: init is an `AdapterInit` (plain s·B·A) or, for methods with their own parameterisation, a `Variant`.
InitFn = Callable[[dict[str, "torch.Tensor"], dict[str, "torch.Tensor"], Any], "Mapping[str, AdapterInit | Variant]"]
InitT = TypeVar("InitT", bound=InitFn)

#: ``schedule(layers, step, total_steps, optimizer, config)``: runs before the forward pass of 0-based
#: ``step`` of ``total_steps`` (the gradients of the previous step are still on the parameters) and may
#: resize the layers' parameters, keeping ``optimizer`` (None outside training) in step with them.
ScheduleFn = Callable[["dict[str, AdapterLinear]", int, int, "torch.optim.Optimizer | None", Any], None]


@dataclass(frozen=True)
class AdapterMethod:
    name: str
    config: type[AdapterConfig]
    init: InitFn
    #: The `Variant` class that `load_adapter` rebuilds the layers with (None: plain s·B·A layers).
    variant: type[Variant] | None = None
    #: Rank schedule run by the training loop and the Trainer callback (adaptive-rank methods).
    schedule: ScheduleFn | None = None


def _load_methods() -> None:
    # Importing the method modules fills METHODS (each registers itself).
    from rankwise.adapters import (  # noqa: F401
        adalora,
        corda,
        eva,
        increlora,
        kasa,
        lift,
        lora,
        milora,
        nola,
        pissa,
        salt,
        sorsa,
        svfit,
    )


#: Every adapter method by name (snake_case, no duplicates; a miss names the closest method).
METHODS: Registry[AdapterMethod] = Registry("adapter method", loader=_load_methods)


def register(name: str, config: type[AdapterConfig], variant: type[Variant] | None = None,
             schedule: ScheduleFn | None = None) -> Callable[[InitT], InitT]:
    """Decorator for a method's init function: ``@register("pissa", PiSSA)``."""

    def wrap(fn: InitT) -> InitT:
        METHODS.add(name, AdapterMethod(name, config, fn, variant, schedule))
        return fn

    return wrap


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> AdapterMethod:
    """The registered method ``name``; an unknown name is a one-line error listing the methods."""
    if name not in METHODS:  # the message `rankwise finetune --method` has always given
        raise RankwiseError(f"unknown adapter method '{name}'; available: {', '.join(METHODS.names())}")
    return METHODS.get(name)


def config_from_dict(data: dict[str, Any]) -> AdapterConfig:
    """Rebuild a method config from its ``model_dump()`` (e.g. read back from YAML)."""
    from pydantic import ValidationError

    name = data.get("method")
    if not isinstance(name, str):
        raise RankwiseError("adapter config has no 'method' field")
    cls = get_method(name).config
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"{loc}: " if loc else ""  # a check across fields has no single location
        message = str(first["msg"]).removeprefix("Value error, ")
        raise RankwiseError(f"invalid {name} config: {where}{message}") from None


def make_config(method: str, **kwargs: Any) -> AdapterConfig:
    """``make_config("pissa", rank=16)``; unknown knobs give a one-line error."""
    return config_from_dict({"method": method, **{k: v for k, v in kwargs.items() if v is not None}})
