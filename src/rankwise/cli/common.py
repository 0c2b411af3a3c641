"""Shared CLI pieces: argument types that reject bad values in one line, and output helpers."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, NoReturn

from rankwise.io.atomic import atomic_write_text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``rankwise: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"rankwise: error: {message} (see: {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def seq_len(text: str) -> int:
    """A window length: at least 2 tokens, since each window's first token predicts nothing."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a window's first token predicts nothing), got {value}")
    return value


def regex(text: str) -> str:
    """A pattern that compiles, checked when the arguments are parsed (not minutes later)."""
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"invalid regular expression '{text}': {exc}") from None
    return text


class Interrupted(KeyboardInterrupt):
    """Ctrl-C after some outputs were complete (``kept`` names them) or with progress kept to resume
    from (``note`` says where and how), so the message can say so."""

    def __init__(self, kept: list[str], note: str | None = None) -> None:
        super().__init__()
        self.kept = kept
        self.note = note


def interrupt_message(exc: KeyboardInterrupt) -> str:
    kept = getattr(exc, "kept", None)
    note = getattr(exc, "note", None)
    if kept:
        message = f"rankwise: interrupted; kept the complete {', '.join(kept)}; nothing else was written"
    else:
        message = "rankwise: interrupted; no output was written"
    return f"{message}; {note}" if note else message


def write_json(path: str, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def print_table(rows: list[list[str]], header: list[str], file: Any = None) -> None:
    """A plain aligned text table (first column left-aligned, others right-aligned)."""
    out = file or sys.stdout
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(cells))

    print(fmt(header), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print(fmt(row), file=out)
