"""`Registry`: the one type behind every extension point (compressors, allocators, adapter methods,
merge methods, optimizers, projectors, metrics).

A registry maps snake_case names to entries. It refuses a duplicate or malformed name at import
time (two methods silently sharing a name is a bug nobody would find), and a lookup miss raises a
one-line `RankwiseError` that lists the valid names and suggests the closest one
(``dare-ties`` → ``dare_ties``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from rankwise.errors import RankwiseError

T = TypeVar("T")
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


class Registry(Generic[T]):
    """Named entries of one kind; ``kind`` names them in error messages ("merge method")."""

    def __init__(self, kind: str, loader: Callable[[], object] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        # Imports the modules that register themselves, on first lookup (keeps `import rankwise` light).
        self._loader = loader
        self._loaded = loader is None

    def add(self, name: str, entry: T) -> T:
        if not _SNAKE.match(name):
            raise ValueError(f"{self.kind} name {name!r} is not snake_case")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: ``@REGISTRY.register("ties")``."""

        def wrap(entry: T) -> T:
            return self.add(name, entry)

        return wrap

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def suggestion(self, name: str) -> str | None:
        """The registered name closest to ``name`` (case, dashes and typos forgiven), if any is close."""
        self._load()
        normal = name.strip().lower().replace("-", "_").replace(" ", "_")
        if normal in self._entries:
            return normal
        close = difflib.get_close_matches(normal, list(self._entries), n=1, cutoff=0.6)
        return close[0] if close else None

    def get(self, name: str) -> T:
        self._load()
        if name in self._entries:
            return self._entries[name]
        hint = self.suggestion(name)
        did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
        raise RankwiseError(f"unknown {self.kind} '{name}'{did_you_mean}; choose one of: {', '.join(self.names())}")

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())
