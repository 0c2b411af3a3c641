"""Output folders that appear whole or not at all, checked up front so a bad path fails before the work."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rankwise.errors import RankwiseError


def check_writable_parent(path: str | os.PathLike[str]) -> Path:
    """Fail early if ``path`` could not be created: its nearest existing ancestor must be a writable folder.

    Probed by creating (and removing) a temporary folder there, which also catches read-only file
    systems and permission rules that ``os.access`` does not see. Returns that ancestor.
    """
    target = Path(path).expanduser()
    ancestor = target.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RankwiseError(f"cannot write {target}: {ancestor} is a file, not a folder; choose another path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rankwise-probe-", dir=ancestor))
    except OSError as exc:
        raise RankwiseError(f"cannot write {target}: {ancestor} is not writable ({exc.strerror}); "
                            "choose another output path") from None
    return ancestor


def check_output_folder(folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Fail early (before any long work) if ``folder`` exists and may not be replaced, or cannot be written."""
    path = Path(folder).expanduser()
    if path.exists() and not overwrite:
        raise RankwiseError(f"output folder {path} already exists; choose another path or pass --overwrite")
    if path.exists() and not path.is_dir():
        raise RankwiseError(f"output path {path} exists and is not a folder; choose another path")
    check_writable_parent(path)
    return path


def check_output_file(file: str | os.PathLike[str]) -> Path:
    """Fail early if ``file`` cannot be written: it must not be a folder, and its folder must be writable."""
    path = Path(file).expanduser()
    if path.is_dir():
        raise RankwiseError(f"output file {path} is a folder; pass a file path such as {path / 'result.json'}")
    check_writable_parent(path)
    return path


def make_files_readable(folder: Path) -> None:
    """Give every file under ``folder`` the mode a plain ``open`` gives (0666 minus the umask).

    Writers that go through a private temporary file (safetensors does) leave 0600 weights next to
    0644 configs; an output folder's files should all be as readable as the user's umask allows.
    """
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    for root, _, files in os.walk(folder):
        for name in files:
            file = Path(root) / name
            if stat.S_IMODE(file.lstat().st_mode) != mode and not file.is_symlink():
                file.chmod(mode)


@contextmanager
def atomic_folder(folder: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to ``folder``, on any error delete it.

    The rename is atomic on one filesystem, so readers never see a half-written folder, and an
    interrupted run (exception or Ctrl-C) leaves nothing behind.
    """
    target = check_output_folder(folder, overwrite)
    created = _first_missing(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        make_files_readable(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty_chain(created, target.parent)
        raise


def _first_missing(folder: Path) -> Path | None:
    """The outermost ancestor of ``folder`` (or itself) that does not exist yet, if any."""
    missing = None
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing = path
    return missing


def _remove_empty_chain(top: Path | None, folder: Path) -> None:
    """Undo ``mkdir(parents=True)``: remove ``folder`` and its ancestors up to ``top`` while empty."""
    if top is None:
        return
    for path in [folder, *folder.parents]:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return


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
