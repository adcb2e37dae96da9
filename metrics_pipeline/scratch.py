"""Folders a process works in and removes when done (the collection's spool, DuckDB's spill,
a backup being made), owner-only, held by their process with a lock on the folder itself.

The kernel releases the lock when the process dies however it dies, so a folder nobody holds
was left by a killed or crashed process: the next process that makes one of its kind removes
it. Folders of another user are never touched, nor links followed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def hold(path: Path) -> int | None:
    """Takes the folder's lock (waiting while another process checks it) and returns the
    descriptor that keeps it, or None when the folder is gone meanwhile (removed as
    abandoned between its creation and this call)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(descriptor)
        return None
    return descriptor


def remove_if_abandoned(path: Path, remove: Callable[[Path], None] | None = None) -> bool:
    """Removes the folder when it is this user's, not a link, and no process holds it."""
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process is at work
        (remove or _remove_tree)(path)
        return True
    finally:
        os.close(descriptor)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_abandoned(prefix: str, parent: Path | None = None) -> list[Path]:
    """Removes the folders named `prefix`* in `parent` (the system's temporary folder) that
    killed processes left; returns them."""
    folder = Path(parent or tempfile.gettempdir())
    try:
        candidates = sorted(p for p in folder.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []
    return [path for path in candidates if remove_if_abandoned(path)]


@contextmanager
def private_folder(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A new owner-only folder named `prefix`*, held by this process until the block ends,
    then removed; what killed processes left of its kind is removed first."""
    remove_abandoned(prefix, parent)
    while True:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mode 0700
        descriptor = hold(path)
        if descriptor is not None:
            break
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(descriptor)
