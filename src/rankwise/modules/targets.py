"""Which `nn.Linear` layers a method acts on: "all-linear", a suffix list, a `re:` regex, or a callable."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence

from torch import nn

from rankwise.errors import RankwiseError

#: ``"all-linear"`` | ``["q_proj", "v_proj"]`` (name suffixes) | ``"re:<regex>"`` (full match) |
#: ``callable(name, module) -> bool``. A plain string other than these is one suffix.
TargetSpec = str | Sequence[str] | Callable[[str, nn.Module], bool]

#: Output heads are never "all-linear" targets: they are tied to the embedding or hold the vocabulary.
_HEAD_NAMES = ("lm_head", "embed_out", "output", "score", "classifier")


def _is_head(name: str) -> bool:
    return name.split(".")[-1] in _HEAD_NAMES


def linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` in the model by qualified name (heads included)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def linear_at(model: nn.Module, name: str) -> nn.Linear:
    """The ``nn.Linear`` at ``name`` (raises if it is something else)."""
    module = model.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise RankwiseError(f"{name} is a {type(module).__name__}, not a linear layer")
    return module


def select_targets(model: nn.Module, targets: TargetSpec = "all-linear") -> list[str]:
    """Qualified names of the targeted ``nn.Linear`` modules, in model order.

    Raises ``RankwiseError`` listing close matches when the spec matches nothing.
    """
    linears = linear_modules(model)
    if callable(targets):
        chosen = [n for n, m in linears.items() if targets(n, m)]
    elif isinstance(targets, str) and targets == "all-linear":
        chosen = [n for n in linears if not _is_head(n)]
    elif isinstance(targets, str) and targets.startswith("re:"):
        try:
            pattern = re.compile(targets[3:])
        except re.error as exc:
            raise RankwiseError(f"target regex '{targets[3:]}' is invalid: {exc}; fix the pattern after 're:' "
                                "(it must match whole layer names)") from exc
        chosen = [n for n in linears if pattern.fullmatch(n)]
    else:
        suffixes = [targets] if isinstance(targets, str) else list(targets)
        chosen = [n for n in linears if any(n == s or n.endswith("." + s) for s in suffixes)]
    if not chosen:
        raise RankwiseError(f"targets {targets!r} match no linear layer{_close_matches(targets, linears)}")
    return chosen


def _close_matches(targets: TargetSpec, linears: dict[str, nn.Linear]) -> str:
    kinds = sorted({n.split(".")[-1] for n in linears})
    words = [targets] if isinstance(targets, str) else list(targets) if not callable(targets) else []
    close = sorted({c for w in words for c in difflib.get_close_matches(str(w).removeprefix("re:"), kinds, n=3)})
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{hint} (linear layer types here: {', '.join(kinds)})"
