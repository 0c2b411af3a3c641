"""Output folders that appear whole or not at all."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rankwise.errors import RankwiseError


def check_output_folder(folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early (before any long work) if ``folder`` exists and may not be replaced."""
    path = Path(folder)
    if path.exists() and not overwrite:
        raise RankwiseError(f"output folder {path} already exists; choose another path or pass --overwrite")
    if path.exists() and not path.is_dir():
        raise RankwiseError(f"output path {path} exists and is not a folder; choose another path")
    return path


@contextmanager
def atomic_folder(folder: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to ``folder``, on any error delete it.

    The rename is atomic on one filesystem, so readers never see a half-written folder, and an
    interrupted run (exception or Ctrl-C) leaves nothing behind.
    """
    target = check_output_folder(folder, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a file through a temporary sibling and an atomic rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
