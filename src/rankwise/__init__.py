"""rankwise: the low-rank (spectral) structure of transformer language models.

Importing this package is light: torch, transformers and matplotlib are loaded lazily by
the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rankwise._version import __version__
from rankwise.errors import RankwiseError

if TYPE_CHECKING:
    from rankwise import adapters, analysis, compress, data, eval, io, linalg
    from rankwise.adapters.apply import adapt
    from rankwise.analysis.analyze import analyze
    from rankwise.io.loading import load_model
    from rankwise.io.saving import save_model

__all__ = [
    "RankwiseError",
    "__version__",
    "adapt",
    "adapters",
    "analysis",
    "analyze",
    "compress",
    "data",
    "eval",
    "io",
    "linalg",
    "load_model",
    "save_model",
]

_SUBMODULES = {"data", "eval", "io", "linalg", "compress", "adapters", "analysis", "merge", "optim", "train", "calib",
               "modules"}
_FUNCTIONS = {
    "adapt": ("rankwise.adapters.apply", "adapt"),
    "analyze": ("rankwise.analysis.analyze", "analyze"),
    "load_model": ("rankwise.io.loading", "load_model"),
    "save_model": ("rankwise.io.saving", "save_model"),
}


def __getattr__(name: str) -> Any:
    # Lazy attributes keep `import rankwise` free of torch/transformers imports.
    if name in _SUBMODULES:
        return importlib.import_module(f"rankwise.{name}")
    if name in _FUNCTIONS:
        module, attr = _FUNCTIONS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")
