"""The projector registry: name → `Projector` subclass (each one small module with its config)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rankwise.registry import Registry

if TYPE_CHECKING:
    from rankwise.optim.projectors.base import Projector


def _load() -> None:
    from rankwise.optim.projectors import dct, gaussian, randomized, svd  # noqa: F401  (register themselves)


PROJECTORS: Registry[type[Projector]] = Registry("projector", loader=_load)
