"""Interrupting the training loop at a chosen step, as Ctrl-C would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from rankwise.train import loop as loop_module


def interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> Callable[[], None]:
    """Make the loop raise KeyboardInterrupt when it starts 1-based step ``step`` (for callers that
    catch it themselves, as the CLI does); returns the function that puts the real step back."""
    real_step = loop_module._train_step

    def crash(model, config, train, at, *rest):  # type: ignore[no-untyped-def]
        if at == step - 1:
            raise KeyboardInterrupt
        return real_step(model, config, train, at, *rest)

    monkeypatch.setattr(loop_module, "_train_step", crash)
    return lambda: monkeypatch.setattr(loop_module, "_train_step", real_step)


@contextmanager
def ctrl_c_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[None]:
    """Raise KeyboardInterrupt when the loop starts 1-based step ``step``; expects the interrupt."""
    restore = interrupt_at_step(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        yield
    restore()
