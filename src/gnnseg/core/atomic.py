"""Write files and folders all-or-nothing: into a temporary name beside the target, then one rename."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffixes, so writers pick the right format) and move it
    onto ``path`` when the block succeeds; on failure the temporary file is removed and ``path`` is left
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a new empty folder beside ``path`` (``.<name>.partial-<pid>``) and move it onto ``path`` when the block
    succeeds; on failure it is removed and ``path`` is left as it was. An empty folder at ``path`` gives way (a
    rename replaces no folder on every platform); ``replace=True`` lets a folder holding files give way too."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)         # left by a process of the same id that was killed
    temporary.mkdir(parents=True)
    try:
        yield temporary
        if path.exists():
            shutil.rmtree(path) if replace else path.rmdir()
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
