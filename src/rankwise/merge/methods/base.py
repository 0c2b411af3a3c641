"""The merge-method registry and what every method declares: its parameters and which inputs it takes.

A method's maths is a pure function ``fn(base, tensors, models, shared, generator) -> Tensor`` over
fp32 tensors of one name: ``base`` the base model's tensor (None for methods without a base),
``tensors`` the other inputs' tensors (same shape), ``models`` one dict of per-model parameters per
tensor, ``shared`` the method-wide parameters, ``generator`` a seeded RNG for random methods. Reading,
casting, streaming and writing live once, in the driver.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rankwise.errors import RankwiseError
from rankwise.registry import Registry

MergeFn = Callable[[torch.Tensor | None, list[torch.Tensor], list[dict[str, Any]], dict[str, Any],
                    torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Param:
    """One parameter: ``scope`` "model" (one value per input model) or "shared" (one for the method).

    ``default`` None with ``required`` means the config must give it. ``check`` names the allowed range.
    ``in_config`` False marks a value the driver computes (a tensor, such as RegMean's Grams), never YAML.
    """

    name: str
    scope: Literal["model", "shared"]
    kind: type = float
    default: Any = None
    required: bool = False
    check: Literal["any", "finite", "nonneg", "density", "unit"] = "finite"
    in_config: bool = True

    def validate(self, value: Any, where: str) -> Any:
        if not self.in_config:
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise RankwiseError(f"{where}: parameter '{self.name}' must be true or false, got {value!r}")
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RankwiseError(f"{where}: parameter '{self.name}' must be a positive integer, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RankwiseError(f"{where}: parameter '{self.name}' must be a number, got {value!r}")
        x = float(value)
        if not math.isfinite(x):
            raise RankwiseError(f"{where}: parameter '{self.name}' is {x}; give a finite number")
        if self.check == "nonneg" and x < 0:
            raise RankwiseError(f"{where}: parameter '{self.name}' is {x}, but this method needs weights >= 0")
        if self.check == "density" and not 0.0 < x <= 1.0:
            raise RankwiseError(f"{where}: parameter '{self.name}' is {x}; density must be in (0, 1]")
        if self.check == "unit" and not 0.0 <= x <= 1.0:
            raise RankwiseError(f"{where}: parameter '{self.name}' is {x}; it must be in [0, 1]")
        return x


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method.

    ``base``: "required" (deltas from the base model), "none" (the inputs are combined as they are).
    ``inputs``: allowed number of non-base inputs. ``elementwise``: the maths is a few passes over
    memory (no matrix products), which one thread runs as fast as several; the driver then uses one
    thread, since idle worker threads spin and burn CPU that a busy machine's other processes need.
    """

    name: str
    fn: MergeFn
    params: tuple[Param, ...]
    base: Literal["required", "none"] = "required"
    inputs: tuple[int, int | None] = (1, None)
    summary: str = ""
    elementwise: bool = True

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def __call__(self, base: torch.Tensor | None, tensors: list[torch.Tensor], *, seed: int = 0,
                 **params: Any) -> torch.Tensor:
        """Merge plain tensors: per-model parameters as lists (``weight=[0.5, 0.5]``), shared ones as values."""
        models: list[dict[str, Any]] = [{} for _ in tensors]
        shared: dict[str, Any] = {}
        for p in self.params:
            given = params.pop(p.name, None)
            if p.scope == "model":
                values = given if isinstance(given, (list, tuple)) else [given] * len(tensors)
                if len(values) != len(tensors):
                    raise RankwiseError(f"{self.name}: '{p.name}' has {len(values)} values for {len(tensors)} tensors")
                for i, v in enumerate(values):
                    models[i][p.name] = resolve(p, v, f"{self.name} input {i}")
            else:
                shared[p.name] = resolve(p, given, self.name)
        if params:
            raise RankwiseError(f"{self.name}: unknown parameter '{next(iter(params))}'")
        check_inputs(self, base, tensors)
        shape = (base if base is not None else tensors[0]).shape
        if any(t.shape != shape for t in tensors):
            raise RankwiseError(f"{self.name}: the tensors have different shapes {[list(t.shape) for t in tensors]}")
        # The functions may reuse their inputs' storage; the caller's tensors must stay as they are.
        own = [t.to(torch.float32, copy=True) for t in tensors]
        own_base = None if base is None else base.to(torch.float32, copy=True)
        dtype = (base if base is not None else tensors[0]).dtype
        return self.fn(own_base, own, models, shared, torch.Generator().manual_seed(seed)).to(dtype)


def resolve(p: Param, value: Any, where: str) -> Any:
    """The validated value, or the default; a missing required value is an error."""
    if value is None:
        if p.required:
            raise RankwiseError(f"{where}: parameter '{p.name}' is required; add it to the config's parameters")
        return p.default
    return p.validate(value, where)


def check_inputs(method: MergeMethod, base: torch.Tensor | None, tensors: list[torch.Tensor]) -> None:
    lo, hi = method.inputs
    if method.base == "required" and base is None:
        raise RankwiseError(f"merge method '{method.name}' needs a base_model")
    if len(tensors) < lo or (hi is not None and len(tensors) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
        raise RankwiseError(f"merge method '{method.name}' takes {want} models besides the base, got {len(tensors)}")


def _load_all() -> None:
    import rankwise.merge.methods  # noqa: F401  (each method module registers itself)


METHODS: Registry[MergeMethod] = Registry("merge method", loader=_load_all)


def register(method: MergeMethod) -> MergeMethod:
    return METHODS.add(method.name, method)


def get(name: str) -> MergeMethod:
    """The merge method ``name`` (a miss suggests the closest name)."""
    return METHODS.get(name)
